"""Reading TOML tables for the config file: typed getters that name the key when they refuse.

Rules of this module (process edge):
- A ``Table`` knows its dotted path (``users.alice``) and its known keys; an unknown key, a
  wrong type or a value out of range is a ``ConfigError(key, problem)`` at once, so every
  mistake comes out as one line ``KEY: PROBLEM``.
- Values are returned as Python values; what they mean is the caller's (``config.py``).
"""

from __future__ import annotations

import math
from typing import Any

from amqpd.broker.permissions import check_regex


class ConfigError(Exception):
    """One mistake in the config file: the dotted key and what is wrong with it."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem


class Table:
    """A TOML table being read: typed getters; unknown keys are refused at once."""

    def __init__(self, data: Any, path: str, known: tuple[str, ...]) -> None:
        if not isinstance(data, dict):
            raise ConfigError(path, f"must be a table, not {kind(data)}")
        self.data: dict[str, Any] = data
        self.path = path
        self.known = known
        for key in data:
            if key not in known:
                raise ConfigError(self.key(key), f"unknown key (known: {', '.join(known)})")

    def key(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self.data

    def integer(
        self, key: str, default: int | None, low: int, high: int | None = None
    ) -> int | None:
        if key not in self.data:
            return default
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(self.key(key), f"must be an integer, not {kind(value)}")
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise ConfigError(self.key(key), f"must be {bound}, not {value}")
        return value

    def number(self, key: str, default: float, low: float, high: float) -> float:
        if key not in self.data:
            return default
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise ConfigError(self.key(key), f"must be a number, not {kind(value)}")
        if not low <= value <= high:
            raise ConfigError(self.key(key), f"must be between {low:g} and {high:g}, not {value}")
        return float(value)

    def string(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        if key not in self.data:
            if required:
                raise ConfigError(self.key(key), "is required")
            return default
        value = self.data[key]
        if not isinstance(value, str):
            raise ConfigError(self.key(key), f"must be a string, not {kind(value)}")
        return value

    def required_str(self, key: str) -> str:
        value = self.string(key, required=True)
        assert value is not None
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str | None) -> str | None:
        value = self.string(key, default)
        if value is not None and value not in choices:
            raise ConfigError(self.key(key), f"must be one of {', '.join(choices)}, not {value!r}")
        return value

    def str_list(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        if key not in self.data:
            return default
        value = self.data[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(self.key(key), "must be a list of strings")
        return tuple(value)

    def regex(self, key: str) -> str:
        value = self.required_str(key)
        try:
            check_regex(value)
        except ValueError as exc:
            raise ConfigError(self.key(key), str(exc)) from None
        return value


def kind(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    for t, name in names.items():
        if type(value) is t:
            return name
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def name_key(section: str, name: str) -> str:
    # TOML needs quotes for names like "/" or "a.b": show the key the way it is written.
    bare = name and all(c.isalnum() or c in "-_" for c in name)
    return f"{section}.{name}" if bare else f'{section}."{name}"'
