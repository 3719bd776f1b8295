"""Twilio-compatible sandbox carrier (see docs/gateway.md)."""

from dispatcher.sandbox.app import create_app
from dispatcher.sandbox.callbacks import (
    AsgiCallbackSender,
    Callback,
    HttpCallbackSender,
    RecordingCallbackSender,
)
from dispatcher.sandbox.carrier import Sandbox
from dispatcher.sandbox.config import Faults, SandboxConfig, Schedule, default_campaign
from dispatcher.sandbox.inbound import inbound_params, post_inbound
from dispatcher.signing import twilio_signature

__all__ = [
    "AsgiCallbackSender",
    "Callback",
    "Faults",
    "HttpCallbackSender",
    "RecordingCallbackSender",
    "Sandbox",
    "SandboxConfig",
    "Schedule",
    "create_app",
    "default_campaign",
    "inbound_params",
    "post_inbound",
    "twilio_signature",
]
