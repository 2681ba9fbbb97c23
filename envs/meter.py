"""The one meter of a line twin: energy, costs, profit and the KPIs, all from its statistics.

:meth:`Twin.kpis <taktline.envs.twin.Twin.kpis>` and the line environments' rewards both read
:class:`Meter`, so the profit an agent is trained on is, to the last bit, the profit the KPIs
report (an episode's return is the run's profit). Energy: each machine draws its station's
power in the state it is in (``idle``, ``setup``, ``busy``, ``down``; ``blocked`` draws idle
power), integrated over time and converted to kWh with the spec's time unit.

>>> from taktline.envs.spec import load_spec
>>> from taktline.envs.twin import Twin
>>> twin = Twin(load_spec("serial5"), seed=0)
>>> twin.meter.profit(twin) == twin.kpis().profit == 0.0
True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from taktline.envs.kpis import Kpis, StationKpis
from taktline.envs.snapshot import MachineState
from taktline.envs.spec import HOURS_PER_UNIT, LineSpec

if TYPE_CHECKING:
    from taktline.envs.twin import Twin
    from taktline.envs.twin_state import Machine


class Meter:
    """Reads a twin's running statistics into money and KPIs (one per spec; twins share it).

    Args:
        spec: The line (its stations' power and its costs).
    """

    __slots__ = ("costs", "kwh")

    def __init__(self, spec: LineSpec) -> None:
        hours = HOURS_PER_UNIT[spec.time_unit]
        self.costs = spec.costs
        # per machine, kWh per time unit in each state (in MachineState order)
        self.kwh: list[tuple[float, ...]] = []
        for st in spec.stations:
            pw = st.power
            kw = (pw.idle_kw, pw.setup_kw, pw.busy_kw, pw.idle_kw, pw.down_kw)
            self.kwh.extend([tuple(hours * k for k in kw)] * st.machines)

    def energy_kwh(self, twin: Twin) -> float:
        """Energy drawn since the statistics started."""
        now = twin.now
        energy = 0.0
        # unpacked rather than indexed (the envs read this at every step); the sum keeps its
        # order term by term, so the result is the same to the last bit
        for m, w in zip(twin.machines, self.kwh, strict=True):
            t0, t1, t2, t3, t4 = m.state_time
            w0, w1, w2, w3, w4 = w
            energy += t0 * w0 + t1 * w1 + t2 * w2 + t3 * w3 + t4 * w4 + (now - m.since) * w[m.state]
        return energy

    def _money(self, twin: Twin, energy_kwh: float, setups: int) -> tuple[float, ...]:
        """WIP area, the four costs and the profit (revenue minus the costs)."""
        c = self.costs
        wip_area = twin.wip_area + twin.wip * (twin.now - twin.wip_since)
        wip_cost = c.wip_cost_per_job_time * wip_area
        tardy_cost = c.tardiness_cost_per_time * twin.tardy_sum
        energy_cost = c.energy_price_per_kwh * energy_kwh
        setup_cost = c.setup_cost * setups
        profit = twin.revenue - wip_cost - tardy_cost - energy_cost - setup_cost
        return wip_area, wip_cost, tardy_cost, energy_cost, setup_cost, profit

    def profit(self, twin: Twin) -> float:
        """Profit since the statistics started (equal to ``kpis(twin).profit``; cheap: the
        environments read it at every step)."""
        setups = sum(s.setups for s in twin.stations)
        return self._money(twin, self.energy_kwh(twin), setups)[-1]

    def kpis(self, twin: Twin) -> Kpis:
        """KPIs over the window from the end of warm-up to now."""
        now = twin.now
        window = max(now - twin.stats_start, 1e-12)
        stations: list[StationKpis] = []
        setups = 0
        idle, setup, busy, blocked, down = (st.code for st in MachineState)
        for s in twin.stations:
            tot = [0.0] * len(MachineState)
            for m in s.machines:
                for i, t in enumerate(state_times(m, now)):
                    tot[i] += t
            cap = window * len(s.machines)
            q_area = s.q_area + len(s.buffer) * (now - s.q_since)
            setups += s.setups
            stations.append(
                StationKpis(
                    name=s.name,
                    utilization=tot[busy] / cap,
                    availability=1.0 - tot[down] / cap,
                    blocked_share=tot[blocked] / cap,
                    starved_share=tot[idle] / cap,
                    setup_share=tot[setup] / cap,
                    mean_wait=s.wait_sum / s.wait_n if s.wait_n else 0.0,
                    mean_queue=q_area / window,
                )
            )
        energy = self.energy_kwh(twin)
        wip_area, wip_cost, tardy_cost, energy_cost, setup_cost, profit = self._money(
            twin, energy, setups
        )
        n = twin.completed
        return Kpis(
            window=window,
            throughput=n / window,
            completed=n,
            released=twin.released,
            wip=wip_area / window,
            flow_time=twin.flow_sum / n if n else 0.0,
            lead_time=twin.lead_sum / n if n else 0.0,
            makespan=twin.last_departure,
            total_tardiness=twin.tardy_sum,
            max_tardiness=twin.tardy_max,
            share_late=twin.n_late / n if n else 0.0,
            setups=setups,
            energy_kwh=energy,
            energy_cost=energy_cost,
            revenue=twin.revenue,
            wip_cost=wip_cost,
            tardiness_cost=tardy_cost,
            setup_cost=setup_cost,
            profit=profit,
            stations=stations,
        )


def state_times(m: Machine, now: float) -> list[float]:
    """Time ``m`` has spent in each state since the statistics started, up to ``now``."""
    times = list(m.state_time)
    times[m.state] += now - m.since
    return times
