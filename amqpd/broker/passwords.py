"""Password hashes: RabbitMQ's salted formats, so exported hashes verify unchanged, and scrypt.

Rules of this module:
- Cleartext passwords are never stored: a user holds a ``PasswordHash`` only.
- RabbitMQ's formats (``rabbit_password_hashing_sha256`` etc., ``rabbit_password:hash/2``):
  ``base64(salt + H(salt + utf8(password)))`` with a 4-byte random salt; the definitions
  export names the function in ``hashing_algorithm``. SHA-256 is RabbitMQ's default since
  3.6; SHA-512 and MD5 are the other built-in modules (MD5 only for hashes from RabbitMQ
  before 3.6: never made here).
- New hashes use scrypt from ``cryptography`` in a self-describing string
  ``$scrypt$ln=15,r=8,p=1$<salt>$<key>`` (unpadded standard base64, passlib's layout), so
  the parameters can grow without breaking stored hashes.
- Comparison is constant-time (``hmac.compare_digest``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Callable

import attrs
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

SHA256 = "rabbit_password_hashing_sha256"
SHA512 = "rabbit_password_hashing_sha512"
MD5 = "rabbit_password_hashing_md5"
SCRYPT = "scrypt"

_RABBIT_DIGESTS: dict[str, Callable[[bytes], hashlib._Hash]] = {
    SHA256: hashlib.sha256,
    SHA512: hashlib.sha512,
    MD5: hashlib.md5,
}
#: Every ``hashing_algorithm`` a config or definitions file may name.
ALGORITHMS: tuple[str, ...] = (SHA256, SHA512, MD5, SCRYPT)

_SCRYPT_PREFIX = "$scrypt$"
#: scrypt cost for new hashes: N = 2**15, r = 8, p = 1 (32 MiB, tens of ms per login).
DEFAULT_SCRYPT_LOG_N = 15
_SCRYPT_LIMITS = {"ln": (1, 20), "r": (1, 32), "p": (1, 16)}  # what we accept when parsing
_SALT_BYTES = 4  # RabbitMQ's salt size (rabbit_password:generate_salt/0)


@attrs.frozen(slots=True)
class PasswordHash:
    """A stored password: the algorithm and the hash string exactly as it is written down."""

    algorithm: str
    value: str

    def verify(self, password: str) -> bool:
        return verify_password(self, password)


def _b64decode(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    return base64.b64decode(padded, validate=True)


def _b64encode(raw: bytes, *, pad: bool = True) -> str:
    text = base64.b64encode(raw).decode("ascii")
    return text if pad else text.rstrip("=")


def parse_hash(value: str, algorithm: str | None = None) -> PasswordHash:
    """Check a hash string; ``algorithm`` None means "scrypt if it says so, else SHA-256".

    Raises ``ValueError`` with a message fit for the one-line config error.
    """
    if algorithm is None:
        algorithm = SCRYPT if value.startswith(_SCRYPT_PREFIX) else SHA256
    if algorithm == SCRYPT:
        _scrypt_parts(value)
        return PasswordHash(SCRYPT, value)
    digest = _RABBIT_DIGESTS.get(algorithm)
    if digest is None:
        raise ValueError(
            f"unknown hashing algorithm {algorithm!r} (known: {', '.join(ALGORITHMS)})"
        )
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not valid base64") from None
    size = _SALT_BYTES + digest(b"").digest_size
    if len(raw) != size:
        raise ValueError(f"a {algorithm} hash is {size} bytes of base64, this is {len(raw)}")
    return PasswordHash(algorithm, value)


def _scrypt_parts(value: str) -> tuple[dict[str, int], bytes, bytes]:
    parts = value.split("$")
    # "", "scrypt", params, salt, key
    if len(parts) != 5 or parts[1] != "scrypt":
        raise ValueError("an scrypt hash looks like $scrypt$ln=15,r=8,p=1$SALT$KEY")
    params: dict[str, int] = {}
    for item in parts[2].split(","):
        key, _, number = item.partition("=")
        if key not in _SCRYPT_LIMITS or not number.isdigit():
            raise ValueError(f"bad scrypt parameter {item!r}")
        low, high = _SCRYPT_LIMITS[key]
        if not low <= int(number) <= high:
            raise ValueError(f"scrypt parameter {key} must be in {low}..{high}")
        params[key] = int(number)
    if set(params) != set(_SCRYPT_LIMITS):
        raise ValueError("an scrypt hash needs the parameters ln, r and p")
    try:
        salt, derived = _b64decode(parts[3]), _b64decode(parts[4])
    except (binascii.Error, ValueError):
        raise ValueError("scrypt salt and key must be base64") from None
    if len(salt) < 8 or len(derived) < 16:
        raise ValueError("scrypt salt or key too short")
    return params, salt, derived


def _scrypt(secret: bytes, salt: bytes, params: dict[str, int], length: int) -> bytes:
    kdf = Scrypt(salt=salt, length=length, n=2 ** params["ln"], r=params["r"], p=params["p"])
    return kdf.derive(secret)


def hash_password(
    password: str,
    algorithm: str = SCRYPT,
    *,
    scrypt_log_n: int = DEFAULT_SCRYPT_LOG_N,
) -> PasswordHash:
    """A new salted hash of ``password`` (scrypt by default, or a RabbitMQ format)."""
    if algorithm == SCRYPT:
        params = {"ln": scrypt_log_n, "r": 8, "p": 1}
        salt = secrets.token_bytes(16)
        key = _scrypt(password.encode("utf-8"), salt, params, 32)
        text = ",".join(f"{k}={v}" for k, v in params.items())
        return PasswordHash(
            SCRYPT,
            f"{_SCRYPT_PREFIX}{text}${_b64encode(salt, pad=False)}${_b64encode(key, pad=False)}",
        )
    digest = _RABBIT_DIGESTS.get(algorithm)
    if digest is None:
        raise ValueError(f"unknown hashing algorithm {algorithm!r}")
    salt = secrets.token_bytes(_SALT_BYTES)
    return PasswordHash(algorithm, _b64encode(salt + digest(salt + password.encode()).digest()))


def verify_password(stored: PasswordHash, password: str) -> bool:
    """Whether ``password`` matches; a hash that does not parse matches nothing."""
    # surrogateescape: a SASL password that is not UTF-8 comes back as its original octets.
    secret = password.encode("utf-8", "surrogateescape")
    if stored.algorithm == SCRYPT:
        try:
            params, salt, key = _scrypt_parts(stored.value)
        except ValueError:
            return False
        return hmac.compare_digest(_scrypt(secret, salt, params, len(key)), key)
    digest = _RABBIT_DIGESTS.get(stored.algorithm)
    if digest is None:
        return False
    try:
        raw = base64.b64decode(stored.value, validate=True)
    except (binascii.Error, ValueError):
        return False
    salt, expected = raw[:_SALT_BYTES], raw[_SALT_BYTES:]
    return hmac.compare_digest(digest(salt + secret).digest(), expected)


#: What a missing user is checked against, so a wrong name costs what a wrong password does.
DUMMY_HASH = PasswordHash(SHA256, _b64encode(b"\0" * (_SALT_BYTES + 32)))
