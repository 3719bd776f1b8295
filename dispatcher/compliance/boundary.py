"""Which strings can sit at the edge of a regular expression's match: the prefix, suffix and infix
languages of a pattern, as regular expressions.  Pure; used by ``template_lint`` to prove, once
per template, that no lint pattern can match across the edge between the template's literal text
and a substituted value.

For a pattern ``P`` (its assertions dropped, which only enlarges the language, so every answer
errs towards "open"; a negative lookaround on one character class is kept, since at the edge of
the literal, where it cannot see the value, it succeeds, which errs the same way):

* ``prefixes(P)``: the strings ``s`` for which some non-empty ``u`` makes ``s + u`` a match;
* ``suffixes(P)``: the strings ``s`` for which some non-empty ``t`` makes ``t + s`` a match;
* ``infixes(P)``: the strings ``s`` for which some non-empty ``t`` and ``u`` make ``t + s + u`` a
  match.

A literal that ends a template part before a value is *closed* for ``P`` when none of its
non-empty suffixes is in ``prefixes(P)``: then no match of ``P`` starts in it and runs into the
value.  The rules, for a pattern node ``A`` that consumes one character (a literal or a class),
a sequence ``A B``, an alternation and a repetition ``A{m,n}``::

    prefixes(A) = {""}          prefixes(A B) = prefixes(A) | A prefixes(B)
    suffixes(A) = {""}          suffixes(A B) = suffixes(A) B | suffixes(B)
    prefixes(A{m,n}) = A{0,n-1} prefixes(A)     suffixes(A{m,n}) = suffixes(A) A{0,n-1}

(``prefixes(A B)``: either the cut falls inside ``A``, or ``A`` is whole and the cut falls inside
``B``; a repetition is a sequence of ``k <= n`` copies.)  Python's ``re`` has no partial match,
and the ``regex`` package's would cost a dependency for this one use; the rules fit in this file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from re import _constants as C  # type: ignore[attr-defined]
from re import _parser as P  # type: ignore[attr-defined]
from typing import cast

_CATEGORY = {
    C.CATEGORY_DIGIT: r"\d",
    C.CATEGORY_NOT_DIGIT: r"\D",
    C.CATEGORY_SPACE: r"\s",
    C.CATEGORY_NOT_SPACE: r"\S",
    C.CATEGORY_WORD: r"\w",
    C.CATEGORY_NOT_WORD: r"\W",
}


class Unsupported(ValueError):
    """The pattern uses something these rules do not cover (a back-reference)."""


@dataclass(frozen=True, slots=True)
class Node:
    kind: str  # "atom" (one character), "look" (a negative lookaround), "eps", "never", "seq",
    # "alt", "rep"
    text: str = ""  # atom: its regex
    items: tuple[Node, ...] = ()
    lo: int = 0
    hi: int | None = None  # rep: None is unbounded


EPS = Node("eps")
NEVER = Node("never")


def _seq(*items: Node) -> Node:
    flat: list[Node] = []
    for it in items:
        if it.kind == "never":
            return NEVER
        if it.kind == "eps":
            continue
        flat.extend(it.items if it.kind == "seq" else (it,))
    if not flat:
        return EPS
    return flat[0] if len(flat) == 1 else Node("seq", items=tuple(flat))


def _alt(*items: Node) -> Node:
    keep = [it for it in items if it.kind != "never"]
    if not keep:
        return NEVER
    return keep[0] if len(keep) == 1 else Node("alt", items=tuple(keep))


def _rep(node: Node, lo: int, hi: int | None) -> Node:
    if hi == 0 or node.kind == "eps":
        return EPS
    if node.kind == "never":
        return EPS if lo == 0 else NEVER
    return Node("rep", items=(node,), lo=lo, hi=hi)


def char_class(items: list[tuple[object, object]]) -> str:
    """A parsed character set (``sre_parse`` IN items) as pattern text; ``Unsupported`` for
    what it does not render (dispatch.py renders its sets with it too)."""
    out: list[str] = []
    for op, av in items:
        if op is C.NEGATE:
            out.insert(0, "^")
        elif op is C.LITERAL:
            out.append(re.escape(chr(av)))  # type: ignore[arg-type]
        elif op is C.RANGE:
            lo, hi = cast("tuple[int, int]", av)  # sre_parse: RANGE carries (low, high)
            out.append(f"{re.escape(chr(lo))}-{re.escape(chr(hi))}")
        elif op is C.CATEGORY and av in _CATEGORY:
            out.append(_CATEGORY[av])
        else:
            raise Unsupported(str(op))
    return "[" + "".join(out) + "]"


def _look(av: tuple[int, object]) -> Node | None:
    """A negative lookaround whose body is one character class, kept as written; None for
    another (dropped)."""
    direction, body = av
    try:
        inner = _convert(body, strict=True)
    except Unsupported:
        return None
    if inner.kind != "atom":
        return None
    return Node("look", ("(?!" if direction == 1 else "(?<!") + inner.text + ")")


def _convert(sub: object, *, strict: bool = False) -> Node:
    parts: list[Node] = []
    for op, av in sub.data:  # type: ignore[attr-defined]
        if op is C.LITERAL:
            parts.append(Node("atom", re.escape(chr(av))))
        elif op is C.NOT_LITERAL:
            parts.append(Node("atom", f"[^{re.escape(chr(av))}]"))
        elif op is C.ANY:
            parts.append(Node("atom", "."))
        elif op is C.IN:
            parts.append(Node("atom", char_class(av)))
        elif strict and op in (C.AT, C.ASSERT, C.ASSERT_NOT):
            raise Unsupported(str(op))
        elif op is C.ASSERT_NOT and (look := _look(av)) is not None:
            parts.append(look)
        elif op in (C.AT, C.ASSERT, C.ASSERT_NOT):
            continue  # dropped: a larger language, so an answer errs towards "open"
        elif op is C.BRANCH:
            parts.append(_alt(*(_convert(b, strict=strict) for b in av[1])))
        elif op is C.SUBPATTERN:
            parts.append(_convert(av[-1], strict=strict))
        elif op is C.ATOMIC_GROUP:
            parts.append(_convert(av, strict=strict))
        elif op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT):
            lo, hi, body = av
            parts.append(_rep(_convert(body, strict=strict), lo, None if hi == C.MAXREPEAT else hi))
        else:
            raise Unsupported(str(op))
    return _seq(*parts)


def _upto(node: Node, hi: int | None) -> Node:
    """``node{0,hi-1}`` (``hi`` None: unbounded)."""
    return _rep(node, 0, None if hi is None else hi - 1)


def prefixes(n: Node) -> Node:
    if n.kind == "atom":
        return EPS
    if n.kind in ("eps", "never", "look"):
        return NEVER
    if n.kind == "alt":
        return _alt(*(prefixes(i) for i in n.items))
    if n.kind == "rep":
        return _seq(_upto(n.items[0], n.hi), prefixes(n.items[0]))
    head, tail = n.items[0], _seq(*n.items[1:])
    return _alt(prefixes(head), _seq(head, prefixes(tail)))


def suffixes(n: Node) -> Node:
    if n.kind == "atom":
        return EPS
    if n.kind in ("eps", "never", "look"):
        return NEVER
    if n.kind == "alt":
        return _alt(*(suffixes(i) for i in n.items))
    if n.kind == "rep":
        return _seq(suffixes(n.items[0]), _upto(n.items[0], n.hi))
    init, last = _seq(*n.items[:-1]), n.items[-1]
    return _alt(_seq(suffixes(init), last), suffixes(last))


def crossings(n: Node) -> Node:
    """The part of ``suffixes(n)`` a scan of the value cannot see.  A branch that ends in an
    open tail (``C*``, ``C+`` or an optional group, with nothing after it, not even an
    assertion: a link's ``[^\\s]+`` or its ``(?:/path)?``) matches with that tail cut at any
    point, so a match whose cut falls inside the tail also matches inside the value plus the
    one character of context the value scan reads; only a cut before the tail crosses
    unseen."""
    if n.kind == "alt":
        return _alt(*(crossings(i) for i in n.items))
    last = n.items[-1] if n.kind == "seq" else n
    one = last.kind == "rep" and last.lo == 1 and last.hi is None and last.items[0].kind == "atom"
    if one or (last.kind == "rep" and last.lo == 0):
        head = _seq(*(n.items[:-1] if n.kind == "seq" else ()))
        tail = _rep(last.items[0], 0, None if last.hi is None else last.hi - last.lo)
        # A cut at the head's end is inside the tail (seen): the head must reach into the
        # literal.  With ``C+`` the first ``C`` may be the context character the scan reads.
        return _seq(suffixes(head), Node("look", "(?<=.)"), *(last.items * last.lo), tail)
    return suffixes(n)


def render(n: Node) -> str:
    if n.kind in ("atom", "look"):
        return n.text
    if n.kind == "eps":
        return ""
    if n.kind == "never":
        return "(?!)"
    if n.kind == "seq":
        return "".join(render(i) for i in n.items)
    if n.kind == "alt":
        return "(?:" + "|".join(render(i) for i in n.items) + ")"
    hi = "" if n.hi is None else str(n.hi)
    return f"(?:{render(n.items[0])}){{{n.lo},{hi}}}"


@dataclass(frozen=True, slots=True)
class Edges:
    """A pattern's edge languages, compiled with its flags (assertions dropped)."""

    prefixes: re.Pattern[str]
    suffixes: re.Pattern[str]
    infixes: re.Pattern[str]
    suffix_then_any: re.Pattern[str]  # a non-empty suffix the value scan cannot see, then anything

    def open_before_value(self, literal: str) -> bool:
        """Some match could start in ``literal`` and run on into the value after it."""
        return any(self.prefixes.fullmatch(literal, i) for i in range(len(literal)))

    def open_after_value(self, literal: str) -> bool:
        """Some match could start in the value before ``literal`` and end inside it (a
        lookahead at its end reading the literal's next character)."""
        return self.suffix_then_any.match(literal) is not None

    def spans(self, literal: str) -> bool:
        """Some match could start in the value before ``literal`` and end in the one after."""
        return self.infixes.fullmatch(literal) is not None


@cache
def edges(pattern: str, flags: int) -> Edges:
    node = _convert(P.parse(pattern, flags))
    keep = flags & (re.IGNORECASE | re.ASCII | re.DOTALL | re.MULTILINE)
    sfx = render(suffixes(node))
    cross = render(crossings(node))
    return Edges(
        re.compile(render(prefixes(node)), keep),
        re.compile(sfx, keep),
        re.compile(render(prefixes(suffixes(node))), keep),
        re.compile(f"(?:{cross})(?<=.).*", keep | re.DOTALL),
    )
