"""One table from many measurements: profile reports and latency tables from several devices and backends.

`python -m runtime.profile compare A.json B.json ...` reads what
`runtime.profile` writes on a host (a report, or a latency table) and what
the Android app writes on a phone (a report in the same schema), and lines up
every path or operating point across them: latency, and speedup against the
static full model measured in the same run on that device. `--plot` draws
latency against MACs, one series per device and backend (runtime/plots.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from runtime.latency_table import TABLE_FORMAT, read_latency_table
from runtime.manifest import BundleError

__all__ = ["Measured", "read_measurement", "compare_table"]


@dataclass(frozen=True)
class Measured:
    """One file's measurements: where they were taken, and per path or point its MACs and median latency."""

    source: str
    label: str  # "<device>/<backend>"
    family: str
    static_ms: float  # the static full model, timed in the same run
    static_macs: float
    rows: dict[str, tuple[float, float]]  # name -> (MACs per image, median ms at batch 1)


def read_measurement(path: str | Path) -> Measured:
    """A latency table or a profile report (host or Android); BundleError naming the file on anything else."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{path}: no such file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"{path}: not valid JSON: {error}") from None
    if isinstance(data, dict) and data.get("format") == TABLE_FORMAT:
        table = read_latency_table(path)
        return Measured(str(path), f"{table.device}/{table.backend}", table.family, table.static.median_ms,
                        table.graphs[table.reference].macs,
                        {p.name: (p.macs, p.latency.median_ms) for p in table.points})
    required = ("device", "backend", "family", "reference", "paths")
    missing = [key for key in required if not isinstance(data, dict) or key not in data]
    if missing:
        raise BundleError(f"{path}: neither a latency table ({TABLE_FORMAT}) nor a profile report: missing {missing}")
    try:
        rows = {name: (float(p["macs"]), float(p["median_ms"])) for name, p in data["paths"].items()}
        reference = data["reference"]
        # Reports before latency_key existed name the backend as it describes itself: its first word is its name.
        label = data.get("latency_key") or f"{data['device']}/{data['backend'].split()[0]}"
        return Measured(str(path), label, data["family"], float(reference["median_ms"]),
                        float(reference["macs"]), rows)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise BundleError(f"{path}: a profile report's paths and reference need macs and median_ms: {error!r}") from None


def compare_table(measured: Sequence[Measured]) -> str:
    """A text table: one row per path or point, per file its median ms and speedup against its own static model."""
    names = list(dict.fromkeys(name for m in measured for name in m.rows))
    header = f"{'path / point':18} {'MMACs':>8}" + "".join(f" {m.label[:26]:>26}" for m in measured)
    lines = [header, f"{'static full model':18} {measured[0].static_macs / 1e6:8.3f}" + "".join(
        f" {m.static_ms:17.3f} ms 1.00x" for m in measured)]
    for name in names:
        macs = next(m.rows[name][0] for m in measured if name in m.rows)
        cells = "".join(
            f" {m.rows[name][1]:17.3f} ms {m.static_ms / m.rows[name][1]:4.2f}x" if name in m.rows else f" {'-':>26}"
            for m in measured
        )
        lines.append(f"{name:18} {macs / 1e6:8.3f}{cells}")
    families = sorted({m.family for m in measured})
    sources = "\n".join(f"  {m.label}: {m.source}" for m in measured)
    return "\n".join([f"families: {', '.join(families)}; batch 1, medians; speedup against the static full model "
                      "measured in the same run", *lines, "sources:", sources])
