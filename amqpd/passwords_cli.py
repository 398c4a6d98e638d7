"""``amqpd hash-password``: print a password hash to paste into the config file.

Rules of this module (process edge):
- The password comes from stdin (one line, its newline dropped) when stdin is not a
  terminal, else from a prompt without echo, asked twice. It is never an argument: argv
  is visible to every user of the machine (``ps``).
- The output is one line: the hash (``$scrypt$...`` by default, or a RabbitMQ base64 hash
  with ``--algorithm rabbit_password_hashing_sha256``), for ``users.NAME.password_hash``.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence
from typing import TextIO

from amqpd.broker.passwords import ALGORITHMS, SCRYPT, hash_password

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amqpd hash-password",
        description="Print a salted hash of a password (read from stdin or a prompt) for "
        "the users.NAME.password_hash key of the config file.",
    )
    parser.add_argument(
        "--algorithm",
        choices=ALGORITHMS,
        default=SCRYPT,
        help="scrypt (default) or one of RabbitMQ's formats; with a RabbitMQ format also "
        "set users.NAME.hashing_algorithm",
    )
    return parser


def read_password(stdin: TextIO) -> str:
    if not stdin.isatty():
        line = stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise ValueError("the passwords do not match")
    return first


def main(argv: Sequence[str], stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        password = read_password(stdin if stdin is not None else sys.stdin)
    except ValueError as exc:
        parser.exit(EXIT_USAGE, f"{parser.prog}: error: {exc}\n")
    except (EOFError, KeyboardInterrupt):
        parser.exit(EXIT_USAGE, f"{parser.prog}: error: no password given\n")
    if not password:
        parser.exit(EXIT_USAGE, f"{parser.prog}: error: the password is empty\n")
    out = stdout if stdout is not None else sys.stdout
    print(hash_password(password, args.algorithm).value, file=out)
    return 0
