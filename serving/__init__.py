"""Serving: the policy inference API (FastAPI, Ray Serve), the model store, auth and metrics.

>>> from taktline.serving import Settings, create_app
>>> app = create_app(Settings(env="local"))
>>> paths = sorted(p for p in app.openapi()["paths"] if p.startswith("/v1"))
>>> paths  # doctest: +NORMALIZE_WHITESPACE
['/v1/policies', '/v1/policies/{name}/act', '/v1/policies/{name}/decide',
 '/v1/policies/{name}/reload']
"""

from taktline.serving.app import create_app
from taktline.serving.settings import ServedPolicy, Settings

__all__ = ["ServedPolicy", "Settings", "create_app"]
