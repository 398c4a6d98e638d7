"""``--pid-file`` and ``amqpd reload``: find the running broker and send it SIGHUP.

Rules of this module (process edge):
- The broker writes its pid (one decimal line) when it starts and removes the file when it
  exits; SIGHUP is ignored until the reload handler is installed, so a reload sent while
  the broker starts is lost rather than killing it (SIGHUP's default action).
- ``amqpd reload --pid-file FILE`` reports a missing or unreadable file, or a broker that is
  not running, as one ``amqpd reload: error: ...`` line.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path


class PidFileError(Exception):
    pass


@contextlib.contextmanager
def pid_file(path: Path | None) -> Iterator[None]:
    """Write our pid to ``path`` for the duration (nothing when ``path`` is None)."""
    if path is None:
        yield
        return
    # Until run_broker handles them: a reload or an export request that comes early is
    # dropped rather than killing the broker (SIGHUP's and SIGUSR1's default action).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    try:
        path.write_text(f"{os.getpid()}\n")
    except OSError as exc:
        raise PidFileError(f"cannot write pid file {path}: {exc.strerror or exc}") from None
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


def clear_leftovers(directory: Path) -> list[str]:
    """Remove the files an earlier broker left in a rendezvous directory next to its pid
    file (the import spool, the export requests): at start, before the pid file names this
    broker, so none of them can be for it. Returns the names removed, sorted."""
    try:
        leftovers = sorted(p for p in directory.iterdir() if p.is_file())
    except OSError:
        return []
    removed = []
    for path in leftovers:
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path.name)
    return removed


def read_pid(path: Path) -> int:
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise PidFileError(f"cannot read pid file {path}: {exc.strerror or exc}") from None
    if not text.isdigit() or int(text) <= 0:
        raise PidFileError(f"pid file {path} does not hold a process id: {text[:40]!r}")
    return int(text)


def add_pid_file_argument(parser: argparse.ArgumentParser) -> None:
    """``--pid-file FILE`` (required) of the subcommands that talk to a running broker."""
    parser.add_argument(
        "--pid-file",
        type=Path,
        required=True,
        metavar="FILE",
        help="the file the broker was started with (--pid-file)",
    )


def reload_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="amqpd reload",
        description="Ask the running broker to re-read its configuration (sends SIGHUP).",
    )
    add_pid_file_argument(parser)
    args = parser.parse_args(argv)
    try:
        pid = read_pid(args.pid_file)
        os.kill(pid, signal.SIGHUP)
    except PidFileError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    except ProcessLookupError:
        parser.exit(1, f"{parser.prog}: error: no broker running with pid {pid}\n")
    except PermissionError:
        parser.exit(1, f"{parser.prog}: error: not allowed to signal pid {pid}\n")
    return 0
