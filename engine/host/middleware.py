"""ASGI pieces of the host: the browser guard (Host, Origin), bearer-token auth, JSON bodies only,
body-size limit, NDJSON event-stream responses. docs/security.md says what they promise together."""


from __future__ import annotations

import hmac
import ipaddress
import logging
from typing import Callable, Iterable
from urllib.parse import urlsplit

from fastapi.responses import JSONResponse

from engine.api import AUTH_EXEMPT_PATHS, JSON_CONTENT_TYPE, LOOPBACK_HOST_NAMES

log = logging.getLogger("smart.host")




# ============================================================================ ASGI pieces
def _header(scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value
    return None


def split_host(value: str) -> str:
    """The host part of a Host header or URL netloc ("[::1]:8765" → "::1", "Example.org:80" → "example.org")."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class HostRules:
    """Which Host names a host answers to. Always its loopback names and addresses; `names` added by
    `smart serve --allowed-host` ("*": any); `ip_literals`: any IP address (a host serving a network:
    a page can only be reached by address from its own origin, so DNS rebinding needs a name)."""

    def __init__(self, names: Iterable[str] = (), *, ip_literals: bool = False):
        names = {n.strip().lower().rstrip(".") for n in names if n.strip()}
        self.any = "*" in names
        self.names = (names - {"*"}) | {n.rstrip(".") for n in LOOPBACK_HOST_NAMES}
        self.ip_literals = ip_literals

    def allows(self, host: str) -> bool:
        host = split_host(host).rstrip(".")
        if self.any or host in self.names:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return address.is_loopback or self.ip_literals


class BrowserGuardMiddleware:
    """What keeps web pages out of a host (above all a loopback host without a token):

    - DNS rebinding: a `Host` header naming anything but this host's names → 400;
    - cross-origin requests: an `Origin` header that is neither this host itself (its /docs page) nor
      one of `allowed_origins` → 403 (browsers send Origin with every cross-origin request and every
      POST; other clients send none).
    """

    def __init__(self, app, hosts: HostRules | None = None, allowed_origins: Iterable[str] = ()):
        self.app = app
        self.hosts = hosts or HostRules()
        self.origins = {o.strip().rstrip("/").lower() for o in allowed_origins if o.strip()}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = (_header(scope, b"host") or b"").decode("latin-1")
        if host and not self.hosts.allows(host):
            await JSONResponse({"detail": f"the Host header {host[:100]!r} is not a name this host answers to "
                                          "(start it with --allowed-host NAME to add one)"},
                               status_code=400)(scope, receive, send)
            return
        origin = _header(scope, b"origin")
        if origin is not None:
            origin_text = origin.decode("latin-1").strip().rstrip("/").lower()
            parts = urlsplit(origin_text)
            same_origin = parts.scheme in ("http", "https") and bool(host) and parts.netloc == host.strip().lower()
            if not (same_origin or origin_text in self.origins):
                await JSONResponse({"detail": f"cross-origin request from {origin_text[:100]!r} refused "
                                              "(start the host with --allowed-origin to allow one)"},
                                   status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class JsonBodyMiddleware:
    """415 for a request that carries a body (or declares a content type) other than application/json:
    HTML forms and `text/plain` fetches, which browsers send cross-origin without asking, never reach
    a route."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            content_type = _header(scope, b"content-type")
            length = _header(scope, b"content-length")
            chunked = _header(scope, b"transfer-encoding") is not None
            has_body = chunked or (length is not None and length.strip() != b"0")
            if content_type is not None or has_body:
                kind = (content_type or b"").decode("latin-1").split(";")[0].strip().lower()
                if kind != JSON_CONTENT_TYPE:
                    shown = kind or "none"
                    await JSONResponse({"detail": f"request bodies must be {JSON_CONTENT_TYPE} (got {shown})"},
                                       status_code=415)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


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


