"""Brokers with extra users, vhosts, permissions and limits, for the access-control tests.

One declarative ``AccessSpec`` is made real in one of two ways:
- against amqpd: written as a TOML config file (``amqpd --config``) for a second amqpd
  subprocess started by the pytest plugin's ``start_amqpd`` (``configured_amqpd`` fixture);
- against RabbitMQ (``AMQP_URL`` set): created with ``rabbitmqctl`` through the command in
  ``RABBITMQ_CTL`` (e.g. ``"/work/shared/tools/rabbitmq-oracle ctl"``) and deleted again at
  the end. Without ``RABBITMQ_CTL`` the tests that need it are skipped.

Names carry a random run id, so runs against a shared RabbitMQ never collide.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import urllib.parse
import uuid

import attrs

from amqpd.broker.passwords import SCRYPT, SHA256, hash_password


@attrs.frozen
class UserSpec:
    name: str
    password: str
    #: How amqpd stores it (RabbitMQ always uses its own default, SHA-256).
    algorithm: str = SHA256
    #: rabbitmqctl set_user_limits, e.g. {"max-connections": 1, "max-channels": 2}.
    limits: dict[str, int] = attrs.field(factory=dict)


@attrs.frozen
class PermSpec:
    user: str
    vhost: str
    configure: str
    write: str
    read: str


@attrs.frozen
class TopicSpec:
    user: str
    vhost: str
    exchange: str
    write: str
    read: str


@attrs.frozen
class AccessSpec:
    users: tuple[UserSpec, ...]
    vhosts: dict[str, dict[str, int]]  # name -> limits (max-connections, max-queues)
    permissions: tuple[PermSpec, ...]
    topic_permissions: tuple[TopicSpec, ...] = ()


def _q(name: str) -> str:
    return json.dumps(name)  # a TOML basic string is a JSON string for these names


def to_toml(spec: AccessSpec) -> str:
    """The amqpd config file for ``spec`` (guest kept, as on a default RabbitMQ)."""
    lines = ["[users.guest]", f"password_hash = {_q(hash_password('guest', SHA256).value)}", ""]
    for u in spec.users:
        lines += [f"[users.{_q(u.name)}]"]
        lines += [f"password_hash = {_q(hash_password(u.password, u.algorithm).value)}"]
        lines += [f"{key.replace('-', '_')} = {value}" for key, value in u.limits.items()]
        lines.append("")
    lines += ['[vhosts."/"]', ""]
    for name, limits in spec.vhosts.items():
        lines.append(f"[vhosts.{_q(name)}]")
        for key, value in limits.items():
            lines.append(f"{key.replace('-', '_')} = {value}")
        lines.append("")
    perms = [PermSpec("guest", "/", ".*", ".*", ".*"), *spec.permissions]
    for p in perms:
        lines += ["[[permissions]]", f"user = {_q(p.user)}", f"vhost = {_q(p.vhost)}"]
        lines += [f"configure = {_q(p.configure)}", f"write = {_q(p.write)}"]
        lines += [f"read = {_q(p.read)}", ""]
    for t in spec.topic_permissions:
        lines += ["[[topic_permissions]]", f"user = {_q(t.user)}", f"vhost = {_q(t.vhost)}"]
        lines += [f"exchange = {_q(t.exchange)}", f"write = {_q(t.write)}"]
        lines += [f"read = {_q(t.read)}", ""]
    return "\n".join(lines)


class RabbitCtl:
    """Creates ``spec`` on a RabbitMQ with rabbitmqctl, and removes it again."""

    def __init__(self, command: str) -> None:
        self.command = shlex.split(command)

    def run(self, *args: str) -> None:
        result = subprocess.run(
            [*self.command, *args], capture_output=True, text=True, timeout=60, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {result.stderr.strip()}")

    def create(self, spec: AccessSpec) -> None:
        for name, limits in spec.vhosts.items():
            self.run("add_vhost", name)
            if limits:
                self.run("set_vhost_limits", "-p", name, json.dumps(limits))
        for u in spec.users:
            self.run("add_user", u.name, u.password)
            if u.limits:
                self.run("set_user_limits", u.name, json.dumps(u.limits))
        for p in spec.permissions:
            self.run("set_permissions", "-p", p.vhost, p.user, p.configure, p.write, p.read)
        for t in spec.topic_permissions:
            self.run("set_topic_permissions", "-p", t.vhost, t.user, t.exchange, t.write, t.read)

    def delete(self, spec: AccessSpec) -> None:
        for u in spec.users:
            try:
                self.run("delete_user", u.name)
            except RuntimeError:
                pass
        for name in spec.vhosts:
            try:
                self.run("delete_vhost", name)
            except RuntimeError:
                pass


def url(host: str, port: int, user: str, password: str, vhost: str) -> str:
    quote = urllib.parse.quote
    return f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/" + quote(
        vhost, safe=""
    )


def run_id() -> str:
    return uuid.uuid4().hex[:8]


__all__ = [
    "SCRYPT",
    "AccessSpec",
    "PermSpec",
    "RabbitCtl",
    "TopicSpec",
    "UserSpec",
    "run_id",
    "to_toml",
    "url",
]
