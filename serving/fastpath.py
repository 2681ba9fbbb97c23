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
a missing or non-JSON content type — is handed to the FastAPI app unchanged (the body
replayed), so the error answers (401/403/404/413/415/422) come from one place: the routes.
The checks that decide what it answers are the routes' own functions
(:func:`~taktline.serving.security.caller_authorized`,
:func:`~taktline.serving.security.is_json_content_type`, the models' validators and
:func:`~taktline.serving.schemas.line_snapshot_problem`).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import SchemaValidator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taktline.serving.decide import DecisionService
from taktline.serving.metrics import ServingMetrics
from taktline.serving.schemas import ActRequest, JobShopSnapshot, Snapshot, line_snapshot_problem
from taktline.serving.security import caller_authorized, is_json_content_type
from taktline.serving.settings import Settings

_ROUTE = re.compile(r"/v1/policies/([^/]{1,64})/(decide|act)")
_TEMPLATES = {
    "decide": "/v1/policies/{name}/decide",
    "act": "/v1/policies/{name}/act",
}


def dict_validator(model: type[BaseModel], checks: dict[Any, Callable[..., Any]]) -> Any:
    """A validator of ``model``'s JSON that gives what ``model_dump()`` gives, without models.

    It is built from the model's own core schema: every field, type, bound, default and
    ``extra="forbid"`` is the model's, with each nested model turned into a typed dict. For a
    line snapshot this halves the cost of validating and then dumping.

    A model validator takes the model instance, so it cannot run on a dict: ``checks`` maps
    each one to the function that checks the same on the dict (the caller runs it). Any other
    model validator, or a model feature this does not translate, raises ``TypeError``, so a
    validator added to the models later is never skipped silently.
    """

    def convert(node: Any) -> Any:
        if isinstance(node, list):
            return [convert(x) for x in node]
        if not isinstance(node, dict):
            return node
        kind = node.get("type")
        if kind in ("function-after", "function-before", "function-wrap", "function-plain"):
            inner = node.get("schema", {})
            if inner.get("type") == "model":
                if node["function"]["function"] not in checks:
                    raise TypeError(f"{inner['cls'].__name__}: model validator {node['function']}")
                out = convert(inner)
                if "ref" in node:
                    out["ref"] = node["ref"]
                return out
        if kind == "model":
            fields = node["schema"]
            if (
                node.get("custom_init")
                or node.get("root_model")
                or node.get("post_init")
                or fields.get("computed_fields")
            ):
                raise TypeError(f"{node['cls'].__name__}: not a plain model")
            out = {
                "type": "typed-dict",
                "fields": {},
                "config": node.get("config", {}),
                "extra_behavior": node.get("config", {}).get("extra_fields_behavior", "ignore"),
            }
            for name, field in fields["fields"].items():
                if set(field) - {"type", "schema", "metadata"}:
                    raise TypeError(f"{node['cls'].__name__}.{name}: {sorted(field)}")
                out["fields"][name] = {
                    "type": "typed-dict-field",
                    "schema": convert(field["schema"]),
                    "required": field["schema"]["type"] != "default",
                }
            if "ref" in node:
                out["ref"] = node["ref"]
            return out
        return {key: convert(value) for key, value in node.items()}

    return SchemaValidator(convert(model.__pydantic_core_schema__))


_LINE = dict_validator(Snapshot, {Snapshot._decision_refers_to_the_line: line_snapshot_problem})
_JOBSHOP, _ACT = TypeAdapter(JobShopSnapshot), TypeAdapter(ActRequest)


class _ForTheRoute(Exception):
    """The body is not valid (the route answers why)."""


def _validate(kind: str, body: bytes) -> Any:
    """The request: an :class:`ActRequest`, or a snapshot as the dict ``model_dump()`` gives.

    The routes' ``AnySnapshot`` union picks its member with a Python discriminator, which
    costs a third of the validation, so the body's likely kind is tried alone. Either member
    validates only bodies the union gives to it (a line snapshot forbids a top-level ``kind``,
    a job-shop one requires ``"jobshop"``), and a body the guess rejects goes to the route, so
    a wrong guess costs time, never a wrong answer.

    Raises:
        ValidationError, _ForTheRoute: the route is to answer (a 422 naming the field, or
            the other kind).
    """
    if kind == "act":
        return _ACT.validate_json(body)
    if b'"jobshop"' in body:
        return _JOBSHOP.validate_json(body).model_dump()
    snapshot = _LINE.validate_json(body)
    if line_snapshot_problem(snapshot):
        raise _ForTheRoute
    return snapshot


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
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

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
                content_type = value.decode("latin-1")
            elif key == b"content-length":
                announced = int(value) if value.isdigit() else limit + 1
        if (
            announced > limit
            or not is_json_content_type(content_type)
            or not caller_authorized(authorization, self.keys, self.settings.auth_enabled)
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
            request = _validate(kind, body)
        except (ValidationError, _ForTheRoute):
            await self.app(scope, replay, send)  # the route answers 422, naming the field
            return
        try:
            if kind == "decide":
                answer = await self.service.decide(name, request)
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
        children = self._children.get((kind, code))
        if children is None:  # ``labels()`` takes a lock and builds a key: once per series
            route = _TEMPLATES[kind]
            children = (
                self.metrics.latency.labels(route, "POST"),
                self.metrics.requests.labels(route, "POST", str(code)),
            )
            self._children[(kind, code)] = children
        children[0].observe(time.perf_counter() - start)
        children[1].inc()


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
