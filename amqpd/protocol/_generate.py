"""Generate ``amqpd/protocol/methods.py`` from the AMQP 0-9-1 spec XML.

Usage::

    python -m amqpd.protocol._generate          # rewrite methods.py
    python -m amqpd.protocol._generate --check  # exit 1 if methods.py is stale

Rules of this module:

- The input is the vendored ``spec/amqp0-9-1.stripped.extended.xml`` (RabbitMQ's extended
  0-9-1, BSD licensed), plus ``EXTRA_METHODS``: RabbitMQ extensions that file lacks
  (connection.blocked/unblocked, connection.update-secret/-ok), transcribed from
  rabbitmq-codegen's ``amqp-rabbitmq-0.9.1.json``.
- The output is deterministic text; ``tests/protocol/test_generated.py`` regenerates it and
  compares, so edit this file, never methods.py.
- Decoders are straight-line code: runs of fixed-width fields (and packed bit octets, spec
  4.2.5.2) become one precompiled ``struct.Struct``, reserved fields become pad bytes on
  decode and zeros/empty strings on encode.
"""

from __future__ import annotations

import keyword
import struct
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPEC_PATH = HERE / "spec" / "amqp0-9-1.stripped.extended.xml"
OUT_PATH = HERE / "methods.py"

# Methods whose shortstrs RabbitMQ does not check for UTF-8 (observed on 3.10.8: a
# basic.publish to exchange <<255,254>> gets 404, any other method 501 "Malformed UTF-8").
UNCHECKED_UTF8 = {"basic.publish"}

FIXED_CODES = {"octet": "B", "short": "H", "long": "I", "longlong": "Q", "timestamp": "Q"}
PY_TYPES = {
    "octet": "int",
    "short": "int",
    "long": "int",
    "longlong": "int",
    "timestamp": "int",
    "bit": "bool",
    "shortstr": "str",
    "longstr": "bytes",
    "table": "FieldTable",
}
DEFAULTS = {
    "int": "0",
    "bool": "False",
    "str": '""',
    "bytes": 'b""',
    "FieldTable": "attrs.field(factory=dict)",
}


@dataclass
class FieldSpec:
    name: str  # spec name, e.g. "no-wait"
    type: str  # resolved primitive type
    reserved: bool

    @property
    def attr(self) -> str:
        name = self.name.replace("-", "_")
        return name + "_" if keyword.iskeyword(name) else name


@dataclass
class MethodSpec:
    class_name: str
    class_id: int
    name: str
    method_id: int
    synchronous: bool
    content: bool
    fields: list[FieldSpec] = field(default_factory=list)

    @property
    def full_name(self) -> str:
        return f"{self.class_name}.{self.name}"

    @property
    def py_name(self) -> str:
        words = [self.class_name, *self.name.split("-")]
        return "".join(w.capitalize() for w in words)

    @property
    def func(self) -> str:
        return "_d_" + self.full_name.replace(".", "_").replace("-", "_")


# RabbitMQ extensions absent from the XML (rabbitmq-codegen amqp-rabbitmq-0.9.1.json).
EXTRA_METHODS = [
    MethodSpec(
        "connection", 10, "blocked", 60, False, False, [FieldSpec("reason", "shortstr", False)]
    ),
    MethodSpec("connection", 10, "unblocked", 61, False, False, []),
    MethodSpec(
        "connection",
        10,
        "update-secret",
        70,
        True,
        False,
        [FieldSpec("new-secret", "longstr", False), FieldSpec("reason", "shortstr", False)],
    ),
    MethodSpec("connection", 10, "update-secret-ok", 71, True, False, []),
]


def load_spec(path: Path = SPEC_PATH) -> list[MethodSpec]:
    root = ET.parse(path).getroot()
    domains = {d.get("name"): d.get("type") for d in root.iter("domain")}
    methods: list[MethodSpec] = []
    for cls in root.iter("class"):
        class_name = cls.get("name", "")
        class_id = int(cls.get("index", "0"))
        for m in cls.iter("method"):
            spec = MethodSpec(
                class_name,
                class_id,
                m.get("name", ""),
                int(m.get("index", "0")),
                m.get("synchronous") == "1",
                m.get("content") == "1",
            )
            for f in m.iter("field"):
                ftype = f.get("type") or domains[f.get("domain")]
                assert ftype is not None
                spec.fields.append(FieldSpec(f.get("name", ""), ftype, f.get("reserved") == "1"))
            methods.append(spec)
    for extra in EXTRA_METHODS:
        methods.append(extra)
    methods.sort(key=lambda s: (s.class_id, s.method_id))
    return methods


# ------------------------------------------------------------------------- segmentation


@dataclass
class Fixed:
    """A run of fixed-width values: struct codes and, per code, the fields it carries."""

    codes: list[str] = field(default_factory=list)
    # one entry per code: None (reserved/pad), a FieldSpec, or a list of bit FieldSpecs
    items: list[FieldSpec | list[FieldSpec] | None] = field(default_factory=list)


Segment = Fixed | FieldSpec  # FieldSpec here = a variable-width field


def segments(fields: list[FieldSpec]) -> list[Segment]:
    out: list[Segment] = []
    bits: list[FieldSpec] | None = None
    for f in fields:
        if f.type != "bit":
            bits = None
        if f.type in FIXED_CODES or f.type == "bit":
            if not out or not isinstance(out[-1], Fixed):
                out.append(Fixed())
            run = out[-1]
            assert isinstance(run, Fixed)
            if f.type == "bit":
                # Spec 4.2.5.2: consecutive bits share an octet, low bit first, 8 per octet.
                if bits is None or len(bits) == 8:
                    bits = []
                    run.codes.append("B")
                    run.items.append(bits)
                bits.append(f)
            else:
                run.codes.append(FIXED_CODES[f.type])
                run.items.append(None if f.reserved else f)
        else:
            out.append(f)
    return out


# ------------------------------------------------------------------------- code emitters


def blit(data: bytes) -> str:
    """A bytes literal in the double-quoted style ruff format keeps."""
    out = []
    for c in data:
        ch = chr(c)
        if ch in '\\"':
            out.append("\\" + ch)
        elif 32 <= c < 127:
            out.append(ch)
        else:
            out.append({9: "\\t", 10: "\\n", 13: "\\r"}.get(c, f"\\x{c:02x}"))
    return 'b"' + "".join(out) + '"'


def call(prefix: str, args: list[str], indent: int, suffix: str = "") -> list[str]:
    """``prefix(args)suffix`` at ``indent``, split the way ruff format splits it."""
    pad = " " * indent
    one = f"{pad}{prefix}({', '.join(args)}){suffix}"
    if len(one) <= 100:
        return [one]
    inner = " " * (indent + 4) + ", ".join(args)
    if len(inner) <= 100:
        return [f"{pad}{prefix}(", inner, f"{pad}){suffix}"]
    return [f"{pad}{prefix}(", *(f"{pad}    {a}," for a in args), f"{pad}){suffix}"]


class Structs:
    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def get(self, fmt: str) -> str:
        if fmt not in self.names:
            self.names[fmt] = f"_S_{fmt[1:]}"
        return self.names[fmt]


def bits_expr(bits: list[FieldSpec]) -> str:
    terms = []
    for i, b in enumerate(bits):
        if b.reserved:
            continue
        terms.append(f"self.{b.attr}" if i == 0 else f"self.{b.attr} << {i}")
    return " | ".join(terms) if terms else "0"


def emit_encode(m: MethodSpec, structs: Structs) -> list[str]:
    # Parts: ("const", bytes) or ("expr", code).
    parts: list[tuple[str, object]] = []
    segs = segments(m.fields)
    first_fixed = segs[0] if segs and isinstance(segs[0], Fixed) else None
    ids_run = first_fixed or Fixed()
    ids_run = Fixed(["H", "H", *ids_run.codes], [None, None, *ids_run.items])
    rest = segs[1:] if first_fixed else segs
    for seg in [ids_run, *rest]:
        if isinstance(seg, Fixed):
            args: list[str] = []
            consts: list[int] = []
            for idx, item in enumerate(seg.items):
                if item is None:
                    const = (m.class_id, m.method_id)[idx] if seg is ids_run and idx < 2 else 0
                    args.append(str(const))
                    consts.append(const)
                elif isinstance(item, list):
                    expr = bits_expr(item)
                    args.append(expr)
                else:
                    args.append(f"self.{item.attr}")
            fmt = ">" + "".join(seg.codes)
            if len(consts) == len(args):
                parts.append(("const", struct.pack(fmt, *consts)))
            else:
                parts.append(("expr", f"{structs.get(fmt)}.pack({', '.join(args)})"))
        elif seg.reserved:
            const_b = {"shortstr": b"\x00", "longstr": b"\x00\x00\x00\x00"}[seg.type]
            parts.append(("const", const_b))
        elif seg.type == "shortstr":
            parts.append(("expr", f"_ss(self.{seg.attr})"))
        elif seg.type == "longstr":
            parts.append(("expr", f"_U32.pack(len(self.{seg.attr}))"))
            parts.append(("expr", f"self.{seg.attr}"))
        elif seg.type == "table":
            parts.append(("expr", f"encode_table(self.{seg.attr})"))
        else:  # pragma: no cover - the spec has no other types
            raise AssertionError(seg.type)
    # Merge adjacent constants.
    merged: list[tuple[str, object]] = []
    for kind, val in parts:
        if kind == "const" and merged and merged[-1][0] == "const":
            prev = merged[-1][1]
            assert isinstance(prev, bytes) and isinstance(val, bytes)
            merged[-1] = ("const", prev + val)
        else:
            merged.append((kind, val))
    exprs = [blit(v) if isinstance(v, bytes) else str(v) for _, v in merged]
    lines = ["    def encode(self) -> bytes:"]
    if len(exprs) == 1:
        lines.append(f"        return {exprs[0]}")
    else:
        lines.append('        return b"".join(')
        lines.append("            (")
        for e in exprs:
            lines.extend(_wrap_expr(e, 16))
        lines.append("            )")
        lines.append("        )")
    return lines


def _wrap_expr(expr: str, indent: int) -> list[str]:
    pad = " " * indent
    if len(pad) + len(expr) + 1 <= 100:
        return [f"{pad}{expr},"]
    # Only the bit-octet packs get this long: split the | chain one operand per line.
    head, _, rest = expr.partition("(")
    if len(pad) + 4 + len(rest) - 1 <= 100:
        return [f"{pad}{head}(", f"{pad}    {rest[:-1]}", f"{pad}),"]
    operands = rest[:-1].split(" | ")
    return [
        f"{pad}{head}(",
        f"{pad}    {operands[0]}",
        *(f"{pad}    | {o}" for o in operands[1:]),
        f"{pad}),",
    ]


def emit_decode(m: MethodSpec, structs: Structs) -> list[str]:
    lines = [f"def {m.func}(buf: Buffer, off: int) -> {m.py_name}:"]
    body: list[str] = []
    nbits = 0
    for seg in segments(m.fields):
        if isinstance(seg, Fixed):
            fmt = ">"
            targets: list[str] = []
            for code, item in zip(seg.codes, seg.items, strict=True):
                if item is None:
                    fmt += f"{struct.calcsize('>' + code)}x"
                elif isinstance(item, list):
                    if all(b.reserved for b in item):
                        fmt += "x"
                        continue
                    fmt += code
                    var = f"bits{nbits}"
                    nbits += 1
                    targets.append(var)
                    for i, b in enumerate(item):
                        if not b.reserved:
                            body.append(f"__BIT__{b.attr}=bool({var} & {1 << i})")
                else:
                    fmt += code
                    targets.append(item.attr)
            size = struct.calcsize(fmt)
            if targets:
                name = structs.get(fmt)
                tgt = ", ".join(targets) if len(targets) > 1 else f"({targets[0]},)"
                body.append(f"{tgt} = {name}.unpack_from(buf, off)")
                body.append(f"off += {size}")
            else:
                body.append(f"_check(buf, off + {size})")
                body.append(f"off += {size}")
        elif seg.reserved:
            body.append(f"off = {'_skip_ss' if seg.type == 'shortstr' else '_skip_ls'}(buf, off)")
        elif seg.type == "shortstr":
            dec = "_dec_ss_any" if m.full_name in UNCHECKED_UTF8 else "_dec_ss"
            body.append(f"{seg.attr}, off = {dec}(buf, off)")
        elif seg.type == "longstr":
            body.append(f"{seg.attr}, off = _dec_ls(buf, off)")
        elif seg.type == "table":
            body.append(f"{seg.attr}, off = decode_table(buf, off)")
    # Bit assignments must follow the unpack that defines their variable: move each
    # "__BIT__" line after the next "off +=" line that follows it.
    ordered: list[str] = []
    pending: list[str] = []
    for line in body:
        if line.startswith("__BIT__"):
            pending.append(line[len("__BIT__") :].replace("=", " = ", 1))
            continue
        ordered.append(line)
        if line.startswith("off += ") and pending:
            ordered.extend(pending)
            pending = []
    ordered.extend(pending)
    ordered.append("_end(buf, off)")
    args = [f.attr for f in m.fields if not f.reserved]
    lines.extend("    " + x for x in ordered)
    lines.extend(call(f"return {m.py_name}", args, 4))
    return lines


HEADER = '''\
"""AMQP 0-9-1 methods (RabbitMQ's extended dialect) as frozen attrs classes.

GENERATED by ``python -m amqpd.protocol._generate`` from
``amqpd/protocol/spec/amqp0-9-1.stripped.extended.xml``: do not edit by hand.

Rules of this module:

- One class per method, named ``ClassMethod`` (``BasicPublish``); attributes are the spec's
  field names in snake_case, except ``global`` (a Python keyword) which is ``global_``.
  Reserved fields are not attributes: they encode as 0 / empty string, decode is skipped.
- ``encode()`` returns the whole method-frame payload: class id, method id, arguments.
- ``decode_method(payload)`` is strict: a truncated payload or trailing octets raise
  ``FrameError`` (501) with RabbitMQ's text "cannot decode <<0,0,...>>", and so does a
  malformed table (its reader's reason is the exception's ``__cause__``).
- A shortstr that is not UTF-8 raises ``FrameError`` "Malformed UTF-8 in shortstr" with
  class/method id 0, as RabbitMQ does; except in basic.publish, which RabbitMQ does not
  check: there shortstrs decode with ``surrogateescape`` and encode back to the same octets.
- An unknown class/method id raises ``CommandInvalid`` (503) "unknown method class-id X
  method-id Y". RabbitMQ just drops the TCP connection there (``lookup_method_name``
  exits); a 503 connection.close tells the client why.
- Bits pack into octets low bit first, eight per octet (spec 4.2.5.2).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, ClassVar, TypeAlias

import attrs

from amqpd.errors import CommandInvalid, FrameError
from amqpd.protocol.fieldtable import FieldTable, decode_table, encode_table

Buffer: TypeAlias = bytes | bytearray | memoryview

_U8 = struct.Struct(">B")
_U32 = struct.Struct(">I")
_IDS = struct.Struct(">HH")
_OCTET = tuple(bytes((i,)) for i in range(256))
MALFORMED_UTF8 = "Malformed UTF-8 in shortstr"


class Method:
    """Base of every method class."""

    __slots__ = ()
    # Declared so that type checkers accept attrs.fields()/attrs.evolve() on any Method.
    __attrs_attrs__: ClassVar[tuple[attrs.Attribute[Any], ...]]
    CLASS_ID: ClassVar[int]
    METHOD_ID: ClassVar[int]
    NAME: ClassVar[str]
    SYNCHRONOUS: ClassVar[bool]
    HAS_CONTENT: ClassVar[bool]

    def encode(self) -> bytes:
        raise NotImplementedError


def _ss(value: str) -> bytes:
    # surrogateescape: a name that arrived as non-UTF-8 octets (basic.publish does not check,
    # see _dec_ss_any) goes back out as the same octets, as RabbitMQ echoes them.
    raw = value.encode("utf-8", "surrogateescape")
    n = len(raw)
    if n > 255:
        # Spec 4.2.5.3: a shortstr holds at most 255 octets.
        raise ValueError(f"shortstr longer than 255 octets: {value[:40]!r}...")
    return _OCTET[n] + raw


# Running out of (or past) the arguments raises IndexError, like indexing past the end
# does; decode_method turns all of these into RabbitMQ's "cannot decode <<...>>".


def _check(buf: Buffer, end: int) -> None:
    if end > len(buf):
        raise IndexError(end)


def _dec_ss(buf: Buffer, off: int) -> tuple[str, int]:
    end = off + 1 + buf[off]
    if end > len(buf):
        raise IndexError(end)
    try:
        return str(buf[off + 1 : end], "utf-8"), end
    except UnicodeDecodeError:
        # RabbitMQ's text, and like RabbitMQ without class/method ids.
        raise FrameError(MALFORMED_UTF8) from None


def _dec_ss_any(buf: Buffer, off: int) -> tuple[str, int]:
    # basic.publish: RabbitMQ does not validate its shortstrs (a non-UTF-8 exchange name gets
    # a 404 quoting the octets), so they decode losslessly with surrogateescape.
    end = off + 1 + buf[off]
    if end > len(buf):
        raise IndexError(end)
    return str(buf[off + 1 : end], "utf-8", "surrogateescape"), end


def _skip_ss(buf: Buffer, off: int) -> int:
    end = off + 1 + buf[off]
    _check(buf, end)
    return end


def _dec_ls(buf: Buffer, off: int) -> tuple[bytes, int]:
    end: int = off + 4 + _U32.unpack_from(buf, off)[0]
    if end > len(buf):
        raise IndexError(end)
    return bytes(buf[off + 4 : end]), end


def _skip_ls(buf: Buffer, off: int) -> int:
    end: int = off + 4 + _U32.unpack_from(buf, off)[0]
    _check(buf, end)
    return end


def _end(buf: Buffer, off: int) -> None:
    if off != len(buf):
        raise IndexError(off)
'''

FOOTER = '''

_DECODERS: dict[int, Callable[[Buffer, int], Method]] = {
__DECODERS__
}

#: Every method class by (class id, method id).
METHODS: dict[tuple[int, int], type[Method]] = {
__METHODS__
}


def _format_binary(data: Buffer) -> str:
    # Erlang's ~w of a binary, as RabbitMQ prints it: <<1,2,3>>. (reply-text stops at 255
    # octets, so a longer binary would be cut anyway.)
    return "<<" + ",".join(map(str, bytes(data))) + ">>"


def decode_method(payload: Buffer) -> Method:
    """Decode a method-frame payload (class id, method id, arguments).

    Raises ``FrameError`` (501) when the payload is shorter than the two ids or the arguments
    do not decode, and ``CommandInvalid`` (503) for an unknown class/method id. RabbitMQ
    exits the connection without a close there; we answer 503 so the client learns why.
    The error carries the class/method ids when they were readable.
    """
    if len(payload) < 4:
        raise FrameError(f"method frame too short: {len(payload)} octets")
    class_id, method_id = _IDS.unpack_from(payload, 0)
    decoder = _DECODERS.get(class_id << 16 | method_id)
    if decoder is None:
        raise CommandInvalid(f"unknown method class-id {class_id} method-id {method_id}")
    try:
        return decoder(payload, 4)
    except (struct.error, IndexError):
        cause = None
    except FrameError as exc:  # from a field table, or bad UTF-8
        if exc.detail == MALFORMED_UTF8:
            raise
        cause = exc  # the table reader's reason stays available as __cause__, for logs
    detail = f"cannot decode {_format_binary(payload[4:260])}"
    raise FrameError(detail, class_id=class_id, method_id=method_id) from cause
'''


def generate(methods: list[MethodSpec]) -> str:
    structs = Structs()
    classes: list[str] = []
    decoders: list[str] = []
    for m in methods:
        lines = [
            "",
            "",
            "",
            "@attrs.frozen(slots=True)",
            f"class {m.py_name}(Method):",
            f'    """{m.full_name} ({m.class_id}, {m.method_id})."""',
            "",
            f"    CLASS_ID: ClassVar[int] = {m.class_id}",
            f"    METHOD_ID: ClassVar[int] = {m.method_id}",
            f'    NAME: ClassVar[str] = "{m.full_name}"',
            f"    SYNCHRONOUS: ClassVar[bool] = {m.synchronous}",
            f"    HAS_CONTENT: ClassVar[bool] = {m.content}",
        ]
        visible = [f for f in m.fields if not f.reserved]
        if visible:
            lines.append("")
        for f in visible:
            pytype = PY_TYPES[f.type]
            lines.append(f"    {f.attr}: {pytype} = {DEFAULTS[pytype]}")
        lines.append("")
        lines.extend(emit_encode(m, structs))
        classes.append("\n".join(lines))
        decoders.append("\n".join(["", "", "", *emit_decode(m, structs)]))
    struct_lines = [
        f'{name} = struct.Struct("{fmt}")' for fmt, name in sorted(structs.names.items())
    ]
    dec_table = "\n".join(
        f"    {m.class_id << 16 | m.method_id}: {m.func},  # {m.full_name}" for m in methods
    )
    meth_table = "\n".join(f"    ({m.class_id}, {m.method_id}): {m.py_name}," for m in methods)
    footer = FOOTER.replace("__DECODERS__", dec_table).replace("__METHODS__", meth_table)
    return (
        HEADER
        + "\n\n"
        + "\n".join(struct_lines)
        + "".join(classes)
        + "".join(decoders)
        + "\n"
        + footer
    )


def main(argv: list[str]) -> int:
    text = generate(load_spec())
    if "--check" in argv:
        current = OUT_PATH.read_text(encoding="utf-8") if OUT_PATH.exists() else ""
        if current != text:
            print(f"{OUT_PATH} is stale: run python -m amqpd.protocol._generate", file=sys.stderr)
            return 1
        return 0
    OUT_PATH.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
