"""methods.py is generated: regenerating it must give the committed text."""

from __future__ import annotations

from pathlib import Path

import pytest

from amqpd.protocol import _generate


def test_methods_module_is_current() -> None:
    text = _generate.generate(_generate.load_spec())
    assert _generate.OUT_PATH.read_text(encoding="utf-8") == text, (
        "amqpd/protocol/methods.py is stale: run python -m amqpd.protocol._generate"
    )


def test_vendored_spec_matches_shared_copy() -> None:
    # ../shared beside the repository (the brief's layout; CI lays a copy there too).
    shared = Path(__file__).resolve().parents[3] / "shared" / "spec" / _generate.SPEC_PATH.name
    if not shared.exists():
        pytest.skip("no shared spec folder on this machine")
    assert shared.read_bytes() == _generate.SPEC_PATH.read_bytes()
