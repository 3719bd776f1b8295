"""The pipeline benchmark's bare status-callback receiver: an HTTP/1.1 server that answers every
POST with what ``dispatcher serve`` answers an accepted status callback (200, the empty TwiML
document) and does nothing else -- no signature check, no form parsing, no database.

    python bench/_sink.py PORT

Standard library only (asyncio, one thread): it is the least a receiver can spend per callback
(read the request, find its end, write a fixed answer), so the sandbox's callbacks can be part
of the ceiling's load (bench/pipeline.py, the "with callbacks" ceiling) without the ceiling
paying for a web framework.  ``GET /count`` answers the number of POSTs received so far (the
bench checks the callbacks arrived); keep-alive and pipelining as HTTP/1.1 has them; a request
whose head is malformed closes its connection.
"""

from __future__ import annotations

import asyncio
import sys

EMPTY_TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'
OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/xml; charset=utf-8\r\nContent-Length: %d\r\n\r\n"
OK = OK_HEAD % len(EMPTY_TWIML) + EMPTY_TWIML
MAX_HEAD = 64 * 1024


class Sink(asyncio.Protocol):
    posts = 0  # class-wide: every connection counts into it (one thread)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    self.transport.close()
                    return
                break
            head = buf[:end]
            length = 0
            at = head.lower().find(b"\r\ncontent-length:")
            if at >= 0:
                line_end = head.find(b"\r\n", at + 2)
                value = head[at + 17 : line_end if line_end >= 0 else len(head)].strip()
                if not value.isdigit():
                    self.transport.close()
                    return
                length = int(value)
            total = end + 4 + length
            if len(buf) < total:
                break
            if head.startswith(b"POST "):
                Sink.posts += 1
                self.transport.write(OK)
            else:  # GET /count (or anything else: the count)
                body = b"%d" % Sink.posts
                self.transport.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(body), body)
                )
            buf = buf[total:]
        self.buf = buf


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Sink, "127.0.0.1", port, backlog=512)
    async with server:
        await server.serve_forever()


def main() -> None:
    asyncio.run(serve(int(sys.argv[1])))


if __name__ == "__main__":
    main()
