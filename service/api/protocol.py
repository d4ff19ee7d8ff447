"""The HTTP protocol `tokengraft serve` runs: uvicorn's httptools protocol with a bound on a
request's head. httptools gathers a header of any length, copying what it holds on every read
(a 16 MB header took 0.9 s of the event loop, while every other request waited); uvicorn
bounds a head only under h11 (`h11_max_incomplete_event_size`), which parses more slowly.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from .guard import headers_too_large

SLACK = 64 * 2**10  # the request line and each header's framing, beside the headers' own bytes


class BoundedHead(HttpToolsProtocol):
    """Answers 431 and closes the connection once more than `limit` (`max_header_bytes`) and
    `SLACK` bytes of one request's head arrived. Counted in whole reads, leaving out the read a
    request began in (part of it may be the previous request's body): at most that and two
    reads are ever held. `Guard` checks the headers' exact size."""

    def __init__(self, *args: Any, limit: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limit = limit
        self.head: int | None = None  # bytes of the unfinished head; None: no head is unfinished
        self.begun = 0  # requests begun on this connection

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head, self.begun = 0, self.begun + 1

    def on_headers_complete(self) -> None:
        self.head = None
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        unfinished, begun = self.head is not None, self.begun
        super().data_received(data)
        if self.head is None or not unfinished or self.begun != begun:
            return
        self.head += len(data)
        if self.head > self.limit + SLACK and not self.transport.is_closing():
            self._refuse()

    def _refuse(self) -> None:
        instance = self.url.partition(b"?")[0].decode("latin-1")
        response = headers_too_large(self.limit).response(instance)
        fields = [name + b": " + value + b"\r\n" for name, value in response.raw_headers]
        close = b"connection: close\r\n\r\n"
        self.transport.write(b"".join([STATUS_LINE[431], *fields, close, response.body]))
        self.transport.close()
