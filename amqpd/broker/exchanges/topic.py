"""Topic exchange: binding keys are dot-separated patterns matched with a trie.

Matching (rabbit_exchange_type_topic.erl, trie_match/3):
- keys split on '.'; the empty key has zero words, "a..b" has an empty middle word;
- '*' matches exactly one word, '#' matches zero or more words;
- one copy per destination however many bindings match.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from amqpd.broker.exchanges.base import Destination, ExchangeType


def split_topic_key(key: str) -> list[str]:
    # rabbit_exchange_type_topic:split_topic_key/1: <<>> is the empty word list.
    return key.split(".") if key else []


class _Node:
    __slots__ = ("children", "dests")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.dests: dict[Destination, int] = {}


class TopicExchange(ExchangeType):
    name = "topic"

    def __init__(self) -> None:
        super().__init__()
        self._root = _Node()

    def _add(
        self, destination: Destination, routing_key: str, arguments: Mapping[str, Any]
    ) -> None:
        node = self._root
        for word in split_topic_key(routing_key):
            child = node.children.get(word)
            if child is None:
                child = node.children[word] = _Node()
            node = child
        node.dests[destination] = node.dests.get(destination, 0) + 1

    def _remove(
        self, destination: Destination, routing_key: str, arguments: Mapping[str, Any]
    ) -> None:
        path: list[tuple[_Node, str]] = []
        node = self._root
        for word in split_topic_key(routing_key):
            path.append((node, word))
            node = node.children[word]
        n = node.dests[destination] - 1
        if n:
            node.dests[destination] = n
            return
        del node.dests[destination]
        # Prune nodes left with no bindings and no children, so the trie does not grow
        # with every binding ever made.
        for parent, word in reversed(path):
            child = parent.children[word]
            if child.dests or child.children:
                break
            del parent.children[word]

    def route(
        self, routing_keys: Sequence[str], headers: Mapping[str, Any] | None
    ) -> Iterable[Destination]:
        out: dict[Destination, None] = {}
        for key in routing_keys:
            self._match(split_topic_key(key), out)
        return out.keys()

    def _match(self, words: list[str], out: dict[Destination, None]) -> None:
        n = len(words)
        # (node id, word index) pairs already explored: '#' makes the naive walk exponential
        # for patterns like "#.#.#"; each pair gives the same result however we reach it.
        seen: set[tuple[int, int]] = set()
        stack: list[tuple[_Node, int]] = [(self._root, 0)]
        while stack:
            node, i = stack.pop()
            mark = (id(node), i)
            if mark in seen:
                continue
            seen.add(mark)
            children = node.children
            hash_node = children.get("#")
            if hash_node is not None:
                # '#' swallows words i..n-1, any number of them (zero included).
                for j in range(i, n + 1):
                    stack.append((hash_node, j))
            if i == n:
                if node.dests:
                    out.update(dict.fromkeys(node.dests))
                continue
            word = words[i]
            child = children.get(word)
            if child is not None:
                stack.append((child, i + 1))
            star = children.get("*")
            if star is not None and star is not child:
                stack.append((star, i + 1))


def reference_match(pattern: str, key: str) -> bool:
    """The obvious recursive matcher: the specification the trie is tested against."""
    p = split_topic_key(pattern)
    k = split_topic_key(key)

    def m(pi: int, ki: int) -> bool:
        if pi == len(p):
            return ki == len(k)
        if p[pi] == "#":
            return any(m(pi + 1, j) for j in range(ki, len(k) + 1))
        if ki == len(k):
            return False
        if p[pi] == "*" or p[pi] == k[ki]:
            return m(pi + 1, ki + 1)
        return False

    return m(0, 0)
