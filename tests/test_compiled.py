"""The optional compiled build (setup.py, AMQPD_COMPILE=1) is what CI's second stage tests.

CI runs part of the suite again against an install built with mypyc and sets
``AMQPD_EXPECT_COMPILED=1`` there, so a build that silently fell back to the pure-Python
modules (or a test run that imported the source tree instead) fails instead of passing
for the wrong reason. Without the variable the pure-Python modules must be in use: they
are the reference implementation the rest of the suite tests.
"""

from __future__ import annotations

import importlib
import os

import pytest

COMPILED = [
    "amqpd.protocol.frames",
    "amqpd.protocol.assembler",
    "amqpd.protocol.properties",
    "amqpd.session.connection",
    "amqpd.session.publish",
    "amqpd.session.channel",
    "amqpd.session.consumer",
    "amqpd.session.confirms",
]


@pytest.mark.parametrize("name", COMPILED)
def test_build_flavour_is_the_expected_one(name: str) -> None:
    path = importlib.import_module(name).__file__ or ""
    compiled = not path.endswith(".py")
    assert compiled == (os.environ.get("AMQPD_EXPECT_COMPILED") == "1"), path


def test_setup_compiles_exactly_these_modules() -> None:
    import ast
    from pathlib import Path

    setup = Path(__file__).resolve().parents[1] / "setup.py"
    tree = ast.parse(setup.read_text())
    listed = next(
        ast.literal_eval(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "COMPILED" for t in node.targets)
    )
    assert [p.removesuffix(".py").replace("/", ".") for p in listed] == COMPILED
