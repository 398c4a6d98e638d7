"""Users: name, tags, loopback restriction and a password hash (never the password).

Rules of this module (``rabbit_auth_backend_internal``; https://www.rabbitmq.com/docs/access-control):
- A user without a password hash cannot log in with a password (RabbitMQ's
  ``clear_password``: only other mechanisms, e.g. EXTERNAL, could authenticate it).
- A missing user costs the same hash work as a wrong password, so timing does not tell
  which names exist.
- ``loopback_only`` is RabbitMQ's ``loopback_users``: such a user may only connect from
  localhost (guest by default).
"""

from __future__ import annotations

import attrs

from amqpd.broker.passwords import DUMMY_HASH, SHA256, PasswordHash, hash_password


@attrs.frozen(slots=True)
class User:
    name: str
    tags: tuple[str, ...] = ()
    # RabbitMQ's loopback_users: guest may only connect from localhost by default.
    loopback_only: bool = False


@attrs.frozen(slots=True)
class _Record:
    user: User
    password: PasswordHash | None


class UserTable:
    def __init__(self) -> None:
        self._records: dict[str, _Record] = {}

    def add(self, user: User, password: str | PasswordHash | None) -> User:
        """Add or replace ``user``; a ``str`` password is hashed here, never kept."""
        if isinstance(password, str):
            # RabbitMQ's own salted SHA-256: cheap to check, as RabbitMQ's add_user makes it.
            password = hash_password(password, SHA256)
        self._records[user.name] = _Record(user, password)
        return user

    def delete(self, name: str) -> None:
        self._records.pop(name, None)

    def users(self) -> dict[str, User]:
        return {name: record.user for name, record in self._records.items()}

    def password_hash(self, name: str) -> PasswordHash | None:
        record = self._records.get(name)
        return record.password if record is not None else None

    def authenticate(self, username: str, password: str) -> User | None:
        record = self._records.get(username)
        if record is None or record.password is None:
            DUMMY_HASH.verify(password)
            return None
        return record.user if record.password.verify(password) else None
