"""Masks sensitive job data for logs, the admin API and Flower."""

import re
from collections.abc import Mapping
from typing import Any

# Keys whose values are never shown: card and payment-method details, secrets.
SECRET_KEYS = re.compile(
    r"(card|cvc|cvv|payment_?method|iban|account_?number|token|secret|password|api_?key|authorization)",
    re.IGNORECASE,
)
EMAIL = re.compile(r"^([^@\s]{1,64})@([^@\s]+)$")
MASK = "***"


def mask_email(value: str) -> str:
    """Keep the first character of the local part and the domain: r***@example.com."""
    match = EMAIL.match(value)
    if not match:
        return value
    return f"{match.group(1)[0]}{MASK}@{match.group(2)}"


def mask(value: Any, key: str = "") -> Any:
    """A copy of value with secrets replaced by *** and email addresses partly hidden."""
    if key and SECRET_KEYS.search(key):
        return MASK if value not in (None, "") else value
    if isinstance(value, Mapping):
        return {k: mask(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask(v, key) for v in value]
    if isinstance(value, str) and "@" in value:
        return mask_email(value)
    return value
