"""Twilio gateway: the official client, outcome classification and an in-process transport."""

from dispatcher.gateway.client import TwilioGateway, classify_transport
from dispatcher.gateway.outcomes import CODE_RULES, Outcome, SendResult, classify_code

__all__ = [
    "CODE_RULES",
    "Outcome",
    "SendResult",
    "TwilioGateway",
    "classify_code",
    "classify_transport",
]
