"""`X-Content-Type-Options: nosniff` on every response, so that no browser reads a JSON body, a
problem or a downloaded file as HTML or script whatever bytes it holds. Problems carry it
themselves (`problems.problem`): a 500 is answered outside every middleware."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

NAME, VALUE = b"x-content-type-options", b"nosniff"


def with_nosniff(message: Message) -> Message:
    headers = list(message.get("headers", ()))
    if any(name.lower() == NAME for name, _ in headers):
        return message
    return {**message, "headers": [*headers, (NAME, VALUE)]}


class Nosniff:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = with_nosniff(message)
            await send(message)

        await self.app(scope, receive, sending)
