"""The FastAPI app: one factory, :func:`create_app`, used by uvicorn, tests and Ray Serve alike.

Routes (``/v1/*`` need a bearer API key unless ``env`` is ``local`` or the server runs
``--insecure``):

* ``POST /v1/policies/{name}/decide`` — plant snapshot in, domain decision out.
* ``POST /v1/policies/{name}/act`` — batched encoded observations (+ masks) in, actions out.
* ``GET /v1/policies``, ``POST /v1/policies/{name}/reload``.
* ``GET /healthz`` (process up), ``GET /readyz`` (every policy loaded; load errors only for
  a key holder), ``GET /metrics``.
* ``GET /ui``: the plant view (:mod:`taktline.serving.ui`; its data under ``/ui/api`` needs
  the key too).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import Depends, FastAPI, HTTPException, Path, Request, Response, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import Receive, Scope, Send
from threadpoolctl import threadpool_limits

from taktline.serving.decide import DecisionService
from taktline.serving.fastpath import DecisionFastPath
from taktline.serving.metrics import MetricsMiddleware, ServingMetrics
from taktline.serving.schemas import (
    SNAPSHOT_TAGS,
    ActRequest,
    ActResponse,
    AnySnapshot,
    DecideResponse,
    PolicyInfo,
    ReloadResponse,
)
from taktline.serving.security import (
    RequestSizeLimit,
    api_key_dependency,
    caller_authorized,
    require_json,
)
from taktline.serving.settings import Settings
from taktline.serving.store import ModelStore, ReloadResult
from taktline.serving.ui import DecisionFeed, mount_ui

log = logging.getLogger("taktline.serving")

PolicyName = Annotated[str, Path(min_length=1, max_length=64, description="A configured policy.")]


async def configured(name: PolicyName, request: Request) -> str:
    """The path's policy name, if it is configured (404 otherwise)."""
    policies = request.app.state.settings.policies
    if name not in policies:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"policy {name!r} is not configured; configured: {sorted(policies)}",
        )
    return name


Configured = Annotated[str, Depends(configured)]


class ServingApp(FastAPI):
    """The FastAPI app, with the decision fast path in front of FastAPI's own layers.

    Middleware added with ``add_middleware`` still runs inside FastAPI's per-request layers
    (the OpenTelemetry check, the body-limit and error wrappers), which on this hardware cost
    about as much as a policy's forward pass. The fast path (:mod:`taktline.serving.fastpath`)
    therefore sits here, before them; what it does not answer goes through FastAPI unchanged.
    """

    fast_path: DecisionFastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fast_path is not None and scope["type"] == "http":
            await self.fast_path(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None, store: ModelStore | None = None) -> FastAPI:
    """Build the serving app.

    Args:
        settings: serving settings; ``None`` reads them from ``TAKTLINE_*`` variables.
        store: a model store (default: one built from ``settings``, loaded at startup).
    """
    settings = settings or Settings()
    store = store or ModelStore(settings)
    metrics = ServingMetrics()
    service = DecisionService(settings, store, metrics)
    service.feed = DecisionFeed()  # the plant view's live mode reads it (/ui)
    if settings.torch_threads:
        with contextlib.suppress(ImportError):
            import torch

            torch.set_num_threads(settings.torch_threads)
        # the numpy kernel's BLAS too: a small matmul split over busy cores waits for them
        threadpool_limits(settings.torch_threads, user_api="blas")

    def record(result: ReloadResult) -> None:
        outcome = "error" if result.error else ("changed" if result.changed else "unchanged")
        metrics.reloads.labels(result.name, outcome).inc()
        metrics.set_version(result.name, result.version, result.source)

    async def poll() -> None:
        while True:
            await asyncio.sleep(settings.poll_interval_s)
            for name in store.names():
                try:
                    record(await anyio.to_thread.run_sync(store.refresh, name))
                except Exception:  # a broken poll must never stop serving
                    log.exception("policy %s: polling failed", name)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for result in await anyio.to_thread.run_sync(store.load_all):
            record(result)
        task = asyncio.create_task(poll()) if settings.poll_interval_s > 0 else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = ServingApp(
        title="taktline serving",
        version="1",
        description="Dispatching and release decisions for production lines, from trained "
        "policies with rule fallback.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.metrics = metrics
    app.state.feed = service.feed
    keys = [k.get_secret_value().encode() for k in settings.api_keys]
    authorized = [Depends(api_key_dependency(keys, settings.auth_enabled))]
    json_body = [*authorized, Depends(require_json)]  # 401/403 first, then 415

    error_responses: dict[int | str, dict[str, str]] = {
        401: {"description": "Missing API key"},
        403: {"description": "Invalid API key"},
        404: {"description": "Unknown policy"},
        413: {"description": "Request body too large"},
        415: {"description": "Content-Type is not application/json"},
    }

    @app.post(
        "/v1/policies/{name}/decide",
        dependencies=json_body,
        responses=error_responses,
        tags=["decisions"],
        response_model_exclude_none=True,
    )
    async def decide(name: Configured, snapshot: AnySnapshot) -> DecideResponse:
        """What should happen next, from a plant snapshot: a line's (the twin's
        ``snapshot()``) or a job shop's (``"kind": "jobshop"``)."""
        return await service.decide(name, snapshot)

    @app.post(
        "/v1/policies/{name}/act",
        dependencies=json_body,
        responses={**error_responses, 503: {"description": "Policy not loaded or timed out"}},
        tags=["decisions"],
    )
    async def act(name: Configured, request: ActRequest) -> ActResponse:
        """Actions for a batch of encoded observations and feasibility masks."""
        return await service.act(name, request)

    @app.get("/v1/policies", dependencies=authorized, tags=["policies"])
    async def list_policies() -> list[PolicyInfo]:
        """Every configured policy and the version it serves."""
        return [_info(store, name) for name in store.names()]

    @app.post(
        "/v1/policies/{name}/reload",
        dependencies=authorized,
        responses=error_responses,
        tags=["policies"],
    )
    async def reload(name: Configured) -> ReloadResponse:
        """Check the policy's reference (registry alias) now and swap in a new version."""
        result = await anyio.to_thread.run_sync(store.refresh, name)
        record(result)
        return ReloadResponse(
            policy=name,
            changed=result.changed,
            model_version=result.version,
            previous_version=result.previous,
            source=result.source,
            error=result.error,
        )

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str | bool]:
        """The process is up (and ``insecure: true`` when it serves without authentication
        outside ``env=local``, started with ``--insecure``)."""
        if settings.insecure_mode:
            return {"status": "ok", "insecure": True}
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], responses={503: {"description": "Not ready"}})
    async def readyz(request: Request) -> JSONResponse:
        """Every configured policy has a loaded version.

        Anyone gets ``ready`` and the counts; why a policy is missing (load errors name the
        registry URL and cache paths) only a caller with an API key.
        """
        names = store.names()
        missing = {n: store.errors.get(n, "loading") for n in names if not store.get(n)}
        code = status.HTTP_200_OK if not missing else status.HTTP_503_SERVICE_UNAVAILABLE
        body: dict[str, object] = {
            "ready": not missing,
            "configured": len(names),
            "loaded": len(names) - len(missing),
        }
        if caller_authorized(request.headers.get("authorization"), keys, settings.auth_enabled):
            body["missing"] = missing
        return JSONResponse(body, status_code=code)

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def prometheus() -> Response:
        """Prometheus metrics."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        """FastAPI's 422, without the snapshot kind pydantic puts in ``loc`` (``body.line``),
        and valid JSON whatever the input was (a rejected ``NaN`` is echoed as ``"NaN"``)."""
        detail = _json_safe(jsonable_encoder(_untagged(exc).errors()))
        return JSONResponse({"detail": detail}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    mount_ui(app, settings)  # the plant view (/ui), before the fast path reads the routes

    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestSizeLimit, max_bytes=settings.max_request_bytes)
    if settings.fast_path:  # valid decision requests skip the framework
        framework = functools.partial(FastAPI.__call__, app)
        app.fast_path = DecisionFastPath(framework, app.routes, settings, service, metrics)
    return app


def _untagged(exc: RequestValidationError) -> RequestValidationError:
    errors = []
    for e in exc.errors():
        loc = tuple(e.get("loc", ()))
        if len(loc) > 1 and loc[0] == "body" and loc[1] in SNAPSHOT_TAGS:
            e = {**e, "loc": (loc[0], *loc[2:])}
        errors.append(e)
    return RequestValidationError(errors, body=exc.body)


def _json_safe(value: Any) -> Any:
    """``value`` with every non-finite float as the string JSON parsers that allow it write
    (``"NaN"``, ``"Infinity"``, ``"-Infinity"``): strict JSON has no such numbers; and every
    string encodable as UTF-8 (a lone surrogate as its escape)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, str):  # a lone surrogate ("\\ud800") json.loads let through
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_json_safe(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _info(store: ModelStore, name: str) -> PolicyInfo:
    config = store.settings.policies[name]
    loaded = store.get(name)
    bundle = loaded.bundle if loaded else None
    return PolicyInfo(
        name=name,
        ref=config.ref,
        loaded=loaded is not None,
        model_version=loaded.version if loaded else None,
        alias=loaded.alias if loaded else None,
        source=loaded.source if loaded else None,
        env_id=bundle.env_id if bundle else None,
        env_kwargs=dict(bundle.env_kwargs) if bundle else None,
        spec_hash=bundle.spec_hash if bundle else None,
        observation_shape=list(loaded.obs_shape) if loaded else None,
        n_actions=loaded.n_actions if loaded else None,
        lineage=dict(bundle.lineage) if bundle else None,
        fallback_rule=config.fallback_rule,
        shadow=config.shadow,
        error=store.errors.get(name),
    )


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory taktline.serving.app:app_from_env`` (settings from env)."""
    return create_app(Settings())
