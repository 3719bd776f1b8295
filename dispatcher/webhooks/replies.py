"""Auto-reply texts: the campaign's registered messages, else compliant defaults (pure).

Contents follow compliance.md §2.2: the opt-out confirmation acknowledges and says no further
messages will be sent (brand named, no marketing: FCC one-time confirmation, §1.4); the opt-in
confirmation names the brand, the recurring program, HELP and STOP; HELP names the brand, where to
get help and how to opt out.  No text is ever empty: with no campaign and no brand known, the
defaults simply name no brand.
"""

from __future__ import annotations

from typing import Any


def _prefix(name: str | None) -> str:
    name = (name or "").strip()
    return f"{name}: " if name else ""


def opt_out_reply(campaign: Any, brand_name: str | None) -> str:
    own = getattr(campaign, "opt_out_message", None) if campaign is not None else None
    if own and own.strip():
        return str(own).strip()
    return (
        f"{_prefix(brand_name)}You have been unsubscribed and will receive no further "
        "messages. Reply START to resubscribe."
    )


def opt_in_reply(campaign: Any, brand_name: str | None) -> str:
    own = getattr(campaign, "opt_in_message", None) if campaign is not None else None
    if own and own.strip():
        return str(own).strip()
    return (
        f"{_prefix(brand_name)}You are subscribed to recurring messages. Msg frequency "
        "varies. Msg & data rates may apply. Reply HELP for help, STOP to opt out."
    )


def help_reply(campaign: Any, brand_name: str | None) -> str:
    own = getattr(campaign, "help_message", None) if campaign is not None else None
    if own and own.strip():
        return str(own).strip()
    url = None
    if campaign is not None:
        url = getattr(campaign, "terms_and_conditions_url", None) or getattr(
            campaign, "privacy_policy_url", None
        )
    where = f"visit {url}" if url else "reply to this message and our team will get back to you"
    return (
        f"{_prefix(brand_name)}For help, {where}. Msg & data rates may apply. "
        "Reply STOP to opt out."
    )
