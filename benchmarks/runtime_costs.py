"""Where the runtime spends time and memory: Python dispatch, the full path, grouped batches, realized savings, RSS, an in-graph If.

python -m benchmarks.runtime_costs [--rounds 7] [--only NAME ...] [--work DIR]

Six bundles (DRNet at the digits demo's shape and on a ResNet-56, BlockDrop
ResNet-110 naive / top-8 / top-16, URNet ResNet-110 at S = 0.5) are exported
for ONNX and ExecuTorch from random weights with sane BN statistics; where a
selector or the gates would not mix paths, they are rigged to (stated in the
results; benchmarks/rigs.py). Every figure compares calls timed side by side with
runtime.profile.timing.measure (interleaved rounds, medians), each call on a new input,
one thread. Writes benchmarks/results/runtime_costs.{md,json}; a run of chosen
--only bundles or figures writes runtime_costs_smoke instead (ignored by git).
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

import runtime
from benchmarks.rigs import HOST_TARGETS, SCALE, Bench, RiggedBundles, machine, write_static_model
from runtime.backends import create_backend
from runtime.format.bundle import open_bundle
from runtime.preprocess import prepare
from runtime.profile.table import recording
from runtime.profile.timing import measure
from runtime.rules import graphs_in_role
from runtime.session import Session

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
STREAM = 64  # single images per round (figures 1, 2, 4)
BATCH, BATCHES = 32, 4  # figure 3: distinct batches of 32 per round
CALIBRATION = 256
THREADS = 1
GOALS = {"overhead_us": 5.0, "full_path": 1.03, "batch": 0.85, "realized_gap": 0.03, "rss": 1.5}
BENCHES = (
    Bench("drnet-digits", "drnet-digits"),
    Bench("drnet-resnet56", "drnet-resnet56"),
    Bench("blockdrop-naive", "blockdrop-resnet110", {"cache_paths": 0}),
    Bench("blockdrop-top8", "blockdrop-resnet110", {"cache_paths": 8}, calibrate=True),
    Bench("blockdrop-top16", "blockdrop-resnet110", {"cache_paths": 16}, calibrate=True),
    Bench("urnet-resnet110", "urnet-resnet110"),
)
EXTRA = ("memory", "if-graph")  # figures 5 and 6, which --only can also name


# ---------------------------------------------------------------- figures 1-4: one interleaved measurement per bundle


def record(session: Session, inputs: list[np.ndarray], **options) -> tuple[list[list[tuple[str, list, list]]], list]:
    """The graph calls each `session.run(x, **options)` makes, as (name, inputs, outputs), and its results."""
    calls, results = [], []
    for x in inputs:
        with recording(session) as made:
            results.append(session.run(x, **options))
        calls.append(made)
    return calls, results


def dispatch_overhead(session: Session, stream: list[np.ndarray], calls: list[list], scale, rounds: int) -> dict:
    """Python overhead with the computation taken out: every graph call answered by a stub handing back its recorded
    outputs (the session's graph hook).

    (Session.run on stubs - the same stub calls made directly - preprocessing) / calls: what the session,
    GraphCalls and the rule's dispatcher add, resolved at the µs scale that the graphs' noise hides.
    The backend bindings' own Python (feed dicts, tensor wrapping) stays in the runners, outside this number.
    """
    pending: list = []

    def stub(name: str, inputs, run) -> list[np.ndarray]:
        return pending.pop()[2]

    def stubbed(i: int):
        def run():
            pending[:] = calls[i][::-1]
            session.run(stream[i], scale=scale)
        return run

    def direct(i: int):
        def run():
            pending[:] = calls[i][::-1]
            for name, args, _ in calls[i]:
                stub(name, args, None)
        return run

    with session.hooked(stub):
        pending[:] = calls[0][::-1]
        session.run(stream[0], scale=scale)
        if pending:
            raise RuntimeError("the stubbed session made other calls than the recorded ones")
        fns = {}
        for i in range(len(stream)):
            fns[("stubbed", i)], fns[("direct", i)] = stubbed(i), direct(i)
            fns[("preprocess", i)] = lambda i=i: prepare(stream[i], session.manifest.preprocessing)
        times = measure(fns, runs=rounds * 3, warmup=1)
    us = {k: sum(times[(k, i)].median_ms for i in range(len(stream))) * 1e3 / len(stream) for k in ("stubbed", "direct", "preprocess")}
    per_call = (us["stubbed"] - us["direct"] - us["preprocess"]) / float(np.mean([len(c) for c in calls]))
    return {"us": us, "us_per_call": per_call, "pass": per_call <= GOALS["overhead_us"]}


def shape_change(session: Session, batch: np.ndarray, rounds: int) -> dict:
    """What a change of batch size between two calls of one graph costs: the reference graph at sizes 8 and 5.

    Each case is its own measurement (interleaving them would change the shape between cases too):
    a constant 8, a constant 5, and 8 then 5 alternating; the penalty is per change of size.
    """
    run = session.graphs[session.manifest.dispatch.reference]
    x = prepare(batch, session.manifest.preprocessing)
    eight, five = x[:8].copy(), x[8:13].copy()
    us = {}
    for case, fn in (("8", lambda: run([eight])), ("5", lambda: run([five])), ("8,5", lambda: (run([eight]), run([five])))):
        us[case] = measure({case: fn}, runs=rounds * 3, warmup=2)[case].median_ms * 1e3
    return {"us": us, "penalty_us": (us["8,5"] - us["8"] - us["5"]) / 2}


def where_time_goes(logged: dict[int, list], roles: dict[str, str], calls: list[list]) -> dict:
    """Per image (or batch): µs per graph role from RunResult.timings of the timed rounds, and calls per role.

    Each item's time per role is its median over the rounds; the table shows their mean over items.
    A graph without a role in dispatch (the static reference of a block rule) counts under its own name.
    """
    time_us, count = Counter(), Counter()
    for i, results in logged.items():
        spent: dict[str, list[float]] = {}
        for result in results:
            per_role = Counter()
            for name, seconds in result.timings.items():
                per_role[roles.get(name, name)] += seconds * 1e6
            for role, us in per_role.items():
                spent.setdefault(role, []).append(us)
        for role, samples in spent.items():
            time_us[role] += float(np.median(samples)) / len(logged)
    for made in calls:
        for name, *_ in made:
            count[roles.get(name, name)] += 1 / len(calls)
    return {"us": {k: round(v, 1) for k, v in time_us.most_common()}, "calls": {k: round(v, 2) for k, v in count.most_common()}}


def path_through_every_block(dispatch) -> str:
    """The path that runs the whole network as far as the bundle holds it: the section's full path, less the blocks
    a calibrated plan left out (it has no graph to run them, so the session refuses a path through them)."""
    walk = dispatch.block_walk()
    if walk is None:
        return dispatch.full_path()
    roles = dispatch.graph_roles()
    return "".join("1" if roles.get(graph) == "block" else "0" for graph in walk.through)


def measure_session(session: Session, images: np.ndarray, batches: list[np.ndarray], rounds: int) -> dict:
    """Figures 1-4 of one bundle on one backend, from one interleaved measurement of every variant."""
    scale = SCALE if session.takes_scale else None
    stream = [images[i : i + 1] for i in range(len(images))]
    forced = path_through_every_block(session.manifest.dispatch)
    recorded = {  # per timed variant that runs dispatch: (graph calls per item, RunResults)
        "dynamic": record(session, stream, scale=scale),
        "full path": record(session, stream, scale=scale, path=forced),
        "batch dynamic": record(session, batches, scale=scale),
    }
    t, logged = time_variants(session, stream, batches, recorded["dynamic"][0], forced, scale, rounds)
    roles = session.manifest.dispatch.graph_roles()
    where = {variant: where_time_goes(logged[variant], roles, calls) for variant, (calls, _) in recorded.items()}
    calls = recorded["dynamic"][0]
    return {
        "us": {k: round(v, 2) for k, v in t.items()},
        "overhead": overhead_figures(t, calls, dispatch_overhead(session, stream, calls, scale, rounds)),
        "full_path": full_path_figures(session.manifest, t, forced, *recorded["full path"], where["full path"]),
        "batch": batch_figures(session.manifest, t, *recorded["batch dynamic"], where["batch dynamic"],
                               shape_change(session, batches[0], rounds)),
        "stream": stream_figures(session.manifest, t, recorded["dynamic"][1], len(forced) >= 12, where["dynamic"]),
    }


def time_variants(session: Session, stream: list[np.ndarray], batches: list[np.ndarray], calls: list[list],
                  forced: str, scale, rounds: int) -> tuple[dict[str, float], dict[str, dict[int, list]]]:
    """µs per image of every variant, and the RunResults of the variants that run dispatch, per item.

    One callable per (variant, image): within a round every image's variants run back to back,
    and each variant's time is the sum over images of that image's median over the rounds.
    """
    manifest, graphs = session.manifest, session.graphs
    reference = graphs[manifest.dispatch.reference]
    selector = next(iter(graphs_in_role(manifest.dispatch, "selector")), None)
    prepared = [prepare(x, manifest.preprocessing) for x in stream]
    logged: dict[str, dict[int, list]] = {"dynamic": {}, "full path": {}, "batch dynamic": {}}

    def replay(made):
        def run():
            for name, args, _ in made:
                graphs[name](args)
        return run

    def logging_run(variant: str, i: int, x: np.ndarray, **options):
        def run():
            logged[variant].setdefault(i, []).append(session.run(x, scale=scale, **options))
        return run

    per_image = {
        "dynamic": lambda i: logging_run("dynamic", i, stream[i]),
        "static": lambda i: lambda: session.run(stream[i], static=True),
        "direct dynamic": lambda i: replay(calls[i]),
        "direct static": lambda i: lambda: reference([prepared[i]]),
        "preprocess": lambda i: lambda: prepare(stream[i], manifest.preprocessing),
        "full path": lambda i: logging_run("full path", i, stream[i], path=forced),
        **({"selector": lambda i: lambda: graphs[selector]([prepared[i]])} if selector else {}),
    }
    per_batch = {
        "batch dynamic": lambda j: logging_run("batch dynamic", j, batches[j]),
        "batch static": lambda j: lambda: session.run(batches[j], static=True),
    }
    fns = {(name, i): make(i) for i in range(len(stream)) for name, make in per_image.items()}
    fns.update({(name, j): make(j) for j in range(len(batches)) for name, make in per_batch.items()})
    times = measure(fns, runs=rounds, warmup=1)
    t = {name: sum(times[(name, i)].median_ms for i in range(len(stream))) * 1e3 / len(stream) for name in per_image}
    t.update({name: sum(times[(name, j)].median_ms for j in range(len(batches))) * 1e3 / (len(batches) * BATCH)
              for name in per_batch})  # µs per image of the batches
    return t, logged


def overhead_figures(t: dict[str, float], calls: list[list], isolated: dict) -> dict:
    """Figure 1: the Python overhead per graph call, by difference and isolated (stubbed runners)."""
    calls_per_image = float(np.mean([len(c) for c in calls]))
    overhead = (t["dynamic"] - t["direct dynamic"] - t["preprocess"]) / calls_per_image
    return {"us_per_call": overhead, "calls_per_image": calls_per_image, "preprocess_us": t["preprocess"],
            "isolated": isolated, "pass": overhead <= GOALS["overhead_us"]}


def full_path_figures(manifest, t: dict[str, float], forced: str, calls: list[list], results: list, where: dict) -> dict:
    """Figure 2: the path through every block (or the reference resolution) against the static full model."""
    long = len(forced) >= 12
    taken = results[0].paths[0]
    return {
        "path": f"all {len(forced)} blocks" if long else forced,
        "taken": f"{taken.count('1')} blocks run" if long else taken,
        "macs": float(np.mean([r.macs[0] for r in results])),
        "reference_macs": manifest.graphs[manifest.dispatch.reference].macs,
        # A calibrated BlockDrop plan leaves out blocks that never ran: no dispatched path is the full model.
        "is_full_model": forced == manifest.dispatch.full_path(),
        "selector_us": t.get("selector", 0.0), "ratio": (t["full path"] - t.get("selector", 0.0)) / t["static"],
        "calls_per_image": float(np.mean([len(c) for c in calls])),
        "where": where,
    }


def batch_figures(manifest, t: dict[str, float], calls: list[list], results: list, where: dict, shape: dict) -> dict:
    """Figure 3: grouped batches of mixed paths, their throughput against the MACs they save."""
    reduction = manifest.graphs[manifest.dispatch.reference].macs / np.concatenate([r.macs for r in results]).mean()
    speedup = t["batch static"] / t["batch dynamic"]
    return {
        "images": len(results) * BATCH, "throughput_ratio": speedup, "macs_reduction": reduction,
        "fraction": speedup / reduction,
        "distinct_paths": [len(set(r.paths)) for r in results],
        "shape_change": shape,
        "calls_per_batch": float(np.mean([len(c) for c in calls])),
        "where": where,
    }


def stream_figures(manifest, t: dict[str, float], results: list, by_blocks: bool, where: dict) -> dict:
    """Figure 4: the realized fraction at batch 1, ours (Session.run) against the subgraphs called directly.
    `by_blocks`: paths are long block strings, shown by the number of blocks they run."""
    reference_macs = manifest.graphs[manifest.dispatch.reference].macs
    macs = np.concatenate([r.macs for r in results])
    macs_cut = 1 - macs.mean() / reference_macs
    ours = (1 - t["dynamic"] / t["static"]) / macs_cut
    theirs = (1 - t["direct dynamic"] / t["direct static"]) / macs_cut
    paths = Counter(p for r in results for p in r.paths)
    shown = Counter(f"{p.count('1')} blocks" for p in paths.elements()) if by_blocks else paths
    return {
        "images": len(results), "mean_macs": float(macs.mean()), "reference_macs": reference_macs,
        "macs_reduction": reference_macs / macs.mean(), "speedup": t["static"] / t["dynamic"],
        "direct_speedup": t["direct static"] / t["direct dynamic"],
        "ours": ours, "theirs": theirs, "pass": ours >= theirs - GOALS["realized_gap"],
        "distinct_paths": len(paths),
        "paths": dict(shown.most_common(6)),
        "mean_blocks": (float(np.mean([p.count("1") for p in paths.elements()]))
                        if manifest.dispatch.block_walk() is not None else None),
        "where": where,
    }


# ---------------------------------------------------------------- figure 5: peak RSS in fresh subprocesses


def _peak_rss_kb() -> int:
    """VmHWM: the peak resident set of this process image.

    ru_maxrss cannot serve in a child: Linux carries it across fork and exec, so a probe
    spawned by this (multi-GB) benchmark process would report the parent's peak.
    """
    with open("/proc/self/status") as stream:
        return next(int(line.split()[1]) for line in stream if line.startswith("VmHWM:"))


def _rss_now_kb() -> int:
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * resource.getpagesize() // 1024


def rss_probe(mode: str, bundle: Path, backend: str, static_dir: Path | None) -> dict:
    """Run in a fresh subprocess: load what `mode` says, run one batch, report peak RSS (VmHWM, KiB)."""
    manifest = open_bundle(bundle)
    images = np.random.default_rng(7).integers(0, 256, (manifest.max_batch, 32, 32, 3), dtype=np.uint8)
    out: dict = {"mode": mode}
    if mode == "import":
        create_backend(backend, manifest.target, threads=THREADS)
    elif mode == "bundle":
        runtime.load(bundle, backend, threads=THREADS).run(images, **({"scale": SCALE} if manifest.rule.takes_scale else {}))
    elif mode in ("static", "reference-only"):
        engine = create_backend(backend, manifest.target, threads=THREADS)
        graph = manifest.graphs[manifest.dispatch.reference]
        run = engine.load(static_dir if mode == "static" else bundle, manifest, graph)
        run([prepare(images, manifest.preprocessing)])
    elif mode == "breakdown":
        engine = create_backend(backend, manifest.target, threads=THREADS)
        roles = manifest.dispatch.graph_roles()
        before, per_role = _rss_now_kb(), Counter()
        for name, graph in manifest.graphs.items():
            engine.load(bundle, manifest, graph)
            now = _rss_now_kb()
            per_role[roles.get(name, name)] += now - before
            before = now
        out["load_kb_by_kind"] = dict(per_role.most_common())
    out["ru_maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # inherited: see _peak_rss_kb
    out["maxrss_kb"] = _peak_rss_kb()
    out["rss_kb"] = _rss_now_kb()  # resident at the end: the import's transient peak does not hide it
    return out


def run_probe(mode: str, bundle: Path, backend: str, static_dir: Path | None = None) -> dict:
    command = [sys.executable, "-m", "benchmarks.runtime_costs", "--rss-probe", mode, "--bundle", str(bundle),
               "--backend", backend]
    if static_dir:
        command += ["--static-dir", str(static_dir)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(f"RSS probe {mode} on {bundle} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory(bundles: RiggedBundles) -> list[dict]:
    from trainer.checkpoint import load_checkpoint

    bench = next(b for b in BENCHES if b.name == "blockdrop-top16")
    rows = []
    for target, backend in HOST_TARGETS.items():
        bundle, _ = bundles.bundle(bench, target)
        manifest = open_bundle(bundle)
        model, _ = load_checkpoint(bundles.work / "checkpoints" / bench.model)
        static_dir = write_static_model(model, "blockdrop", target, bundles.work / f"static-{target}", manifest.max_batch)
        print(f"  RSS probes, {backend}", flush=True)
        probes = {mode: run_probe(mode, bundle, backend, static_dir)
                  for mode in ("import", "static", "reference-only", "bundle", "breakdown")}
        kb = {mode: p["maxrss_kb"] for mode, p in probes.items()}
        now = {mode: p["rss_kb"] for mode, p in probes.items()}
        base = kb["import"]
        rows.append({
            "target": target, "backend": backend, "graphs": len(manifest.graphs), "maxrss_kb": kb,
            "ratio": kb["bundle"] / kb["static"],
            "increment_ratio": (kb["bundle"] - base) / max(1, kb["static"] - base),
            "rss_kb": now,
            "current_increment_ratio": (now["bundle"] - now["import"]) / max(1, now["static"] - now["import"]),
            "load_kb_by_kind": probes["breakdown"]["load_kb_by_kind"],
        })
        rows[-1]["pass"] = rows[-1]["increment_ratio"] <= GOALS["rss"]
    return rows


# ---------------------------------------------------------------- figure 6: DRNet as one ONNX graph with nested Ifs


def if_graph(bundle: Path, manifest):
    """The bundle's own selector and per-resolution graphs in one ONNX model: argmax feeds nested Ifs.

    An If condition is one element, so the model serves batch 1 only.
    """
    import onnx
    from onnx import TensorProto, helper
    from onnx.compose import add_prefix_graph

    def graph_of(name: str, prefix: str):
        model = onnx.load(str(bundle / manifest.graphs[name].artifact))  # external weights loaded in
        if model.functions:
            raise RuntimeError(f"{name}: local functions are not carried into the If model")
        return model, add_prefix_graph(model.graph, prefix, rename_inputs=False)  # every graph reads the outer `image`

    selector_model, selector = graph_of(graphs_in_role(manifest.dispatch, "selector")[0], "selector/")
    nodes = list(selector.node) + [
        helper.make_node("ArgMax", [selector.output[0].name], ["choice"], axis=1, keepdims=0)  # first index on ties
    ]
    initializers = list(selector.initializer)
    branches = []
    for path in graphs_in_role(manifest.dispatch, "path"):  # in score order
        _, g = graph_of(path, f"{path}/")
        del g.input[:]
        branches.append(g)
    # Nested from the last path: else-branch k holds "choice == k ? path k : else-branch k+1".
    inner = branches[-1]
    for k in range(len(branches) - 2, -1, -1):
        index = f"index{k}"
        initializers.append(helper.make_tensor(index, TensorProto.INT64, [], [k]))
        test = helper.make_node("Equal", ["choice", index], [f"is{k}"])
        output = f"chosen{k}" if k else "logits"
        choose = helper.make_node("If", [f"is{k}"], [output], then_branch=branches[k], else_branch=inner)
        if k == 0:
            nodes += [test, choose]
        else:
            inner = helper.make_graph(
                [test, choose], f"else{k}", [], [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)]
            )
    graph = helper.make_graph(
        nodes, "drnet_if", [selector.input[0]],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(manifest.classes)])], initializers,
    )
    model = helper.make_model(graph, opset_imports=selector_model.opset_import, ir_version=selector_model.ir_version)
    onnx.checker.check_model(model)
    return model


def in_graph(bundles: RiggedBundles, images: np.ndarray, rounds: int) -> dict:
    import onnxruntime as ort

    bench = next(b for b in BENCHES if b.name == "drnet-digits")
    bundle, _ = bundles.bundle(bench, "onnx")
    session = runtime.load(bundle, HOST_TARGETS["onnx"], threads=THREADS)
    model = if_graph(bundle, session.manifest)
    # The same SessionOptions the backend gives every graph: ORT_ENABLE_ALL, one thread, shared arena.
    branched = ort.InferenceSession(model.SerializeToString(), session.backend.options, providers=["CPUExecutionProvider"])
    prepared = [prepare(images[i : i + 1], session.manifest.preprocessing) for i in range(len(images))]
    ours = [session.run(x) for x in prepared]
    theirs = [branched.run(None, {"image": x})[0] for x in prepared]
    diff = max(float(np.abs(a.logits - b).max()) for a, b in zip(ours, theirs))
    fns = {}
    for i, x in enumerate(prepared):
        fns[("if graph", i)] = lambda x=x: branched.run(None, {"image": x})
        fns[("ours", i)] = lambda x=x: session.run(x)
    times = measure(fns, runs=rounds, warmup=1)
    us = {k: sum(times[(k, i)].median_ms for i in range(len(prepared))) * 1e3 / len(prepared) for k in ("if graph", "ours")}
    return {
        "images": len(prepared), "max_abs_diff": diff, "us": us, "ratio": us["if graph"] / us["ours"],
        "paths": dict(Counter(r.paths[0] for r in ours).most_common()),
        "if_model_bytes": model.ByteSize(), "backend": session.backend.describe(),
    }


# ---------------------------------------------------------------- report


def pass_fail(ok: bool) -> str:
    return "pass" if ok else "**MISS**"


def where_text(where: dict, top: int = 5) -> str:
    items = list(where["us"].items())[:top]
    calls = where["calls"]
    return ", ".join(f"{k} {v:.0f} µs" + (f" ({calls[k]:g} calls)" if k in calls else "") for k, v in items)


FIGURES = {  # the report's tables: title, how it was measured, and its columns (" | " between cells)
    "overhead": (
        "1. Python overhead per graph call (batch 1)",
        "(`Session.run` time - the same graph calls made directly - preprocessing) / graph calls per image. Goal <= 5 µs. "
        "*By difference* uses the real graphs; the difference of two ms-scale times on this contended machine is "
        "noisy, so *isolated* repeats it with every graph call answered by a stub that hands back the outputs recorded "
        "for that call (dispatch, grouping, GraphCalls and RunResult, without the computation; the backend "
        "bindings' feed-dict and tensor wrapping stay outside it, as they are part of a direct call too).",
        "bundle | backend | calls/image | Session.run µs | direct calls µs | preprocess µs | by difference µs/call | "
        "goal | isolated µs/call | goal | isolated µs/image | inside Session.run: preprocess + graph calls as "
        "RunResult.timings saw them (µs)",
    ),
    "full_path": (
        "2. The full path against the static full model (batch 1)",
        "(`Session.run(x, path=full)` - the selector's own time, called directly) / `Session.run(x, static=True)`. "
        "Goal <= 1.03. Calibrated BlockDrop plans leave out the blocks that never ran on calibration, so their "
        "all-ones path is not the full model: n/a.",
        "bundle | backend | path forced | MMACs vs reference | calls/image | path µs | selector µs | static µs | ratio | "
        "goal | where the path's time goes (µs per image)",
    ),
    "batch": (
        f"3. Grouped batch of {BATCH}, mixed paths",
        f"Throughput of `Session.run(batch)` / `Session.run(batch, static=True)` over {BATCHES} distinct batches, "
        "divided by the MACs reduction (reference MACs / mean MACs of the batches). Goal >= 0.85. Calls count backend "
        "runner calls: a group larger than the bundle's max_batch runs in chunks. The JSON also holds "
        "`shape_change`: the reference graph called at batch 8 then 5 alternately against each size alone.",
        "bundle | backend | max_batch | distinct paths per batch | calls/batch | static µs/image | dynamic µs/image | "
        "throughput ratio | MACs reduction | fraction | goal | where the batch's time goes (µs per batch)",
    ),
    "stream": (
        "4. Realized fraction at batch 1: ours against the static subgraphs' own scaling",
        f"Over {STREAM} single images: realized = (1 - t_dynamic / t_static) / (1 - MACs_dynamic / MACs_static). "
        "*Ours* times `Session.run`; *subgraphs* times the same images' graph calls made directly and the reference "
        "graph called directly. Goal: ours >= subgraphs - 0.03.",
        "bundle | backend | distinct paths | mean MMACs / reference | static µs | dynamic µs | speedup | direct speedup | "
        "MACs reduction | ours | subgraphs | goal",
    ),
    "memory": (
        "5. Peak RSS: top-16 BlockDrop ResNet-110 bundle against the static model alone",
        "Each number is the peak resident set (`VmHWM` of /proc/self/status) of a fresh subprocess that loads, "
        f"then runs one batch of {BATCH} images: *import* only creates the backend; *static* loads the full model "
        "alone, written by the same target writer into its own directory (`exporter.targets.write_artifacts` on the "
        "split's `full` graph, max_batch 32) and loaded by the same backend code; *reference only* loads just the "
        "bundle's reference graph from the bundle's own artifacts; *bundle* is `runtime.load` of the whole "
        "bundle plus `Session.run`. Goal: the bundle's increment over import <= 1.5x the static model's "
        "(the ratio of totals is shown too). The by-role breakdown is a separate subprocess loading the graphs one by "
        "one and reading resident memory after each; the first graph loaded also carries the backend's one-time "
        "setup. `resource.getrusage(RUSAGE_SELF).ru_maxrss` is not used: Linux carries it across fork and exec, so "
        "every probe reported this benchmark process's own peak (2.6 GB in a first run); it is kept in the JSON.",
        "backend | graphs | import MB | static MB | reference only MB | bundle MB | total ratio | increment ratio | goal | "
        "resident at exit, import / static / bundle MB (increment ratio) | load increment by graph role (MB)",
    ),
    "if_graph": (
        "6. The in-graph alternative: DRNet (digits demo shape) as one ONNX graph with nested Ifs",
        "The bundle's own selector and per-resolution ONNX graphs assembled with onnx.helper into one model "
        "(`ArgMax` of the scores feeds nested `If`s, each branch one resolution's graph; batch 1 only, since "
        "an If condition is one element), run by onnxruntime with the backend's own SessionOptions, against "
        f"`Session.run` on the ONNX bundle. Both get the same {STREAM} normalized float32 images "
        "(so our preprocessing is only validation).",
        "If graph µs | ours µs | ratio (If / ours) | max abs logit diff | paths",
    ),
}


def section(figure: str, rows: list[str]) -> list[str]:
    """One figure of the report (a key of FIGURES): its title, how it was measured, and its table of `rows`."""
    title, method, columns = FIGURES[figure]
    return ["", f"## {title}", "", method, "", f"| {columns} |", "|" + "---|" * (columns.count(" | ") + 1), *rows]


def report_md(command: str, info: dict, rows: list[dict], rss: list[dict] | None, branch: dict | None, rigs: dict) -> str:
    out = method_lines(command, info, rigs)
    tables = [bench_rows(r) for r in rows]
    for figure in ("overhead", "full_path", "batch", "stream"):
        out += section(figure, [table[figure] for table in tables])
    out += path_mix_lines(rows)
    if rss:
        out += section("memory", [memory_row(r) for r in rss])
    if branch:
        paths = ", ".join(f"{k} x{v}" for k, v in branch["paths"].items())
        out += section("if_graph", [f"| {branch['us']['if graph']:.0f} | {branch['us']['ours']:.0f} | "
                                    f"{branch['ratio']:.2f} | {branch['max_abs_diff']:.1e} | {paths} |"])
    out += ["", "## Reading", "", *summary_lines(rows, rss, branch)]
    if info["reused"]:
        out += ["", f"Bundles reused from an earlier run's --work directory: {', '.join(info['reused'])}."]
    return "\n".join(out) + "\n"


def method_lines(command: str, info: dict, rigs: dict) -> list[str]:
    return [
        "# Runtime overheads: Python dispatch, full path, grouped batches, realized savings, memory, in-graph If",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {info['machine']}; {info['cpus']} CPUs, shared with other jobs (contended); one thread per backend. "
        f"Versions: {info['versions']}.",
        "",
        "## Method",
        "",
        (f"Every bundle is exported from random weights (latency depends on shapes, not values) with BN statistics "
         f"measured on {CALIBRATION} random calibration images; rigs are listed below. Timed images are other random "
         f"uint8 32x32 images: a stream of {STREAM} single images and {BATCHES} distinct batches of {BATCH}, each call on "
         f"a new input. All calls of one bundle and backend are timed in one `runtime.profile.timing.measure` run ("
         f"{info['rounds']} interleaved rounds after one warm-up round), one timed callable per variant and image "
         "(or batch), so every variant of an image runs back to back in each round; a variant's time is the sum over "
         "images of each image's median over the rounds. The static full model is the "
         "manifest's reference graph through `Session.run(x, static=True)`, timed in the same rounds. MACs: "
         "conv+linear multiply-accumulates per image, selector and gates included. Direct calls replay, on the "
         "backend runners (`session.graphs[name](inputs)`), the exact calls `Session.run` made for each image, "
         "recorded through the session's graph hook (`runtime.profile.table.recording`). URNet runs at S = 0.5; it "
         "has no selector (its gates live inside the block graphs), so nothing is subtracted in figure 2."),
        "",
        "Rigs:",
        "",
        *[f"- {name}: {rig}" for name, rig in rigs.items()],
    ]


def bench_rows(r: dict) -> dict[str, str]:
    """One bundle on one backend: its row in each of figures 1-4."""
    o, f, b, s, us = r["overhead"], r["full_path"], r["batch"], r["stream"], r["us"]
    lead = f"| {r['bundle']} | {r['backend']} |"
    full_path_goal = pass_fail(f["ratio"] <= GOALS["full_path"]) if f["is_full_model"] else "n/a"
    return {
        "overhead": f"{lead} {o['calls_per_image']:.1f} | {us['dynamic']:.0f} | {us['direct dynamic']:.0f} | "
                    f"{o['preprocess_us']:.1f} | {o['us_per_call']:.1f} | {pass_fail(o['pass'])} | "
                    f"{o['isolated']['us_per_call']:.1f} | {pass_fail(o['isolated']['pass'])} | "
                    f"{o['isolated']['us_per_call'] * o['calls_per_image']:.0f} | "
                    f"{sum(s['where']['us'].values()):.0f} ({where_text(s['where'], 4)}) |",
        "full_path": f"{lead} {f['path']} ({f['taken']}) | {f['macs'] / 1e6:.2f} / {f['reference_macs'] / 1e6:.2f} | "
                     f"{f['calls_per_image']:.0f} | {us['full path']:.0f} | {f['selector_us']:.0f} | {us['static']:.0f} | "
                     f"{f['ratio']:.3f} | {full_path_goal} | {where_text(f['where'])} |",
        "batch": f"{lead} {r['max_batch']} | {'/'.join(map(str, b['distinct_paths']))} | {b['calls_per_batch']:.0f} | "
                 f"{us['batch static']:.0f} | {us['batch dynamic']:.0f} | {b['throughput_ratio']:.2f}x | "
                 f"{b['macs_reduction']:.2f}x | {b['fraction']:.2f} | {pass_fail(b['fraction'] >= GOALS['batch'])} | "
                 f"{where_text(b['where'])} |",
        "stream": f"{lead} {s['distinct_paths']} | {s['mean_macs'] / 1e6:.2f} / {s['reference_macs'] / 1e6:.2f} | "
                  f"{us['static']:.0f} | {us['dynamic']:.0f} | {s['speedup']:.2f}x | {s['direct_speedup']:.2f}x | "
                  f"{s['macs_reduction']:.2f}x | {s['ours']:.2f} | {s['theirs']:.2f} | {pass_fail(s['pass'])} |",
    }


def path_mix_lines(rows: list[dict]) -> list[str]:
    """Figure 4's path mix per bundle, from its first backend's stream (the same images on every backend)."""
    lines = ["", "Path mix per bundle (first backend's stream; the same images on both backends):", ""]
    first: dict[str, dict] = {}
    for r in rows:
        first.setdefault(r["bundle"], r["stream"])
    for bundle, s in first.items():
        blocks = f"mean blocks run {s['mean_blocks']:.1f}; " if s["mean_blocks"] is not None else ""
        lines.append(f"- {bundle}: {blocks}{s['distinct_paths']} distinct paths; most taken: "
                     + ", ".join(f"{k} x{v}" for k, v in s["paths"].items()))
    return lines


def memory_row(r: dict) -> str:
    """Figure 5's row for one backend."""
    kb, now = r["maxrss_kb"], r["rss_kb"]
    roles = ", ".join(f"{k} {v / 1024:.1f}" for k, v in r["load_kb_by_kind"].items())
    return (f"| {r['backend']} | {r['graphs']} | {kb['import'] / 1024:.0f} | {kb['static'] / 1024:.0f} | "
            f"{kb['reference-only'] / 1024:.0f} | {kb['bundle'] / 1024:.0f} | {r['ratio']:.2f}x | "
            f"{r['increment_ratio']:.2f}x | {pass_fail(r['pass'])} | {now['import'] / 1024:.0f} / "
            f"{now['static'] / 1024:.0f} / {now['bundle'] / 1024:.0f} ({r['current_increment_ratio']:.2f}x) | {roles} |")


def summary_lines(rows: list[dict], rss: list[dict] | None, branch: dict | None) -> list[str]:
    """The report's reading: plain statements from the numbers, the misses first."""
    lines = dispatch_summary(rows) + savings_summary(rows) if rows else []
    for r in rss or ():
        lines.append(f"- Memory, {r['backend']}: bundle {r['maxrss_kb']['bundle'] / 1024:.0f} MB vs static "
                     f"{r['maxrss_kb']['static'] / 1024:.0f} MB; increment ratio {r['increment_ratio']:.2f}x "
                     f"({pass_fail(r['pass'])}).")
    if branch:
        lines.append(f"- In-graph If: {branch['ratio']:.2f}x our dispatch's time at batch 1, same logits within "
                     f"{branch['max_abs_diff']:.0e}.")
    return lines


def dispatch_summary(rows: list[dict]) -> list[str]:
    """Figures 1 and 2 in words: the overhead per graph call, and where the full path falls behind static."""
    worst = max(rows, key=lambda r: r["overhead"]["us_per_call"])
    misses = [f"{r['bundle']}/{r['backend']} {r['overhead']['us_per_call']:.1f}" for r in rows if not r["overhead"]["pass"]]
    iso = max(rows, key=lambda r: r["overhead"]["isolated"]["us_per_call"])
    lines = [
        f"- Isolated dispatch overhead (stubbed runners): worst {iso['overhead']['isolated']['us_per_call']:.1f} µs "
        f"per call ({iso['bundle']}, {iso['backend']}).",
        f"- Python overhead per graph call by difference: worst {worst['overhead']['us_per_call']:.1f} µs "
        f"({worst['bundle']}, {worst['backend']}); "
        + (f"over the 5 µs goal: {', '.join(misses)} µs." if misses else "every bundle within the 5 µs goal."),
    ]
    over = [r for r in rows if r["full_path"]["is_full_model"] and r["full_path"]["ratio"] > GOALS["full_path"]]
    if not over:
        lines.append("- Full path vs static: within 3% everywhere it applies.")
    for r in over:
        f, us = r["full_path"], r["us"]
        inside = sum(v for k, v in f["where"]["us"].items() if k not in ("selector", "preprocess"))
        lines.append(
            f"- Full path, {r['bundle']}/{r['backend']}: {f['ratio']:.3f} of static, {f['calls_per_image']:.0f} calls. "
            f"Excluding selector and preprocessing, its graph calls took {inside:.0f} µs (RunResult.timings, "
            f"medians) against {us['direct static']:.0f} µs for the reference graph called directly; "
            f"Session.run(path=) took {us['full path']:.0f} µs in all, static {us['static']:.0f} µs.")
    return lines


def savings_summary(rows: list[dict]) -> list[str]:
    """Figures 3 and 4 in words: the share of the MACs saved that batches and single images realize."""
    low = [f"{r['bundle']}/{r['backend']} {r['batch']['fraction']:.2f}" for r in rows if r["batch"]["fraction"] < GOALS["batch"]]
    gap = [f"{r['bundle']}/{r['backend']} {r['stream']['ours']:.2f} vs {r['stream']['theirs']:.2f}"
           for r in rows if not r["stream"]["pass"]]
    return [
        "- Batch of 32: " + (f"below 0.85 of the MACs reduction: {', '.join(low)}." if low
                             else "every bundle keeps >= 0.85 of its MACs reduction."),
        "- Batch 1 realized fraction: " + (f"more than 0.03 below the subgraphs' own: {', '.join(gap)}." if gap
                                           else "ours within 0.03 of the subgraphs' own scaling everywhere."),
    ]


# ---------------------------------------------------------------- main


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds; medians are reported")
    parser.add_argument("--only", action="append", choices=[b.name for b in BENCHES] + list(EXTRA),
                        help="run only these bundles / figures (repeatable); the results are then *_smoke")
    parser.add_argument("--work", type=Path, help="keep checkpoints and bundles here and reuse them (default: a new temp dir)")
    parser.add_argument("--rss-probe", help=argparse.SUPPRESS)
    parser.add_argument("--bundle", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--static-dir", type=Path, help=argparse.SUPPRESS)
    return parser


def timed_inputs() -> tuple[np.ndarray, list[np.ndarray]]:
    """The timed images: a stream of STREAM single images and BATCHES batches, other random images than the
    calibration ones."""
    timed = np.random.default_rng(1)
    images = timed.integers(0, 256, (STREAM, 32, 32, 3), dtype=np.uint8)
    return images, [timed.integers(0, 256, (BATCH, 32, 32, 3), dtype=np.uint8) for _ in range(BATCHES)]


def measure_benches(bundles: RiggedBundles, selected: set[str], images: np.ndarray, batches: list[np.ndarray],
                    rounds: int, started: float) -> tuple[list[dict], dict]:
    """Figures 1-4 of every selected bench on every host target: the rows, and the rigs of their models."""
    rows, rigs = [], {}
    for bench in BENCHES:
        if bench.name not in selected:
            continue
        for target, backend in HOST_TARGETS.items():
            bundle, rigs[bench.model] = bundles.bundle(bench, target)
            session = runtime.load(bundle, backend, threads=THREADS)
            print(f"[{time.perf_counter() - started:5.0f} s] {bench.name} on {backend}: {len(session.manifest.graphs)} graphs",
                  flush=True)
            row = {"bundle": bench.name, "target": target, "backend": backend, "describe": session.backend.describe(),
                   "graphs": len(session.manifest.graphs), "max_batch": session.manifest.max_batch,
                   "parity": bundles.parity(bundle), **measure_session(session, images, batches, rounds)}
            rows.append(row)
            print(f"  overhead {row['overhead']['us_per_call']:.1f} µs/call, full path {row['full_path']['ratio']:.3f}, "
                  f"batch {row['batch']['fraction']:.2f}, realized {row['stream']['ours']:.2f} vs {row['stream']['theirs']:.2f}",
                  flush=True)
            del session
    return rows, rigs


def main(argv: list[str] | None = None) -> int:
    args = arguments().parse_args(argv)
    if args.rss_probe:
        print(json.dumps(rss_probe(args.rss_probe, args.bundle, args.backend, args.static_dir)))
        return 0
    from benchmarks.evidence import results_name  # not at the top: the RSS probes above import no trainer

    command = shlex.join(["python", "-m", "benchmarks.runtime_costs", *(argv if argv is not None else sys.argv[1:])])
    selected = set(args.only or [b.name for b in BENCHES] + list(EXTRA))
    work = args.work or Path(tempfile.mkdtemp(prefix="runtime-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    calibration = np.random.default_rng(0).integers(0, 256, (CALIBRATION, 32, 32, 3), dtype=np.uint8)
    bundles = RiggedBundles(work, calibration)
    print(f"work directory {work}", flush=True)
    images, batches = timed_inputs()
    rows, rigs = measure_benches(bundles, selected, images, batches, args.rounds, started)
    rss = branch = None
    if "memory" in selected:
        print(f"[{time.perf_counter() - started:5.0f} s] figure 5: peak RSS", flush=True)
        rss = memory(bundles)
        rigs.setdefault("blockdrop-resnet110", bundles.checkpoint("blockdrop-resnet110")[1])
    if "if-graph" in selected:
        print(f"[{time.perf_counter() - started:5.0f} s] figure 6: in-graph If", flush=True)
        branch = in_graph(bundles, images, args.rounds * 3)
        rigs.setdefault("drnet-digits", bundles.checkpoint("drnet-digits")[1])
    info = {**machine(), "rounds": args.rounds, "reused": bundles.reused, "wall_s": round(time.perf_counter() - started)}
    name = results_name("runtime_costs", reduced=args.only is not None)
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"command": command, **info, "goals": GOALS, "rigs": rigs, "rows": rows, "memory": rss, "if_graph": branch}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2, default=float) + "\n")
    (RESULTS / f"{name}.md").write_text(report_md(command, info, rows, rss, branch, rigs))
    print((RESULTS / f"{name}.md").read_text())
    print(f"done in {info['wall_s']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
