"""An ASGI layer in front of every route: a hard cap on request bodies, counted while they
arrive, and a refusal of cross-site form posts.

Why here rather than in the routes: the multipart parser spools whatever it is sent, so the cap
must apply before it reads the bytes, and the origin check must apply to every state-changing
request, including ones added later.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"same-origin")]


class Guard:
    def __init__(self, app: ASGIApp, max_body: int):
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        if scope["method"] in UNSAFE and not _same_origin(headers, scope):
            return await PlainTextResponse("cross-site request refused", 403)(scope, receive, send)
        await self.app(scope, self._limited(headers, receive), _with_headers(send))

    def _limited(self, headers: Headers, receive: Receive) -> Receive:
        """``receive`` that raises 413 as soon as the body is known to exceed the cap: at once
        from Content-Length, else when the running count passes it (chunked uploads)."""
        declared = headers.get("content-length", "")
        too_big = declared.isdigit() and int(declared) > self.max_body
        seen = 0

        async def receive_limited() -> Message:
            nonlocal seen
            if too_big:
                raise HTTPException(413)
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise HTTPException(413)
            return message

        return receive_limited


def _same_origin(headers: Headers, scope: Scope) -> bool:
    """Browsers send Origin on cross-site POSTs; scripts and same-site forms pass."""
    origin = headers.get("origin")
    if origin is None or (origin == "null" and headers.get("sec-fetch-site") in (None, "same-origin")):
        return True
    host = headers.get("host", "")
    return origin.split("://", 1)[-1] == host


def _with_headers(send: Send) -> Send:
    async def send_with(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = list(message.get("headers", [])) + SECURITY_HEADERS
        await send(message)

    return send_with
