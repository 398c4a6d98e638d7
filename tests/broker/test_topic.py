"""Topic matching: the trie against the reference matcher, plus RabbitMQ's edge cases."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amqpd.broker.exchanges.topic import TopicExchange, reference_match

# Small alphabets make collisions (and so matches) likely; "" makes empty words.
word = st.sampled_from(["a", "b", "c", ""])
pattern_word = st.sampled_from(["a", "b", "", "*", "#"])
routing_key = st.lists(word, max_size=5).map(".".join)
binding_key = st.lists(pattern_word, max_size=5).map(".".join)


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("#", "", True),
        ("#", "a.b.c", True),
        ("*", "", False),
        ("*", "a", True),
        ("*", "a.b", False),
        ("", "", True),
        ("", "a", False),
        ("a.#", "a", True),
        ("a.#", "a.b.c", True),
        ("#.a", "a", True),
        ("#.a", "b.a", True),
        ("a.*.c", "a..c", True),  # empty middle word
        ("a.*", "a.", True),  # trailing empty word (LavinMQ's #2310 was this)
        ("a", "a.", False),
        ("#.#", "", True),
        ("a.#.b", "a.b", True),
        ("a.#.b", "a.x.y.b", True),
        ("*.#", "", False),
        ("#.*", "a", True),
        (".", ".", True),
        ("*.*", ".", True),
    ],
)
def test_cases(pattern: str, key: str, expected: bool) -> None:
    assert reference_match(pattern, key) is expected
    t = TopicExchange()
    t.bind("q", pattern, {})
    assert (list(t.route([key], None)) == ["q"]) is expected


@settings(max_examples=500, deadline=None)
@given(patterns=st.lists(binding_key, max_size=8), keys=st.lists(routing_key, max_size=5))
def test_trie_matches_reference(patterns: list[str], keys: list[str]) -> None:
    t = TopicExchange()
    for i, p in enumerate(patterns):
        t.bind(i, p, {})
    for key in keys:
        expected = {i for i, p in enumerate(patterns) if reference_match(p, key)}
        assert set(t.route([key], None)) == expected


@settings(max_examples=200, deadline=None)
@given(
    patterns=st.lists(st.tuples(binding_key, st.integers(0, 3)), max_size=10),
    removals=st.lists(st.integers(0, 9), max_size=10),
    keys=st.lists(routing_key, max_size=4),
)
def test_trie_after_unbinds(
    patterns: list[tuple[str, int]], removals: list[int], keys: list[str]
) -> None:
    t = TopicExchange()
    live: set[tuple[int, str]] = set()
    for p, dest in patterns:
        t.bind(dest, p, {})
        live.add((dest, p))
    for r in removals:
        if r < len(patterns):
            p, dest = patterns[r]
            t.unbind(dest, p, {})
            live.discard((dest, p))
    for key in keys:
        expected = {dest for dest, p in live if reference_match(p, key)}
        assert set(t.route([key], None)) == expected
    for dest, p in list(live):
        t.unbind(dest, p, {})
    assert not t._root.children and not t._root.dests  # pruned back to empty


def test_many_hashes_is_not_exponential() -> None:
    t = TopicExchange()
    t.bind("q", ".".join(["#"] * 30) + ".z", {})
    assert list(t.route([".".join(["a"] * 40)], None)) == []
    assert list(t.route([".".join(["a"] * 40) + ".z"], None)) == ["q"]
