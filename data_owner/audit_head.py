"""A published audit head read back for `verify_log(expect_head=...)`: the head's hash alone, or the JSON record that
`gdrec-owner audit head` prints."""

from __future__ import annotations

from pydantic import ValidationError

from shared.schemas import AuditHead


def parse_expected_head(value: str | None, option: str = "--expect-head") -> str | AuditHead | None:
    """None for None; a hash (64 lowercase hex digits) as is; a JSON head record as an AuditHead. Anything else
    raises ValueError naming `option` and what it takes."""
    if value is None:
        return None
    text = value.strip()
    if len(text) == 64 and all(c in "0123456789abcdef" for c in text):
        return text
    if text.startswith("{"):
        try:
            return AuditHead.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ValueError(f"{option}: not a head record ({'.'.join(map(str, first['loc'])) or 'JSON'}: "
                             f"{first['msg']})") from None
    raise ValueError(f"{option} takes a head's hash (64 lowercase hex digits) or the JSON line that `gdrec-owner "
                     "audit head` prints")
