"""Field rules shared by the request schemas."""

import re
from decimal import Decimal

from marshmallow import ValidationError, fields, validate

MAX_AMOUNT = 100_000
# Ids are 32-bit SQL integers: larger ones are simply not found, never a database error.
MAX_ID = 2**31 - 1
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def two_decimals(value: Decimal) -> None:
    """Reject amounts with more than two decimal places."""
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -2:
        raise ValidationError("must have at most 2 decimal places")


def money(description: str) -> fields.Decimal:
    """A positive amount with at most 2 decimals, sent as a JSON number or string."""
    return fields.Decimal(
        required=True,
        allow_nan=False,
        # With two decimals, > 0 means >= 0.01; the document states that bound as a number.
        validate=[validate.Range(min=0, max=MAX_AMOUNT, min_inclusive=False), two_decimals],
        metadata={"description": description, "example": "25.50", "minimum": 0.01, "maximum": MAX_AMOUNT},
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
