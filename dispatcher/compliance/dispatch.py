"""A regular expression rewritten so that Python's ``re`` rejects most positions of a search at
once: the same positions match (``search`` finds a match where the original finds one, and only
there), only faster.  Pure; used by ``template_lint`` for the per-message scans of the values.

Why: ``re`` tries a pattern at every position of the text, and entering a match costs ~170
machine instructions before the first comparison; a top-level alternation whose branches open
with an assertion (``\\b``, ``(?<![\\w/])``, ``(?=[a-z0-9])``: every lint pattern does) is entered
in full at every position, each branch in turn (the category terms: ~1 300 instructions per
character of a value).  A branch that opens with a literal or a character class is skipped by
``re`` with one comparison, and a pattern whose every branch opens with a literal gets a
first-character set that the search loop tests without entering the match at all.

The rewrite (:func:`dispatch`), which keeps the set of match positions:

1. **distribute** what opens a branch until a character opens it: ``(?:a|b)c`` is ``ac|bc``,
   ``x?y`` is ``y|xy``, ``x{m,n}`` with ``m >= 1`` is ``x x{m-1,n-1}``;
2. **move the opening assertions behind the first character**: with that character ``c``
   matched at ``p``, an assertion at ``p`` reads the same characters as one at ``p + 1`` that
   also reads ``c``: ``(?<!B)c`` is ``c(?<!Bc)``, ``\\b`` before a word character is
   ``(?<!\\w)``, before a non-word character ``(?<=\\w)``, and a one-character lookahead
   ``(?=K)c`` is ``c(?<=K)``;
3. **group the branches by the character that opens them**: the ASCII characters that open the
   same branches form one alternative (``[02-79](?:rest|rest')``: one comparison per character
   instead of one entry per branch; a branch that may open with another character is also
   tried behind ``[^\\x00-\\x7f](?<=its first character)``);
4. **one look behind for a group**: where the branches of such an alternative each forbid some
   characters before the first one (``\\b``, ``(?<![\\w/])``), a single lookbehind rejects the
   characters they all forbid before any of them is entered (``1000``: the ``0`` after ``1``
   opens no branch that may start inside a word).

Anything else (back-references, flags inside the pattern, possessive repeats, atomic groups,
anchors, a branch that may match the empty string, more than ``MAX_BRANCHES`` branches) leaves
the pattern as it is: :func:`dispatch` returns its input.  Tested against the original over
random texts and windows (tests/unit/compliance/test_dispatch.py).
"""

from __future__ import annotations

import re
from re import _constants as C  # type: ignore[attr-defined]
from re import _parser as P  # type: ignore[attr-defined]
from typing import Any, NamedTuple

from dispatcher.compliance.boundary import Unsupported, char_class

MAX_BRANCHES = 2000

Item = tuple[Any, Any]


class _Bail(Exception):
    """The pattern uses something the rewrite does not cover: keep it as it is."""


_AT = {
    C.AT_BOUNDARY: r"\b",
    C.AT_NON_BOUNDARY: r"\B",
}


def _char(code: int) -> str:
    return re.escape(chr(code))


def render(items: list[Item]) -> str:
    """The regular expression of parsed ``items`` (capturing groups rendered non-capturing)."""
    out: list[str] = []
    for op, av in items:
        if op is C.LITERAL:
            out.append(_char(av))
        elif op is C.NOT_LITERAL:
            out.append(f"[^{_char(av)}]")
        elif op is C.ANY:
            out.append(".")
        elif op is C.IN:
            out.append(char_class(av))
        elif op is C.AT and av in _AT:
            out.append(_AT[av])
        elif op in (C.ASSERT, C.ASSERT_NOT):
            direction, body = av
            head = {(C.ASSERT, 1): "(?=", (C.ASSERT_NOT, 1): "(?!"}.get((op, direction))
            head = head or ("(?<=" if op is C.ASSERT else "(?<!")
            out.append(head + render(list(body.data)) + ")")
        elif op is C.BRANCH:
            out.append("(?:" + "|".join(render(list(b.data)) for b in av[1]) + ")")
        elif op is C.SUBPATTERN:
            _group, add, remove, body = av
            if add or remove:
                raise _Bail("inline flags")
            out.append("(?:" + render(list(body.data)) + ")")
        elif op in (C.MAX_REPEAT, C.MIN_REPEAT):
            lo, hi, body = av
            top = "" if hi == C.MAXREPEAT else str(hi)
            lazy = "?" if op is C.MIN_REPEAT else ""
            out.append(f"(?:{render(list(body.data))}){{{lo},{top}}}{lazy}")
        else:
            raise _Bail(str(op))
    return "".join(out)


Branch = tuple[tuple[Item, ...], Item, tuple[Item, ...]]  # (assertions before, first char, rest)


def _branches(items: list[Item], before: tuple[Item, ...], out: list[Branch]) -> None:
    """The branches of ``items`` that open with a character, each with the assertions that came
    before it (step 1 of the module docstring)."""
    if len(out) > MAX_BRANCHES:
        raise _Bail("too many branches")
    if not items:
        raise _Bail("a branch may match the empty string")
    (op, av), rest = items[0], items[1:]
    if op in (C.LITERAL, C.NOT_LITERAL, C.ANY, C.IN):
        out.append((before, (op, av), tuple(rest)))
    elif op in (C.ASSERT, C.ASSERT_NOT) or (op is C.AT and av in _AT):
        _branches(rest, (*before, (op, av)), out)
    elif op is C.SUBPATTERN:
        _group, add, remove, body = av
        if add or remove:
            raise _Bail("inline flags")
        _branches(list(body.data) + rest, before, out)
    elif op is C.BRANCH:
        for b in av[1]:
            _branches(list(b.data) + rest, before, out)
    elif op in (C.MAX_REPEAT, C.MIN_REPEAT):
        lo, hi, body = av
        if hi == 0:
            _branches(rest, before, out)
            return
        top = hi if hi == C.MAXREPEAT else hi - 1
        again = [] if hi == 1 else [(op, (max(lo - 1, 0), top, body))]
        if lo == 0:
            _branches(rest, before, out)
        _branches(list(body.data) + again + rest, before, out)
    else:
        raise _Bail(str(op))


def _chars(first: Item) -> str:
    """The regular expression of one character matching ``first``."""
    return render([first])


def _word_class(first: Item) -> bool | None:
    """True when every character ``first`` matches is a word character (``\\w``), False when
    none is, None when it may be either (or cannot tell)."""
    op, av = first
    if op is C.LITERAL:
        return re.fullmatch(r"\w", chr(av)) is not None
    if op is not C.IN:
        return None
    kinds: set[bool] = set()
    for iop, iav in av:
        if iop is C.LITERAL:
            kinds.add(re.fullmatch(r"\w", chr(iav)) is not None)
        elif iop is C.RANGE and iav[1] < 128:
            kinds.update(re.fullmatch(r"\w", chr(c)) is not None for c in range(iav[0], iav[1] + 1))
        elif iop is C.CATEGORY and iav in (C.CATEGORY_DIGIT, C.CATEGORY_WORD):
            kinds.add(True)
        else:
            return None
    return kinds.pop() if len(kinds) == 1 else None


def _width(items: list[Item]) -> bool:
    lo, hi = P.SubPattern(P.State(), items).getwidth()
    return bool(lo == hi)


def _moved(assertion: Item, first: Item) -> str | None:
    """``assertion`` (at the position of ``first``) as an assertion at the next position
    (step 2 of the module docstring); ``""`` when ``first`` always passes it, None when never."""
    op, av = assertion
    c = _chars(first)
    if op is C.AT:
        word = _word_class(first)
        if av is not C.AT_BOUNDARY or word is None:
            raise _Bail("a boundary before a character of either kind")
        return rf"(?<!\w{c})" if word else rf"(?<=\w{c})"
    direction, body = av
    inner = list(body.data)
    if direction == -1:  # a lookbehind: read the first character too
        if not _width(inner):
            raise _Bail("a lookbehind of variable width")
        head = "(?<=" if op is C.ASSERT else "(?<!"
        return f"{head}(?:{render(inner)}){c})"
    # a lookahead of one character, read at the first character: a lookbehind after it, or,
    # when the first character is a literal, decided now
    if len(inner) != 1 or inner[0][0] not in (C.LITERAL, C.IN, C.NOT_LITERAL):
        raise _Bail("a lookahead of more than one character")
    if first[0] is C.LITERAL:
        holds = re.fullmatch(render(inner), chr(first[1])) is not None
        return "" if holds == (op is C.ASSERT) else None
    head = "(?<=" if op is C.ASSERT else "(?<!"
    return f"{head}{render(inner)})"


_ASCII = [chr(c) for c in range(128)]
_WORD = frozenset(c for c in _ASCII if re.fullmatch(r"\w", c))


class _Item(NamedTuple):
    ascii: frozenset[str]  # the ASCII characters its first character may be
    other: bool  # and whether it may be another one
    excluded: frozenset[str]  # ASCII characters its assertions forbid before the first one
    checks: str  # its assertions, read after the first character
    rest: str
    first: str


def _members(first: Item) -> tuple[frozenset[str], bool]:
    """The ASCII characters ``first`` matches, and whether it may match another one."""
    rx = re.compile(render([first]))
    ascii_ = frozenset(c for c in _ASCII if rx.fullmatch(c))
    op, av = first
    if op is C.LITERAL:
        return ascii_, av >= 128
    if op is C.IN:
        other = any(
            iop in (C.NEGATE, C.CATEGORY)
            or (iop is C.LITERAL and iav >= 128)
            or (iop is C.RANGE and iav[1] >= 128)
            for iop, iav in av
        )
        return ascii_, other
    return ascii_, True


def _excluded(before: tuple[Item, ...], first: Item) -> frozenset[str]:
    """ASCII characters that the assertions ``before`` forbid just before ``first``."""
    out: set[str] = set()
    for op, av in before:
        if op is C.AT:
            word = _word_class(first)
            if av is C.AT_BOUNDARY and word is not None:
                out |= _WORD if word else set(_ASCII) - _WORD
        elif av[0] == -1:  # a lookbehind of one character
            inner = list(av[1].data)
            if len(inner) == 1 and inner[0][0] in (C.LITERAL, C.IN, C.NOT_LITERAL):
                members, _ = _members(inner[0])
                out |= members if op is C.ASSERT_NOT else set(_ASCII) - members
    return frozenset(out)


def dispatch(pattern: str, flags: int = 0) -> str:
    """``pattern`` rewritten as the module docstring says; ``pattern`` itself when the rewrite
    does not apply.  Only ``search(...) is None`` is kept: which match is found, its groups and
    its extent may differ."""
    try:
        parsed = P.parse(pattern, flags)
        if flags & ~re.UNICODE or parsed.state.flags & ~re.UNICODE:
            raise _Bail("flags")
        out: list[Branch] = []
        _branches(list(parsed.data), (), out)
        items = []
        for before, first, rest in out:
            moved = [_moved(a, first) for a in before]
            if None in moved:
                continue  # an assertion ``first`` never passes
            ascii_, other = _members(first)
            checks = "".join(filter(None, moved))
            excluded = _excluded(before, first)
            items.append(_Item(ascii_, other, excluded, checks, render(list(rest)), _chars(first)))
    except (_Bail, Unsupported, RecursionError):
        return pattern
    blocks: dict[frozenset[int], list[str]] = {}  # the branches a character opens -> characters
    for c in _ASCII:
        opened = frozenset(i for i, it in enumerate(items) if c in it.ascii)
        if opened:
            blocks.setdefault(opened, []).append(c)
    alternatives = []
    for opened, chars in blocks.items():
        key = re.escape(chars[0]) if len(chars) == 1 else f"[{''.join(map(re.escape, chars))}]"
        inside = [items[i] for i in sorted(opened)]
        # the branches whose assertions forbid some characters before this one: one look at
        # the character before for all of them (those it forbids to every one) first
        guarded = [(it.checks, it.rest) for it in inside if it.excluded]
        branches = [_inner([(it.checks, it.rest) for it in inside if not it.excluded])]
        if guarded:
            common = frozenset.intersection(*(it.excluded for it in inside if it.excluded))
            guard = f"(?<![{''.join(map(re.escape, sorted(common)))}]{key})"
            branches.append(guard + _inner(guarded))
        alternatives.append(f"{key}(?:{'|'.join(b for b in branches if b)})")
    beyond = [(f"(?<={it.first}){it.checks}", it.rest) for it in items if it.other]
    if beyond:
        alternatives.append(r"[^\x00-\x7f]" + _inner(beyond))
    if not alternatives:
        return "(?!)"
    return "(?:" + "|".join(alternatives) + ")"


def _inner(branches: list[tuple[str, str]]) -> str:
    """``(checks, rest)`` branches after their first character, grouped by their checks."""
    if not branches:
        return ""
    groups: dict[str, list[str]] = {}
    for checks, rest in branches:
        groups.setdefault(checks, []).append(rest)
    bodies = []
    for checks, rests in groups.items():
        body = "|".join(dict.fromkeys(rests))
        bodies.append(f"{checks}(?:{body})" if body else checks)
    return f"(?:{'|'.join(bodies)})"
