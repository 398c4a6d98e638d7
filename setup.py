"""Optional compiled build: ``AMQPD_COMPILE=1 pip install --no-build-isolation .``

Everything else about the package is in pyproject.toml. With ``AMQPD_COMPILE=1`` the hot
modules below (the frame codec and the session layer, which every message goes through
several times) are compiled with mypyc from the same typed sources; the pure-Python
modules stay the reference and the default, and CI tests both (docs/performance.md
"Compiled build"). ``--no-build-isolation`` because mypyc comes from the environment's
mypy (the test extras), not from the build requirements; setuptools and wheel must be
installed in that environment too.
"""

from __future__ import annotations

import os

from setuptools import setup

# Modules compiled by AMQPD_COMPILE=1. The broker model is not among them: compiled, it
# was slower (its attrs classes and protocols cross the compiled/interpreted boundary on
# every call); the message class also changes its own __class__ (SpilledMessage), which
# a native class cannot.
COMPILED = [
    "amqpd/protocol/frames.py",
    "amqpd/protocol/assembler.py",
    "amqpd/protocol/properties.py",
    "amqpd/session/connection.py",
    "amqpd/session/publish.py",
    "amqpd/session/channel.py",
    "amqpd/session/consumer.py",
    "amqpd/session/confirms.py",
]

ext_modules = []
if os.environ.get("AMQPD_COMPILE") == "1":
    from mypyc.build import mypycify

    ext_modules = mypycify(COMPILED, opt_level="3")

setup(ext_modules=ext_modules)
