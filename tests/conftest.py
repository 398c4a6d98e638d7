"""Fixtures shared by the tests that run the real ``amqpd`` CLI on a data directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from amqpd.pytest_plugin import AmqpdServer


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def servers() -> Iterator[list[AmqpdServer]]:
    """Brokers a test started (append them); any still running at the end is killed."""
    started: list[AmqpdServer] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()
