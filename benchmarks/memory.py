"""A bundle's weights once in memory? Peak RSS and latency of the top-16 BlockDrop ResNet-110 bundle, per option.

python -m benchmarks.memory [--rounds 7] [--work DIR] [--backend onnxruntime|executorch]

The rigged BlockDrop ResNet-110 of benchmarks/rigs.py (random weights, BN
statistics from data, a policy rigged over 16 paths) is exported with all 16
paths cached, for ONNX and ExecuTorch, and its static full model alone by the
same target writer. Each option is measured twice:

- memory: fresh subprocesses per option, each importing, then loading, then
  running one batch of 32 through `Session.run`, reading its peak resident set
  (VmHWM of /proc/self/status): the backend alone (import), the static model,
  the bundle. Goal on onnxruntime: the bundle <= 1.3x the static model, in total
  and over the import.
- latency: every option's session in one process, `Session.run` on a stream of
  single images (a new image on every call) and the static model through
  `Session.run(x, static=True)`, interleaved rounds (runtime.profile.timing),
  medians; each option against today's setting in the same run. Goal: within 3%.

Writes benchmarks/results/memory.{md,json}; with --backend, memory_<backend>.{md,json}.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.rigs import Bench, RiggedBundles, machine, write_static_model
from benchmarks.runtime_costs import _peak_rss_kb, _rss_now_kb
from runtime.format.bundle import open_bundle
from runtime.profile.timing import measure
from runtime.session import Session

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CALIBRATION, STREAM, BATCH, THREADS = 256, 64, 32, 1
GOALS = {"rss": 1.3, "latency": 1.03}
MODEL = "blockdrop-resnet110"
PLANS = {  # bundle name -> how it is exported (runtime_costs.py's benches of the same names)
    "blockdrop-top16": Bench("blockdrop-top16", MODEL, {"cache_paths": 16}, calibrate=True),
    "blockdrop-top8": Bench("blockdrop-top8", MODEL, {"cache_paths": 8}, calibrate=True),
}


@dataclass(frozen=True)
class Option:
    """One way to hold the bundle: which export plan, and how the backend is made."""

    name: str
    backend: str
    plan: str
    change: str  # what it changes against today's, in words
    baseline: bool = False  # today's setting: what the others' latency is a ratio of


OPTIONS = (
    Option("per-session (today)", "onnxruntime", "blockdrop-top16", "each session optimizes and keeps its weights",
           baseline=True),
    Option("shared", "onnxruntime", "blockdrop-top16",
           "each graph optimized once into an ONNX copy with external weights; each distinct optimized tensor one "
           "OrtValue, given to every session through SessionOptions.add_initializer; sessions load the copy unoptimized"),
    Option("shared, prepacking off", "onnxruntime", "blockdrop-top16",
           "shared, and session.disable_prepacking = 1: no session packs a MatMul/Gemm weight of its own"),
    Option("per-session, prepacking off", "onnxruntime", "blockdrop-top16", "session.disable_prepacking = 1"),
    Option("per-session, no NCHWc", "onnxruntime", "blockdrop-top16",
           "optimization.disable_specified_optimizers = NchwcTransformer"),
    Option("top-16 (today)", "executorch", "blockdrop-top16", "each method's XNNPACK delegate packs its weights",
           baseline=True),
    Option("top-8 (fewer methods)", "executorch", "blockdrop-top8", "8 cached paths instead of 16; the rest by segments"),
)


# ---------------------------------------------------------------- backends of each option


def make_backend(option: Option):
    """The backend `option` loads with."""
    from runtime.backends import create_backend

    if option.backend == "onnxruntime":
        from runtime.backends.onnxruntime import OnnxRuntimeBackend

        shared = option.name.startswith("shared")
        backend = OnnxRuntimeBackend(THREADS, ("CPUExecutionProvider",),
                                     weight_sharing="shared" if shared else "per-session")
        if "prepacking off" in option.name:
            options = backend._options
            backend._options = lambda: _prepacking_off(options())  # shared sessions get new options per graph
            backend.options = backend._options()
        if "no NCHWc" in option.name:
            backend.options.add_session_config_entry("optimization.disable_specified_optimizers", "NchwcTransformer")
        return backend
    return create_backend("executorch", "executorch", threads=THREADS)


def _prepacking_off(options):
    options.add_session_config_entry("session.disable_prepacking", "1")
    return options


# ---------------------------------------------------------------- memory: fresh subprocesses


def probe(option: Option, mode: str, bundle: Path, static_dir: Path) -> dict:
    """Run in a fresh subprocess: create the backend, load what `mode` says, run one batch; VmHWM and RSS in KiB."""
    manifest = open_bundle(bundle)
    images = np.random.default_rng(7).integers(0, 256, (BATCH, 32, 32, 3), dtype=np.uint8)
    backend = make_backend(option)
    if mode == "static":
        from runtime.preprocess import prepare

        run = backend.load(static_dir, manifest, manifest.graphs[manifest.dispatch.reference])
        for start in range(0, BATCH, manifest.max_batch):  # in the chunks Session.run makes of the batch
            run([prepare(images[start : start + manifest.max_batch], manifest.preprocessing)])
    elif mode == "bundle":
        Session(bundle, manifest, backend).run(images)
    return {"maxrss_kb": _peak_rss_kb(), "rss_kb": _rss_now_kb()}


def run_probe(option: Option, mode: str, bundle: Path, static_dir: Path) -> dict:
    command = [sys.executable, "-m", "benchmarks.memory", "--probe", option.name, "--mode", mode,
               "--bundle", str(bundle), "--static-dir", str(static_dir)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(f"RSS probe {option.name}/{mode} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_row(option: Option, bundle: Path, static_dir: Path) -> dict:
    probes = {mode: run_probe(option, mode, bundle, static_dir) for mode in ("import", "static", "bundle")}
    kb = {mode: p["maxrss_kb"] for mode, p in probes.items()}
    ratio = kb["bundle"] / kb["static"]
    increment = (kb["bundle"] - kb["import"]) / max(1, kb["static"] - kb["import"])
    return {"maxrss_kb": kb, "rss_kb": {mode: p["rss_kb"] for mode, p in probes.items()}, "ratio": ratio,
            "increment_ratio": increment, "pass": ratio <= GOALS["rss"] and increment <= GOALS["rss"]}


# ---------------------------------------------------------------- latency: one process per backend


@contextlib.contextmanager
def _held(lock: Path | None):
    """An exclusive flock on `lock` while timing: on a shared machine one timing runs at a time, memory probes need none."""
    if lock is None:
        yield
        return
    with open(lock, "a") as stream:
        fcntl.flock(stream, fcntl.LOCK_EX)
        yield


def latency(options: list[Option], bundles: dict[str, Path], rounds: int, lock: Path | None) -> dict[str, dict]:
    """µs per image of `Session.run` for every option and of the static model, interleaved; load seconds."""
    stream = np.random.default_rng(1).integers(0, 256, (STREAM, 1, 32, 32, 3), dtype=np.uint8)
    sessions, load_s = {}, {}
    for option in options:
        started = time.perf_counter()
        bundle = bundles[option.name]
        sessions[option.name] = Session(bundle, open_bundle(bundle), make_backend(option))
        load_s[option.name] = time.perf_counter() - started
    baseline = next(o for o in options if o.baseline).name
    fns: dict[tuple[str, int], Callable[[], object]] = {}
    for i, x in enumerate(stream):
        for name, session in sessions.items():
            fns[(name, i)] = lambda s=session, x=x: s.run(x)
        fns[("static", i)] = lambda s=sessions[baseline], x=x: s.run(x, static=True)
    with _held(lock):
        times = measure(fns, runs=rounds, warmup=1)
    us = {name: sum(times[(name, i)].median_ms for i in range(STREAM)) * 1e3 / STREAM for name in [*sessions, "static"]}
    return {name: {"us": us[name], "load_s": load_s[name], "vs_baseline": us[name] / us[baseline],
                   "vs_static": us[name] / us["static"], "static_us": us["static"]} for name in sessions}


# ---------------------------------------------------------------- report


def report_md(command: str, info: dict, rows: list[dict], rig: str) -> str:
    lines = [
        "# Peak memory of a bundle: top-16 BlockDrop ResNet-110, per option of holding its weights",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {info['machine']}; {info['cpus']} CPUs; one thread per backend"
        f"{'; the latency measurement held --timing-lock against other timed jobs' if info['timing_lock'] else ''}. "
        f"Versions: {info['versions']}.",
        "",
        f"Model: {rig}. Exported with all 16 paths cached (53 graphs) unless the option says otherwise; the static "
        "model is the split's `full` graph alone, written by the same target writer (benchmarks/rigs.py "
        "`write_static_model`).",
        "",
        "**Memory**: each cell is the peak resident set (VmHWM) of a fresh subprocess that imports, creates the "
        f"backend as the option says, then loads and runs one batch of {BATCH} through `Session.run` (*static*: the "
        "static model's graph, loaded by the same backend). *Import* creates the backend only. Goal (onnxruntime): "
        f"bundle <= {GOALS['rss']}x static, in total and over the import.",
        "",
        f"**Latency**: `Session.run` on {STREAM} single images, a new image per call, every option's session and the "
        f"static model (`Session.run(x, static=True)`) timed in one interleaved measurement ({info['rounds']} rounds, "
        "medians per image, summed). Goal: within "
        f"{(GOALS['latency'] - 1) * 100:.0f}% of today's setting, measured in the same run.",
        "",
        "| backend | option | what it changes | import MB | static MB | bundle MB | total ratio | over import | "
        "goal | resident at exit, bundle MB | Session.run µs/image | vs today | vs static | load s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        kb, t = r["memory"]["maxrss_kb"], r["latency"]
        goal = ("held" if r["memory"]["pass"] else "**MISS**") if r["backend"] == "onnxruntime" else "-"
        latency_goal = "" if t["vs_baseline"] <= GOALS["latency"] else " **MISS**"
        lines.append(
            f"| {r['backend']} | {r['option']} | {r['change']} | {kb['import'] / 1024:.0f} | {kb['static'] / 1024:.0f} | "
            f"{kb['bundle'] / 1024:.0f} | {r['memory']['ratio']:.2f}x | {r['memory']['increment_ratio']:.2f}x | {goal} | "
            f"{r['memory']['rss_kb']['bundle'] / 1024:.0f} | {t['us']:.0f} | {t['vs_baseline']:.3f}{latency_goal} | "
            f"{t['vs_static']:.2f} | {t['load_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- main


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds; medians are reported")
    parser.add_argument("--work", type=Path, help="keep checkpoints and bundles here and reuse them")
    parser.add_argument("--backend", choices=sorted({o.backend for o in OPTIONS}), help="one backend only")
    parser.add_argument("--timing-lock", type=Path, help="hold an flock on this file while timing (a shared machine)")
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--bundle", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--static-dir", type=Path, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = arguments().parse_args(argv)
    if args.probe:
        option = next(o for o in OPTIONS if o.name == args.probe)
        print(json.dumps(probe(option, args.mode, args.bundle, args.static_dir)))
        return 0
    from trainer.checkpoint import load_checkpoint

    command = shlex.join(["python", "-m", "benchmarks.memory", *(argv if argv is not None else sys.argv[1:])])
    work = args.work or Path(tempfile.mkdtemp(prefix="memory-bench-"))
    calibration = np.random.default_rng(0).integers(0, 256, (CALIBRATION, 32, 32, 3), dtype=np.uint8)
    bundles = RiggedBundles(work, calibration)
    options = [o for o in OPTIONS if args.backend in (None, o.backend)]
    rows = []
    for backend in dict.fromkeys(o.backend for o in options):
        target = "onnx" if backend == "onnxruntime" else "executorch"
        chosen = [o for o in options if o.backend == backend]
        paths = {o.name: bundles.bundle(PLANS[o.plan], target)[0] for o in chosen}
        model, _ = load_checkpoint(work / "checkpoints" / MODEL)
        reference = open_bundle(paths[chosen[0].name])
        static_dir = write_static_model(model, "blockdrop", target, work / f"static-{target}", reference.max_batch)
        memory = {}
        for o in chosen:
            memory[o.name] = memory_row(o, paths[o.name], static_dir)
            print(f"  RSS, {o.name}: {json.dumps(memory[o.name])}", flush=True)
        print(f"{backend}: latency of {len(chosen)} options", flush=True)
        timed = latency(chosen, paths, args.rounds, args.timing_lock)
        rows += [{"backend": backend, "option": o.name, "change": o.change, "bundle": str(paths[o.name]),
                  "memory": memory[o.name], "latency": timed[o.name]} for o in chosen]
    info = {**machine(), "rounds": args.rounds, "timing_lock": args.timing_lock is not None}
    rig = bundles.checkpoint(MODEL)[1]
    name = f"memory_{args.backend}" if args.backend else "memory"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"command": command, **info, "goals": GOALS, "rig": rig,
                                                      "rows": rows}, indent=2, default=float) + "\n")
    (RESULTS / f"{name}.md").write_text(report_md(command, info, rows, rig))
    print((RESULTS / f"{name}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
