"""``amqpd import-definitions FILE``: load a RabbitMQ definitions file into the running broker.

Rules of this module (process edge; the design is in docs/internals.md, "process edge"):
- There is no control channel: the pid file (``--pid-file``, as for ``amqpd reload``) is the
  rendezvous. The subcommand reads and validates FILE (one ``amqpd import-definitions:
  error: ...`` line and exit 2 for a mistake), copies it into the import spool next to the
  pid file (``<pid file>.import/``, written under a temporary name and renamed, so the
  broker never reads half a file), then sends SIGHUP.
- The broker's reload (``bootstrap.reloader``) takes the spooled files in name order
  (``Spool.take``): each one is merged over the config's definitions (an entry of the same
  name is replaced, as ``rabbitmqctl import_definitions`` does; nothing is deleted), kept
  for every later reload, applied, and its exchanges, queues and bindings declared (durable
  ones reach the durable log as any declare does). What was imported and what was not
  supported is logged; the spool file is removed, whether it was usable or not.
- An accepted import is kept in the data directory (``<data-dir>/imported-definitions/``,
  ``saved_imports``): at every start it is merged over the config again, in the order the
  imports came, so imported users, vhosts, permissions and policies survive a restart as
  they do in RabbitMQ (durable topology is in the durable log anyway). A refused file is
  removed from the spool and never kept. A spool file is removed once settled even when
  keeping it failed (logged), so no later reload imports it again; a data directory on
  another file system than the spool gets a copy.
- The spool belongs to one broker run: at start, before the pid file names the new
  broker, whatever it still holds is removed and logged (``Spool.clear``), so a file
  spooled for a broker that crashed before its SIGHUP, or by an ``import-definitions``
  killed between spooling and signalling, is never imported by a later run's reload.
  ``import-definitions`` needs the new pid file, so it cannot spool before the clear.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from amqpd.definitions_io import DefinitionsError, Imported, read_definitions
from amqpd.pidfile import PidFileError, add_pid_file_argument, clear_leftovers, read_pid


def spool_dir(pid_file: Path) -> Path:
    """Where ``import-definitions`` leaves files for the broker whose pid is in ``pid_file``."""
    return pid_file.with_name(pid_file.name + ".import")


class Spool:
    """The broker's side of the import spool."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def pending(self) -> list[Path]:
        try:
            names = sorted(p for p in self.directory.iterdir() if p.suffix == ".json")
        except OSError:
            return []
        return names

    def take(self) -> list[tuple[Path, Imported | DefinitionsError]]:
        """Every spooled file, read (or the reason it cannot be); ``settle`` each after."""
        out: list[tuple[Path, Imported | DefinitionsError]] = []
        for path in self.pending():
            try:
                result: Imported | DefinitionsError = read_definitions(path)
            except DefinitionsError as exc:
                result = exc
            out.append((path, result))
        return out

    def clear(self) -> list[str]:
        """Remove what an earlier broker's spool still holds (at start, before the pid
        file names this broker): a file spooled for a broker that crashed before its
        SIGHUP, or by an ``import-definitions`` killed before it signalled, or a
        half-written temporary. Returns the names removed."""
        return clear_leftovers(self.directory)

    def settle(self, path: Path, keep_in: Path | None) -> str | None:
        """Move an accepted file into ``keep_in`` (the saved imports), else remove it.

        The spool file is gone afterwards whatever happens, so no later reload imports it
        again. The spool (next to the pid file, often /run) and the data directory may be
        on different file systems: then the file is copied (temporary name, fsync,
        rename). Returns why it could not be kept, None when it was (or was not to be).
        """
        problem = None
        if keep_in is not None:
            try:
                keep_in.mkdir(parents=True, exist_ok=True)
                try:
                    path.rename(keep_in / path.name)
                    return None
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
                _copy(path, keep_in / path.name)
            except OSError as exc:
                problem = f"cannot keep it in {keep_in}: {exc.strerror or exc}"
        with contextlib.suppress(OSError):
            path.unlink()
        return problem


def _copy(source: Path, target: Path) -> None:
    temp = target.with_name(f".{target.name}.tmp")
    with temp.open("wb") as f:
        f.write(source.read_bytes())
        f.flush()
        os.fsync(f.fileno())
    temp.rename(target)


def imports_dir(data_dir: Path) -> Path:
    """Where accepted imports are kept, to be applied again at every start."""
    return data_dir / "imported-definitions"


def saved_imports(directory: Path) -> list[Imported]:
    """The imports kept in ``directory``, oldest first; ``DefinitionsError`` if one is bad."""
    try:
        files = sorted(p for p in directory.iterdir() if p.suffix == ".json")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise DefinitionsError(str(directory), f"cannot read: {exc.strerror or exc}") from None
    return [read_definitions(path) for path in files]


def _spool(directory: Path, doc: object) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns():020d}-{os.getpid()}"
    tmp = directory / f".{name}.tmp"
    tmp.write_text(json.dumps(doc))
    final = directory / f"{name}.json"
    tmp.rename(final)
    return final


def import_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="amqpd import-definitions",
        description="Load a RabbitMQ definitions file (rabbitmqctl export_definitions) into "
        "the running broker: users, vhosts, permissions, topic permissions, vhost limits, "
        "policies, exchanges, queues and bindings. The broker logs what it imported and "
        "what it does not support.",
    )
    parser.add_argument("file", type=Path, metavar="FILE", help="the definitions JSON")
    add_pid_file_argument(parser)
    args = parser.parse_args(argv)
    try:
        read_definitions(args.file)  # refuse a bad file here, with its one-line reason
        doc = json.loads(args.file.read_bytes())
        pid = read_pid(args.pid_file)
    except (DefinitionsError, PidFileError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    try:
        spooled = _spool(spool_dir(args.pid_file), doc)
    except OSError as exc:
        parser.exit(2, f"{parser.prog}: error: cannot write the import spool: {exc}\n")
    try:
        os.kill(pid, signal.SIGHUP)
    except (ProcessLookupError, PermissionError) as exc:
        spooled.unlink(missing_ok=True)
        reason = "no broker running" if isinstance(exc, ProcessLookupError) else "not allowed"
        parser.exit(1, f"{parser.prog}: error: {reason} (pid {pid})\n")
    print(f"{args.file}: handed to the broker (pid {pid}); see its log for the result")
    return 0
