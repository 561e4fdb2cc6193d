"""What the catalog stores is cleaned first: passwords out of URLs and payloads, payloads made JSON."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import PurePath
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from raymlp.catalog.errors import CatalogError

_SECRET_KEY = re.compile(
    r"^(password|passwd|pwd|secret|api_?key|access_token|auth_token|secret_key|private_key"
    r"|secret_access_key|aws_secret_access_key|.*_password|.*_secret)$",
    re.IGNORECASE,
)
_SECRET_QUERY_KEY = re.compile(r"pass|pwd|secret|token|api_?key|credential", re.IGNORECASE)
_URL_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*):(?P<password>[^\s@/]*)@")
_REDACTED = "***"


def redact_url(url: str) -> str:
    """``url`` with its password (and password-like query values) replaced by ``***``."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError, TypeError):
        return redact_text(url) if isinstance(url, str) else url
    secret_keys = [key for key in parsed.query if _SECRET_QUERY_KEY.search(key)]
    if parsed.password is None and not secret_keys:
        return url
    if secret_keys:
        parsed = parsed.update_query_dict({key: _REDACTED for key in secret_keys})
    return parsed.render_as_string(hide_password=True).replace("=%2A%2A%2A", f"={_REDACTED}")


def redact_text(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` in it replaced."""
    return _URL_USERINFO.sub(rf"\g<head>:{_REDACTED}@", text)


def clean_json(value: Any, what: str, path: str = "", *, redact_keys: bool = True) -> Any:
    """A JSON-safe deep copy of ``value``: secrets redacted, NaN/inf as null, numpy values as Python ones."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        return redact_url(str(value)) if "@" in value and "://" in value else value
    if isinstance(value, Mapping):
        cleaned: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise CatalogError(f"{what}{path} has key {key!r} of type {type(key).__name__}; keys must be strings")
            if redact_keys and item is not None and _SECRET_KEY.match(key):
                cleaned[key] = _REDACTED
            else:
                cleaned[key] = clean_json(item, what, f"{path}.{key}", redact_keys=redact_keys)
        return cleaned
    if isinstance(value, list | tuple):
        return [clean_json(item, what, f"{path}[{index}]", redact_keys=redact_keys) for index, item in enumerate(value)]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        return clean_json(value.tolist(), what, path, redact_keys=redact_keys)
    raise CatalogError(
        f"{what}{path} holds a {type(value).__name__}, which is not JSON "
        "(allowed: dict, list, str, int, float, bool, None, datetime, Path, numpy values)"
    )
