"""The data directory lock (real files: flock is the point)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from amqpd.storage.lock import DataDirError, lock_data_dir


def test_second_lock_in_another_process_fails_with_the_holder(tmp_path: Path) -> None:
    lock = lock_data_dir(tmp_path)
    script = (
        "import sys; from pathlib import Path; from amqpd.storage.lock import *\n"
        "try:\n    lock_data_dir(Path(sys.argv[1]))\n"
        "except DataDirError as e:\n    print(e); sys.exit(3)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode == 3
    assert "in use by another amqpd" in result.stdout and str(os.getpid()) in result.stdout
    lock.release()
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True)
    assert result.returncode == 0


def test_same_process_second_lock_fails_too(tmp_path: Path) -> None:
    lock = lock_data_dir(tmp_path)
    with pytest.raises(DataDirError, match="in use"):
        lock_data_dir(tmp_path)
    lock.release()
    lock_data_dir(tmp_path).release()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permissions")
def test_unwritable_directory(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(DataDirError, match="cannot use data directory"):
            lock_data_dir(tmp_path)
    finally:
        tmp_path.chmod(0o700)
