"""Message templates with ``[field]`` placeholders, as TCR sample messages write them
("Your contract expires on [date]").  Pure.

``[[`` and ``]]`` stand for literal brackets.  A field name is letters, digits, ``_`` or ``.``.
Values come from (lowest to highest priority) the contact's attributes, its ``name`` (also
``first_name``; an attribute of that name comes first), and per-recipient variables given with the
run (a null variable is no value).  An empty value is missing: the row is suppressed
``template_variable_missing``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from dispatcher.errors import InputError

#: fields every contact can fill from its columns (see :func:`contact_values`)
CONTACT_FIELDS: frozenset[str] = frozenset({"name", "first_name"})
_NAME = r"[A-Za-z_][A-Za-z0-9_.]{0,63}"
_FIELD = re.compile(f"^{_NAME}$")
MAX_TEMPLATE = 1600
#: the characters ``str.strip()`` removes (what ``\s`` means to Python), spelled out so that the
#: pattern below means the same to every regular-expression engine (ECMA-262's ``\s`` differs)
_SPACE = r"\t-\r\x1c- \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_SOLID = rf"\[\[|\]\]|\[[{_SPACE}]*{_NAME}[{_SPACE}]*\]|[^\[\]\x00{_SPACE}]"
#: The templates :func:`parse_template` accepts, less those with a NUL character (the API
#: refuses NUL everywhere), as one regular expression for the OpenAPI document: literal text,
#: ``[[`` and ``]]``, ``[field]`` (blanks around the name allowed), and something not blank.
TEMPLATE_PATTERN = rf"^[{_SPACE}]*(?:{_SOLID})(?:{_SOLID}|[{_SPACE}])*$"


@dataclass(frozen=True)
class Template:
    source: str
    parts: tuple[tuple[bool, str], ...]  # (is_field, text-or-field-name)

    @property
    def fields(self) -> frozenset[str]:
        return frozenset(t for f, t in self.parts if f)

    def render(self, values: dict[str, Any]) -> str:
        return "".join(self.render_parts(values))

    def render_parts(self, values: dict[str, Any]) -> tuple[str, ...]:
        """The rendered body as literal, value, literal, ..., literal (``""`` between two
        fields or at an edge): what ``compliance.OutgoingMessage.parts`` takes."""
        out = [""]
        for is_field, text in self.parts:
            if is_field:
                v = values.get(text)
                if v is None or v == "":
                    raise MissingField(text)
                out += [str(v), ""]
            else:
                out[-1] += text
        return tuple(out)


class MissingField(KeyError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


@lru_cache(maxsize=256)
def parse_template(source: str) -> Template:
    if not isinstance(source, str) or not source.strip():
        raise InputError("template is empty", field="template")
    if len(source) > MAX_TEMPLATE:
        raise InputError(
            f"template is {len(source)} characters; Twilio's limit is 1600", field="template"
        )
    parts: list[tuple[bool, str]] = []
    buf: list[str] = []
    i, n = 0, len(source)
    while i < n:
        ch = source[i]
        if source.startswith("[[", i) or source.startswith("]]", i):
            buf.append(ch)
            i += 2
        elif ch == "[":
            end = source.find("]", i + 1)
            if end < 0:
                raise InputError(
                    f"template: '[' at column {i + 1} is never closed", field="template"
                )
            name = source[i + 1 : end].strip()
            if not _FIELD.match(name):
                raise InputError(
                    f"template: [{source[i + 1 : end]}] at column {i + 1} is not a field name "
                    "(letters, digits, _ or .; write [[ and ]] for literal brackets)",
                    field="template",
                )
            if buf:
                parts.append((False, "".join(buf)))
                buf = []
            parts.append((True, name))
            i = end + 1
        elif ch == "]":
            raise InputError(
                f"template: ']' at column {i + 1} has no opening '['", field="template"
            )
        else:
            buf.append(ch)
            i += 1
    if buf:
        parts.append((False, "".join(buf)))
    return Template(source, tuple(parts))


def contact_values(
    name: str | None, attributes: dict[str, Any] | None, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    values: dict[str, Any] = dict(attributes or {})
    words = (name or "").split()
    if words:  # a blank name fills neither (and "  ".split()[0] would raise)
        values.setdefault("name", name)
        values.setdefault("first_name", words[0])
    # a variable given as null is no value: the contact's own one stands (as the launch checks
    # count it, dispatcher.launch.audience_fields)
    values.update({k: v for k, v in (variables or {}).items() if v is not None})
    return values


def body_hash(body: str) -> str:
    """SHA-256 hex of a rendered message body: the one body hash of the package (the outbox
    stores it to recognise a send at the carrier, ``Gateway.find_sent``; the daily repetition
    metrics count bodies by it, never storing the body)."""
    return hashlib.sha256(body.encode("utf-8")).hexdigest()
