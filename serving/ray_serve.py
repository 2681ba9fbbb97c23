"""The same FastAPI app as a Ray Serve deployment with replicas.

Each replica builds the app with :func:`~taktline.serving.create_app` from the settings bound
to the deployment (one code path with uvicorn: same routes, auth, fallback, metrics per
replica). Ray is a local one started on demand, or the cluster at ``RAY_ADDRESS``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from ray import serve

from taktline.serving.app import create_app
from taktline.serving.settings import Settings

APP_NAME = "taktline"


@serve.deployment(name="taktline-policies", ray_actor_options={"num_cpus": 0.5})
@serve.ingress()
class PolicyDeployment:
    """A replica serving the taktline app for the bound settings."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(self._settings)


def build(settings: Settings, replicas: int = 1) -> Any:
    """The bound Serve application (for ``serve.run`` or a Serve config's import path)."""
    if replicas < 1:
        raise ValueError(f"replicas: must be >= 1, got {replicas}")
    deployment = PolicyDeployment.options(num_replicas=replicas)  # type: ignore[attr-defined]
    return deployment.bind(settings)


def run(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 8000,
    replicas: int = 1,
    blocking: bool = True,
) -> None:
    """Start (or join) Ray, then serve the app on ``host:port`` with ``replicas`` replicas.

    Args:
        settings: serving settings, shipped to every replica.
        host: HTTP host of the Serve proxy (keep 127.0.0.1 unless a proxy fronts it).
        port: HTTP port.
        replicas: number of replicas.
        blocking: wait until interrupted (the CLI); tests pass ``False``.
    """

    from taktline.raycluster import attach

    attach(log_to_driver=True)
    serve.start(http_options={"host": host, "port": port})
    serve.run(build(settings, replicas), name=APP_NAME, route_prefix="/", blocking=blocking)
