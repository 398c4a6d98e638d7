"""From files to a running broker's state: config + definitions file → ``Broker``; reload.

Rules of this module (process edge):
- ``build_broker`` is the one way the process makes its broker, and ``reloader`` the SIGHUP
  action; both go through ``effective_definitions`` and ``Broker.apply_definitions``, so a
  reload means exactly what a restart would (except for topology, declared at start only).
- Every unusable file is one ``ConfigFileError`` line; a reload with one changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from amqpd.broker.broker import Broker
from amqpd.broker.definitions import Definitions
from amqpd.config import Config, ConfigFileError, default_definitions, read_config_file
from amqpd.definitions_import import Spool
from amqpd.definitions_io import (
    DefinitionsError,
    Imported,
    check,
    declare_topology,
    merge,
    read_definitions,
)


def effective_definitions(
    config: Config | None, definitions: Path | None = None
) -> tuple[Definitions, Imported | None]:
    """The config's definitions plus a RabbitMQ definitions file's (``--definitions``)."""
    base = config.definitions if config is not None else default_definitions()
    if definitions is None:
        return base, None
    try:
        imported = read_definitions(definitions)
        loopback = config.loopback_users if config is not None else ("guest",)
        merged = merge(base, imported.definitions, loopback)
        check(merged)
    except DefinitionsError as exc:
        text = str(exc)
        raise ConfigFileError(
            text if text.startswith(str(definitions)) else f"{definitions}: {text}"
        ) from None
    return merged, imported


def build_broker(
    config: Config | None = None,
    definitions: Path | None = None,
    warn: Callable[[str], None] | None = None,
) -> Broker:
    """The broker the config (and definitions file) describe; ``ConfigFileError`` if unusable.

    ``None`` for both: RabbitMQ's defaults. Imported exchanges, queues and bindings are
    declared; whatever the definitions file has that amqpd does not read goes to ``warn``.
    """
    broker, declare = prepare_broker(config, definitions, warn)
    declare()
    return broker


def prepare_broker(
    config: Config | None = None,
    definitions: Path | None = None,
    warn: Callable[[str], None] | None = None,
    saved: Sequence[Imported] = (),
) -> tuple[Broker, Callable[[], None]]:
    """``build_broker`` in two steps: the broker with its vhosts, users, permissions and
    policies, and a function that declares the imported topology.

    The CLI recovers the data directory between the two, so that imported durable
    exchanges, queues and bindings reach the durable log, as RabbitMQ imports definitions
    after its own recovery at boot. ``saved``: the imports ``amqpd import-definitions``
    made earlier (definitions_import.saved_imports), merged over the rest in their order.
    """
    if config is None and definitions is None and not saved:
        return Broker(), lambda: None
    wanted, imported = effective_definitions(config, definitions)
    wanted = with_imports(wanted, saved, config)
    broker = Broker(default_user=False)
    broker.max_connections = config.max_connections if config is not None else None
    broker.apply_definitions(wanted)

    def declare() -> None:
        for earlier in saved:
            try:
                declare_topology(broker, earlier)
            except DefinitionsError as exc:
                raise ConfigFileError(f"an earlier import-definitions: {exc}") from None
        if imported is None:
            return
        try:
            declare_topology(broker, imported)
        except DefinitionsError as exc:
            raise ConfigFileError(f"{definitions}: {exc}") from None
        for item in imported.unsupported:
            if warn is not None:
                warn(f"definitions file {definitions}: not imported: {item}")

    return broker, declare


def with_imports(
    base: Definitions, imports: Sequence[Imported], config: Config | None
) -> Definitions:
    """``base`` with every import merged over it, oldest first (same names replaced)."""
    loopback = config.loopback_users if config is not None else ("guest",)
    merged = base
    for imported in imports:
        merged = merge(merged, imported.definitions, loopback)
    if imports:
        try:
            check(merged)
        except DefinitionsError as exc:
            raise ConfigFileError(f"an earlier import-definitions: {exc}") from None
    return merged


def reloader(
    path: Path | None,
    broker: Broker,
    definitions: Path | None = None,
    spool: Spool | None = None,
    saved: Sequence[Imported] = (),
    keep_in: Path | None = None,
) -> Callable[[float], list[tuple[Any, str]]]:
    """The SIGHUP action: re-read the config (and definitions) file, apply to ``broker``.

    An unusable file changes nothing and is logged. Listener, limit and storage settings
    need a restart; vhosts, users, permissions, topic permissions, policies (re-applied to
    existing queues and exchanges at ``now``), vhost limits and the node connection limit
    apply at once. Imported topology is not re-declared.

    ``spool``: files ``amqpd import-definitions`` left (definitions_import.py). Each is
    merged over the config's definitions, for this reload and every later one, and its
    topology declared once; a file that cannot be used is logged and dropped. ``saved``:
    the imports made before this start; ``keep_in``: where an accepted file is kept for
    the next start (definitions_import.imports_dir).
    """
    log = structlog.get_logger("amqpd.config")
    imports: list[Imported] = list(saved)  # every import so far: later reloads keep them

    def reload(now: float | None = None) -> list[tuple[Any, str]]:
        try:
            config = read_config_file(path) if path is not None else None
            wanted, _ = effective_definitions(config, definitions)
        except ConfigFileError as exc:
            log.error("reload refused, nothing changed", error=str(exc))
            return []  # spooled imports wait for a reload that can read the config
        loopback = config.loopback_users if config is not None else ("guest",)

        def layered(extra: list[Imported]) -> Definitions:
            merged = wanted
            for imported in extra:
                merged = merge(merged, imported.definitions, loopback)
            return merged

        new: list[Imported] = []
        for file, result in spool.take() if spool is not None else []:
            try:
                if isinstance(result, DefinitionsError):
                    raise result
                check(layered([*imports, *new, result]))
            except DefinitionsError as exc:
                log.error("import refused, nothing imported", file=str(file), error=str(exc))
                if spool is not None:
                    spool.settle(file, None)
                continue
            new.append(result)
            if spool is not None:
                problem = spool.settle(file, keep_in)
                if problem is not None:
                    log.warning(
                        "import applied but not kept for the next start",
                        file=str(file),
                        error=problem,
                    )
        imports.extend(new)
        report = broker.apply_definitions(layered(imports), now)
        broker.max_connections = config.max_connections if config is not None else None
        for change in report.changes:
            log.info("reload: " + change)
        for vhost in report.kept_vhosts:
            log.warning(
                "reload: vhost not deleted: it still holds messages; empty it first",
                vhost=vhost,
            )
        for imported in new:
            _declare_imported(broker, imported, log)
        log.info("reload done", config=str(path), connections_closed=len(report.to_close))
        return report.to_close

    return reload


def _declare_imported(broker: Broker, imported: Imported, log: Any) -> None:
    try:
        declare_topology(broker, imported)
    except DefinitionsError as exc:
        log.error("import: topology not fully declared", error=str(exc))
    for item in imported.unsupported:
        log.warning("import: not imported: " + item)
    d = imported.definitions
    log.info(
        "definitions imported",
        users=len(d.users),
        vhosts=len(d.vhosts),
        permissions=len(d.permissions) + len(d.topic_permissions),
        policies=len(d.policies),
        exchanges=len(imported.exchanges),
        queues=len(imported.queues),
        bindings=len(imported.bindings),
        not_imported=len(imported.unsupported),
    )
