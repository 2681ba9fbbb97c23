"""The decision routes' fast path: a thin front that skips FastAPI's per-request layers.

``POST /v1/policies/{name}/decide`` and ``/act`` are what a plant calls many times a second.
Through FastAPI, much of such a request's time goes to the framework (middleware layers,
dependency solving, ``json.loads`` then validation, response re-validation), not to the
policy. This ASGI front answers the common case — a configured policy, a valid key, a JSON body
within the size limit that validates — by calling, in order, exactly what the routes call:

* routing: the app's own two :class:`~fastapi.routing.APIRoute` objects (``route.matches``);
* size limit, content type, auth: :func:`~taktline.serving.security.announced_too_large`,
  :func:`~taktline.serving.security.is_json_content_type`,
  :func:`~taktline.serving.security.caller_authorized`;
* validation: the routes' body types (:data:`~taktline.envs.snapshot.AnySnapshot`'s members,
  :class:`~taktline.serving.schemas.ActRequest`), whose model validators hold the snapshot's
  consistency checks (:func:`validate_body`);
* the answer: the same :class:`~taktline.serving.decide.DecisionService`, an
  ``HTTPException`` it raises answered by FastAPI's own handler;
* metrics: :meth:`~taktline.serving.metrics.ServingMetrics.served`, as the middleware.

Everything else — a missing or wrong key, an unknown policy, an oversized or invalid body, a
missing or non-JSON content type — is handed to the FastAPI app unchanged (the body replayed),
so every error answer (401/403/404/413/415/422) comes from one place: the routes.
``tests/test_serving_api.py`` compares both paths answer by answer.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import HTTPException
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taktline.serving.decide import DecisionService
from taktline.serving.metrics import ServingMetrics
from taktline.serving.schemas import ActRequest, JobShopSnapshot, LineSnapshot
from taktline.serving.security import announced_too_large, caller_authorized, is_json_content_type
from taktline.serving.settings import Settings

_KINDS = ("decide", "act")


def validate_body(kind: str, body: bytes) -> Any:
    """The body of a ``kind`` request, validated from its raw JSON as the route's body type.

    ``/decide`` declares :data:`~taktline.envs.snapshot.AnySnapshot`, whose member is chosen
    by a Python function: in JSON mode that costs as much as the validation itself, so the
    body's likely member is validated alone. Either member accepts only bodies the union gives
    to it (a line snapshot's ``kind`` is ``"line"``, a job shop's ``"jobshop"``), so a wrong
    guess (``"jobshop"`` in a line's job name) only rejects, and the route then answers.

    Raises:
        ValidationError: the route is to answer (a 422 naming the field, or the other kind).
    """
    if kind == "act":
        return ActRequest.model_validate_json(body)
    model = JobShopSnapshot if b'"jobshop"' in body else LineSnapshot
    return model.model_validate_json(body)


class DecisionFastPath:
    """ASGI front serving valid decision requests without FastAPI's layers (see the module).

    Args:
        app: What answers everything else (the FastAPI app without this front).
        routes: The app's routes; the ``/decide`` and ``/act`` ones are matched here.
        settings: The serving settings.
        service: The routes' decision service.
        metrics: The app's metrics.
    """

    def __init__(
        self,
        app: ASGIApp,
        routes: list[BaseRoute],
        settings: Settings,
        service: DecisionService,
        metrics: ServingMetrics,
    ) -> None:
        self.app = app
        self.routes = [
            (r, kind)
            for r in routes
            for kind in _KINDS
            if isinstance(r, APIRoute) and r.path == f"/v1/policies/{{name}}/{kind}"
        ]
        if len(self.routes) != len(_KINDS):
            raise RuntimeError(f"the fast path needs the routes of {list(_KINDS)}")
        self.settings = settings
        self.service = service
        self.metrics = metrics
        self.keys = [k.get_secret_value().encode() for k in settings.api_keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        found = self._match(scope)
        if found is None:
            await self.app(scope, receive, send)
            return
        route, kind, name = found
        headers = Headers(scope=scope)
        limit = self.settings.max_request_bytes
        if (
            announced_too_large(scope["headers"], limit)
            or not is_json_content_type(headers.get("content-type"))
            or not caller_authorized(
                headers.get("authorization"), self.keys, self.settings.auth_enabled
            )
        ):
            await self.app(scope, receive, send)
            return
        body, more = await _read(receive, limit)
        if body is None:  # disconnected: nobody to answer
            return
        replay = _replaying(body, more, receive)
        if more or len(body) > limit:  # streamed past the limit: the size limit answers (413)
            await self.app(scope, replay, send)
            return
        try:
            request = validate_body(kind, body)
        except ValidationError:  # the route answers 422, naming the field
            await self.app(scope, replay, send)
            return
        try:
            if kind == "decide":
                answer = await self.service.decide(name, request)
                payload = answer.model_dump_json(exclude_none=True)
            else:
                payload = (await self.service.act(name, request)).model_dump_json()
            response = Response(payload, media_type="application/json")
        except RequestValidationError:  # e.g. an /act row of the wrong width: the route's 422
            await self.app(scope, replay, send)
            return
        except HTTPException as exc:  # e.g. 503: not loaded, timed out
            response = await http_exception_handler(Request(scope, replay), exc)
        await response(scope, replay, send)
        self.metrics.served(route.path, "POST", response.status_code, time.perf_counter() - start)

    def _match(self, scope: Scope) -> tuple[APIRoute, str, str] | None:
        """The decision route, its kind and the configured policy a request is for."""
        if scope["type"] != "http":
            return None
        for route, kind in self.routes:
            match, child = route.matches(scope)
            if match is Match.FULL:
                name = child["path_params"]["name"]
                return (route, kind, name) if name in self.settings.policies else None
        return None


async def _read(receive: Receive, limit: int) -> tuple[bytes | None, bool]:
    """The body, read up to past ``limit`` bytes (``None`` if the client left), and whether the
    client has more of it."""
    chunks: list[bytes] = []
    size = 0
    more = True
    while more and size <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return None, False
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks), more


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
