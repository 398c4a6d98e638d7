"""Argument tables: RabbitMQ's type names, arg equivalence and the queue x-arg validators.

Rules of this module:
- Pure functions over decoded field tables; no state.
- Every text is RabbitMQ's, checked against a live RabbitMQ (the oracle) or read from
  ``rabbit_misc.erl`` / ``rabbit_amqqueue.erl`` / ``rabbit_queue_type.erl``.
- Field values are the protocol layer's decoded values: width-keeping ``int`` subclasses
  (``Int8`` ... ``Int64``), ``Float32``, ``ByteArray``, ``Timestamp``. We recognise them by
  class name so this module does not depend on the protocol layer's import graph; a plain
  ``int`` is typed the way the encoder would send it (``I`` if it fits in int32, else ``l``).
"""

from __future__ import annotations

import decimal
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from amqpd.errors import PreconditionFailed

FieldTable = Mapping[str, Any]

# RabbitMQ's names for the AMQP field types (rabbit_binary_parser / rabbit_framing types),
# keyed by the protocol layer's class names.
_WIDTH_TYPE_NAMES: dict[str, str] = {
    "Int8": "byte",
    "UInt8": "unsignedbyte",
    "Int16": "short",
    "UInt16": "unsignedshort",
    "Int32": "signedint",
    "UInt32": "unsignedint",
    "Int64": "long",
    "Timestamp": "timestamp",
    "Float32": "float",
    "ByteArray": "binary",
}

# rabbit_misc:type_class/1: all integer widths are one class, so short 1000 == long 1000.
_INT_TYPES = frozenset(
    {"byte", "unsignedbyte", "short", "unsignedshort", "signedint", "unsignedint", "long"}
)
_FLOAT_TYPES = frozenset({"float", "double"})


def type_name(value: object) -> str:
    """RabbitMQ's name for the field type of ``value`` (as it appears in error texts)."""
    name = _WIDTH_TYPE_NAMES.get(type(value).__name__)
    if name is not None:
        return name
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "signedint" if -(2**31) <= value < 2**31 else "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, decimal.Decimal):
        return "decimal"
    if isinstance(value, str | bytes):
        return "longstr"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "table"
    if value is None:
        return "void"
    return type(value).__name__


def type_class(type_: str) -> str:
    if type_ in _INT_TYPES:
        return "int"
    if type_ in _FLOAT_TYPES:
        return "float"
    return type_


def is_int(value: object) -> bool:
    return type_name(value) in _INT_TYPES


def is_longstr(value: object) -> bool:
    return type_name(value) == "longstr"


def format_value(value: object) -> str:
    """rabbit_misc:val/1: binaries with ~ts, everything else as an Erlang term (~tp)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        return value
    return erlang_term(value)


def erlang_term(value: object) -> str:
    """Best-effort ``io_lib:format("~tp", [V])`` of a decoded field value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return repr(float(value))
    if isinstance(value, str):
        return f'<<"{value}">>'
    if isinstance(value, bytes):
        return f'<<"{value.decode("utf-8", errors="replace")}">>'
    if value is None:
        return "undefined"
    if isinstance(value, list | tuple):
        return "[" + ",".join(f"{{{type_name(v)},{erlang_term(v)}}}" for v in value) + "]"
    if isinstance(value, Mapping):
        return (
            "["
            + ",".join(f'{{<<"{k}">>,{type_name(v)},{erlang_term(v)}}}' for k, v in value.items())
            + "]"
        )
    return str(value)


def freeze(value: object) -> object:
    """A hashable, order-independent stand-in for a field value (binding identity)."""
    if isinstance(value, Mapping):
        return ("table", tuple(sorted((k, freeze(v)) for k, v in value.items())))
    if isinstance(value, list | tuple):
        return ("array", tuple(freeze(v) for v in value))
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, bytes | bytearray):
        return ("bytes", bytes(value))
    return (type_class(type_name(value)), value)


def freeze_table(table: FieldTable | None) -> object:
    if not table:
        return ()
    return freeze(table)


def _equivalent(old: object, new: object) -> bool:
    return type_class(type_name(old)) == type_class(type_name(new)) and old == new


def assert_field_equivalence(current: object, received: object, resource: str, key: str) -> None:
    """rabbit_misc:assert_field_equivalence/4."""
    if current != received:
        raise PreconditionFailed(
            f"inequivalent arg '{key}' for {resource}: received "
            f"'{format_value(received)}' but current is '{format_value(current)}'"
        )


def assert_args_equivalence(
    current: FieldTable, received: FieldTable, resource: str, keys: Sequence[str]
) -> None:
    """rabbit_misc:assert_args_equivalence/4: only ``keys`` are compared; ints by value."""
    for key in keys:
        old = current.get(key, _MISSING)
        new = received.get(key, _MISSING)
        if old is _MISSING and new is _MISSING:
            continue
        if old is _MISSING:
            raise PreconditionFailed(
                f"inequivalent arg '{key}' for {resource}: received the value "
                f"'{format_value(new)}' of type '{type_name(new)}' but current is none"
            )
        if new is _MISSING:
            raise PreconditionFailed(
                f"inequivalent arg '{key}' for {resource}: received none but current is "
                f"the value '{format_value(old)}' of type '{type_name(old)}'"
            )
        if not _equivalent(old, new):
            raise PreconditionFailed(
                f"inequivalent arg '{key}' for {resource}: received "
                f"'{format_value(new)}' but current is '{format_value(old)}'"
            )


_MISSING: Any = object()


# ---------------------------------------------------------------------------------------
# Queue argument validators: rabbit_amqqueue:declare_args/0. Each returns None when the
# value is fine, else the Erlang error term as RabbitMQ prints it with ~p in
# "invalid arg '<key>' for queue '<q>' in vhost '<v>': <term>".

_MAX_EXPIRY = 315_360_000_000  # rabbit_misc:check_expiry/1: ten years in ms.

Validator = Callable[[object, FieldTable], "str | None"]


def _int_arg(value: object) -> str | None:
    # rabbit_amqqueue:check_int_arg/2
    if not is_int(value):
        return f'"expected integer, got {type_name(value)}"'
    return None


def _non_neg_int(value: object, _args: FieldTable) -> str | None:
    err = _int_arg(value)
    if err is None and int(value) < 0:  # type: ignore[call-overload]
        return f"{{value_negative,{int(value)}}}"  # type: ignore[call-overload]
    return err


def _check_expiry(n: int) -> str | None:
    if n < 0:
        return f"{{value_negative,{n}}}"
    if n > _MAX_EXPIRY:
        return f"{{value_too_large,{n}}}"
    return None


def _expires(value: object, _args: FieldTable) -> str | None:
    err = _int_arg(value)
    if err is not None:
        return err
    n = int(value)  # type: ignore[call-overload]
    if n == 0:
        return "{value_zero,0}"
    return _check_expiry(n)


def _message_ttl(value: object, _args: FieldTable) -> str | None:
    err = _int_arg(value)
    if err is not None:
        return err
    return _check_expiry(int(value))  # type: ignore[call-overload]


def _longstr(value: object) -> str | None:
    if not is_longstr(value):
        return f"{{unacceptable_type,{type_name(value)}}}"
    return None


def _text(value: object) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _dlx_name(value: object, _args: FieldTable) -> str | None:
    return _longstr(value)


def _dlx_rk(value: object, args: FieldTable) -> str | None:
    err = _longstr(value)
    if err is None and "x-dead-letter-exchange" not in args:
        return "routing_key_but_no_dlx_defined"
    return err


def _max_priority(value: object, args: FieldTable) -> str | None:
    err = _non_neg_int(value, args)
    if err is None and int(value) > 255:  # type: ignore[call-overload]
        return f"{{max_value_exceeded,{int(value)}}}"  # type: ignore[call-overload]
    return err


OVERFLOW_VALUES = ("drop-head", "reject-publish", "reject-publish-dlx")


def _overflow(value: object, _args: FieldTable) -> str | None:
    err = _longstr(value)
    if err is None and _text(value) not in OVERFLOW_VALUES:
        return "invalid_overflow"
    return err


def _queue_mode(value: object, _args: FieldTable) -> str | None:
    err = _longstr(value)
    if err is None and _text(value) not in ("default", "lazy"):
        return f"\"unsupported queue mode '{_text(value)}'\""
    return err


def _bool_arg(value: object, _args: FieldTable) -> str | None:
    if not isinstance(value, bool):
        return f"{{unacceptable_type,{type_name(value)}}}"
    return None


QUEUE_TYPES = ("classic", "quorum", "stream")


def _queue_type(value: object, _args: FieldTable) -> str | None:
    err = _longstr(value)
    if err is None and _text(value) not in QUEUE_TYPES:
        return f"\"unsupported queue type '{_text(value)}'\""
    return err


def _initial_cluster_size(value: object, args: FieldTable) -> str | None:
    err = _non_neg_int(value, args)
    if err is None and int(value) == 0:  # type: ignore[call-overload]
        return "{value_zero,0}"
    return err


_MAX_AGE_UNITS = ("Y", "M", "D", "h", "m", "s")


def _max_age(value: object, _args: FieldTable) -> str | None:
    # rabbit_amqqueue:check_max_age/1: "<positive integer><Y|M|D|h|m|s>".
    if not is_longstr(value):
        return f"{{unacceptable_type,{type_name(value)}}}"
    text = _text(value)
    digits = len(text) - len(text.lstrip("0123456789"))
    if digits and int(text[:digits]) > 0 and text[digits:] in _MAX_AGE_UNITS:
        return None
    return "invalid_max_age"


def _dlx_strategy(value: object, _args: FieldTable) -> str | None:
    err = _longstr(value)
    if err is None and _text(value) not in ("at-most-once", "at-least-once"):
        return "invalid_dlx_strategy"
    return err


def _leader_locator(value: object, _args: FieldTable) -> str | None:
    # rabbit_queue_location:queue_leader_locators/0 (3.13: client-local, balanced).
    err = _longstr(value)
    if err is None and _text(value) not in ("client-local", "balanced"):
        return "invalid_queue_locator_arg"
    return err


def _queue_version_arg(value: object, args: FieldTable) -> str | None:
    err = _non_neg_int(value, args)
    if err is None and int(value) not in (1, 2):  # type: ignore[call-overload]
        return f"\"unsupported queue version '{int(value)}'\""  # type: ignore[call-overload]
    return err


# In RabbitMQ's order: the first failing key (in this order, not the table's) is reported.
DECLARE_ARGS: tuple[tuple[str, Validator], ...] = (
    ("x-expires", _expires),
    ("x-message-ttl", _message_ttl),
    ("x-dead-letter-exchange", _dlx_name),
    ("x-dead-letter-routing-key", _dlx_rk),
    ("x-dead-letter-strategy", _dlx_strategy),
    ("x-max-length", _non_neg_int),
    ("x-max-length-bytes", _non_neg_int),
    ("x-max-in-memory-length", _non_neg_int),
    ("x-max-in-memory-bytes", _non_neg_int),
    ("x-max-priority", _max_priority),
    ("x-overflow", _overflow),
    ("x-queue-mode", _queue_mode),
    ("x-queue-version", _queue_version_arg),
    ("x-single-active-consumer", _bool_arg),
    ("x-queue-type", _queue_type),
    ("x-quorum-initial-group-size", _initial_cluster_size),
    ("x-max-age", _max_age),
    ("x-stream-max-segment-size-bytes", _non_neg_int),
    ("x-stream-filter-size-bytes", _non_neg_int),
    ("x-initial-cluster-size", _initial_cluster_size),
    ("x-queue-leader-locator", _leader_locator),
)

# The args each queue type lists (rabbit_queue_type capabilities queue_arguments). A key in
# some type's list but not in the declared type's → "invalid arg ... of queue type ...";
# a key in nobody's list is ignored (unknown x-args are allowed).
CLASSIC_ARGS: tuple[str, ...] = (
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-version",
    "x-single-active-consumer",
    "x-queue-type",
    "x-queue-master-locator",
)
QUORUM_ARGS: tuple[str, ...] = (
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-dead-letter-strategy",
    "x-expires",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-overflow",
    "x-single-active-consumer",
    "x-queue-type",
    "x-quorum-initial-group-size",
    "x-delivery-limit",
    "x-message-ttl",
    "x-queue-leader-locator",
)
STREAM_ARGS: tuple[str, ...] = (
    "x-max-length-bytes",
    "x-queue-type",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-initial-cluster-size",
    "x-queue-leader-locator",
    "x-stream-filter-size-bytes",
)
QUEUE_TYPE_ARGS: dict[str, tuple[str, ...]] = {
    "classic": CLASSIC_ARGS,
    "quorum": QUORUM_ARGS,
    "stream": STREAM_ARGS,
}
QUEUE_TYPE_MODULES: dict[str, str] = {
    "classic": "rabbit_classic_queue",
    "quorum": "rabbit_quorum_queue",
    "stream": "rabbit_stream_queue",
}
_KNOWN_ARGS = frozenset(CLASSIC_ARGS + QUORUM_ARGS + STREAM_ARGS)


def queue_type_of(args: FieldTable) -> str:
    """The queue type an argument table asks for; absent means classic."""
    value = args.get("x-queue-type")
    if value is None:
        return "classic"
    text = _text(value)
    return text if text in QUEUE_TYPES else "classic"


def validate_queue_args(args: FieldTable, resource: str) -> None:
    """Validate a new queue's arguments as rabbit_amqqueue:check_declare_arguments/2 does.

    1. x-queue-type itself; 2. the validators of the args the queue type lists, in
    declare_args order (so an arg of another type is never value-checked); 3. in the
    table's order, the first arg some other type lists but this one does not.
    """
    if not args:
        return
    if "x-queue-type" in args:
        err = _queue_type(args["x-queue-type"], args)
        if err is not None:
            raise PreconditionFailed(f"invalid arg 'x-queue-type' for {resource}: {err}")
    qtype = queue_type_of(args)
    allowed = QUEUE_TYPE_ARGS[qtype]
    for key, check in DECLARE_ARGS:
        if key in args and key in allowed:
            err = check(args[key], args)
            if err is not None:
                raise PreconditionFailed(f"invalid arg '{key}' for {resource}: {err}")
    for key in args:
        if key in _KNOWN_ARGS and key not in allowed:
            raise PreconditionFailed(
                f"invalid arg '{key}' for {resource} of queue type {QUEUE_TYPE_MODULES[qtype]}"
            )


# The consume arguments each queue type takes (rabbit_queue_type capabilities
# consumer_arguments; oracle 3.10.8: x-cancel-on-ha-failover on a quorum queue, x-priority on
# a stream and x-stream-offset on a classic queue are all refused). The values of a type's
# own arguments are checked first (by the session); then a known argument the type does
# not take → "invalid arg ... of queue type ...". Unknown ones are ignored.
QUEUE_TYPE_CONSUME_ARGS: dict[str, tuple[str, ...]] = {
    "classic": ("x-priority", "x-cancel-on-ha-failover"),
    "quorum": ("x-priority",),
    "stream": ("x-stream-offset",),
}
_KNOWN_CONSUME_ARGS = frozenset(a for args in QUEUE_TYPE_CONSUME_ARGS.values() for a in args)


def check_consume_args_for_type(args: FieldTable, queue_type: str, resource: str) -> None:
    """rabbit_amqqueue:check_consume_arguments/3, its queue-type part (see above)."""
    if not args:
        return
    allowed = QUEUE_TYPE_CONSUME_ARGS.get(queue_type, ())
    for key in args:
        if key in _KNOWN_CONSUME_ARGS and key not in allowed:
            raise PreconditionFailed(
                f"invalid arg '{key}' for {resource} of queue type {QUEUE_TYPE_MODULES[queue_type]}"
            )
