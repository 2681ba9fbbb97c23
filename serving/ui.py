"""The plant view: ``/ui``, a page of plain HTML/JS/SVG served by the same app as the API.

Three modes, each fed by one authorized JSON or server-sent-events route under ``/ui/api``:

* **replay** (``taktline view``): the twin under each policy on one seed, side by side, frames
  streamed at the chosen speed (:mod:`taktline.serving.ui_replay`);
* **live**: every ``/decide`` answered, both by the routes and the fast path, as it happens
  (:class:`DecisionFeed`, fed by :meth:`DecisionService.decide`), and the ``/metrics`` counters;
* **compare**: the verdict table of the latest ``evaluate``/``compare`` run in MLflow.

The page shell and its static files are public (they hold no data); every ``/ui/api`` route
needs the API key, sent by the page as a bearer header (the key is typed once and kept in the
tab's ``sessionStorage``). Server-sent events are read with ``fetch`` rather than
``EventSource``, which cannot send headers, so the key never appears in a URL.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import anyio
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from taktline.serving.security import api_key_dependency

if TYPE_CHECKING:
    from taktline.envs.snapshot import Snapshot
    from taktline.serving.metrics import ServingMetrics
    from taktline.serving.schemas import DecideResponse
    from taktline.serving.settings import Settings
    from taktline.serving.ui_replay import Replay

STATIC = Path(__file__).parent / "static"
MAX_SENDS_PER_S = 30.0
"""The most frames a replay stream sends a second; faster replays skip frames between."""


class DecisionFeed:
    """The latest decisions answered, in memory (a ring buffer), for the live view.

    Recording keeps references only (the snapshot and the response objects); they are turned
    into JSON when a viewer reads them, so a plant with no viewer pays one append per decision.

    Args:
        size: How many recent decisions are kept.
    """

    def __init__(self, size: int = 500) -> None:
        self.items: deque[tuple[int, float, str, Snapshot, DecideResponse, float]] = deque(
            maxlen=size
        )
        self.seq = 0
        self._changed: asyncio.Event | None = None

    def record(
        self, policy: str, snapshot: Snapshot, response: DecideResponse, latency_s: float
    ) -> None:
        """Keep one answered decision (called on the event loop by the decision service)."""
        self.seq += 1
        self.items.append((self.seq, time.time(), policy, snapshot, response, latency_s))
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def since(self, seq: int) -> list[dict[str, Any]]:
        """The kept decisions after number ``seq``, as JSON-ready records."""
        return [_decision_record(*item) for item in self.items if item[0] > seq]

    async def wait(self, seq: int, timeout_s: float) -> None:
        """Return when a decision after ``seq`` is kept, or after ``timeout_s``."""
        if self.seq > seq:
            return
        if self._changed is None:
            self._changed = asyncio.Event()
        with anyio.move_on_after(timeout_s):
            await self._changed.wait()


def _decision_record(
    seq: int,
    wall_time: float,
    policy: str,
    snapshot: Snapshot,
    response: DecideResponse,
    latency_s: float,
) -> dict[str, Any]:
    from taktline.envs.snapshot import LineSnapshot
    from taktline.serving.ui_replay import line_frame

    frame = None
    if isinstance(snapshot, LineSnapshot):
        names = sorted({j.family for s in snapshot.stations for j in s.queue})
        frame = line_frame(snapshot, {f: i for i, f in enumerate(names)})
    return {
        "seq": seq,
        "wall_time": wall_time,
        "policy": policy,
        "snapshot_time": snapshot.time,
        "kind": snapshot.kind,
        "decision": response.decision.model_dump(exclude_none=True),
        "served_by": response.served_by,
        "fallback": response.fallback,
        "fallback_reason": response.fallback_reason,
        "latency_ms": 1000.0 * latency_s,
        "frame": frame,
    }


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def metrics_summary(metrics: ServingMetrics) -> dict[str, Any]:
    """The counters of ``/metrics`` the live view charts, as plain numbers (``requests`` and
    ``latency_s_sum``: the ``/decide`` requests only)."""
    out: dict[str, Any] = {"decisions": {}, "fallbacks": {}, "requests": 0.0, "latency_s_sum": 0.0}
    for family in metrics.registry.collect():
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "taktline_decisions_total":
                key = f"{labels.get('policy')}:{labels.get('source')}"
                out["decisions"][key] = sample.value
            elif sample.name == "taktline_fallbacks_total":
                key = f"{labels.get('policy')}:{labels.get('reason')}"
                out["fallbacks"][key] = sample.value
            elif not labels.get("route", "").endswith("/decide"):
                continue  # the view's own long-lived streams would swamp the latency
            elif sample.name == "taktline_request_latency_seconds_count":
                out["requests"] += sample.value
            elif sample.name == "taktline_request_latency_seconds_sum":
                out["latency_s_sum"] += sample.value
    out["time"] = time.time()
    return out


def latest_comparison() -> dict[str, Any]:
    """The latest MLflow run that logged evaluation results, or a note: a ``taktline compare``
    run (``compare.*`` metrics, its verdict rows) or an ``evaluate`` run (``eval.*``)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        import mlflow
        from mlflow.tracking import MlflowClient

        from taktline.training.tracking import configure
    except ImportError as exc:  # serving without the training extras
        return {"run": None, "message": f"MLflow is not installed here ({exc.name})"}
    uri = configure()
    client = MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs: list[Any] = []
    if experiments:
        runs = list(
            client.search_runs(
                experiments, order_by=["attributes.start_time DESC"], max_results=200
            )
        )
    for run in runs:
        metrics = {k: v for k, v in run.data.metrics.items() if k.startswith(("eval.", "compare."))}
        if not metrics:
            continue
        run_id = run.info.run_id
        is_compare = any(k.startswith("compare.") for k in metrics)
        artifact = "compare/comparison.json" if is_compare else "eval/table.json"
        try:
            details = mlflow.artifacts.load_dict(f"runs:/{run_id}/{artifact}")
        except Exception:  # an older run without it: the metrics still tell
            details = None
        return {
            "run": {
                "id": run_id,
                "name": run.info.run_name,
                "kind": "compare" if is_compare else "evaluate",
                "start_time": run.info.start_time,
                "experiment_id": run.info.experiment_id,
                "params": dict(run.data.params),
                "tags": {k: v for k, v in run.data.tags.items() if k.startswith("taktline.")},
            },
            "metrics": metrics,
            # compare: the verdict rows (mean, CI, paired difference, p, verdict, latency);
            # evaluate: the per-case table
            "rows": details.get("rows") if is_compare and details else None,
            "comparison": {k: v for k, v in details.items() if k not in ("rows", "values")}
            if is_compare and details
            else None,
            "table": None if is_compare else details,
            "tracking_uri": uri,
        }
    return {
        "run": None,
        "message": f"no evaluate or compare run with results in MLflow at {uri}; run "
        "`taktline evaluate` or `taktline compare` first",
    }


def ui_router(settings: Settings) -> APIRouter:
    """The ``/ui`` routes (the page, its files, and the authorized ``/ui/api`` data)."""
    keys = [k.get_secret_value().encode() for k in settings.api_keys]
    authorized = [Depends(api_key_dependency(keys, settings.auth_enabled))]
    router = APIRouter(tags=["plant view"])

    @router.get("/ui", include_in_schema=False)
    async def page() -> FileResponse:
        """The page shell (public: it holds no data; the data routes need the key)."""
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    @router.get("/ui/api/auth")
    async def auth() -> dict[str, bool]:
        """Whether the data routes need a key (so the page asks for one before calling them)."""
        return {"auth_required": settings.auth_enabled}

    @router.get("/ui/api/info", dependencies=authorized)
    async def info(request: Request) -> dict[str, Any]:
        """The modes this server offers, and the replay's layout when it has one."""
        replay: Replay | None = getattr(request.app.state, "replay", None)
        return {
            "auth": settings.auth_enabled,
            "replay": None if replay is None else replay.info(),
            "policies": sorted(settings.policies),
        }

    @router.get("/ui/api/replay/frames", dependencies=authorized)
    async def replay_frames(
        request: Request, index: Annotated[int, Query(ge=0)] = 0
    ) -> JSONResponse:
        """Frame ``index`` of every replayed policy."""
        replay = _replay(request)
        if index >= replay.n_frames:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                f"index: must be < {replay.n_frames} (the replay's frames), got {index}",
            )
        frames = await anyio.to_thread.run_sync(replay.frames, index)
        return JSONResponse({"index": index, "frames": frames})

    @router.get("/ui/api/replay/stream", dependencies=authorized)
    async def replay_stream(
        request: Request,
        start: Annotated[int, Query(ge=0, description="first frame")] = 0,
        speed: Annotated[float, Query(gt=0, le=1e6, description="x real time")] = 100.0,
    ) -> StreamingResponse:
        """Frames from ``start`` as server-sent events, paced at ``speed`` times real time."""
        replay = _replay(request)
        return _stream(_replay_events(request, replay, start, speed))

    @router.get("/ui/api/live/stream", dependencies=authorized)
    async def live_stream(
        request: Request, after: Annotated[int, Query(ge=0)] = 0
    ) -> StreamingResponse:
        """Every decision answered after number ``after``, as it is answered."""
        feed: DecisionFeed = request.app.state.feed
        return _stream(_live_events(request, feed, after))

    @router.get("/ui/api/metrics", dependencies=authorized)
    async def metrics(request: Request) -> dict[str, Any]:
        """The decision and fallback counters of ``/metrics``."""
        return metrics_summary(request.app.state.metrics)

    @router.get("/ui/api/compare", dependencies=authorized)
    async def compare() -> dict[str, Any]:
        """The latest evaluation run's verdict table, from MLflow."""
        return await anyio.to_thread.run_sync(latest_comparison)

    return router


def mount_ui(app: FastAPI, settings: Settings) -> None:
    """Add the plant view to ``app``: its routes and its static files."""
    # the page's own data, not the plant's API: kept out of OpenAPI (and so out of the clients
    # and fuzzers generated from it; the live stream never ends)
    app.include_router(ui_router(settings), include_in_schema=False)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")


def _replay(request: Request) -> Replay:
    replay: Replay | None = getattr(request.app.state, "replay", None)
    if replay is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            "this server replays nothing; start one with `taktline view LINE -p RULE`",
        )
    return replay


def _stream(events: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _replay_events(
    request: Request, replay: Replay, start: int, speed: float
) -> AsyncIterator[bytes]:
    units_per_s = speed / replay.unit_seconds
    real_step_s = replay.frame_step / units_per_s
    stride = max(1, math.ceil(1.0 / (MAX_SENDS_PER_S * real_step_s)))
    begin = time.perf_counter()
    index = start
    sent = 0
    while index < replay.n_frames:
        frames = await anyio.to_thread.run_sync(replay.frames, index)
        due = begin + (index - start) * real_step_s
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if await request.is_disconnected():
            return
        lag_s = max(0.0, -delay)
        yield _sse("frame", {"index": index, "frames": frames, "lag_s": lag_s, "sent": sent})
        sent += 1
        index += stride
    yield _sse("end", {"n_frames": replay.n_frames})


async def _live_events(request: Request, feed: DecisionFeed, after: int) -> AsyncIterator[bytes]:
    seq = after
    yield _sse("hello", {"seq": feed.seq})
    while not await request.is_disconnected():
        records = feed.since(seq)
        if records:
            seq = records[-1]["seq"]
            yield _sse("decisions", records)
        await feed.wait(seq, 5.0)
        if feed.seq <= seq:
            yield b": keep-alive\n\n"
