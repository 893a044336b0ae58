"""Parsing of JSON-valued command-line options, shared by every CLI that takes one."""

from __future__ import annotations

import json
from typing import Any


def json_object(text: str, option: str) -> dict[str, Any]:
    """The JSON object given as `option`'s value; ValueError naming the option and what is wrong otherwise."""
    try:
        given = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{option}: not JSON ({exc.msg} at column {exc.colno}): {text!r}") from None
    if not isinstance(given, dict):
        raise ValueError(f"{option}: expected a JSON object, got {text!r}")
    return given
