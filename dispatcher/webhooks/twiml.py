"""TwiML replies (the only thing an inbound webhook answers with)."""

from __future__ import annotations

from xml.sax.saxutils import escape

from starlette.responses import Response

EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


def render(message: str | None) -> str:
    if not message:
        return EMPTY
    return (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Message>'
        f"{escape(message)}</Message></Response>"
    )


def twiml_response(message: str | None) -> Response:
    return Response(render(message), media_type="text/xml")
