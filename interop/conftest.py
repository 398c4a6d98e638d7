"""Generic fixtures for the interop suite: broker URL, unique names, pika connections, cleanup.

* ``amqp_url``: comes from amqpd's pytest plugin (``amqpd/pytest_plugin.py``) when it defines
  one; until then this file provides a stand-in that reads ``AMQP_URL``.
* ``names``: unique queue/exchange names per test; everything handed out is deleted at teardown.
* ``connect``: factory of ``pika.BlockingConnection``; every connection is closed at teardown
  (before ``names`` cleans up, so exclusive queues are already gone).
* ``conn`` / ``ch``: one connection and one channel, for the common case.
* ``configured_amqpd``: a factory that starts another amqpd with a given TOML config file
  (``amqpd --config``), through the pytest plugin's ``start_amqpd``; all stopped (and
  checked for crashes and internal errors) at the end of the session.

pika's BlockingConnection waits forever for a reply that never comes, so tests using
``connect`` run under an alarm (``INTEROP_TEST_TIMEOUT`` seconds, default 60; 0 disables):
a broker that hangs fails the test instead of the whole run.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pika.exceptions
import pytest

# pytest runs with --import-mode=importlib, which does not put test dirs on sys.path: make
# `from helpers import ...` work for the modules in this directory.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


def _plugin_has_amqp_url() -> bool:
    try:
        from amqpd import pytest_plugin
    except Exception:
        return False
    return hasattr(pytest_plugin, "amqp_url")


if not _plugin_has_amqp_url():
    # Stand-in until amqpd's plugin provides the fixture; it must not shadow the real one.
    @pytest.fixture
    def amqp_url() -> str:
        url = os.environ.get("AMQP_URL")
        if not url:
            pytest.skip("AMQP_URL is not set and amqpd's pytest plugin has no amqp_url fixture yet")
        return url


_TEST_TIMEOUT = float(os.environ.get("INTEROP_TEST_TIMEOUT", "60"))
_TEARDOWN_TIMEOUT = 10.0


@contextlib.contextmanager
def _alarm(seconds: float, what: str) -> Iterator[None]:
    """Raise TimeoutError in the main thread after ``seconds`` (no-op where not possible)."""
    if (
        seconds <= 0
        or not hasattr(signal, "setitimer")
        or threading.current_thread() is not threading.main_thread()
    ):
        yield
        return

    def on_alarm(_signum: int, _frame: Any) -> None:
        raise TimeoutError(f"{what} took over {seconds:g}s: is the broker hung?")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Names:
    """Unique names for one test; the ones handed out are deleted at teardown."""

    def __init__(self, test_name: str) -> None:
        slug = re.sub(r"[^A-Za-z0-9_]+", "_", test_name)[:48]
        self.base = f"interop.{slug}.{uuid.uuid4().hex[:10]}"
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def queue(self, suffix: str = "q") -> str:
        name = f"{self.base}.{suffix}"
        self.queues.append(name)
        return name

    def exchange(self, suffix: str = "x") -> str:
        name = f"{self.base}.{suffix}"
        self.exchanges.append(name)
        return name

    def add_queue(self, name: str) -> str:
        """Register a queue named elsewhere (e.g. server-named) for cleanup."""
        self.queues.append(name)
        return name


def _cleanup(url: str, names: Names) -> None:
    if not (names.queues or names.exchanges):
        return
    try:
        with _alarm(_TEARDOWN_TIMEOUT, "interop cleanup"):
            _cleanup_unguarded(url, names)
    except TimeoutError:
        pass


def _cleanup_unguarded(url: str, names: Names) -> None:
    try:
        conn = pika.BlockingConnection(pika.URLParameters(url))
    except Exception:
        return  # broker gone; nothing we can clean
    try:
        ch = conn.channel()
        for kind, items in (("queue", names.queues), ("exchange", names.exchanges)):
            for name in dict.fromkeys(items):
                try:
                    if kind == "queue":
                        ch.queue_delete(name)
                    else:
                        ch.exchange_delete(name)
                except pika.exceptions.ChannelClosed:
                    ch = conn.channel()
    except Exception:
        pass
    finally:
        with contextlib.suppress(Exception):
            conn.close()


@pytest.fixture
def names(request: pytest.FixtureRequest, amqp_url: str) -> Iterator[Names]:
    n = Names(request.node.name)
    yield n
    _cleanup(amqp_url, n)


ConnectFactory = Callable[..., pika.BlockingConnection]


@pytest.fixture
def connect(amqp_url: str, names: Names) -> Iterator[ConnectFactory]:
    """``connect(url=None, **params)``: a BlockingConnection; ``params`` set URLParameters attrs."""
    conns: list[pika.BlockingConnection] = []

    def factory(url: str | None = None, **overrides: Any) -> pika.BlockingConnection:
        params = pika.URLParameters(url or amqp_url)
        for key, value in overrides.items():
            setattr(params, key, value)
        c = pika.BlockingConnection(params)
        conns.append(c)
        return c

    with _alarm(_TEST_TIMEOUT, "the test"):
        yield factory
    try:
        with _alarm(_TEARDOWN_TIMEOUT, "closing the test's connections"):
            for c in conns:
                try:
                    if c.is_open:
                        c.close()
                except Exception:
                    pass
    except TimeoutError:
        pass


@pytest.fixture
def conn(connect: ConnectFactory) -> pika.BlockingConnection:
    return connect()


@pytest.fixture
def ch(conn: pika.BlockingConnection) -> Any:
    return conn.channel()


ConfiguredAmqpd = Callable[[str], Any]


@pytest.fixture(scope="session")
def configured_amqpd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConfiguredAmqpd]:
    """``start(config_toml) -> AmqpdServer``: an amqpd of its own running that config."""
    from amqpd.pytest_plugin import start_amqpd, stop_and_check

    servers: list[Any] = []

    def start(config_toml: str) -> Any:
        base = tmp_path_factory.mktemp("amqpd-configured")
        config = base / "amqpd.toml"
        config.write_text(config_toml)
        server = start_amqpd(base / "data", extra_args=["--config", str(config)])
        servers.append(server)
        return server

    yield start
    for server in servers:
        stop_and_check(server)
