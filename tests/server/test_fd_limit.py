"""amqpd raises its soft file-descriptor limit to the hard limit at start (README)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_soft_limit_is_raised_to_the_hard_limit() -> None:
    # In a child process: lowering our own soft limit could starve the test run.
    code = textwrap.dedent(
        """
        import resource
        from amqpd.server.resources import raise_fd_limit
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        low = min(256, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
        old, new = raise_fd_limit()
        assert old == low, (old, low)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == new
        assert new == hard or hard == resource.RLIM_INFINITY, (new, hard)
        # Already at the hard limit: nothing to do.
        assert raise_fd_limit() == (new, new)
        print("ok")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
