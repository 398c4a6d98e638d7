"""The uncommitted work of a transactional channel (tx.select).

Rules of this module (reference 1.3 and 2.6; RabbitMQ ``rabbit_channel`` tx clauses):
- Publishes are routed when received (the exchange and route checks fail then), but enqueued
  only at tx.commit, in order; a mandatory basic.return is sent at commit, not at publish
  (checked on the oracle).
- basic.ack / nack / reject remove their deliveries from the unacked set at once (so a
  second ack of the same tag inside the transaction is already "unknown delivery tag"), and
  are applied at commit, in the order received, after the publishes.
- tx.rollback drops the publishes and puts the settled deliveries back into the unacked set
  (not back into their queues).
- RabbitMQ promises no atomicity ("batching"), and neither do we.
"""

from __future__ import annotations

from typing import Any, Literal

from amqpd.session.unacked import Unacked

# What a buffered settlement does at commit: ack, reject with requeue, reject and discard.
SettleOp = Literal["ack", "requeue", "discard"]


class PendingPublish:
    __slots__ = ("mandatory", "message", "queues")

    def __init__(self, message: Any, queues: list[Any], mandatory: bool) -> None:
        self.message = message
        self.queues = queues
        self.mandatory = mandatory


class TxBuffer:
    __slots__ = ("publishes", "settlements")

    def __init__(self) -> None:
        self.publishes: list[PendingPublish] = []
        self.settlements: list[tuple[SettleOp, list[Unacked]]] = []

    def add_publish(self, message: Any, queues: list[Any], mandatory: bool) -> None:
        self.publishes.append(PendingPublish(message, queues, mandatory))

    def add_settlement(self, op: SettleOp, records: list[Unacked]) -> None:
        if records:
            self.settlements.append((op, records))

    def take(self) -> tuple[list[PendingPublish], list[tuple[SettleOp, list[Unacked]]]]:
        """Everything to apply at commit; the buffer starts a new transaction."""
        publishes, settlements = self.publishes, self.settlements
        self.publishes, self.settlements = [], []
        return publishes, settlements

    def rollback(self) -> list[Unacked]:
        """Drop the publishes; return the settled deliveries to put back as unacked."""
        records = [r for _, rs in self.settlements for r in rs]
        self.publishes, self.settlements = [], []
        return records
