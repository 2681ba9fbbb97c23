"""Job shops: benchmark instances, schedule generation (active and non-delay), Gantt charts.

>>> from taktline.envs.jobshop import JobShopState, load_bundled
>>> state = JobShopState(load_bundled("ft06"))
>>> while not state.done:
...     state.apply(state.candidate_jobs[0])
>>> state.makespan >= 55
True
"""

from taktline.envs.jobshop.bundled import (
    CatalogEntry,
    bundled_catalog,
    bundled_names,
    load_bundled,
    resolve_instance,
)
from taktline.envs.jobshop.instance import Alternative, JobShopInstance, Operation
from taktline.envs.jobshop.io import format_fjsp, format_jssp, load_instance, parse_fjsp, parse_jssp
from taktline.envs.jobshop.replay import check_schedule, make_active, replay_schedule
from taktline.envs.jobshop.schedule import SCHEMES, JobShopState, ScheduledOperation
from taktline.envs.jobshop.taillard import generate_taillard, taillard_instance

__all__ = [
    "SCHEMES",
    "Alternative",
    "CatalogEntry",
    "JobShopInstance",
    "JobShopState",
    "Operation",
    "ScheduledOperation",
    "bundled_catalog",
    "bundled_names",
    "check_schedule",
    "format_fjsp",
    "format_jssp",
    "generate_taillard",
    "load_bundled",
    "load_instance",
    "make_active",
    "parse_fjsp",
    "parse_jssp",
    "replay_schedule",
    "resolve_instance",
    "taillard_instance",
]
