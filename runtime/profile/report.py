"""A profile report: a view of one latency table against a device's budgets, not a second measurement.

`python -m runtime.profile --bundle B --device D --out report.json` measures
the latency table (runtime/profile/table.py) and writes this view of it: per
graph its latency, per operating point its latency and speedup against the
static full model timed in the same run, the dynamic model over real images
when given, and the device's two budgets. The Android app writes the same
JSON (android_demo/golden/report_schema.json), so `read_report` reads a
phone's report as it reads the host's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from runtime.format.devices import Device
from runtime.format.fields import FieldReader, FormatError
from runtime.format.latency_table import LatencyTable
from runtime.format.manifest import Manifest
from runtime.serving.costs import latency_key

__all__ = ["ReportError", "Timed", "Mix", "BudgetCheck", "Report", "report_of", "read_report", "format_report"]

SMALL_GRAPH_MACS = 10_000  # below 0.01 MMACs (identity shortcuts, gates) µs per MMAC only measures call overhead


class ReportError(FormatError):
    """A profile report that does not follow the report format."""


@dataclass(frozen=True)
class Timed:
    """A graph, or an operating point with its comparison against the static full model."""

    macs: float
    median_ms: float
    p90_ms: float
    us_per_mmac: float | None = None  # graphs of at least SMALL_GRAPH_MACS
    speedup: float | None = None  # operating points: the static model's median over this one's
    macs_reduction: float | None = None  # operating points: the static model's MACs over this one's


@dataclass(frozen=True)
class Mix:
    """The dynamic model over real images against the static full model over the same images."""

    images: int
    rounds: int
    dynamic_ms_per_image: float  # one image per call: the latency a user waits for
    static_ms_per_image: float
    speedup: float
    batched_dynamic_ms_per_image: float  # the set as one batch: throughput
    batched_static_ms_per_image: float
    batched_speedup: float
    mean_macs: float
    macs_reduction: float
    histogram: Mapping[str, int]


@dataclass(frozen=True)
class BudgetCheck:
    value: float
    budget: float
    path: str  # the path or point that costs `value`
    passed: bool


@dataclass(frozen=True)
class Report:
    bundle: str
    family: str
    target: str
    device: str
    backend: str  # what ran, as the backend describes itself
    latency_key: str
    runs: int
    macs_convention: str
    reference: str  # the static full model's graph
    reference_timing: Timed
    graphs: Mapping[str, Timed]
    paths: Mapping[str, Timed]  # the operating points: paths, or URNet's S sweep
    dynamic: Mix | None
    budgets: Mapping[str, BudgetCheck]  # "macs": the worst case; "latency_ms": the slowest point
    command: str | None = None

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.budgets.values())

    def to_json(self) -> dict[str, Any]:
        """The report format: what `--out` writes and the Android app writes."""
        def timed(t: Timed, *keys: str) -> dict:
            return {"macs": t.macs, "median_ms": t.median_ms, "p90_ms": t.p90_ms, **{k: getattr(t, k) for k in keys}}

        data = {
            "bundle": self.bundle, "family": self.family, "target": self.target, "device": self.device,
            "backend": self.backend, "latency_key": self.latency_key, "runs": self.runs,
            "macs_convention": self.macs_convention,
            "reference": {"path": self.reference, **timed(self.reference_timing)},
            "graphs": {name: timed(t, "us_per_mmac") for name, t in self.graphs.items()},
            "paths": {name: timed(t, "speedup", "macs_reduction") for name, t in self.paths.items()},
            **({"dynamic": {**asdict(self.dynamic), "histogram": dict(self.dynamic.histogram)}} if self.dynamic else {}),
            "budgets": {name: {"value": c.value, "budget": c.budget, "path": c.path, "pass": c.passed}
                        for name, c in self.budgets.items()},
            "pass": self.passed,
        }
        return data | ({"command": self.command} if self.command is not None else {})


def report_of(table: LatencyTable, manifest: Manifest, device: Device, command: str | None = None) -> Report:
    """The report view of `table`, the latency table of the bundle `manifest` describes, on `device`."""
    static, reference_macs = table.static, table.graphs[table.reference].macs
    graphs = {}
    for name, row in table.graphs.items():
        t = row.batches[1]
        per_mmac = t.median_ms * 1e3 / (row.macs / 1e6) if row.macs >= SMALL_GRAPH_MACS else None
        graphs[name] = Timed(row.macs, t.median_ms, t.p90_ms, us_per_mmac=per_mmac)
    paths = {
        p.name: Timed(p.macs, p.latency.median_ms, p.latency.p90_ms, speedup=static.median_ms / p.latency.median_ms,
                      macs_reduction=reference_macs / p.macs)
        for p in table.points
    }
    mix = None
    if table.pipeline is not None and table.pipeline.dynamic_ms is not None:
        p = table.pipeline
        mix = Mix(p.images, p.rounds, p.dynamic_ms, p.static_ms, p.speedup, p.batched_ms, p.batched_static_ms,
                  p.batched_static_ms / p.batched_ms, p.mean_macs, reference_macs / p.mean_macs, dict(p.histogram))
    slowest = max(paths, key=lambda name: paths[name].median_ms)
    worst_macs, worst = manifest.dispatch.worst_case(manifest.graphs)
    budgets = {
        "macs": BudgetCheck(worst_macs, device.macs_budget, worst, worst_macs <= device.macs_budget),
        "latency_ms": BudgetCheck(paths[slowest].median_ms, device.latency_budget_ms, slowest,
                                  paths[slowest].median_ms <= device.latency_budget_ms),
    }
    return Report(
        bundle=table.bundle, family=table.family, target=manifest.target, device=table.device,
        backend=table.backend_detail, latency_key=latency_key(table.device, table.backend), runs=table.runs,
        macs_convention=manifest.macs_convention, reference=table.reference,
        reference_timing=Timed(reference_macs, static.median_ms, static.p90_ms), graphs=graphs, paths=paths,
        dynamic=mix, budgets=budgets, command=command,
    )


def read_report(source: str | Path | Mapping) -> Report:
    """A report from a file (or its parsed JSON), the host's or a phone's, validated field by field."""
    r = FieldReader(Path(source) if not isinstance(source, Mapping) else Path("<report>"), ReportError)
    if isinstance(source, Mapping):
        data = source
    else:
        try:
            data = json.loads(Path(source).read_text())
        except FileNotFoundError:
            raise r.fail("report", "no such file") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise r.fail("report", f"not valid JSON: {error}") from None
    top = r.fields(
        data, "report",
        {"bundle", "family", "target", "device", "backend", "runs", "macs_convention", "reference", "graphs", "paths",
         "budgets", "pass"},
        frozenset({"latency_key", "dynamic", "command"}),
    )
    number = r.number

    def timed(entry: Any, where: str, optional: frozenset[str]) -> Timed:
        e = r.fields(entry, where, {"macs", "median_ms", "p90_ms"}, optional)
        extra = {k: None if e.get(k) is None else number(e[k], f"{where}.{k}") for k in optional}
        return Timed(number(e["macs"], f"{where}.macs"), number(e["median_ms"], f"{where}.median_ms"),
                     number(e["p90_ms"], f"{where}.p90_ms"), **extra)

    reference = r.typed(top["reference"], dict, "reference")
    budgets = {}
    for name, check in r.typed(top["budgets"], dict, "budgets").items():
        c = r.fields(check, f"budgets.{name}", {"value", "budget", "path", "pass"})
        budgets[name] = BudgetCheck(number(c["value"], f"budgets.{name}.value"),
                                    number(c["budget"], f"budgets.{name}.budget"),
                                    r.text(c["path"], f"budgets.{name}.path"), r.flag(c["pass"], f"budgets.{name}.pass"))
    mix = None
    if top.get("dynamic") is not None:
        d = r.fields(top["dynamic"], "dynamic", {f.name for f in Mix.__dataclass_fields__.values()})
        histogram = {k: r.count(v, f"dynamic.histogram[{k!r}]") for k, v in r.typed(d["histogram"], dict, "dynamic.histogram").items()}
        counts = {k: r.count(d[k], f"dynamic.{k}", 1) for k in ("images", "rounds")}
        numbers = {k: number(v, f"dynamic.{k}") for k, v in d.items() if k not in ("images", "rounds", "histogram")}
        mix = Mix(**counts, **numbers, histogram=histogram)
    device, backend = r.text(top["device"], "device"), r.text(top["backend"], "backend")
    return Report(
        bundle=r.text(top["bundle"], "bundle"), family=r.text(top["family"], "family"),
        target=r.text(top["target"], "target"), device=device, backend=backend,
        # Reports before latency_key existed name the backend as it describes itself: its first word is its name.
        latency_key=r.text(top.get("latency_key") or latency_key(device, backend.split()[0]), "latency_key"),
        runs=r.count(top["runs"], "runs", 1), macs_convention=r.text(top["macs_convention"], "macs_convention"),
        reference=r.text(reference.get("path"), "reference.path"),
        reference_timing=timed({k: v for k, v in reference.items() if k != "path"}, "reference", frozenset()),
        graphs={name: timed(g, f"graphs[{name!r}]", frozenset({"us_per_mmac"}))
                for name, g in r.typed(top["graphs"], dict, "graphs").items()},
        paths={name: timed(p, f"paths[{name!r}]", frozenset({"speedup", "macs_reduction"}))
               for name, p in r.typed(top["paths"], dict, "paths").items()},
        dynamic=mix, budgets=budgets, command=top.get("command"),
    )


def format_report(report: Report) -> str:
    lines = [
        f"{report.bundle} ({report.family}, {report.target}) on {report.device}: {report.backend}",
        f"batch 1 through Session.run, a new input per call, median of {report.runs} interleaved rounds; "
        f"MACs = {report.macs_convention}",
        "",
        f"{'graph':14} {'MMACs':>8} {'median ms':>10} {'p90 ms':>8} {'us/MMAC':>8}",
    ]
    for name, g in report.graphs.items():
        per = f"{g.us_per_mmac:8.1f}" if g.us_per_mmac is not None else f"{'-':>8}"
        lines.append(f"{name:14} {g.macs / 1e6:8.3f} {g.median_ms:10.3f} {g.p90_ms:8.3f} {per}")
    lines += ["", f"{'point':14} {'MMACs':>8} {'median ms':>10} {'p90 ms':>8} {'speedup':>8} {'MACs cut':>9}"
                  f"   vs static {report.reference} {report.reference_timing.median_ms:.3f} ms"]
    for name, p in report.paths.items():
        lines.append(f"{name:14} {p.macs / 1e6:8.3f} {p.median_ms:10.3f} {p.p90_ms:8.3f} "
                     f"{p.speedup:7.2f}x {p.macs_reduction:8.2f}x")
    if report.dynamic:
        d = report.dynamic
        shown = list(d.histogram.items())[:6]
        hist = "  ".join(f"{k}:{v}" for k, v in shown)
        hist += f"  ... ({len(d.histogram)} distinct)" if len(d.histogram) > len(shown) else ""
        lines += [
            "",
            f"dynamic over {d.images} images (median of {d.rounds} rounds): {d.dynamic_ms_per_image:.3f} ms/image "
            f"vs static {report.reference} {d.static_ms_per_image:.3f} ms/image",
            f"  realized speedup {d.speedup:.2f}x for a MACs reduction of {d.macs_reduction:.2f}x "
            f"({d.mean_macs / 1e6:.3f} MMACs/image); paths {hist}",
            f"  as one batch of {d.images}: {d.batched_dynamic_ms_per_image:.3f} vs "
            f"{d.batched_static_ms_per_image:.3f} ms/image, speedup {d.batched_speedup:.2f}x",
        ]
    lines.append("")
    for name, check in report.budgets.items():
        value, budget = (f"{v / 1e6:.3f} MMACs" if name == "macs" else f"{v:.3f} ms" for v in (check.value, check.budget))
        lines.append(f"budget {name}: worst path {check.path} {value} <= {budget}: {'pass' if check.passed else 'FAIL'}")
    lines.append("PASS" if report.passed else "FAIL")
    return "\n".join(lines)
