"""The line twin and its Gymnasium faces: spec, engine, KPIs, snapshots, job shops, envs.

This package knows nothing of torch, SB3, Ray, MLflow or FastAPI.
"""

from taktline.envs.kpis import Kpis
from taktline.envs.registration import register_envs
from taktline.envs.spec import LineSpec, bundled_lines, load_spec, parse_spec
from taktline.envs.twin import Twin, replicate, simulate

register_envs()  # taktline/JobShop-v0, taktline/LineDispatch-v0, taktline/LineRelease-v0

__all__ = [
    "Kpis",
    "LineSpec",
    "Twin",
    "bundled_lines",
    "load_spec",
    "parse_spec",
    "replicate",
    "simulate",
]
