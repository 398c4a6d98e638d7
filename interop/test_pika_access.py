"""Access control with pika, operation by operation, exactly as RabbitMQ checks it.

The broker gets a private vhost with one restricted user (``access_env.py``): configure on
``^(c|cr)-``, write on ``^(w|cr)-``, read on ``^(r|cr)-``, so each name says what the user
may do with it. Against amqpd the setup is a config file for a second amqpd; against
RabbitMQ (``AMQP_URL``) it is made with ``RABBITMQ_CTL`` (skipped without it). Every
expected text was observed on RabbitMQ 3.10.8 (``rabbit_channel`` check_*_permitted).
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pika
import pika.exceptions
import pytest
from access_env import (
    SCRYPT,
    AccessSpec,
    PermSpec,
    RabbitCtl,
    TopicSpec,
    UserSpec,
    run_id,
    to_toml,
    url,
)
from helpers import channel_error

PERMS = ("^(c|cr)-", "^(w|cr)-", "^(r|cr)-")


@attrs.frozen
class Env:
    host: str
    port: int
    vhost: str  # the matrix vhost
    noperm_vhost: str  # the user has no permissions here
    queue_limit_vhost: str  # max-queues 1
    conn_limit_vhost: str  # max-connections 1
    user: str
    admin: str
    scrypt_user: str
    limited_user: str  # max-connections 2, max-channels 2
    password: str = "pw-1"

    def url(self, user: str | None = None, vhost: str | None = None, password: str = "") -> str:
        return url(
            self.host,
            self.port,
            user or self.user,
            password or self.password,
            vhost if vhost is not None else self.vhost,
        )


def _spec(rid: str) -> tuple[AccessSpec, Env]:
    v, nv, qv, cv = (f"ia-{rid}-{s}" for s in ("m", "noperm", "qlimit", "climit"))
    user, admin, scrypt_user, limited = (
        f"ia-{rid}-{s}" for s in ("user", "admin", "scrypt", "limited")
    )
    env = Env("", 0, v, nv, qv, cv, user, admin, scrypt_user, limited)
    full = (".*", ".*", ".*")
    spec = AccessSpec(
        users=(
            UserSpec(user, env.password),
            UserSpec(admin, env.password),
            UserSpec(scrypt_user, env.password, SCRYPT),
            UserSpec(limited, env.password, limits={"max-connections": 2, "max-channels": 2}),
        ),
        vhosts={v: {}, nv: {}, qv: {"max-queues": 1}, cv: {"max-connections": 1}},
        permissions=(
            PermSpec(user, v, *PERMS),
            PermSpec(admin, v, *full),
            PermSpec(admin, nv, *full),
            PermSpec(user, qv, *full),
            PermSpec(user, cv, *full),
            PermSpec(scrypt_user, v, *full),
            PermSpec(limited, v, *full),
        ),
        topic_permissions=(TopicSpec(user, v, "cr-topic", "^w\\.", "^r\\."),),
    )
    return spec, env


def _make_resources(env: Env) -> None:
    """What the restricted user works on, declared by the admin."""
    conn = pika.BlockingConnection(pika.URLParameters(env.url(env.admin)))
    ch = conn.channel()
    for name in ("r-x", "w-x", "c-x", "cr-x"):
        ch.exchange_declare(name, "direct")
    ch.exchange_declare("cr-topic", "topic")
    for name in ("r-q", "w-q", "c-q", "cr-q"):
        ch.queue_declare(name)
    conn.close()


@pytest.fixture(scope="module")
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    spec, env = _spec(run_id())
    amqp_url = os.environ.get("AMQP_URL")
    if amqp_url:
        command = os.environ.get("RABBITMQ_CTL")
        if not command:
            pytest.skip("AMQP_URL points at another broker and RABBITMQ_CTL is not set")
        parsed = urllib.parse.urlparse(amqp_url)
        ctl = RabbitCtl(command)
        ctl.create(spec)
        try:
            env = attrs.evolve(env, host=parsed.hostname or "127.0.0.1", port=parsed.port or 5672)
            _make_resources(env)
            yield env
        finally:
            ctl.delete(spec)
        return
    server = request.getfixturevalue("configured_amqpd")(to_toml(spec))
    env = attrs.evolve(env, host=server.host, port=server.port)
    _make_resources(env)
    yield env


@pytest.fixture
def user_conn(env: Env) -> Iterator[pika.BlockingConnection]:
    conn = pika.BlockingConnection(pika.URLParameters(env.url()))
    yield conn
    if conn.is_open:
        conn.close()


def _refused(kind: str, name: str, env: Env) -> str:
    return f"ACCESS_REFUSED - access to {kind} '{name}' in vhost '{env.vhost}' refused for user '{env.user}'"


Op = Callable[[Any], Any]


def _expect(conn: pika.BlockingConnection, op: Op, code: int, text: str) -> None:
    ch = conn.channel()
    with channel_error(code, text):
        op(ch)
    assert conn.is_open  # a soft error: the connection goes on


def _ok(conn: pika.BlockingConnection, op: Op) -> None:
    ch = conn.channel()
    op(ch)
    ch.close()


# --- exchanges ------------------------------------------------------------------------------


def test_exchange_declare_needs_configure(env, user_conn):
    _expect(
        user_conn,
        lambda ch: ch.exchange_declare("w-new", "direct"),
        403,
        _refused("exchange", "w-new", env),
    )
    _ok(user_conn, lambda ch: ch.exchange_declare("c-new", "direct", auto_delete=True))
    # Checked before the name: amq.* is refused as an access, not as a reserved prefix.
    _expect(
        user_conn,
        lambda ch: ch.exchange_declare("amq.new", "direct"),
        403,
        _refused("exchange", "amq.new", env),
    )


def test_passive_declares_need_no_permission(env, user_conn):
    _ok(user_conn, lambda ch: ch.exchange_declare("w-x", passive=True))
    _ok(user_conn, lambda ch: ch.queue_declare("w-q", passive=True))


def test_exchange_delete_needs_configure(env, user_conn):
    _expect(
        user_conn,
        lambda ch: ch.exchange_delete("missing"),
        403,
        _refused("exchange", "missing", env),
    )
    _expect(
        user_conn,
        lambda ch: ch.exchange_delete("amq.direct"),
        403,
        f"ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '{env.vhost}' "
        "not allowed",
    )
    _ok(user_conn, lambda ch: ch.exchange_declare("c-gone", "fanout"))
    _ok(user_conn, lambda ch: ch.exchange_delete("c-gone"))


# --- queues ---------------------------------------------------------------------------------


def test_queue_declare_needs_configure(env, user_conn):
    _expect(user_conn, lambda ch: ch.queue_declare("r-new"), 403, _refused("queue", "r-new", env))
    _ok(user_conn, lambda ch: ch.queue_declare("c-new", exclusive=True))
    # The reserved prefix is checked first for queues.
    _expect(
        user_conn,
        lambda ch: ch.queue_declare("amq.new"),
        403,
        "ACCESS_REFUSED - queue name 'amq.new' contains reserved prefix 'amq.*'",
    )


def test_server_named_queue_needs_configure_on_its_generated_name(env, user_conn):
    ch = user_conn.channel()
    with channel_error(403, prefix="ACCESS_REFUSED - access to queue 'amq.gen-") as info:
        ch.queue_declare("", exclusive=True)
    assert info.value.reply_text.endswith(f"in vhost '{env.vhost}' refused for user '{env.user}'")


def _declare_exchange_with(target: str) -> Callable[[str], Op]:
    arguments = {"alternate-exchange": target}
    return lambda name: lambda ch: ch.exchange_declare(name, arguments=arguments, auto_delete=True)


def _declare_queue_with(target: str) -> Callable[[str], Op]:
    arguments = {"x-dead-letter-exchange": target}
    return lambda name: lambda ch: ch.queue_declare(name, arguments=arguments, exclusive=True)


@pytest.mark.parametrize(
    ("declare", "kind"),
    [(_declare_exchange_with, "exchange"), (_declare_queue_with, "queue")],
    ids=["exchange-with-alternate-exchange", "queue-with-dead-letter-exchange"],
)
def test_new_resource_pointing_at_an_exchange_needs_read_on_it_and_write_there(
    env, user_conn, declare, kind
):
    # Configure on the new resource is not enough: read on it, then write on the target.
    _expect(user_conn, declare("r-x")("c-new2"), 403, _refused(kind, "c-new2", env))
    _expect(user_conn, declare("r-x")("cr-new2"), 403, _refused("exchange", "r-x", env))
    _ok(user_conn, declare("w-x")("cr-new2"))


def test_queue_delete_and_purge(env, user_conn):
    _expect(
        user_conn, lambda ch: ch.queue_delete("missing"), 403, _refused("queue", "missing", env)
    )
    _expect(user_conn, lambda ch: ch.queue_purge("w-q"), 403, _refused("queue", "w-q", env))
    _ok(user_conn, lambda ch: ch.queue_purge("r-q"))
    _ok(user_conn, lambda ch: ch.queue_declare("c-del"))
    _ok(user_conn, lambda ch: ch.queue_delete("c-del"))


# --- bindings -------------------------------------------------------------------------------


@pytest.mark.parametrize("unbind", [False, True], ids=["bind", "unbind"])
def test_queue_binding_needs_write_on_queue_then_read_on_exchange(env, user_conn, unbind):
    def op(queue: str, exchange: str) -> Op:
        if unbind:
            return lambda ch: ch.queue_unbind(queue, exchange, "k")
        return lambda ch: ch.queue_bind(queue, exchange, "k")

    _expect(user_conn, op("c-q", "c-x"), 403, _refused("queue", "c-q", env))
    _expect(user_conn, op("w-q", "c-x"), 403, _refused("exchange", "c-x", env))
    _expect(
        user_conn,
        op("w-q", ""),
        403,
        "ACCESS_REFUSED - operation not permitted on the default exchange",
    )
    _ok(user_conn, op("w-q", "r-x"))


@pytest.mark.parametrize("unbind", [False, True], ids=["bind", "unbind"])
def test_exchange_binding_needs_write_on_destination_then_read_on_source(env, user_conn, unbind):
    def op(destination: str, source: str) -> Op:
        if unbind:
            return lambda ch: ch.exchange_unbind(destination, source, "k")
        return lambda ch: ch.exchange_bind(destination, source, "k")

    _expect(user_conn, op("c-x", "r-x"), 403, _refused("exchange", "c-x", env))
    _expect(user_conn, op("w-x", "c-x"), 403, _refused("exchange", "c-x", env))
    _ok(user_conn, op("w-x", "r-x"))


# --- publish, consume, get ------------------------------------------------------------------


def _publish(exchange: str, routing_key: str = "k") -> Op:
    def op(ch: Any) -> None:
        ch.confirm_delivery()
        ch.basic_publish(exchange, routing_key, b"m")

    return op


def test_publish_needs_write_on_the_exchange(env, user_conn):
    _expect(user_conn, _publish("r-x"), 403, _refused("exchange", "r-x", env))
    # The default exchange is checked (and named) as amq.default.
    _expect(user_conn, _publish(""), 403, _refused("exchange", "amq.default", env))
    # Permission first: a missing exchange the user may not write is a 403, not a 404.
    _expect(user_conn, _publish("missing"), 403, _refused("exchange", "missing", env))
    _expect(
        user_conn,
        _publish("w-missing"),
        404,
        f"NOT_FOUND - no exchange 'w-missing' in vhost '{env.vhost}'",
    )
    _ok(user_conn, _publish("w-x"))


def test_consume_and_get_need_read_on_the_queue(env, user_conn):
    _expect(
        user_conn,
        lambda ch: ch.basic_consume("w-q", lambda *a: None),
        403,
        _refused("queue", "w-q", env),
    )
    _expect(
        user_conn,
        lambda ch: ch.basic_consume("missing", lambda *a: None),
        403,
        _refused("queue", "missing", env),
    )
    _expect(user_conn, lambda ch: ch.basic_get("w-q"), 403, _refused("queue", "w-q", env))
    _ok(user_conn, lambda ch: ch.basic_get("r-q"))
    _ok(user_conn, lambda ch: ch.basic_cancel(ch.basic_consume("r-q", lambda *a: None)))


def test_topic_permissions_check_routing_keys(env, user_conn):
    def topic_refused(key: str) -> str:
        return (
            f"ACCESS_REFUSED - access to topic '{key}' in exchange 'cr-topic' in vhost "
            f"'{env.vhost}' refused for user '{env.user}'"
        )

    _expect(
        user_conn, lambda ch: ch.queue_bind("cr-q", "cr-topic", "w.k"), 403, topic_refused("w.k")
    )
    _ok(user_conn, lambda ch: ch.queue_bind("cr-q", "cr-topic", "r.k"))
    _expect(
        user_conn, lambda ch: ch.queue_unbind("cr-q", "cr-topic", "w.k"), 403, topic_refused("w.k")
    )
    _ok(user_conn, lambda ch: ch.queue_unbind("cr-q", "cr-topic", "r.k"))
    _expect(user_conn, _publish("cr-topic", "r.k"), 403, topic_refused("r.k"))
    _ok(user_conn, _publish("cr-topic", "w.k"))
    # Other exchanges are not restricted by it.
    _ok(user_conn, _publish("cr-x", "r.k"))


# --- connection.open and login --------------------------------------------------------------


def _open_error(address: str) -> tuple[int, str]:
    with pytest.raises(pika.exceptions.AMQPConnectionError) as info:
        pika.BlockingConnection(pika.URLParameters(address))
    cause = info.value.args[0] if info.value.args else info.value
    text = str(cause)
    return _code_and_text(text)


def _code_and_text(text: str) -> tuple[int, str]:
    # pika wraps the ConnectionClosedByBroker: "ConnectionClosedByBroker: (530) 'TEXT'".
    code = int(text.split("(", 1)[1].split(")", 1)[0])
    reply = text.split(") ", 1)[1].strip()
    return code, reply[1:-1]


def test_vhost_without_permissions_is_530(env):
    assert _open_error(env.url(vhost=env.noperm_vhost)) == (
        530,
        f"NOT_ALLOWED - access to vhost '{env.noperm_vhost}' refused for user '{env.user}'",
    )


def test_unknown_vhost_is_530(env):
    assert _open_error(env.url(vhost="ia-no-such-vhost")) == (
        530,
        "NOT_ALLOWED - vhost ia-no-such-vhost not found",
    )


def test_wrong_password_is_a_403_close(env):
    # pika announces authentication_failure_close: the broker says why before closing.
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as info:
        pika.BlockingConnection(pika.URLParameters(env.url(password="wrong")))
    assert "(403) 'ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN." in (
        str(info.value)
    )


def test_users_log_in_with_their_passwords(env):
    for user in (env.user, env.scrypt_user):
        conn = pika.BlockingConnection(pika.URLParameters(env.url(user)))
        conn.close()


# --- per-vhost limits -----------------------------------------------------------------------


def test_vhost_queue_limit(env):
    conn = pika.BlockingConnection(pika.URLParameters(env.url(vhost=env.queue_limit_vhost)))
    try:
        ch = conn.channel()
        ch.queue_declare("q-1", exclusive=True)
        ch.queue_declare("q-1", exclusive=True)  # a redeclare does not count
        with channel_error(
            406,
            f"PRECONDITION_FAILED - cannot declare queue 'q-2': queue limit in vhost "
            f"'{env.queue_limit_vhost}' (1) is reached",
        ):
            ch.queue_declare("q-2", exclusive=True)
    finally:
        conn.close()


def test_vhost_connection_limit(env):
    first = pika.BlockingConnection(pika.URLParameters(env.url(vhost=env.conn_limit_vhost)))
    try:
        assert _open_error(env.url(vhost=env.conn_limit_vhost)) == (
            530,
            f"NOT_ALLOWED - access to vhost '{env.conn_limit_vhost}' refused for user "
            f"'{env.user}': connection limit (1) is reached",
        )
    finally:
        first.close()
    # The slot is free again once the first connection is gone.
    pika.BlockingConnection(pika.URLParameters(env.url(vhost=env.conn_limit_vhost))).close()


# --- per-user limits ------------------------------------------------------------------------


def test_user_connection_limit(env):
    first = pika.BlockingConnection(pika.URLParameters(env.url(env.limited_user)))
    second = pika.BlockingConnection(pika.URLParameters(env.url(env.limited_user)))
    try:
        assert _open_error(env.url(env.limited_user)) == (
            530,
            f"NOT_ALLOWED - connection refused for user '{env.limited_user}': user connection "
            "limit (2) is reached",
        )
    finally:
        first.close()
        second.close()


def test_user_channel_limit_counts_all_its_connections(env):
    first = pika.BlockingConnection(pika.URLParameters(env.url(env.limited_user)))
    second = pika.BlockingConnection(pika.URLParameters(env.url(env.limited_user)))
    try:
        first.channel()
        second.channel()
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
            second.channel()
        assert (info.value.reply_code, info.value.reply_text) == (
            530,
            f"NOT_ALLOWED - number of channels opened for user '{env.limited_user}' has reached "
            "the maximum allowed user limit of (2)",
        )
    finally:
        first.close()
