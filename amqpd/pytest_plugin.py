"""pytest plugin (entry point ``pytest11``): fixtures that run an amqpd broker for a test suite.

Installed with amqpd, so any project can test its AMQP code against a real broker with
``pip install amqpd`` alone:

- ``amqpd_server`` (session scope): starts ``python -m amqpd --listen 127.0.0.1:0`` with a
  temporary data directory, waits for its ready line, yields an ``AmqpdServer`` (``.url``,
  ``.host``, ``.port``), stops it with SIGTERM at the end, and fails the run if the broker
  crashed, did not shut down cleanly, or dropped a connection on an internal error (541: a
  bug in amqpd). Its whole log is kept in a file next to the data directory (``.log_path``).
- ``amqp_url`` (function scope): ``$AMQP_URL`` when set (e.g. a RabbitMQ to compare
  against; then no amqpd is started), else the ``amqpd_server`` URL.

Rules of this module:
- No sleeps and no polling: the ready line is read from the broker's stderr pipe by a thread,
  with a timeout. The thread keeps draining the pipe afterwards (so the broker never blocks
  on a full pipe) into the log file and keeps the last lines for the failure report.
"""

from __future__ import annotations

import collections
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import attrs
import pytest

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
_LOG_TAIL_LINES = 200

# What the server logs when a connection's code raised (amqpd/server/connection_task.py).
_INTERNAL_ERROR = "connection crashed"

# Matches the console and the JSON form of the ready line; IPv6 hosts come in brackets.
_READY = re.compile(r"listening on (\[[0-9A-Fa-f:.%]+\]|[^\s\[\]:\"',]+):(\d+)")


def parse_ready_line(line: str) -> tuple[str, int] | None:
    """``(host, port)`` of the first address on amqpd's ready line, else None."""
    match = _READY.search(line)
    if match is None:
        return None
    return match.group(1).strip("[]"), int(match.group(2))


class _LogPump:
    """Drains the broker's stderr into a log file: hands out the ready address, keeps the
    last lines and every internal-error line for the failure report."""

    def __init__(self, pipe: IO[str], log_path: Path) -> None:
        self.log_path = log_path
        self.tail: collections.deque[str] = collections.deque(maxlen=_LOG_TAIL_LINES)
        self.internal_errors: list[str] = []
        self._ready: queue.Queue[tuple[str, int] | None] = queue.Queue()
        self._thread = threading.Thread(
            target=self._run, args=(pipe,), name="amqpd-log", daemon=True
        )
        self._thread.start()

    def _run(self, pipe: IO[str]) -> None:
        announced = False
        with self.log_path.open("w", encoding="utf-8") as out:
            for line in pipe:
                out.write(line)
                out.flush()
                self.tail.append(line.rstrip("\n"))
                if _INTERNAL_ERROR in line:
                    self.internal_errors.append(line.rstrip("\n"))
                if not announced and (address := parse_ready_line(line)) is not None:
                    announced = True
                    self._ready.put(address)
        self._ready.put(None)  # EOF: the broker exited (before or after being ready)

    def wait_ready(self, timeout: float) -> tuple[str, int] | None:
        try:
            return self._ready.get(timeout=timeout)
        except queue.Empty:
            return None

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def text(self) -> str:
        return "\n".join(self.tail)


@attrs.define
class AmqpdServer:
    """A running amqpd subprocess."""

    host: str
    port: int
    process: subprocess.Popen[str]
    data_dir: Path
    _log: _LogPump
    _terminated: bool = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"amqp://guest:guest@{host}:{self.port}/%2F"

    @property
    def log_tail(self) -> str:
        return self._log.text()

    @property
    def log_path(self) -> Path:
        """The broker's whole log (stderr) so far."""
        return self._log.log_path

    @property
    def internal_errors(self) -> list[str]:
        """Log lines of connections dropped because amqpd's own code raised (bugs)."""
        return list(self._log.internal_errors)

    def terminate(self) -> None:
        """Send SIGTERM (graceful shutdown) once; a second one would mean "stop at once"."""
        if not self._terminated and self.process.poll() is None:
            self._terminated = True
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM (graceful shutdown), then SIGKILL after ``timeout``; returns the exit code."""
        self.terminate()
        if self.process.poll() is None:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.join(timeout)
        return self.process.returncode


def start_amqpd(
    data_dir: Path,
    *,
    extra_args: Sequence[str] = (),
    timeout: float = START_TIMEOUT,
    log_path: Path | None = None,
) -> AmqpdServer:
    """Start ``python -m amqpd`` on a free loopback port and wait until it is ready.

    Its stderr goes to ``log_path`` (default: ``amqpd.log`` next to ``data_dir``).
    """
    if log_path is None:
        log_path = data_dir.parent / f"{data_dir.name}.amqpd.log"
    command = [
        sys.executable,
        "-m",
        "amqpd",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        str(data_dir),
        *extra_args,
    ]
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stderr is not None
    log = _LogPump(process.stderr, log_path)
    address = log.wait_ready(timeout)
    if address is None:
        process.kill()
        process.wait()
        log.join(5)
        raise RuntimeError(
            f"amqpd did not become ready within {timeout} s (exit code {process.returncode}); "
            f"command: {' '.join(command)}\n--- amqpd log ({log_path}) ---\n{log.text()}"
        )
    return AmqpdServer(address[0], address[1], process, data_dir, log)


@pytest.fixture(scope="session")
def amqpd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AmqpdServer]:
    """An amqpd broker for the whole test session, on 127.0.0.1 and a free port."""
    server = start_amqpd(tmp_path_factory.mktemp("amqpd-data"))
    yield server
    stop_and_check(server)


def stop_and_check(server: AmqpdServer) -> None:
    """Stop ``server``; fail the run if it crashed, did not stop cleanly or hit a bug."""
    crashed_early = server.process.poll() is not None
    code = server.stop()
    if crashed_early or code != 0:
        what = "crashed during the tests" if crashed_early else "did not stop cleanly"
        pytest.fail(
            f"amqpd {what} (exit code {code}); full log: {server.log_path}\n"
            f"--- amqpd log (last lines) ---\n{server.log_tail}",
            pytrace=False,
        )
    if server.internal_errors:
        # A connection dropped with 541 INTERNAL_ERROR is a bug in amqpd: never let it pass.
        lines = "\n".join(server.internal_errors[:20])
        pytest.fail(
            f"amqpd dropped {len(server.internal_errors)} connection(s) on internal errors; "
            f"tracebacks in {server.log_path}\n{lines}",
            pytrace=False,
        )


@pytest.fixture
def amqp_url(request: pytest.FixtureRequest) -> str:
    """The broker to test against: ``$AMQP_URL`` if set, else amqpd started for this session."""
    url = os.environ.get("AMQP_URL")
    if url:
        return url
    server: AmqpdServer = request.getfixturevalue("amqpd_server")
    if server.process.poll() is not None:
        pytest.fail(
            f"amqpd exited (code {server.process.returncode}); full log: {server.log_path}\n"
            f"--- amqpd log (last lines) ---\n{server.log_tail}",
            pytrace=False,
        )
    return server.url
