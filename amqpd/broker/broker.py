"""Broker: the vhosts and users of one amqpd node.

Rules of this module:
- The Broker owns the vhost table and the user table; nothing else holds them.
- ``attach_durable_log`` hands the durable log to every vhost, present and future.
- Passwords are kept as salted SHA-256 hashes (RabbitMQ's rabbit_password_hashing_sha256
  scheme: 4-byte salt + sha256(salt + password)) and compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import attrs

from amqpd.broker.vhost import VirtualHost
from amqpd.storage.durable import NULL_LOG, DurableLog


@attrs.frozen(slots=True)
class User:
    name: str
    tags: tuple[str, ...] = ()
    # RabbitMQ's loopback_users: guest may only connect from localhost by default.
    loopback_only: bool = False


@attrs.frozen(slots=True)
class _Credentials:
    user: User
    salt: bytes
    digest: bytes


def _hash(salt: bytes, password: str) -> bytes:
    return hashlib.sha256(salt + password.encode("utf-8")).digest()


class Broker:
    def __init__(self, *, default_user: bool = True) -> None:
        self.vhosts: dict[str, VirtualHost] = {"/": VirtualHost("/")}
        self.durable: DurableLog = NULL_LOG
        self._users: dict[str, _Credentials] = {}
        if default_user:
            # RabbitMQ's default user: guest/guest, administrator, loopback only.
            self.add_user("guest", "guest", tags=("administrator",), loopback_only=True)

    def add_vhost(self, name: str) -> VirtualHost:
        vhost = self.vhosts.get(name)
        if vhost is None:
            vhost = self.vhosts[name] = VirtualHost(name)
            vhost.durable = self.durable
        return vhost

    def attach_durable_log(self, log: DurableLog) -> None:
        """From now on durable changes in every vhost go to ``log``."""
        self.durable = log
        for vhost in self.vhosts.values():
            vhost.durable = log
            for queue in vhost.queues.values():
                vhost.attach_journal(queue)

    def add_user(
        self,
        name: str,
        password: str,
        *,
        tags: tuple[str, ...] = (),
        loopback_only: bool = False,
    ) -> User:
        user = User(name, tuple(tags), loopback_only)
        salt = secrets.token_bytes(4)
        self._users[name] = _Credentials(user, salt, _hash(salt, password))
        return user

    def delete_user(self, name: str) -> None:
        self._users.pop(name, None)

    @property
    def users(self) -> dict[str, User]:
        return {name: cred.user for name, cred in self._users.items()}

    def authenticate(self, username: str, password: str) -> User | None:
        """The user if the password is right, else None (the session sends the 403)."""
        cred = self._users.get(username)
        if cred is None:
            # Hash anyway so a missing user costs the same time as a wrong password.
            hmac.compare_digest(_hash(b"\0\0\0\0", password), b"\0" * 32)
            return None
        if hmac.compare_digest(_hash(cred.salt, password), cred.digest):
            return cred.user
        return None
