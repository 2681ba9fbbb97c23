"""The decision routes' fast path: well-formed, authorized requests without the framework.

``POST /v1/policies/{name}/decide`` and ``/act`` are what a plant calls many times a second.
Through FastAPI, most of such a request's time goes to the framework (middleware layers,
routing, dependency solving, ``json.loads`` then validation, response re-validation), not to
the policy. This ASGI middleware answers the common case directly: a configured policy, a
valid key, a JSON body within the size limit that validates. It uses the same
:class:`~taktline.serving.decide.DecisionService`, the same pydantic models and the same
metrics as the routes, so the answers are the same (``tests/test_serving_api.py`` compares
both paths).

Everything else — a missing or wrong key, an unknown policy, an oversized or invalid body,
another content type — is handed to the FastAPI app unchanged (the body replayed), so the
error answers (401/403/404/413/422) come from one place: the routes.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from typing import Any

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taktline.serving.decide import DecisionService
from taktline.serving.metrics import ServingMetrics
from taktline.serving.schemas import ActRequest, AnySnapshot
from taktline.serving.security import bearer_token, key_matches
from taktline.serving.settings import Settings

_ROUTE = re.compile(r"/v1/policies/([^/]{1,64})/(decide|act)")
_TEMPLATES = {
    "decide": "/v1/policies/{name}/decide",
    "act": "/v1/policies/{name}/act",
}
_BODIES: dict[str, TypeAdapter[Any]] = {
    "decide": TypeAdapter(AnySnapshot),
    "act": TypeAdapter(ActRequest),
}


class DecisionFastPath:
    """ASGI middleware serving valid decision requests without FastAPI (see the module)."""

    def __init__(
        self,
        app: ASGIApp,
        settings: Settings,
        service: DecisionService,
        metrics: ServingMetrics,
    ) -> None:
        self.app = app
        self.settings = settings
        self.service = service
        self.metrics = metrics
        self.keys = [k.get_secret_value().encode() for k in settings.api_keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        match = _ROUTE.fullmatch(scope["path"])
        if match is None or match.group(1) not in self.settings.policies:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        name, kind = match.group(1), match.group(2)
        limit = self.settings.max_request_bytes
        authorization = content_type = None
        announced = 0
        for key, value in scope["headers"]:
            if key == b"authorization":
                authorization = value.decode("latin-1")
            elif key == b"content-type":
                content_type = value.decode("latin-1").split(";", 1)[0].strip().lower()
            elif key == b"content-length":
                announced = int(value) if value.isdigit() else limit + 1
        if (
            announced > limit
            or content_type not in (None, "application/json")
            or not self._authorized(authorization)
        ):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # disconnected: nobody to answer
                return
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            more = message.get("more_body", False)
            if size > limit:  # the size limit answers (413) from the replayed part
                break
        body = b"".join(chunks)
        replay = _replaying(body, more, receive)
        if more:
            await self.app(scope, replay, send)
            return
        try:
            request = _BODIES[kind].validate_json(body)
        except ValidationError:
            await self.app(scope, replay, send)  # the route answers 422, naming the field
            return
        try:
            if kind == "decide":
                snapshot = request.model_dump()
                answer = await self.service.decide(name, snapshot)
                payload = answer.model_dump_json(exclude_none=True).encode()
            else:
                assert isinstance(request, ActRequest)
                payload = (await self.service.act(name, request)).model_dump_json().encode()
        except RequestValidationError:  # e.g. an /act row of the wrong width
            await self.app(scope, replay, send)
            return
        except HTTPException as exc:  # e.g. 503: not loaded, timed out
            detail = _json_detail(exc.detail)
            await self._respond(send, exc.status_code, detail, exc.headers)
            self._count(kind, exc.status_code, start)
            return
        await self._respond(send, 200, payload, None)
        self._count(kind, 200, start)

    def _authorized(self, authorization: str | None) -> bool:
        if not self.settings.auth_enabled:
            return True
        token = bearer_token(authorization)
        return token is not None and key_matches(token, self.keys)

    async def _respond(
        self, send: Send, code: int, payload: bytes, headers: Mapping[str, str] | None
    ) -> None:
        raw = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
        ]
        raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        await send({"type": "http.response.start", "status": code, "headers": raw})
        await send({"type": "http.response.body", "body": payload})

    def _count(self, kind: str, code: int, start: float) -> None:
        route = _TEMPLATES[kind]
        self.metrics.latency.labels(route, "POST").observe(time.perf_counter() - start)
        self.metrics.requests.labels(route, "POST", str(code)).inc()


def _replaying(body: bytes, more: bool, receive: Receive) -> Receive:
    """A ``receive`` that first gives back the body already read, then the client's."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return replay


def _json_detail(detail: Any) -> bytes:
    return json.dumps({"detail": detail}).encode()
