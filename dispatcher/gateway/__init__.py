"""Twilio gateway: the official client, outcome classification and an in-process transport."""

from dispatcher.gateway.client import TwilioGateway, body_hash, classify_transport
from dispatcher.gateway.outcomes import CODE_RULES, Outcome, SendResult, classify_code

__all__ = [
    "CODE_RULES",
    "Outcome",
    "SendResult",
    "TwilioGateway",
    "body_hash",
    "classify_code",
    "classify_transport",
]
