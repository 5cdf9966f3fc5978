"""ASGI pieces of the host: bearer-token auth, body-size limit, NDJSON event-stream responses."""


from __future__ import annotations

import hmac
import logging
from typing import Callable

from fastapi.responses import JSONResponse

from engine.api import AUTH_EXEMPT_PATHS

log = logging.getLogger("smart.host")




# ============================================================================ ASGI pieces
class BearerAuthMiddleware:
    """401 for every HTTP request without `Authorization: Bearer TOKEN` (constant-time compare)."""

    def __init__(self, app, token: str | None, exempt: frozenset[str] = AUTH_EXEMPT_PATHS):
        self.app = app
        self.token = token.encode("utf-8") if token else None
        self.exempt = exempt

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.token is not None and scope.get("path") not in self.exempt:
            header = b""
            for name, value in scope.get("headers", []):
                if name == b"authorization":
                    header = value
                    break
            scheme, _, given = header.partition(b" ")
            ok = scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.token)
            if not ok:
                reason = "missing bearer token" if not header else "wrong bearer token"
                response = JSONResponse({"detail": f"unauthorized: {reason}"}, status_code=401,
                                        headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """413 for request bodies over `limit` bytes, declared (Content-Length) or streamed (chunked)."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = JSONResponse({"detail": f"request body too large (limit {self.limit} bytes)"}, status_code=413)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = self.limit + 1
                if declared > self.limit:
                    await too_big(scope, receive, send)
                    return
        # Read the body here (bounded), then replay it; later receive() calls (disconnect) pass through.
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.limit:
                await too_big(scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay_receive():
            if replay:
                return replay.pop()
            return await receive()

        await self.app(scope, replay_receive, send)


def event_stream_response(content, on_disconnect: Callable[[], None]):
    """An NDJSON StreamingResponse that reports a client disconnect as soon as it happens.

    Starlette only notices a disconnect (ASGI ≥ 2.4) when a write fails; a request that is decoding
    an infill (no events for a while) must stop at once, so listen for http.disconnect throughout.
    """
    import anyio
    from starlette.responses import StreamingResponse

    class EventStream(StreamingResponse):
        async def __call__(self, scope, receive, send):
            async with anyio.create_task_group() as tg:
                async def stream():
                    try:
                        await self.stream_response(send)
                    except OSError:  # the client went away mid-write
                        on_disconnect()
                    tg.cancel_scope.cancel()

                tg.start_soon(stream)
                await self.listen_for_disconnect(receive)
                on_disconnect()
                tg.cancel_scope.cancel()

    return EventStream(content, media_type="application/x-ndjson",
                       headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


