"""Where the runtime spends time and memory: Python dispatch, the full path, grouped batches, realized savings, RSS, an in-graph If.

python benchmarks/runtime.py [--rounds 7] [--only NAME ...] [--work DIR]

Six bundles (DRNet at the digits demo's shape and on a ResNet-56, BlockDrop
ResNet-110 naive / top-8 / top-16, URNet ResNet-110 at S = 0.5) are exported
for ONNX and ExecuTorch from random weights with sane BN statistics; where a
selector or the gates would not mix paths, they are rigged to (stated in the
results). Every figure compares calls timed side by side with
runtime.timing.measure (interleaved rounds, medians), each call on a new input,
one thread. Writes benchmarks/results/runtime.{md,json}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    # Run as a script, sys.path[0] is benchmarks/, where this file would shadow the `runtime` package.
    sys.path[0] = str(ROOT)

import runtime  # noqa: E402
from runtime.backends import create_backend  # noqa: E402
from runtime.bundle import open_bundle  # noqa: E402
from runtime.preprocess import prepare  # noqa: E402
from runtime.session import Session  # noqa: E402
from runtime.timing import measure  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BACKENDS = {"onnx": "onnxruntime", "executorch": "executorch"}
STREAM = 64  # single images per round (figures 1, 2, 4)
BATCH, BATCHES = 32, 4  # figure 3: distinct batches of 32 per round
CALIBRATION = 256
SCALE = 0.5  # URNet's S
UNDECIDED_GATES = 4  # URNet rig: gates decided per image (the rest fixed open or closed)
THREADS = 1
GOALS = {"overhead_us": 5.0, "full_path": 1.03, "batch": 0.85, "realized_gap": 0.03, "rss": 1.5}


# ---------------------------------------------------------------- models and bundles


@dataclass(frozen=True)
class Bench:
    name: str
    model: str  # key of MODELS
    cache_paths: int = 0
    calibrate: bool = False  # the block families' plan (fused segments, left-out blocks, cached paths)


BENCHES = (
    Bench("drnet-digits", "drnet-digits"),
    Bench("drnet-resnet56", "drnet-resnet56"),
    Bench("blockdrop-naive", "blockdrop-resnet110"),
    Bench("blockdrop-top8", "blockdrop-resnet110", 8, True),
    Bench("blockdrop-top16", "blockdrop-resnet110", 16, True),
    Bench("urnet-resnet110", "urnet-resnet110"),
)
EXTRA = ("memory", "if-graph")  # figures 5 and 6, which --only can also name


@dataclass
class Built:
    model: object
    config: dict
    rig: str  # what was rigged, in words


def _sane_bn(model, passes: Callable[[], None]) -> None:
    """Random weights, BN statistics measured on the calibration images (as benchmarks/export.py does)."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        passes()
    model.eval()


def build_drnet(depth: int, images: np.ndarray, seed: int = 0) -> Built:
    """The drnet-digits recipe's DRNet options at `depth`; its predictor rigged to spread images over the resolutions."""
    import torch

    from runtime.manifest import Preprocessing
    from trainer.data import DataInfo, load_split
    from trainer.families import drnet
    from trainer.recipes import get_recipe

    torch.manual_seed(seed)
    recipe = get_recipe("drnet-digits")
    if depth == recipe.depth:
        info = load_split(recipe.dataset, "test")[1]  # the demo's classes and statistics
        name = recipe.name
    else:
        from benchmarks.export import MEAN, STD

        info = DataInfo("cifar10", tuple(f"class{i}" for i in range(10)), MEAN, STD, 32)
        name = f"drnet-rigged-resnet{depth}"
    model_config = {"depth": depth, "width": recipe.width, "num_classes": len(info.classes),
                    "options": dataclasses.asdict(recipe.options)}
    model = drnet.build(model_config)
    x = torch.from_numpy(prepare(images, Preprocessing(32, info.mean, info.std)))

    def passes():
        for index in range(len(model.resolutions)):
            model.backbone_logits(x, index)
        model.predictor_logits(x)

    _sane_bn(model, passes)
    # The rig: the predictor's last linear layer scores each resolution along a random
    # direction of its features, centred on the calibration images, so argmax spreads them.
    head = model.predictor.head[-1]
    captured = []
    hook = head.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0]))
    with torch.no_grad():
        model.predictor_logits(x)
        hook.remove()
        features = captured[0]
        generator = torch.Generator().manual_seed(seed)
        directions = torch.randn(len(model.resolutions), features.shape[1], generator=generator)
        directions /= (features @ directions.T).std(dim=0).view(-1, 1)
        head.weight.copy_(2.0 * directions)
        head.bias.copy_(-2.0 * (features @ directions.T).median(dim=0).values)
    config = {"family": "drnet", "recipe": name, "model": model_config, "data": info.to_dict(), "data_root": None}
    rig = ("random weights, BN statistics from the calibration images; predictor's last layer rigged "
           "(random directions of its features, centred) so argmax spreads images over the resolutions")
    return Built(model, config, rig)


def build_blockdrop(images: np.ndarray) -> Built:
    from benchmarks.export import UNDECIDED, rigged_blockdrop

    model, config = rigged_blockdrop(images)
    rig = (f"benchmarks/export.py's rigged_blockdrop: random weights, BN statistics from data; policy rigged so "
           f"about half the 54 blocks are always off and {UNDECIDED} are decided per image (up to {2**UNDECIDED} paths)")
    return Built(model, config, rig)


def build_urnet(images: np.ndarray, seed: int = 0) -> Built:
    """URNet ResNet-110 (urnet-cifar10-resnet110's options), random weights; gates rigged only if S=0.5 does not mix them."""
    import torch

    from benchmarks.export import MEAN, STD, normalized
    from trainer.blocks import run_blocks
    from trainer.data import DataInfo
    from trainer.families import urnet
    from trainer.recipes import get_recipe

    torch.manual_seed(seed)
    recipe = get_recipe("urnet-cifar10-resnet110")
    model_config = {"depth": recipe.depth, "width": recipe.width, "num_classes": 10,
                    "options": dataclasses.asdict(recipe.options)}
    model = urnet.build(model_config)
    x = normalized(images)
    _sane_bn(model, lambda: model.backbone(x))
    natural = model.infer(x, SCALE)
    usage = float(natural.blocks.float().mean())
    distinct = len(set(natural.paths))
    note = f"unrigged at S={SCALE}: block usage {usage:.2f}, {distinct} distinct paths over {len(x)} images"
    if 0.1 < usage < 0.9 and distinct > 1:
        rig = f"random weights, BN statistics from data; gates not rigged ({note})"
    else:
        count = model.num_blocks
        generator = torch.Generator().manual_seed(seed)
        side = torch.where(torch.rand(count, generator=generator) < 0.5, -9.0, 9.0)
        undecided = set(torch.randperm(count, generator=generator)[:UNDECIDED_GATES].tolist())
        scale = torch.full((len(x),), SCALE)

        def decide(k: int, h):
            # At S=0.5, gate k's logit without its last bias, scaled to unit spread over the images;
            # the bias then centres it (undecided: open for half) or pushes it 9 spreads open or closed.
            gate = model.gates[k]
            gate.fc2.bias.zero_()
            raw = gate(h, scale)
            gate.fc2.weight.div_(raw.std().clamp_min(1e-6))
            raw = gate(h, scale)
            middle = raw.median()
            gate.fc2.bias.fill_(float(-middle + (0.0 if k in undecided else side[k])))
            return gate(h, scale) > 0

        with torch.no_grad():
            run_blocks(model.backbone, x, decide)
        rigged = model.infer(x, SCALE)
        rig = (f"random weights, BN statistics from data; {note}, so the gates are rigged: each gate's last layer is "
               f"rescaled and biased at S={SCALE} so about half the 54 blocks are always closed, the rest open, and "
               f"{UNDECIDED_GATES} are decided per image (calibration: usage {float(rigged.blocks.float().mean()):.2f}, "
               f"{len(set(rigged.paths))} distinct paths)")
    info = DataInfo("cifar10", tuple(f"class{i}" for i in range(10)), MEAN, STD, 32)
    config = {"family": "urnet", "recipe": "urnet-rigged-resnet110", "model": model_config,
              "data": info.to_dict(), "data_root": None}
    return Built(model, config, rig)


MODELS = {
    "drnet-digits": lambda images: build_drnet(8, images),
    "drnet-resnet56": lambda images: build_drnet(56, images),
    "blockdrop-resnet110": build_blockdrop,
    "urnet-resnet110": build_urnet,
}


class Bundles:
    """Checkpoints and bundles under `work`, each built once (and reused across runs when --work is kept)."""

    def __init__(self, work: Path, calibration: np.ndarray) -> None:
        self.work, self.calibration = work, calibration
        self.built: dict[str, Built] = {}
        self.reused: list[str] = []

    def checkpoint(self, model: str) -> tuple[Path, str]:
        from trainer.checkpoint import save_checkpoint

        directory = self.work / "checkpoints" / model
        note = directory / "rig.txt"
        if not (directory / "config.json").exists():
            started = time.perf_counter()
            built = MODELS[model](self.calibration)
            save_checkpoint(directory, built.model, built.config)
            note.write_text(built.rig)
            self.built[model] = built
            print(f"  built {model} in {time.perf_counter() - started:.0f} s", flush=True)
        return directory, note.read_text()

    def bundle(self, bench: Bench, target: str) -> tuple[Path, str]:
        import exporter
        from benchmarks.export import normalized

        checkpoint, rig = self.checkpoint(bench.model)
        out = self.work / "bundles" / f"{bench.name}-{target}"
        if (out / "manifest.json").exists():
            if out.name not in self.reused:
                self.reused.append(out.name)
            return out, rig
        started = time.perf_counter()
        options = {"cache_paths": bench.cache_paths}
        if bench.calibrate:
            options["calibration"] = normalized(self.calibration)
        report = exporter.export(checkpoint, target, out, **options)
        parity = report.parity.summary() if report.parity else "not verified"
        (out.parent / f"{out.name}.parity.txt").write_text(parity)
        print(f"  exported {out.name} in {time.perf_counter() - started:.0f} s; parity {parity}", flush=True)
        return out, rig

    def parity(self, bundle: Path) -> str:
        path = bundle.parent / f"{bundle.name}.parity.txt"
        return path.read_text() if path.exists() else "unknown"


# ---------------------------------------------------------------- figures 1-4: one interleaved measurement per bundle


def record(session: Session, inputs: list[np.ndarray], **options) -> tuple[list[list[tuple[str, list, list]]], list]:
    """The graph calls each `session.run(x, **options)` makes, as (name, inputs, outputs), and its results.

    The session's graph runners are wrapped for the duration and restored after.
    """
    originals = dict(session.graphs)
    current: list[tuple[str, list]] = []

    def recording(name: str, run):
        def wrapped(args):
            outputs = run(args)
            current.append((name, list(args), outputs))
            return outputs
        return wrapped

    calls, results = [], []
    try:
        session.graphs.update({name: recording(name, run) for name, run in originals.items()})
        for x in inputs:
            results.append(session.run(x, **options))
            calls.append(list(current))
            current.clear()
    finally:
        session.graphs.update(originals)
    return calls, results


def dispatch_overhead(session: Session, stream: list[np.ndarray], calls: list[list], scale, rounds: int) -> dict:
    """Python overhead with the computation taken out: each runner replaced by a stub handing back its recorded outputs.

    (Session.run on stubs - the same stub calls made directly - preprocessing) / calls: what the session,
    GraphCalls and the rule's dispatcher add, resolved at the µs scale that the graphs' noise hides.
    The backend bindings' own Python (feed dicts, tensor wrapping) stays in the runners, outside this number.
    """
    originals = dict(session.graphs)
    pending: list = []

    def stub(args):
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
                session.graphs[name](args)
        return run

    try:
        session.graphs.update({name: stub for name in originals})
        pending[:] = calls[0][::-1]
        check = session.run(stream[0], scale=scale)
        if pending:
            raise RuntimeError("the stubbed session made other calls than the recorded ones")
        fns = {}
        for i in range(len(stream)):
            fns[("stubbed", i)], fns[("direct", i)] = stubbed(i), direct(i)
            fns[("preprocess", i)] = lambda i=i: prepare(stream[i], session.manifest.preprocessing)
        times = measure(fns, runs=rounds * 3, warmup=1)
    finally:
        session.graphs.update(originals)
    del check
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


def graph_kinds(manifest) -> dict[str, str]:
    """Each graph's role in its dispatch, for the where-the-time-goes breakdowns."""
    d, kinds = manifest.dispatch, {}
    for attribute in ("selector", "stem", "head"):
        if getattr(d, attribute, None):
            kinds[getattr(d, attribute)] = attribute
    for step in getattr(d, "blocks", ()):
        kinds.update({step.run: "block", step.skip: "skip"} if step.run else {step.skip: "skip"})
    kinds.update({s.graph: "segment" for s in getattr(d, "segments", ())})
    kinds.update({c.graph: "cached path" for c in getattr(d, "cached_paths", ())})
    kinds.update({p.graph: "path" for p in getattr(d, "paths", ())})
    kinds[d.reference] = "reference"
    kinds.pop(None, None)
    return kinds


def where_time_goes(logged: dict[int, list], kinds: dict[str, str], calls: list[list]) -> dict:
    """Per image (or batch): µs per graph kind from RunResult.timings of the timed rounds, and calls per kind.

    Each item's time per kind is its median over the rounds; the table shows their mean over items.
    """
    time_us, count = Counter(), Counter()
    for i, results in logged.items():
        spent: dict[str, list[float]] = {}
        for result in results:
            per_kind = Counter()
            for name, seconds in result.timings.items():
                per_kind[kinds.get(name, name)] += seconds * 1e6
            for kind, us in per_kind.items():
                spent.setdefault(kind, []).append(us)
        for kind, samples in spent.items():
            time_us[kind] += float(np.median(samples)) / len(logged)
    for made in calls:
        for name, *_ in made:
            count[kinds[name]] += 1 / len(calls)
    return {"us": {k: round(v, 1) for k, v in time_us.most_common()}, "calls": {k: round(v, 2) for k, v in count.most_common()}}


def full_path(manifest) -> str:
    """The reference resolution's path, or the path that runs every block the bundle holds."""
    d = manifest.dispatch
    if hasattr(d, "paths"):  # argmax
        return next(p.name for p in d.paths if p.graph == d.reference)
    return "".join("0" if step.run is None else "1" for step in d.blocks)


def measure_session(session: Session, images: np.ndarray, batches: list[np.ndarray], rounds: int) -> dict:
    manifest = session.manifest
    d = manifest.dispatch
    scale = SCALE if session.takes_scale else None
    selector = getattr(d, "selector", None)
    kinds = graph_kinds(manifest)
    stream = [images[i : i + 1] for i in range(len(images))]
    prepared = [prepare(x, manifest.preprocessing) for x in stream]
    graphs = dict(session.graphs)
    reference, reference_macs = graphs[d.reference], manifest.graphs[d.reference].macs
    forced_path = full_path(manifest)

    calls, results = record(session, stream, scale=scale)
    forced_calls, forced_results = record(session, stream, scale=scale, path=forced_path)
    batch_calls, batch_results = record(session, batches, scale=scale)
    macs = np.concatenate([r.macs for r in results])
    batch_macs = np.concatenate([r.macs for r in batch_results])

    def replay(made):
        def run():
            for name, args, _ in made:
                graphs[name](args)
        return run

    # One callable per (figure, image): within a round every image's variants run back to back,
    # and each variant's time is the sum over images of that image's median over the rounds.
    logged: dict[str, dict[int, list]] = {"dynamic": {}, "full path": {}, "batch dynamic": {}}

    def logging_run(kind: str, i: int, x: np.ndarray, **options):
        def run():
            logged[kind].setdefault(i, []).append(session.run(x, scale=scale, **options))
        return run

    per_image = {
        "dynamic": lambda i: logging_run("dynamic", i, stream[i]),
        "static": lambda i: lambda: session.run(stream[i], static=True),
        "direct dynamic": lambda i: replay(calls[i]),
        "direct static": lambda i: lambda: reference([prepared[i]]),
        "preprocess": lambda i: lambda: prepare(stream[i], manifest.preprocessing),
        "full path": lambda i: logging_run("full path", i, stream[i], path=forced_path),
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

    isolated = dispatch_overhead(session, stream, calls, scale, rounds)
    reshape = shape_change(session, batches[0], rounds)
    calls_per_image = float(np.mean([len(c) for c in calls]))
    overhead = (t["dynamic"] - t["direct dynamic"] - t["preprocess"]) / calls_per_image
    macs_cut = 1 - macs.mean() / reference_macs
    ours = (1 - t["dynamic"] / t["static"]) / macs_cut
    theirs = (1 - t["direct dynamic"] / t["direct static"]) / macs_cut
    forced_macs = float(np.mean([r.macs[0] for r in forced_results]))
    full_ratio = (t["full path"] - t.get("selector", 0.0)) / t["static"]
    batch_reduction = reference_macs / batch_macs.mean()
    batch_speedup = t["batch static"] / t["batch dynamic"]
    paths = Counter(p for r in results for p in r.paths)
    return {
        "us": {k: round(v, 2) for k, v in t.items()},
        "overhead": {
            "us_per_call": overhead, "calls_per_image": calls_per_image, "preprocess_us": t["preprocess"],
            "isolated": isolated,
            "pass": overhead <= GOALS["overhead_us"],
        },
        "full_path": {
            "path": forced_path if len(forced_path) < 12 else f"all {len(forced_path)} blocks",
            "taken": forced_results[0].paths[0] if len(forced_path) < 12 else f"{forced_results[0].paths[0].count('1')} blocks run",
            "macs": forced_macs, "reference_macs": reference_macs,
            # A calibrated BlockDrop plan leaves out blocks that never ran: no dispatched path is the full model.
            "is_full_model": not any(step.run is None for step in getattr(d, "blocks", ())),
            "selector_us": t.get("selector", 0.0), "ratio": full_ratio,
            "calls_per_image": float(np.mean([len(c) for c in forced_calls])),
            "where": where_time_goes(logged["full path"], kinds, forced_calls),
        },
        "batch": {
            "images": len(batches) * BATCH, "throughput_ratio": batch_speedup, "macs_reduction": batch_reduction,
            "fraction": batch_speedup / batch_reduction,
            "distinct_paths": [len(set(r.paths)) for r in batch_results],
            "shape_change": reshape,
            "calls_per_batch": float(np.mean([len(c) for c in batch_calls])),
            "where": where_time_goes(logged["batch dynamic"], kinds, batch_calls),
        },
        "stream": {
            "images": len(stream), "mean_macs": float(macs.mean()), "reference_macs": reference_macs,
            "macs_reduction": reference_macs / macs.mean(), "speedup": t["static"] / t["dynamic"],
            "direct_speedup": t["direct static"] / t["direct dynamic"],
            "ours": ours, "theirs": theirs, "pass": ours >= theirs - GOALS["realized_gap"],
            "distinct_paths": len(paths),
            "paths": dict(paths.most_common(6)) if len(forced_path) < 12 else
                     {f"{p.count('1')} blocks": n for p, n in Counter(p for r in results for p in r.paths).most_common(6)},
            "mean_blocks": float(np.mean([p.count("1") for p in paths.elements()])) if manifest.dispatch.rule != "argmax" else None,
            "where": where_time_goes(logged["dynamic"], kinds, calls),
        },
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
        kinds = graph_kinds(manifest)
        before, per_kind = _rss_now_kb(), Counter()
        for name, graph in manifest.graphs.items():
            engine.load(bundle, manifest, graph)
            now = _rss_now_kb()
            per_kind[kinds.get(name, name)] += now - before
            before = now
        out["load_kb_by_kind"] = dict(per_kind.most_common())
    out["ru_maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # inherited: see _peak_rss_kb
    out["maxrss_kb"] = _peak_rss_kb()
    out["rss_kb"] = _rss_now_kb()  # resident at the end: the import's transient peak does not hide it
    return out


def run_probe(mode: str, bundle: Path, backend: str, static_dir: Path | None = None) -> dict:
    command = [sys.executable, __file__, "--rss-probe", mode, "--bundle", str(bundle), "--backend", backend]
    if static_dir:
        command += ["--static-dir", str(static_dir)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"RSS probe {mode} on {bundle} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def static_artifacts(model, target: str, directory: Path, max_batch: int) -> Path:
    """The static full model alone, written by the same target writer: the honest memory baseline."""
    from exporter.splits import split_model
    from exporter.targets import write_artifacts

    if not directory.exists():
        directory.mkdir(parents=True)
        full = tuple(g for g in split_model(model, "blockdrop", 32).graphs if g.name == "full")
        write_artifacts(target, full, directory, device=None, max_batch=max_batch)
    return directory


def memory(bundles: Bundles) -> list[dict]:
    from trainer.checkpoint import load_checkpoint

    bench = next(b for b in BENCHES if b.name == "blockdrop-top16")
    rows = []
    for target, backend in BACKENDS.items():
        bundle, _ = bundles.bundle(bench, target)
        manifest = open_bundle(bundle)
        model, _ = load_checkpoint(bundles.work / "checkpoints" / bench.model)
        static_dir = static_artifacts(model, target, bundles.work / f"static-{target}", manifest.max_batch)
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

    d = manifest.dispatch

    def graph_of(name: str, prefix: str):
        model = onnx.load(str(bundle / manifest.graphs[name].artifact))  # external weights loaded in
        if model.functions:
            raise RuntimeError(f"{name}: local functions are not carried into the If model")
        return model, add_prefix_graph(model.graph, prefix, rename_inputs=False)  # every graph reads the outer `image`

    selector_model, selector = graph_of(d.selector, "selector/")
    nodes = list(selector.node) + [
        helper.make_node("ArgMax", [selector.output[0].name], ["choice"], axis=1, keepdims=0)  # first index on ties
    ]
    initializers = list(selector.initializer)
    branches = []
    for path in d.paths:
        _, g = graph_of(path.graph, f"{path.name}/")
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


def in_graph(bundles: Bundles, images: np.ndarray, rounds: int) -> dict:
    import onnxruntime as ort

    bench = next(b for b in BENCHES if b.name == "drnet-digits")
    bundle, _ = bundles.bundle(bench, "onnx")
    session = runtime.load(bundle, "onnxruntime", threads=THREADS)
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


def pf(ok: bool) -> str:
    return "pass" if ok else "**MISS**"


def where_text(where: dict, top: int = 5) -> str:
    items = list(where["us"].items())[:top]
    calls = where["calls"]
    return ", ".join(f"{k} {v:.0f} µs" + (f" ({calls[k]:g} calls)" if k in calls else "") for k, v in items)


def report_md(command: str, info: dict, rows: list[dict], rss: list[dict] | None, branch: dict | None, rigs: dict) -> str:
    out = [
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
         f"a new input. All calls of one bundle and backend are timed in one `runtime.timing.measure` run ("
         f"{info['rounds']} interleaved rounds after one warm-up round), one timed callable per variant and image "
         "(or batch), so every variant of an image runs back to back in each round; a variant's time is the sum over "
         "images of each image's median over the rounds. The static full model is the "
         "manifest's reference graph through `Session.run(x, static=True)`, timed in the same rounds. MACs: "
         "conv+linear multiply-accumulates per image, selector and gates included. Direct calls replay, on the "
         "backend runners (`session.graphs[name](inputs)`), the exact calls `Session.run` made for each image, "
         "recorded by wrapping the runners once and restoring them. URNet runs at S = 0.5; it has no selector (its "
         "gates live inside the block graphs), so nothing is subtracted in figure 2."),
        "",
        "Rigs:",
        "",
        *[f"- {name}: {rig}" for name, rig in rigs.items()],
        "",
    ]
    out += [
        "## 1. Python overhead per graph call (batch 1)",
        "",
        ("(`Session.run` time - the same graph calls made directly - preprocessing) / graph calls per image. Goal <= 5 µs. "
         "*By difference* uses the real graphs; the difference of two ms-scale times on this contended machine is "
         "noisy, so *isolated* repeats it with every runner replaced by a stub that hands back the outputs recorded "
         "for that call (dispatch, grouping, GraphCalls and RunResult, without the computation; the backend "
         "bindings' feed-dict and tensor wrapping stay outside it, as they are part of a direct call too)."),
        "",
        "| bundle | backend | calls/image | Session.run µs | direct calls µs | preprocess µs | by difference µs/call | goal | isolated µs/call | goal | isolated µs/image | inside Session.run: preprocess + graph calls as RunResult.timings saw them (µs) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        o, us = r["overhead"], r["us"]
        out.append(f"| {r['bundle']} | {r['backend']} | {o['calls_per_image']:.1f} | {us['dynamic']:.0f} | "
                   f"{us['direct dynamic']:.0f} | {o['preprocess_us']:.1f} | {o['us_per_call']:.1f} | {pf(o['pass'])} | "
                   f"{o['isolated']['us_per_call']:.1f} | {pf(o['isolated']['pass'])} | "
                   f"{o['isolated']['us_per_call'] * o['calls_per_image']:.0f} | "
                   f"{sum(r['stream']['where']['us'].values()):.0f} ({where_text(r['stream']['where'], 4)}) |")
    out += [
        "",
        "## 2. The full path against the static full model (batch 1)",
        "",
        ("(`Session.run(x, path=full)` - the selector's own time, called directly) / `Session.run(x, static=True)`. "
         "Goal <= 1.03. Calibrated BlockDrop plans leave out the blocks that never ran on calibration, so their "
         "all-ones path is not the full model: n/a."),
        "",
        "| bundle | backend | path forced | MMACs vs reference | calls/image | path µs | selector µs | static µs | ratio | goal | where the path's time goes (µs per image) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        f, us = r["full_path"], r["us"]
        ok = f["ratio"] <= GOALS["full_path"]
        verdict = pf(ok) if f["is_full_model"] else "n/a"
        out.append(
            f"| {r['bundle']} | {r['backend']} | {f['path']} ({f['taken']}) | {f['macs'] / 1e6:.2f} / {f['reference_macs'] / 1e6:.2f} | "
            f"{f['calls_per_image']:.0f} | {us['full path']:.0f} | {f['selector_us']:.0f} | {us['static']:.0f} | "
            f"{f['ratio']:.3f} | {verdict} | {where_text(f['where'])} |")
    out += [
        "",
        f"## 3. Grouped batch of {BATCH}, mixed paths",
        "",
        f"Throughput of `Session.run(batch)` / `Session.run(batch, static=True)` over {BATCHES} distinct batches, "
        "divided by the MACs reduction (reference MACs / mean MACs of the batches). Goal >= 0.85. Calls count backend "
        "runner calls: a group larger than the bundle's max_batch runs in chunks. The JSON also holds "
        "`shape_change`: the reference graph called at batch 8 then 5 alternately against each size alone.",
        "",
        "| bundle | backend | max_batch | distinct paths per batch | calls/batch | static µs/image | dynamic µs/image | throughput ratio | MACs reduction | fraction | goal | where the batch's time goes (µs per batch) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        b, us = r["batch"], r["us"]
        out.append(
            f"| {r['bundle']} | {r['backend']} | {r['max_batch']} | {'/'.join(map(str, b['distinct_paths']))} | {b['calls_per_batch']:.0f} | "
            f"{us['batch static']:.0f} | {us['batch dynamic']:.0f} | {b['throughput_ratio']:.2f}x | {b['macs_reduction']:.2f}x | "
            f"{b['fraction']:.2f} | {pf(b['fraction'] >= GOALS['batch'])} | {where_text(b['where'])} |")
    out += [
        "",
        "## 4. Realized fraction at batch 1: ours against the static subgraphs' own scaling",
        "",
        (f"Over {STREAM} single images: realized = (1 - t_dynamic / t_static) / (1 - MACs_dynamic / MACs_static). "
         "*Ours* times `Session.run`; *subgraphs* times the same images' graph calls made directly and the reference "
         "graph called directly. Goal: ours >= subgraphs - 0.03."),
        "",
        "| bundle | backend | distinct paths | mean MMACs / reference | static µs | dynamic µs | speedup | direct speedup | MACs reduction | ours | subgraphs | goal |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s, us = r["stream"], r["us"]
        out.append(
            f"| {r['bundle']} | {r['backend']} | {s['distinct_paths']} | {s['mean_macs'] / 1e6:.2f} / {s['reference_macs'] / 1e6:.2f} | "
            f"{us['static']:.0f} | {us['dynamic']:.0f} | {s['speedup']:.2f}x | {s['direct_speedup']:.2f}x | "
            f"{s['macs_reduction']:.2f}x | {s['ours']:.2f} | {s['theirs']:.2f} | {pf(s['pass'])} |")
    out += ["", "Path mix per bundle (first backend's stream; the same images on both backends):", ""]
    seen = set()
    for r in rows:
        if r["bundle"] in seen:
            continue
        seen.add(r["bundle"])
        s = r["stream"]
        blocks = f"mean blocks run {s['mean_blocks']:.1f}; " if s["mean_blocks"] is not None else ""
        out.append(f"- {r['bundle']}: {blocks}{s['distinct_paths']} distinct paths; most taken: "
                   + ", ".join(f"{k} x{v}" for k, v in s["paths"].items()))
    if rss:
        out += [
            "",
            "## 5. Peak RSS: top-16 BlockDrop ResNet-110 bundle against the static model alone",
            "",
            ("Each number is the peak resident set (`VmHWM` of /proc/self/status) of a fresh subprocess that loads, "
             "then runs one batch of "
             f"{BATCH} images: *import* only creates the backend; *static* loads the full model alone, written by "
             "the same target writer into its own directory (`exporter.targets.write_artifacts` on the split's "
             "`full` graph, max_batch 32) and loaded by the same backend code; *reference only* loads just the "
             "bundle's reference graph from the bundle's own artifacts; *bundle* is `runtime.load` of the whole "
             "bundle plus `Session.run`. Goal: the bundle's increment over import <= 1.5x the static model's "
             "(the ratio of totals is shown too). The by-kind breakdown is a separate subprocess loading the graphs one by "
             "one and reading resident memory after each; the first graph loaded also carries the backend's one-time "
             "setup. `resource.getrusage(RUSAGE_SELF).ru_maxrss` is not used: Linux carries it across fork and exec, so "
             "every probe reported this benchmark process's own peak (2.6 GB in a first run); it is kept in the JSON."),
            "",
            "| backend | graphs | import MB | static MB | reference only MB | bundle MB | total ratio | increment ratio | goal | resident at exit, import / static / bundle MB (increment ratio) | load increment by graph kind (MB) |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rss:
            kb = r["maxrss_kb"]
            kinds = ", ".join(f"{k} {v / 1024:.1f}" for k, v in r["load_kb_by_kind"].items())
            out.append(
                f"| {r['backend']} | {r['graphs']} | {kb['import'] / 1024:.0f} | {kb['static'] / 1024:.0f} | "
                f"{kb['reference-only'] / 1024:.0f} | {kb['bundle'] / 1024:.0f} | {r['ratio']:.2f}x | "
                f"{r['increment_ratio']:.2f}x | {pf(r['pass'])} | {r['rss_kb']['import'] / 1024:.0f} / "
                f"{r['rss_kb']['static'] / 1024:.0f} / {r['rss_kb']['bundle'] / 1024:.0f} ({r['current_increment_ratio']:.2f}x) | {kinds} |")
    if branch:
        out += [
            "",
            "## 6. The in-graph alternative: DRNet (digits demo shape) as one ONNX graph with nested Ifs",
            "",
            ("The bundle's own selector and per-resolution ONNX graphs assembled with onnx.helper into one model "
             "(`ArgMax` of the scores feeds nested `If`s, each branch one resolution's graph; batch 1 only, since "
             "an If condition is one element), run by onnxruntime with the backend's own SessionOptions, against "
             f"`Session.run` on the ONNX bundle. Both get the same {branch['images']} normalized float32 images "
             "(so our preprocessing is only validation)."),
            "",
            "| If graph µs | ours µs | ratio (If / ours) | max abs logit diff | paths |",
            "|---|---|---|---|---|",
            (f"| {branch['us']['if graph']:.0f} | {branch['us']['ours']:.0f} | {branch['ratio']:.2f} | "
             f"{branch['max_abs_diff']:.1e} | {', '.join(f'{k} x{v}' for k, v in branch['paths'].items())} |"),
        ]
    out += ["", "## Reading", "", *reading(rows, rss, branch)]
    if info["reused"]:
        out += ["", f"Bundles reused from an earlier run's --work directory: {', '.join(info['reused'])}."]
    return "\n".join(out) + "\n"


def reading(rows: list[dict], rss: list[dict] | None, branch: dict | None) -> list[str]:
    """Plain statements from the numbers; the misses first."""
    lines = []
    if rows:
        worst = max(rows, key=lambda r: r["overhead"]["us_per_call"])
        misses = [f"{r['bundle']}/{r['backend']} {r['overhead']['us_per_call']:.1f}" for r in rows if not r["overhead"]["pass"]]
        iso = max(rows, key=lambda r: r["overhead"]["isolated"]["us_per_call"])
        lines.append(f"- Isolated dispatch overhead (stubbed runners): worst {iso['overhead']['isolated']['us_per_call']:.1f} µs "
                     f"per call ({iso['bundle']}, {iso['backend']}).")
        lines.append(f"- Python overhead per graph call by difference: worst {worst['overhead']['us_per_call']:.1f} µs "
                     f"({worst['bundle']}, {worst['backend']}); "
                     + (f"over the 5 µs goal: {', '.join(misses)} µs." if misses else "every bundle within the 5 µs goal."))
        full = [r for r in rows if r["full_path"]["is_full_model"]]
        over = [r for r in full if r["full_path"]["ratio"] > GOALS["full_path"]]
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
        low = [f"{r['bundle']}/{r['backend']} {r['batch']['fraction']:.2f}" for r in rows if r["batch"]["fraction"] < GOALS["batch"]]
        lines.append("- Batch of 32: " + (f"below 0.85 of the MACs reduction: {', '.join(low)}." if low
                                          else "every bundle keeps >= 0.85 of its MACs reduction."))
        gap = [f"{r['bundle']}/{r['backend']} {r['stream']['ours']:.2f} vs {r['stream']['theirs']:.2f}"
               for r in rows if not r["stream"]["pass"]]
        lines.append("- Batch 1 realized fraction: " + (f"more than 0.03 below the subgraphs' own: {', '.join(gap)}." if gap
                                                        else "ours within 0.03 of the subgraphs' own scaling everywhere."))
    if rss:
        for r in rss:
            lines.append(f"- Memory, {r['backend']}: bundle {r['maxrss_kb']['bundle'] / 1024:.0f} MB vs static "
                         f"{r['maxrss_kb']['static'] / 1024:.0f} MB; increment ratio {r['increment_ratio']:.2f}x ({pf(r['pass'])}).")
    if branch:
        lines.append(f"- In-graph If: {branch['ratio']:.2f}x our dispatch's time at batch 1, same logits within "
                     f"{branch['max_abs_diff']:.0e}.")
    return lines


def machine() -> dict:
    import os

    versions = [f"python {platform.python_version()}", f"numpy {np.__version__}"]
    for package in ("onnxruntime", "onnx", "executorch", "torch"):
        try:
            versions.append(f"{package} {version(package)}")
        except Exception:  # not installed: the row that needs it will fail loudly
            pass
    return {"machine": f"{platform.machine()} {platform.system()} {platform.release()}", "cpus": os.cpu_count(),
            "versions": ", ".join(versions)}


def main(argv: list[str] | None = None) -> int:
    names = [b.name for b in BENCHES] + list(EXTRA)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds; medians are reported")
    parser.add_argument("--only", action="append", choices=names, help="run only these bundles / figures (repeatable)")
    parser.add_argument("--work", type=Path, help="keep checkpoints and bundles here and reuse them (default: a new temp dir)")
    parser.add_argument("--rss-probe", help=argparse.SUPPRESS)
    parser.add_argument("--bundle", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--static-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_probe:
        print(json.dumps(rss_probe(args.rss_probe, args.bundle, args.backend, args.static_dir)))
        return 0
    command = shlex.join(["python", "benchmarks/runtime.py", *(argv if argv is not None else sys.argv[1:])])
    selected = set(args.only or names)
    work = args.work or Path(tempfile.mkdtemp(prefix="runtime-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    calibration = rng.integers(0, 256, (CALIBRATION, 32, 32, 3), dtype=np.uint8)  # as benchmarks/export.py draws it
    timed = np.random.default_rng(1)
    images = timed.integers(0, 256, (STREAM, 32, 32, 3), dtype=np.uint8)
    batches = [timed.integers(0, 256, (BATCH, 32, 32, 3), dtype=np.uint8) for _ in range(BATCHES)]
    bundles = Bundles(work, calibration)
    print(f"work directory {work}", flush=True)

    rows, rigs = [], {}
    for bench in BENCHES:
        if bench.name not in selected:
            continue
        for target, backend in BACKENDS.items():
            bundle, rigs[bench.model] = bundles.bundle(bench, target)
            session = runtime.load(bundle, backend, threads=THREADS)
            print(f"[{time.perf_counter() - started:5.0f} s] {bench.name} on {backend}: {len(session.manifest.graphs)} graphs",
                  flush=True)
            row = {"bundle": bench.name, "target": target, "backend": backend, "describe": session.backend.describe(),
                   "graphs": len(session.manifest.graphs), "max_batch": session.manifest.max_batch, "parity": bundles.parity(bundle),
                   **measure_session(session, images, batches, args.rounds)}
            rows.append(row)
            print(f"  overhead {row['overhead']['us_per_call']:.1f} µs/call, full path {row['full_path']['ratio']:.3f}, "
                  f"batch {row['batch']['fraction']:.2f}, realized {row['stream']['ours']:.2f} vs {row['stream']['theirs']:.2f}",
                  flush=True)
            del session
    rss = None
    if "memory" in selected:
        print(f"[{time.perf_counter() - started:5.0f} s] figure 5: peak RSS", flush=True)
        rss = memory(bundles)
        rigs.setdefault("blockdrop-resnet110", bundles.checkpoint("blockdrop-resnet110")[1])
    branch = None
    if "if-graph" in selected:
        print(f"[{time.perf_counter() - started:5.0f} s] figure 6: in-graph If", flush=True)
        branch = in_graph(bundles, images, args.rounds * 3)
        rigs.setdefault("drnet-digits", bundles.checkpoint("drnet-digits")[1])
    info = {**machine(), "rounds": args.rounds, "reused": bundles.reused,
            "wall_s": round(time.perf_counter() - started)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"command": command, **info, "goals": GOALS, "rigs": rigs, "rows": rows, "memory": rss, "if_graph": branch}
    (RESULTS / "runtime.json").write_text(json.dumps(payload, indent=2, default=float) + "\n")
    (RESULTS / "runtime.md").write_text(report_md(command, info, rows, rss, branch, rigs))
    print((RESULTS / "runtime.md").read_text())
    print(f"done in {info['wall_s']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
