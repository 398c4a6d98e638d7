"""``python -m amqpd``: the same as the ``amqpd`` command."""

from amqpd.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
