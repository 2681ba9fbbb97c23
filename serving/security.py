"""Bearer API keys (constant-time comparison), the JSON content type and the request-size limit."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine, Iterable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_bearer = HTTPBearer(auto_error=False, description="An API key from TAKTLINE_API_KEYS.")


def key_matches(token: str, keys: list[bytes]) -> bool:
    """Whether ``token`` equals one of ``keys``, compared in constant time.

    Every key is compared (no early exit), so timing reveals neither the key nor which matched.

    >>> key_matches("k2", [b"k1", b"k2"]), key_matches("k3", [b"k1", b"k2"])
    (True, False)
    """
    given = token.encode()
    found = False
    for key in keys:
        found |= hmac.compare_digest(given, key)
    return found


def check_api_key(authorization: str | None, keys: list[bytes], enabled: bool) -> None:
    """Raise 401 without a bearer token and 403 with a wrong one (nothing when the caller is
    :func:`caller_authorized`, or auth is off)."""
    if caller_authorized(authorization, keys, enabled):
        return
    if bearer_token(authorization) is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing API key: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    raise HTTPException(status.HTTP_403_FORBIDDEN, "invalid API key")


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (``None`` for anything else).

    >>> bearer_token("Bearer abc"), bearer_token("bearer abc"), bearer_token("Basic abc")
    ('abc', 'abc', None)
    """
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def caller_authorized(authorization: str | None, keys: list[bytes], enabled: bool) -> bool:
    """Whether an ``Authorization`` header value holds a valid key (always, when auth is
    off): the one test of the routes (:func:`check_api_key`), the fast path and ``/readyz``
    (who may call ``/v1/*`` may also see operational details such as load errors).
    """
    if not enabled:
        return True
    token = bearer_token(authorization)
    return token is not None and key_matches(token, keys)


def is_json_content_type(content_type: str | None) -> bool:
    """Whether a ``Content-Type`` header value announces JSON (``application/json`` or
    ``application/*+json``, any parameters).

    >>> [is_json_content_type(c) for c in ("application/json; charset=utf-8", None, "text/plain")]
    [True, False, False]
    """
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def require_json(request: Request) -> None:
    """A FastAPI dependency for JSON bodies: 415 unless ``Content-Type`` announces JSON."""
    content_type = request.headers.get("content-type")
    if not is_json_content_type(content_type):
        got = repr(content_type) if content_type else "no Content-Type header"
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"Content-Type: expected application/json, got {got}; send the body as JSON "
            "with the header 'Content-Type: application/json'",
        )


def api_key_dependency(
    keys: list[bytes], enabled: bool
) -> Callable[..., Coroutine[Any, Any, None]]:
    """A FastAPI dependency: 401 without a bearer token, 403 with a wrong one.

    The header is read by :func:`bearer_token`, as the fast path reads it; ``HTTPBearer``
    only declares the scheme in the OpenAPI schema.
    """

    async def require_api_key(
        request: Request,
        _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        check_api_key(request.headers.get("authorization"), keys, enabled)

    return require_api_key


def announced_too_large(headers: Iterable[tuple[bytes, bytes]], max_bytes: int) -> bool:
    """Whether a request's ``Content-Length`` announces more than ``max_bytes`` (an unreadable
    one counts as too large). A body sent without one is counted as it streams in.

    >>> announced_too_large([(b"content-length", b"2000")], 1024), announced_too_large([], 1)
    (True, False)
    """
    for name, value in headers:
        if name == b"content-length":
            return not value.isdigit() or int(value) > max_bytes
    return False


class RequestSizeLimit:
    """ASGI middleware: bodies over ``max_bytes`` get 413, announced or streamed alike."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if announced_too_large(scope["headers"], self.max_bytes):
            await self._reject(send)
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, self._detail())
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started |= message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except HTTPException as exc:
            if started or exc.status_code != status.HTTP_413_REQUEST_ENTITY_TOO_LARGE:
                raise
            await self._reject(send)

    def _detail(self) -> str:
        return f"request body over {self.max_bytes} bytes (TAKTLINE_MAX_REQUEST_BYTES)"

    async def _reject(self, send: Send) -> None:
        body = b'{"detail":"' + self._detail().encode() + b'"}'
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
