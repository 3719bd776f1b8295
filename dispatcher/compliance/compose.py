"""The body that is actually sent.

Seed 002 (Gladly SMS compliance): the first message to a contact — and every proactive-campaign
template — names the company and carries opt-out language ("Reply STOP to opt-out"); later messages
in the same conversation need not repeat it.  Twilio refuses bodies over 1,600 characters (error
21617, [SEG], [E21617]); we count UTF-16 units (emoji = 2), the conservative reading of
"emoji/non-GSM may count as more".

Choices where the sources are silent: the brand is prefixed as ``"{brand}: "`` (the format of the
seed 004 sample opt-in/help messages); opt-out language is appended as a new sentence; presence
checks are case-insensitive, so ``compose`` is idempotent.
"""

from __future__ import annotations

from dispatcher.compliance.content import has_opt_out_language
from dispatcher.compliance.segments import MAX_BODY_CHARS, utf16_units
from dispatcher.errors import InputError, MessageTooLongError

DEFAULT_OPT_OUT_LANGUAGE = "Reply STOP to opt out."


def compose(
    body: str,
    *,
    brand_name: str,
    opt_out_language: str | None = DEFAULT_OPT_OUT_LANGUAGE,
    first_message: bool,
) -> str:
    """Add brand name and opt-out language to a first message; leave later messages alone.

    Raises ``InputError`` for an empty body or brand, ``MessageTooLongError`` past 1,600 chars."""
    if not body or not body.strip():
        raise InputError("message body is empty", field="body")
    text = body
    if first_message:
        if not brand_name or not brand_name.strip():
            raise InputError("brand name is required for a first message", field="brand_name")
        brand = brand_name.strip()
        language = (opt_out_language or DEFAULT_OPT_OUT_LANGUAGE).strip()
        if brand.casefold() not in text.casefold():
            text = f"{brand}: {text.lstrip()}"
        if not has_opt_out_language(text, language):
            text = text.rstrip()
            sep = " " if text[-1] in ".!?" else ". "
            text = f"{text}{sep}{language}"
    units = utf16_units(text)
    if units > MAX_BODY_CHARS:
        raise MessageTooLongError(
            f"composed message is {units} characters; Twilio's limit is {MAX_BODY_CHARS} (21617)"
        )
    return text
