"""The layering of docs/internals.md, enforced: imports point down, only the edge uses trio.

Layers, top to bottom: edge (cli, config, config_table, bootstrap, definitions_io,
definitions_export, tls, passwords_cli, pidfile, log, pytest_plugin, __main__) > server > session >
broker > storage > protocol > errors. A module may import its own layer and any layer its row lists.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import amqpd

PACKAGE_DIR = Path(amqpd.__file__).parent
CORE_PACKAGES = ["amqpd.protocol", "amqpd.storage", "amqpd.broker", "amqpd.session"]

ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "protocol": {"errors"},
    "storage": {"protocol", "errors"},
    "broker": {"storage", "protocol", "errors"},
    "session": {"broker", "storage", "protocol", "errors"},
    "server": {"session", "broker", "storage", "protocol", "errors"},
}
# Only these may import trio: everything below the server never awaits.
TRIO_ALLOWED = ("amqpd.server", "amqpd.cli", "amqpd.pytest_plugin")


def layer_of(module: str) -> str:
    """``amqpd.session.channel`` -> ``session``; the package root is everyone's leaf."""
    parts = module.split(".")
    if parts == ["amqpd"]:
        return "root"
    return parts[1] if parts[1] in ALLOWED else "edge"


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module an import statement names (anywhere in the file, TYPE_CHECKING included)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # `from amqpd import session` imports a layer too, not just the package root.
            if target == "amqpd":
                found += [
                    (node.lineno, f"amqpd.{alias.name}")
                    for alias in node.names
                    if (PACKAGE_DIR / alias.name).is_dir()
                    or (PACKAGE_DIR / f"{alias.name}.py").is_file()
                ]
    return found


def all_sources() -> list[Path]:
    return sorted(p for p in PACKAGE_DIR.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_trio_outside_the_edge():
    offenders = []
    for path in all_sources():
        name = module_name(path)
        if name.startswith(TRIO_ALLOWED):
            continue
        for lineno, target in imported_modules(path):
            if target == "trio" or target.startswith("trio."):
                offenders.append(f"{path.relative_to(PACKAGE_DIR.parent)}:{lineno} imports trio")
    assert not offenders, "\n".join(offenders)


def test_imports_point_down():
    offenders = []
    for path in all_sources():
        name = module_name(path)
        layer = layer_of(name)
        if layer in ("edge", "root"):
            continue
        for lineno, target in imported_modules(path):
            if target != "amqpd" and not target.startswith("amqpd."):
                continue
            target_layer = layer_of(target)
            if target_layer in (layer, "root") or target_layer in ALLOWED[layer]:
                continue
            where = f"{path.relative_to(PACKAGE_DIR.parent)}:{lineno}"
            offenders.append(f"{where}: {layer} must not import {target} ({target_layer})")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("module", ["amqpd.session.x", "amqpd.errors", "amqpd.cli", "amqpd"])
def test_layer_of(module):
    assert (
        layer_of(module)
        == {
            "amqpd.session.x": "session",
            "amqpd.errors": "errors",
            "amqpd.cli": "edge",
            "amqpd": "root",
        }[module]
    )


def test_core_never_loads_trio():
    """Import every core module in a fresh interpreter; trio must not come along."""
    script = textwrap.dedent(
        f"""
        import importlib, pkgutil, sys
        for name in {CORE_PACKAGES!r}:
            package = importlib.import_module(name)
            for info in pkgutil.walk_packages(package.__path__, name + "."):
                importlib.import_module(info.name)
                if "trio" in sys.modules:
                    sys.exit("importing " + info.name + " loaded trio")
        if "trio" in sys.modules:
            sys.exit("importing the core packages loaded trio")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
