"""The methods table against the spec XML, read here independently of the generator."""

from __future__ import annotations

import keyword
import xml.etree.ElementTree as ET
from pathlib import Path

import attrs
import pytest

from amqpd.protocol import methods
from amqpd.protocol.methods import METHODS

VENDORED = Path(methods.__file__).parent / "spec" / "amqp0-9-1.stripped.extended.xml"
# ../shared beside the repository (the brief's layout; CI lays a copy there too).
SHARED = Path(__file__).resolve().parents[3] / "shared" / "spec" / VENDORED.name
DEBIAN = Path("/usr/share/amqp/specs/0-9-1-rabbit/amqp0-9-1.stripped.extended.xml")
SPEC_FILES = [p for p in (VENDORED, SHARED, DEBIAN) if p.exists()]

PY_TYPES = {
    "octet": int,
    "short": int,
    "long": int,
    "longlong": int,
    "timestamp": int,
    "bit": bool,
    "shortstr": str,
    "longstr": bytes,
    "table": dict,
}
# RabbitMQ extensions not in the XML (rabbitmq-codegen amqp-rabbitmq-0.9.1.json).
EXTRAS = {
    (10, 60): ("connection.blocked", [("reason", "shortstr")]),
    (10, 61): ("connection.unblocked", []),
    (10, 70): ("connection.update-secret", [("new_secret", "longstr"), ("reason", "shortstr")]),
    (10, 71): ("connection.update-secret-ok", []),
}


def parse(path: Path) -> dict[tuple[int, int], tuple[str, bool, bool, list[tuple[str, str]]]]:
    root = ET.parse(path).getroot()
    domains = {d.get("name"): d.get("type") for d in root.iter("domain")}
    out = {}
    for cls in root.iter("class"):
        for m in cls.iter("method"):
            fields = []
            for f in m.iter("field"):
                if f.get("reserved") == "1":
                    continue
                name = f.get("name", "").replace("-", "_")
                ftype = f.get("type") or domains[f.get("domain")]
                assert ftype is not None
                fields.append((name + "_" if keyword.iskeyword(name) else name, ftype))
            key = (int(cls.get("index", "")), int(m.get("index", "")))
            out[key] = (
                f"{cls.get('name')}.{m.get('name')}",
                m.get("synchronous") == "1",
                m.get("content") == "1",
                fields,
            )
    return out


@pytest.mark.parametrize("path", SPEC_FILES, ids=str)
def test_methods_match_spec(path: Path) -> None:
    spec = parse(path)
    assert set(METHODS) == set(spec) | set(EXTRAS)
    for ids, (name, synchronous, content, fields) in spec.items():
        cls = METHODS[ids]
        assert ids == (cls.CLASS_ID, cls.METHOD_ID)
        assert name == cls.NAME
        assert cls.SYNCHRONOUS is synchronous, name
        assert cls.HAS_CONTENT is content, name
        ours = attrs.fields(cls)
        assert [a.name for a in ours] == [f for f, _ in fields], name
        for attribute, (_, ftype) in zip(ours, fields, strict=True):
            default = attribute.default
            if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
                default = default.factory()
            assert type(default) is PY_TYPES[ftype], (name, attribute.name)


def test_extras() -> None:
    for ids, (name, fields) in EXTRAS.items():
        cls = METHODS[ids]
        assert name == cls.NAME
        assert [(a.name, type(a.default)) for a in attrs.fields(cls)] == [
            (f, PY_TYPES[t]) for f, t in fields
        ]


def test_class_names_are_camel_case_of_spec_names() -> None:
    for cls in METHODS.values():
        expected = "".join(w.capitalize() for w in cls.NAME.replace(".", "-").split("-"))
        assert cls.__name__ == expected
        assert getattr(methods, expected) is cls
