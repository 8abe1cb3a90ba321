"""Field rules shared by the request schemas."""

import re
from datetime import datetime
from decimal import Decimal
from typing import Any

from marshmallow import ValidationError, fields, validate

MAX_AMOUNT = 100_000
# Ids are 32-bit SQL integers: larger ones are simply not found, never a database error.
MAX_ID = 2**31 - 1
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")
# An amount as a string: digits with up to 2 decimals (so ^\d{1,6}(\.\d{1,2})?$ holds), no
# leading zeros, and within (0, MAX_AMOUNT], so that the pattern alone, as the document
# states it, says exactly which strings are taken: 0.01 to 99999.99, or 100000.
AMOUNT_PATTERN = re.compile(r"(?:[1-9]\d{0,4}(?:\.\d{1,2})?|100000(?:\.0{1,2})?|0\.(?:0[1-9]|[1-9]\d?))", re.ASCII)
assert MAX_AMOUNT == 100_000, "AMOUNT_PATTERN spells out MAX_AMOUNT"


def two_decimals(value: Decimal) -> None:
    """Reject amounts with more than two decimal places."""
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -2:
        raise ValidationError("must have at most 2 decimal places")


class Money(fields.Decimal):
    """An amount sent as a JSON number or as a plain decimal string ("25.50"), nothing Python reads besides.

    Decimal() alone also takes "1_000", " 25 ", "+5", "2.5E1" and "Infinity"; the string form must match
    AMOUNT_PATTERN, and a JSON number must be a number (not true).
    """

    default_error_messages = {"format": "must be a number or a string like 25.50 (0.01 to 100000, 2 decimals at most)"}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Decimal:
        if isinstance(value, str):
            if not AMOUNT_PATTERN.fullmatch(value):
                raise self.make_error("format")
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise self.make_error("format")
        return super()._deserialize(value, attr, data, **kwargs)


def money(description: str) -> Money:
    """A positive amount with at most 2 decimals, sent as a JSON number or string."""
    return Money(
        required=True,
        allow_nan=False,
        # With two decimals, > 0 means >= 0.01; the document states that bound as a number.
        validate=[validate.Range(min=0, max=MAX_AMOUNT, min_inclusive=False), two_decimals],
        metadata={
            "description": f"{description}: a JSON number with at most 2 decimals, or a string like 25.50",
            "example": "25.50",
            "minimum": 0.01,
            "maximum": MAX_AMOUNT,
            # OpenAPI 3.0 cannot say "number or string" with a pattern for the string only
            # without oneOf; oneOf keeps both forms and their rules in the document.
            "oneOf": [
                {"type": "number", "multipleOf": 0.01, "minimum": 0.01, "maximum": MAX_AMOUNT},
                {"type": "string", "pattern": AMOUNT_PATTERN.pattern.join("^$")},
            ],
        },
    )


def single_line(value: str) -> None:
    """Reject line breaks and other control characters (they could forge email headers)."""
    if CONTROL_CHARS.search(value):
        raise ValidationError("must be one line without control characters")


def unicode_text(value: str) -> None:
    """Reject lone surrogates (a JSON "\\ud800"): no database, mail header or body can encode them."""
    if LONE_SURROGATE.search(value):
        raise ValidationError("must be valid Unicode text (no lone surrogates)")


def ascii_address(value: str) -> None:
    """Reject an address SMTP cannot take without SMTPUTF8, which is not assumed of the server."""
    if not value.isascii():
        raise ValidationError("must be an ASCII address (internationalised addresses cannot be sent)")


def email_address(description: str, *, required: bool = True) -> fields.Email:
    """An email address the mail worker can send to."""
    return fields.Email(
        required=required,
        validate=[validate.Length(max=254), ascii_address],
        metadata={"description": description, "pattern": "^[\\x21-\\x7e]+$"},
    )


def pattern(regex: str, error: str) -> validate.Regexp:
    """A regular expression the whole value must match (no trailing newline slips through)."""
    return validate.Regexp(rf"(?:{regex})\Z", error=error)


def identifier(description: str) -> fields.Integer:
    """A positive SQL id."""
    return fields.Integer(
        required=True, strict=True, validate=validate.Range(min=1, max=MAX_ID), metadata={"description": description}
    )


MAX_ID_LENGTH = 64
# A numeric id is any 64-bit one: ids of users and drivers come from other systems.
MAX_NUMERIC_ID = 2**63 - 1
ID_FORMS = [
    {"type": "integer", "minimum": 0, "maximum": MAX_NUMERIC_ID},
    {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH, "pattern": r"^[^\x00-\x1f\x7f]+$"},
]


class IdField(fields.Field):
    """An id sent as a non-negative JSON integer or a non-empty one-line string, loaded as a string.

    42 and "42" are the same id, so a rider sent as a number owns the ride a token for "42" asks about.
    """

    default_error_messages = {
        "invalid": "must be a non-negative integer or a string",
        "range": f"must be an integer from 0 to {MAX_NUMERIC_ID}",
        "length": f"must be a string of 1 to {MAX_ID_LENGTH} characters",
        "line": "must be one line without control characters",
    }

    def __init__(self, *, metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        # OpenAPI 3.0 says "integer or string" only with oneOf; apispec is told to add no type.
        super().__init__(metadata={"oneOf": ID_FORMS, "example": "42", **(metadata or {})}, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, str):
            if not 0 < len(value) <= MAX_ID_LENGTH:
                raise self.make_error("length")
            if CONTROL_CHARS.search(value):
                raise self.make_error("line")
            unicode_text(value)
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.make_error("invalid")
        if not 0 <= value <= MAX_NUMERIC_ID:
            raise self.make_error("range")
        return str(value)

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        return None if value is None else str(value)


def user_id(description: str, *, required: bool = True) -> IdField:
    """A user's id (rider, driver): a JSON integer or string, kept as a string."""
    return IdField(required=required, allow_none=not required, metadata={"description": description})


def row_id(value: str) -> None:
    """Reject an id that is not a SQL row's: an integer from 1 to MAX_ID, in digits."""
    if not (value.isascii() and value.isdigit() and value[0] != "0" and int(value) <= MAX_ID):
        raise ValidationError(f"must be an integer from 1 to {MAX_ID}")


def iso_datetime(value: str) -> None:
    """Reject a time that datetime.fromisoformat, which the worker reads it with, cannot read."""
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError("must be an ISO 8601 date and time, like 2026-01-31T14:05:00+00:00") from None


def text(description: str, max_length: int, required: bool = True) -> fields.String:
    """A non-empty one-line string of bounded length."""
    return fields.String(
        required=required,
        validate=[validate.Length(min=1, max=max_length), single_line, unicode_text],
        metadata={"description": description, "pattern": r"^[^\x00-\x1f\x7f]+$"},
    )
