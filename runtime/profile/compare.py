"""One table from many measurements: profile reports and latency tables from several devices and backends.

`python -m runtime.profile compare A.json B.json ...` reads what
`runtime.profile` writes on a host (a report, or a latency table) and what
the Android app writes on a phone (a report in the same format), and lines up
every operating point across them: latency, and speedup against the static
full model measured in the same run on that device. `--plot` draws latency
against MACs, one series per source (runtime/profile/plots.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from runtime.format.latency_table import LATENCY_TABLE_FORMAT, LatencyTable, read_latency_table
from runtime.profile.report import Report, ReportError, read_report
from runtime.serving.costs import latency_key

__all__ = ["Measured", "read_measurement", "compare_table"]


@dataclass(frozen=True)
class Measured:
    """One file's measurements: where they were taken, and per operating point its MACs and median latency."""

    source: str
    bundle: str
    where: str  # latency_key: "<device>/<backend>"
    family: str
    static_ms: float  # the static full model, timed in the same run
    static_macs: float
    rows: Mapping[str, tuple[float, float]]  # point -> (MACs per image, median ms at batch 1)
    graphs: Mapping[str, float]  # graph -> median ms at batch 1

    @classmethod
    def of_table(cls, table: LatencyTable, source: str) -> Measured:
        return cls(source, table.bundle, latency_key(table.device, table.backend), table.family,
                   table.static.median_ms, table.graphs[table.reference].macs,
                   {p.name: (p.macs, p.latency.median_ms) for p in table.points},
                   {name: row.batches[1].median_ms for name, row in table.graphs.items()})

    @classmethod
    def of_report(cls, report: Report, source: str) -> Measured:
        return cls(source, report.bundle, report.latency_key, report.family, report.reference_timing.median_ms,
                   report.reference_timing.macs, {name: (p.macs, p.median_ms) for name, p in report.paths.items()},
                   {name: g.median_ms for name, g in report.graphs.items()})


def read_measurement(path: str | Path) -> Measured:
    """A latency table (it names its format) or a profile report, the host's or a phone's; a FormatError naming the
    file and the field on anything else."""
    path = Path(path)
    try:
        declared = json.loads(path.read_text()).get("format")
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ReportError(f"{path}: not valid JSON: {error}") from None
    except AttributeError:  # valid JSON, but not an object: the report reader names what it expected
        declared = None
    if declared == LATENCY_TABLE_FORMAT:
        return Measured.of_table(read_latency_table(path), str(path))
    try:
        return Measured.of_report(read_report(path), str(path))
    except ReportError as error:
        problem = str(error).removeprefix(f"{path}: ")
        raise ReportError(f"{path}: neither a latency table ({LATENCY_TABLE_FORMAT}) nor a profile report: "
                          f"{problem}") from None


def labels(measured: Sequence[Measured]) -> list[str]:
    """One label per source: its device/backend, with the bundle's name where that alone would repeat."""
    wheres = [m.where for m in measured]
    return [m.where if wheres.count(m.where) == 1 else f"{Path(m.bundle).name} @ {m.where}" for m in measured]


def compare_table(measured: Sequence[Measured]) -> str:
    """A text table: one row per point, per file its median ms and speedup against its own static model.

    A point is the same row only where the sources measured the same family;
    rows of different families are kept apart by a family prefix.
    """
    families = sorted({m.family for m in measured})
    prefix = (lambda m: f"{m.family}: ") if len(families) > 1 else (lambda m: "")
    rows = {m.source: {prefix(m) + name: row for name, row in m.rows.items()} for m in measured}
    names = list(dict.fromkeys(name for m in measured for name in rows[m.source]))
    heads = labels(measured)
    width = max(26, *(len(h) for h in heads))
    lines = [f"{'point':18} {'MMACs':>8}" + "".join(f" {h:>{width}}" for h in heads),
             f"{'static full model':18} {measured[0].static_macs / 1e6:8.3f}" + "".join(
                 f" {m.static_ms:{width - 9}.3f} ms 1.00x" for m in measured)]
    for name in names:
        macs = next(rows[m.source][name][0] for m in measured if name in rows[m.source])
        cells = "".join(
            f" {rows[m.source][name][1]:{width - 9}.3f} ms {m.static_ms / rows[m.source][name][1]:4.2f}x"
            if name in rows[m.source] else f" {'-':>{width}}"
            for m in measured
        )
        lines.append(f"{name:18} {macs / 1e6:8.3f}{cells}")
    sources = "\n".join(f"  {label}: {m.source} (bundle {m.bundle})" for label, m in zip(heads, measured))
    return "\n".join([f"families: {', '.join(families)}; batch 1, medians; speedup against the static full model "
                      "measured in the same run", *lines, "sources:", sources])
