"""Contract checks against Twilio's OpenAPI description (trimmed) with openapi-core.

Spec directory, first that exists: the vendored copy ``tests/contract/twilio/``; env
``DISPATCHER_TWILIO_SPEC_DIR``; ``<repo>/../shared/twilio``.
"""

from __future__ import annotations

import base64
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import jsonschema
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SPEC_FILES = ("messages_v2010.trimmed.json", "usa2p_v1.trimmed.json")


def spec_dir() -> Path:
    candidates = [HERE / "twilio"]
    env = os.environ.get("DISPATCHER_TWILIO_SPEC_DIR")
    if env:
        candidates.append(Path(env))
    candidates.append(REPO.parent / "shared" / "twilio")
    for c in candidates:
        if all((c / f).is_file() for f in SPEC_FILES):
            return c
    raise FileNotFoundError("Twilio trimmed specs not found in: " + ", ".join(map(str, candidates)))


def shared_dir() -> Path | None:
    env = os.environ.get("DISPATCHER_TWILIO_SPEC_DIR")
    for c in ([Path(env)] if env else []) + [REPO.parent / "shared" / "twilio"]:
        if all((c / f).is_file() for f in SPEC_FILES):
            return c
    return None


@lru_cache(maxsize=4)
def load_spec(name: str) -> dict[str, Any]:
    return json.loads((spec_dir() / name).read_text())


@lru_cache(maxsize=4)
def _openapi(name: str) -> OpenAPI:
    return OpenAPI.from_dict(load_spec(name))


def _which(path: str) -> str:
    return SPEC_FILES[0] if path.startswith("/2010-04-01/") else SPEC_FILES[1]


def _host(name: str) -> str:
    return load_spec(name)["servers"][0]["url"]


def _mock_request(
    method: str,
    path: str,
    params: dict[str, Any] | None,
    data: dict[str, Any] | None,
    headers: dict[str, str] | None,
    auth: tuple[str, str] | None,
) -> tuple[str, MockRequest]:
    name = _which(path)
    hdrs = dict(headers or {})
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        hdrs["Authorization"] = f"Basic {token}"
    body = urlencode(data or {}, doseq=True).encode() if data else None
    query = {k: v for k, v in (params or {}).items() if v is not None}
    req = MockRequest(
        _host(name),
        method.lower(),
        path,
        args=query,
        headers=hdrs,
        data=body,
        content_type="application/x-www-form-urlencoded",
    )
    return name, req


def validate_request(
    method: str,
    url: str,
    params: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    auth: tuple[str, str] | None = None,
) -> None:
    """Raise if a request the gateway made is not a valid operation of the spec."""
    path = urlsplit(url).path
    name, req = _mock_request(method, path, params, data, headers, auth)
    _openapi(name).validate_request(req)


def validate_response(method: str, url: str, status: int, text: str) -> None:
    """Raise if a success response does not match the spec; error responses must match Twilio's
    error document (the spec declares no error responses)."""
    path = urlsplit(url).path
    if status >= 400:
        jsonschema.validate(json.loads(text), ERROR_SCHEMA)
        return
    name, req = _mock_request(method, path, None, None, None, None)
    data = text.encode() if text else b""
    resp = MockResponse(data, status_code=status, content_type="application/json")
    _openapi(name).validate_response(req, resp)


ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["code", "message", "more_info", "status"],
    "properties": {
        "code": {"type": "integer"},
        "message": {"type": "string"},
        "more_info": {"type": "string", "pattern": "^https://www.twilio.com/docs/errors/"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
    },
}


@lru_cache(maxsize=1)
def callback_schema() -> dict[str, Any]:
    """Status-callback form fields, typed from the message resource of the spec."""
    comps = load_spec(SPEC_FILES[0])["components"]["schemas"]
    msg = comps["api.v2010.account.message"]["properties"]
    status_enum = comps["message_enum_status"]["enum"]
    return {
        "type": "object",
        "required": [
            "MessageSid",
            "SmsSid",
            "AccountSid",
            "From",
            "To",
            "MessageStatus",
            "SmsStatus",
            "ApiVersion",
        ],
        "properties": {
            "MessageSid": {"type": "string", "pattern": msg["sid"]["pattern"]},
            "SmsSid": {"type": "string", "pattern": msg["sid"]["pattern"]},
            "AccountSid": {"type": "string", "pattern": msg["account_sid"]["pattern"]},
            "MessagingServiceSid": {
                "type": "string",
                "pattern": msg["messaging_service_sid"]["pattern"],
            },
            "From": {"type": "string"},
            "To": {"type": "string"},
            "MessageStatus": {"enum": status_enum},
            "SmsStatus": {"enum": status_enum},
            "ErrorCode": {"type": "string", "pattern": "^[0-9]+$"},
            "ApiVersion": {"const": "2010-04-01"},
            "RawDlrDoneDate": {"type": "string", "pattern": "^[0-9]{10}$"},
        },
        "additionalProperties": False,
    }


def validate_callback(params: dict[str, str]) -> None:
    jsonschema.validate(params, callback_schema())
