"""Field rules shared by the request schemas."""

from decimal import Decimal

from marshmallow import ValidationError, fields, validate

MAX_AMOUNT = Decimal("100000.00")


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
        validate=[validate.Range(min=Decimal("0.01"), max=MAX_AMOUNT), two_decimals],
        as_string=True,
        metadata={"description": description, "example": "25.50"},
    )


def text(description: str, max_length: int, required: bool = True) -> fields.String:
    """A non-empty string of bounded length."""
    return fields.String(
        required=required,
        validate=validate.Length(min=1, max=max_length),
        metadata={"description": description},
    )
