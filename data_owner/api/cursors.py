"""Opaque, validated page cursors: base64url of `c1:<export id>:<offset>:<check>`, where `check` is the first 8 hex
digits of sha256 over the rest, so a truncated or mistyped cursor is refused instead of read as another position.
A cursor depends only on the export id and a position in the export's fixed user order: it stays valid across
restarts for as long as the same export is served, and is refused (409) once another one is. It is not a secret
and grants nothing: clients must pass it back unchanged and never build or parse it."""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import re

VERSION = "c1"
_MAX_OFFSET_DIGITS = 12
_PAYLOAD_CHARS = len(f"{VERSION}:") + 64 + len(":") + len(":") + 8  # without the offset's digits
MIN_LENGTH = math.ceil((_PAYLOAD_CHARS + 1) * 4 / 3)  # base64url without padding: 104 characters
MAX_LENGTH = math.ceil((_PAYLOAD_CHARS + _MAX_OFFSET_DIGITS) * 4 / 3)  # 119
PATTERN = rf"^[A-Za-z0-9_-]{{{MIN_LENGTH},{MAX_LENGTH}}}$"  # the form of every cursor (the API schema says so)
_CURSOR = re.compile(PATTERN)
_PAYLOAD = re.compile(rf"^c1:([0-9a-f]{{64}}):(0|[1-9][0-9]{{0,{_MAX_OFFSET_DIGITS - 1}}}):([0-9a-f]{{8}})$")
_HINT = "pass back a next_cursor exactly as a page returned it, or omit cursor to start from the first page"


class CursorError(ValueError):
    """A cursor that does not decode (a 400)."""


def _check(export_id: str, offset: int) -> str:
    return hashlib.sha256(f"{VERSION}:{export_id}:{offset}".encode()).hexdigest()[:8]


def encode_cursor(export_id: str, offset: int) -> str:
    if not 0 <= offset < 10**_MAX_OFFSET_DIGITS:
        raise ValueError(f"offset must be non-negative and under 10**{_MAX_OFFSET_DIGITS}, got {offset}")
    payload = f"{VERSION}:{export_id}:{offset}:{_check(export_id, offset)}"
    return base64.urlsafe_b64encode(payload.encode()).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> tuple[str, int]:
    """(export id, offset) of a cursor made by `encode_cursor`; CursorError says what is wrong."""
    if not _CURSOR.match(cursor):
        raise CursorError(f"cursor is malformed (not {MIN_LENGTH}-{MAX_LENGTH} base64url characters): {_HINT}")
    try:
        payload = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise CursorError(f"cursor is malformed (not base64url): {_HINT}") from None
    match = _PAYLOAD.match(payload)
    if match is None:
        raise CursorError(f"cursor is malformed (truncated, or not a cursor of this service): {_HINT}")
    export_id, offset = match.group(1), int(match.group(2))
    if match.group(3) != _check(export_id, offset):
        raise CursorError(f"cursor is corrupted (its check digits do not match): {_HINT}")
    return export_id, offset
