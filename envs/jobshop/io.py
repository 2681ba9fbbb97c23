"""Read and write the standard job-shop text formats.

* **OR-Library / Taillard** (classical job shop): first line ``n_jobs n_machines``, then one
  line per job with ``machine time`` pairs in technological order, machines numbered from 0.
* **Brandimarte** (flexible job shop, ``.fjs``): first line ``n_jobs n_machines [avg]``, then
  one line per job: the number of operations, then per operation the number of alternatives
  ``k`` followed by ``k`` pairs ``machine time`` with machines numbered from **1**.

Blank lines and lines starting with ``#`` are skipped. Every error names the line.

>>> inst = parse_jssp("2 2\\n0 3 1 2\\n1 2 0 4\\n", name="tiny")
>>> inst.jobs[1]
(((1, 2),), ((0, 4),))
>>> parse_fjsp("1 2 1.5\\n2 2 1 5 2 4 1 2 3\\n").jobs[0]
(((0, 5), (1, 4)), ((1, 3),))
"""

from __future__ import annotations

from pathlib import Path

from taktline.envs.files import read_text_file
from taktline.envs.jobshop.instance import (
    MAX_MACHINES,
    Alternative,
    JobShopInstance,
    Operation,
)
from taktline.errors import SpecError


def _data_lines(text: str) -> list[tuple[int, list[str]]]:
    """``(line number, tokens)`` of every line that carries data."""
    out = []
    for number, raw in enumerate(text.splitlines(), start=1):
        tokens = raw.split()
        if tokens and not tokens[0].startswith("#"):
            out.append((number, tokens))
    return out


def _ints(number: int, tokens: list[str], source: str) -> list[int]:
    values = []
    for tok in tokens:
        try:
            values.append(int(tok))
        except ValueError:
            raise SpecError(
                f"line {number}: expected whole numbers, got {tok!r}", source=source
            ) from None
    return values


def _header(lines: list[tuple[int, list[str]]], source: str) -> tuple[int, int]:
    if not lines:
        raise SpecError("the file is empty; expected a first line 'n_jobs n_machines'", source)
    number, tokens = lines[0]
    if len(tokens) < 2:
        raise SpecError(
            f"line {number}: expected 'n_jobs n_machines', got {' '.join(tokens)!r}", source
        )
    n_jobs, n_machines = _ints(number, tokens[:2], source)
    if n_jobs < 1 or n_machines < 1:
        raise SpecError(
            f"line {number}: n_jobs and n_machines must be >= 1, got {n_jobs} {n_machines}",
            source,
        )
    if n_machines > MAX_MACHINES:
        raise SpecError(
            f"line {number}: n_machines must be <= {MAX_MACHINES:,}, got {n_machines:,}", source
        )
    if len(lines) - 1 != n_jobs:
        where = lines[-1][0]
        raise SpecError(
            f"line {number}: header announces {n_jobs} jobs but the file has "
            f"{len(lines) - 1} job lines (last data on line {where}); fix the header or the data",
            source,
        )
    return n_jobs, n_machines


def parse_jssp(text: str, name: str = "instance", source: str | None = None) -> JobShopInstance:
    """Parse an OR-Library / Taillard job-shop text.

    Args:
        text: The file contents.
        name: Instance name.
        source: Where the text came from, for error messages (default: ``name``).

    Raises:
        SpecError: naming the line and the problem.
    """
    src = source or name
    lines = _data_lines(text)
    _, n_machines = _header(lines, src)
    jobs: list[tuple[Operation, ...]] = []
    for number, tokens in lines[1:]:
        values = _ints(number, tokens, src)
        if len(values) % 2:
            raise SpecError(
                f"line {number}: expected 'machine time' pairs, got an odd count "
                f"({len(values)} numbers)",
                src,
            )
        ops: list[Operation] = []
        for k in range(0, len(values), 2):
            m, p = values[k], values[k + 1]
            if not 0 <= m < n_machines:
                raise SpecError(
                    f"line {number}: operation {k // 2} uses machine {m}, expected "
                    f"0..{n_machines - 1} (machines are numbered from 0)",
                    src,
                )
            if p < 0:
                raise SpecError(f"line {number}: operation {k // 2} has negative time {p}", src)
            ops.append(((m, p),))
        jobs.append(tuple(ops))
    return JobShopInstance(jobs=tuple(jobs), n_machines=n_machines, name=name)


def parse_fjsp(text: str, name: str = "instance", source: str | None = None) -> JobShopInstance:
    """Parse a Brandimarte-style flexible job-shop text (machines numbered from 1).

    Raises:
        SpecError: naming the line and the problem.
    """
    src = source or name
    lines = _data_lines(text)
    _, n_machines = _header(lines, src)
    jobs: list[tuple[Operation, ...]] = []
    for number, tokens in lines[1:]:
        values = _ints(number, tokens, src)
        pos = 1
        n_ops = values[0]
        ops: list[Operation] = []
        for i in range(n_ops):
            if pos >= len(values):
                raise SpecError(
                    f"line {number}: announces {n_ops} operations but ends after {i}", src
                )
            k = values[pos]
            pos += 1
            if k < 1 or pos + 2 * k > len(values):
                raise SpecError(
                    f"line {number}: operation {i} announces {k} machine choices but the line "
                    "has too few numbers left (or k < 1)",
                    src,
                )
            alts: list[Alternative] = []
            for _ in range(k):
                m, p = values[pos], values[pos + 1]
                pos += 2
                if not 1 <= m <= n_machines:
                    raise SpecError(
                        f"line {number}: operation {i} uses machine {m}, expected "
                        f"1..{n_machines} (Brandimarte files number machines from 1)",
                        src,
                    )
                alts.append((m - 1, p))
            ops.append(tuple(alts))
        if pos != len(values):
            raise SpecError(
                f"line {number}: {len(values) - pos} numbers left over after {n_ops} operations",
                src,
            )
        jobs.append(tuple(ops))
    return JobShopInstance(jobs=tuple(jobs), n_machines=n_machines, name=name)


def format_jssp(instance: JobShopInstance) -> str:
    """The OR-Library text of a classical job shop (inverse of :func:`parse_jssp`)."""
    lines = [f"{instance.n_jobs} {instance.n_machines}"]
    for ms, ts in zip(instance.machines_matrix(), instance.times_matrix(), strict=True):
        lines.append(" ".join(f"{m:2d} {t:2d}" for m, t in zip(ms, ts, strict=True)))
    return "\n".join(lines) + "\n"


def format_fjsp(instance: JobShopInstance) -> str:
    """The Brandimarte text of any instance (inverse of :func:`parse_fjsp`)."""
    n_alts = sum(len(a) for ops in instance.jobs for a in ops)
    lines = [f"{instance.n_jobs} {instance.n_machines} {n_alts / instance.n_operations:g}"]
    for ops in instance.jobs:
        parts = [str(len(ops))]
        for alts in ops:
            parts.append(str(len(alts)))
            parts.extend(f"{m + 1} {p}" for m, p in alts)
        lines.append(" ".join(parts))
    return "\n".join(lines) + "\n"


def load_instance(path: str | Path, fmt: str | None = None) -> JobShopInstance:
    """Read an instance file.

    Args:
        path: The file.
        fmt: ``"jssp"`` or ``"fjsp"``; by default ``.fjs`` files and files whose header has a
            third number (Brandimarte's average machines per operation) are read as flexible,
            everything else as OR-Library / Taillard.
    """
    p = Path(path)
    text = read_text_file(p, "job-shop instance (OR-Library, Taillard or Brandimarte text)")
    if fmt is None:
        lines = _data_lines(text)
        fmt = "fjsp" if p.suffix == ".fjs" or (lines and len(lines[0][1]) >= 3) else "jssp"
    if fmt == "jssp":
        return parse_jssp(text, name=p.stem, source=str(p))
    if fmt == "fjsp":
        return parse_fjsp(text, name=p.stem, source=str(p))
    raise SpecError(f"fmt: expected 'jssp' or 'fjsp', got {fmt!r}", source=str(p))
