"""Encrypts the sensitive fields of job data at rest in the job store (Fernet, rotatable keys).

Fields whose names mark them as card or payment-method details or secrets
(the same names the masking hides) are stored as {"$sealed": <Fernet token>}.
Keys come from JOB_DATA_KEYS, comma-separated, newest first: MultiFernet
encrypts with the first and decrypts with any, so a key can be rotated by
putting a new one in front. Without JOB_DATA_KEYS a key is derived from
SECRET_KEY, for development.
"""

import base64
import hashlib
from collections.abc import Mapping
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from jobqueue.masking import SECRET_KEYS

SEALED = "$sealed"


class Sealer:
    def __init__(self, keys: list[str]) -> None:
        self.fernet = MultiFernet([Fernet(key.strip().encode()) for key in keys])

    @classmethod
    def from_keys(cls, keys: str, *, secret: str, salt: bytes) -> "Sealer":
        """Fernet keys from a comma-separated list, else one derived from secret and salt."""
        listed = [k for k in (keys or "").split(",") if k.strip()]
        if not listed:
            digest = hashlib.sha256(salt + secret.encode()).digest()
            listed = [base64.urlsafe_b64encode(digest).decode()]
        return cls(listed)

    def seal(self, value: Any, key: str = "") -> Any:
        """A copy of value with every sensitive field encrypted."""
        if key and SECRET_KEYS.search(key) and isinstance(value, str) and value:
            return {SEALED: self.fernet.encrypt(value.encode()).decode()}
        if isinstance(value, Mapping):
            return {k: self.seal(v, str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.seal(v, key) for v in value]
        return value

    def unseal(self, value: Any) -> Any:
        """The inverse of seal; a value sealed with an unknown key reads as None."""
        if isinstance(value, Mapping):
            if set(value) == {SEALED}:
                try:
                    return self.fernet.decrypt(value[SEALED].encode()).decode()
                except InvalidToken:
                    return None
            return {k: self.unseal(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.unseal(v) for v in value]
        return value
