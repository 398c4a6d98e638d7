"""The exchange-type interface: a binding table plus a routing function.

Rules of this module:
- An exchange type owns the routing index of one exchange and nothing else. It knows its
  destinations only as hashable objects (the vhost passes ``Queue`` and ``Exchange``
  objects); it never looks anything up and never raises anything but a 406 from
  ``validate_binding``.
- A binding is identified by (destination, routing key, arguments) as in RabbitMQ's
  ``#binding{}``; binding twice is a no-op, unbinding a missing binding is a no-op.
- ``forwarding`` counts the destinations that route further (a true ``forwards``
  attribute: exchanges); with none, a route's result is final (the vhost's fast path).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

from amqpd.broker.arguments import freeze_table

Destination = Hashable
BindingKey = tuple[Hashable, str, object]


class ExchangeType:
    """Base class: keeps the set of bindings; subclasses keep a routing index."""

    name: ClassVar[str] = ""
    # Whether route() looks at message headers (only the headers exchange does).
    uses_headers: ClassVar[bool] = False

    def __init__(self) -> None:
        self._bindings: dict[BindingKey, Mapping[str, Any]] = {}
        # destination -> its binding keys, so deleting a queue costs its own bindings only.
        self._by_dest: dict[Destination, set[BindingKey]] = {}
        self.forwarding = 0  # destinations in _by_dest that are exchanges (module rules)

    # -- the interface the vhost uses -------------------------------------------------------
    def validate_binding(self, routing_key: str, arguments: Mapping[str, Any]) -> None:
        """Raise PreconditionFailed for a binding this type cannot accept."""

    def bind(
        self, destination: Destination, routing_key: str, arguments: Mapping[str, Any]
    ) -> bool:
        """Add a binding; False if it already existed."""
        key = (destination, routing_key, freeze_table(arguments))
        if key in self._bindings:
            return False
        self._bindings[key] = arguments
        keys = self._by_dest.get(destination)
        if keys is None:
            keys = self._by_dest[destination] = set()
            if getattr(destination, "forwards", False):
                self.forwarding += 1
        keys.add(key)
        self._add(destination, routing_key, arguments)
        return True

    def unbind(
        self, destination: Destination, routing_key: str, arguments: Mapping[str, Any]
    ) -> bool:
        """Remove a binding; False if it did not exist."""
        key = (destination, routing_key, freeze_table(arguments))
        args = self._bindings.pop(key, None)
        if args is None:
            return False
        self._forget(key)
        self._remove(destination, routing_key, args)
        return True

    def remove_destination(self, destination: Destination) -> int:
        """Drop every binding to ``destination``; returns how many there were."""
        keys = self._by_dest.pop(destination, None)
        if keys is None:
            return 0
        if getattr(destination, "forwards", False):
            self.forwarding -= 1
        for key in keys:
            args = self._bindings.pop(key)
            self._remove(destination, key[1], args)
        return len(keys)

    def _forget(self, key: BindingKey) -> None:
        keys = self._by_dest[key[0]]
        keys.discard(key)
        if not keys:
            del self._by_dest[key[0]]
            if getattr(key[0], "forwards", False):
                self.forwarding -= 1

    def has_binding(
        self, destination: Destination, routing_key: str, arguments: Mapping[str, Any]
    ) -> bool:
        return (destination, routing_key, freeze_table(arguments)) in self._bindings

    def remove_all(self) -> None:
        """Drop every binding (the exchange is being deleted)."""
        for destination in list(self._by_dest):
            self.remove_destination(destination)

    def has_bindings(self) -> bool:
        return bool(self._bindings)

    def binding_count(self) -> int:
        return len(self._bindings)

    def bindings(self) -> list[tuple[Destination, str, Mapping[str, Any]]]:
        return [(d, rk, args) for (d, rk, _), args in self._bindings.items()]

    def destinations(self) -> set[Destination]:
        return set(self._by_dest)

    def bindings_to(self, destination: Destination) -> int:
        return len(self._by_dest.get(destination, ()))

    def route(
        self, routing_keys: Sequence[str], headers: Mapping[str, Any] | None
    ) -> Iterable[Destination]:
        """Destinations for a message with these routing keys (and headers, if used)."""
        raise NotImplementedError

    # -- the index subclasses keep ---------------------------------------------------------
    def _add(
        self, destination: Destination, routing_key: str, arguments: Mapping[str, Any]
    ) -> None:
        raise NotImplementedError

    def _remove(
        self, destination: Destination, routing_key: str, arguments: Mapping[str, Any]
    ) -> None:
        raise NotImplementedError
