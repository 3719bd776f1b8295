# ruff: noqa: E501  (registration text copied from seed 004)
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Camp:
    campaign_status: str | None = "VERIFIED"
    us_app_to_person_usecase: str = "ACCOUNT_NOTIFICATION"
    opt_in_keywords: list[str] = field(default_factory=list)
    opt_out_keywords: list[str] = field(default_factory=list)
    help_keywords: list[str] = field(default_factory=list)
    opt_in_message: str | None = None
    opt_out_message: str | None = None
    help_message: str | None = None
    has_embedded_links: bool = False
    has_embedded_phone: bool = False
    age_gated: bool = False
    direct_lending: bool = False
    message_samples: list[str] = field(default_factory=list)
    quiet_hours_policy: str = "strictest"
    frequency_cap_count: int | None = None
    frequency_cap_hours: int | None = None


# Built from the field examples of seed 004 (Campaign Troubleshooting Guide §4.2, "Acme Sandwich").
VALID_REGISTRATION: dict[str, Any] = {
    "brand_name": "Acme Sandwich",
    "description": (
        "This Campaign will send order and delivery notifications from Acme Sandwich Company to "
        "end customers who have opted in."
    ),
    "message_flow": (
        "End users opt-in by visiting www.acmesandwich.com and adding their phone number. They then "
        "check a box agreeing to receive text messages from Acme Sandwiches. Additionally, end users "
        "can also opt-in by texting START to (111) 222-3333 to opt in. Term and Conditions at "
        "www.acmesandwich.com/tc. Privacy Policy at www.acmesandwich.com/privacy"
    ),
    "message_samples": [
        "This is a message from the Acme Sandwich Company. Your order for [sandwich type, other "
        "item] will be delivered by [time] on [date]. If you have questions or would like to change "
        "your order schedule, call 333-444-1212. If you would like to opt out of future "
        "notifications like this, text STOP in reply to this message.",
        "Acme Sandwich: your order [order id] is on its way, track it at www.acmesandwich.com/t. "
        "Reply STOP to opt out.",
    ],
    "us_app_to_person_usecase": "DELIVERY_NOTIFICATION",
    "has_embedded_links": True,
    "has_embedded_phone": True,
    "subscriber_opt_in": True,
    "age_gated": False,
    "direct_lending": False,
    "opt_in_message": "Acme Sandwich: You are now opted-in. For help, reply HELP. To opt-out, reply STOP",
    "opt_out_message": (
        "You have successfully been unsubscribed from Acme Sandwich. You will not receive any "
        "more messages from this number."
    ),
    "help_message": "Acme Sandwich: Please visit www.acmesandwich.com to get support. To opt-out, reply STOP.",
    "opt_in_keywords": ["START"],
    "opt_out_keywords": ["STOP"],
    "help_keywords": ["HELP"],
}


def registration(**changes: Any) -> dict[str, Any]:
    reg = copy.deepcopy(VALID_REGISTRATION)
    for k, v in changes.items():
        if v is DELETE:
            reg.pop(k, None)
        else:
            reg[k] = v
    return reg


DELETE = object()
