"""Field rules shared by the request schemas."""

import re
from decimal import Decimal
from typing import Any

from marshmallow import ValidationError, fields, validate

MAX_AMOUNT = 100_000
# Ids are 32-bit SQL integers: larger ones are simply not found, never a database error.
MAX_ID = 2**31 - 1
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
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


def pattern(regex: str, error: str) -> validate.Regexp:
    """A regular expression the whole value must match (no trailing newline slips through)."""
    return validate.Regexp(rf"(?:{regex})\Z", error=error)


def identifier(description: str) -> fields.Integer:
    """A positive SQL id."""
    return fields.Integer(
        required=True, strict=True, validate=validate.Range(min=1, max=MAX_ID), metadata={"description": description}
    )


def text(description: str, max_length: int, required: bool = True) -> fields.String:
    """A non-empty one-line string of bounded length."""
    return fields.String(
        required=required,
        validate=[validate.Length(min=1, max=max_length), single_line],
        metadata={"description": description, "pattern": r"^[^\x00-\x1f\x7f]+$"},
    )
