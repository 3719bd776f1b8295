"""The dispatch rewrite of a pattern finds a match exactly where the pattern does
(dispatcher/compliance/dispatch.py), on the lint patterns as template_lint scans them."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher.compliance import template_lint
from dispatcher.compliance.dispatch import dispatch

ALL = frozenset(range(len(template_lint._patterns())))
GROUPS = [frozenset({j}) for j in sorted(ALL)] + [ALL - {0}, ALL]

# words of the terms, links, phone numbers, opt-out wording and evasion tricks, and characters
# at their edges, so that random texts hit matches, near misses and boundaries
WORDS = [
    "buy", "viagra", "order", "ozempic", "online", "xxx", "videos", "happy", "hour", "gun",
    "show", "delta-8", "420", "deals", "debt", "relief", "cash", "quick", "loan", "c b d",
    "v1agra", "m4rijuana", "www.", "acme", ".com", "http://", "https://x.io/a", "t.co",
    "212", "555", "0100", "(212)", "+1", "+15550100000", "1-800-", "flowers", "800",
    "reply", "stop", "text", "2", "to", "opt", "out", "end", "send", "press", "with", "the word",
    "#10000-", "5550000", "_", "/", "-", ".", " ", "  ", "\n", "a", "0", "$", "@", "|", "!", "+",
    "\"", "'", "(", ")", "é", "é", "ü",
]  # fmt: skip
TEXT = st.lists(st.sampled_from(WORDS), max_size=12).map("".join)


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: ",".join(map(str, sorted(g))))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=TEXT, data=st.data())
def test_the_rewrite_matches_where_the_pattern_does(group, text, data):
    source = template_lint._union(group)
    original, rewritten = re.compile(source), template_lint._scanner(group)
    assert rewritten.pattern != source  # the rewrite applies to every lint pattern
    text = text.lower()
    pos = data.draw(st.integers(0, len(text)))
    end = data.draw(st.integers(pos, len(text)))
    want = original.search(text, pos, end) is not None
    assert (rewritten.search(text, pos, end) is not None) == want, (text, pos, end)


@pytest.mark.parametrize(
    ("pattern", "texts"),
    [
        # a boundary before a word character, and before a non-word one
        (r"\bab|\b-c", ["ab", "xab", "-ab", "x-c", "-c", " -c", "a-c"]),
        # a lookbehind read with the first character
        (r"(?<![\w/])12|(?<=x)3", ["12", "a12", "/12", " 12", "x3", "y3", "3"]),
        # a one-character lookahead: decided now on a literal, a lookbehind on a class
        (r"(?=[a-z])a|(?=[a-z])[0-9a]b|(?![0-9])[a-z0-9]c", ["a", "0b", "ab", "0c", "zc"]),
        # distributed groups, optional and repeated openings
        (r"(?:x|y)?z|(?:ab){2,3}!|q*r", ["z", "xz", "abab!", "ab!", "r", "qqr"]),
    ],
)
def test_rewrite_rules(pattern, texts):
    rewritten = re.compile(dispatch(pattern))
    assert rewritten.pattern != pattern
    for text in texts:
        for pos in range(len(text) + 1):
            want = re.compile(pattern).search(text, pos) is not None
            assert (rewritten.search(text, pos) is not None) == want, (pattern, text, pos)


@pytest.mark.parametrize(
    "pattern",
    [r"(a)\1", r"(?i:a)b", r"a*", r"^ab", r"(?>ab)c", r"a++b", r"\b[a-]x", r"(?=ab)a"],
)
def test_what_the_rewrite_does_not_cover_is_kept(pattern):
    """Back-references, inline flags, an empty match, anchors, atomic groups, possessive
    repeats, a boundary before a class of both kinds, a longer lookahead."""
    assert dispatch(pattern) == pattern
