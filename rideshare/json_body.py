"""Checks every JSON request body passes before a view parses it: bounded nesting, unique keys, strict JSON.

A body nested deeper than MAX_JSON_DEPTH is refused from a scan of its raw bytes,
before any parser recurses (Python's json module raises RecursionError, a 500,
at about 1,000 levels). A body within the limit is then parsed once with
duplicate keys, NaN and Infinity refused: JSON leaves duplicates undefined and
the last one silently winning hides a client bug or a smuggled field.
"""

import json
import re
from collections.abc import Iterable
from itertools import accumulate
from typing import Any

from flask import Flask, request
from flask_smorest import abort

# No body this API takes nests deeper than 3; 32 leaves room and stays far from recursion limits.
MAX_JSON_DEPTH = 32

# A JSON string (escapes included): brackets inside one do not nest anything.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_BRACKETS = b"[]{}"
_NOT_BRACKETS = bytes(b for b in range(256) if b not in _BRACKETS)
# +1 for an opening bracket, -1 for a closing one, indexed by byte value.
_STEP = [0] * 256
for _open in b"[{":
    _STEP[_open] = 1
for _close in b"]}":
    _STEP[_close] = -1


class NotStrictJSON(ValueError):
    """Parseable by Python, but not JSON one can trust: a duplicate key, NaN or Infinity."""


def nesting_depth(raw: bytes) -> int:
    """How deep arrays and objects nest in raw JSON, counted without parsing it."""
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def _unique_object(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise NotStrictJSON(f"JSON body has a duplicate key {key[:64]!r}")
        obj[key] = value
    return obj


def _no_constant(name: str) -> Any:
    raise NotStrictJSON(f"JSON body has {name}, which is not a JSON number")


def strict_loads(raw: bytes) -> Any:
    """Parse raw JSON, refusing duplicate keys, NaN and Infinity (ValueError)."""
    return json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_object, parse_constant=_no_constant)


def _bad_body(message: str) -> None:
    abort(400, message=message, errors={"json": [message]})


def check_json_body() -> None:
    """Refuse (400 JSON) a JSON request body that is too deep, has duplicate keys or is not strict JSON."""
    if not request.is_json:
        return
    raw = request.get_data(cache=True)  # MAX_CONTENT_LENGTH has bounded it (413 beyond)
    if not raw:
        return
    if nesting_depth(raw) > MAX_JSON_DEPTH:
        _bad_body(f"JSON body nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        strict_loads(raw)
    except NotStrictJSON as exc:
        _bad_body(str(exc))
    except (ValueError, RecursionError):
        # Not JSON at all (or a number too long to convert): the view's parser says so in its usual words.
        _bad_body("Invalid JSON body.")


def init_app(app: Flask) -> None:
    app.before_request(check_json_body)
