"""Does a lower input resolution buy its MACs back in latency? DRNet on ImageNet backbones, batch 1.

python -m benchmarks.resolution [--rounds 7] [--images 24] [--backbones resnet50 mobilenet_v2]
    [--backends onnx executorch] [--threads 1 2] [--work DIR] [--quick]

DRNet on torchvision ResNet-50 (candidates 224/168/112, recipe
drnet-imagenet-resnet50) and MobileNetV2 (224/196/168, recipe
drnet-imagenet-mobilenetv2), each with its DRNet predictor at 128 px
(ResNet-10; inverted residual blocks for MobileNetV2), is exported for ONNX
and ExecuTorch (XNNPACK) from random weights, its predictor rigged to send
exactly a third of the timed images to each candidate. Latency depends on shapes, not weight values. Beside each bundle,
the plain static backbone is written at every candidate side and at 128 and
112 px by the same target writer. One subprocess per backbone, backend and
thread count (ExecuTorch's thread pool cannot be resized under a loaded
method) times everything in one runtime.profile.timing.measure run: interleaved
rounds, medians, a new image on every call. Writes
benchmarks/results/resolution.{md,json}.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import runtime
from benchmarks.rigs import HOST_TARGETS, RiggedBundles, RiggedModel, checkpoint_config, machine, sane_drnet_bn
from runtime.format.bundle import open_bundle
from runtime.format.fields import Graph, TensorSpec
from runtime.format.manifest import Preprocessing
from runtime.preprocess import prepare
from runtime.profile.timing import measure

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
RECIPES = {"resnet50": "drnet-imagenet-resnet50", "mobilenet_v2": "drnet-imagenet-mobilenetv2"}
PROBES = (128, 112)  # plain static sides timed beside the candidates: is 112 px worth its MACs where 128 px is?
SCALING_FLOOR = 0.9  # a side "keeps scaling" while its latency cut is at least this share of its MACs cut
GOAL_KEPT = 0.97  # share of the static subgraphs' own speedup that dispatch must keep
PLAIN_FILE = "plain.json"
# Parity of random-weight ImageNet networks (deep, logits near 1): onnxruntime's accumulation order already moves
# MobileNetV2's logits by 1.8e-4 on the exporter's noise samples, so the bound is looser than its 1e-4, and stated.
PARITY = {"samples": 16, "tolerance": 1e-3}


@dataclass(frozen=True)
class Cell:
    """One subprocess: a backbone's bundle and plain models on one backend at one thread count."""

    backbone: str
    target: str
    threads: int


# ---------------------------------------------------------------- the rigged model, its bundle and the plain models


def stream(count: int) -> np.ndarray:
    """The timed images: distinct random uint8 224x224 RGB, the same in the parent and every child."""
    return np.random.default_rng(1).integers(0, 256, (count, 224, 224, 3), dtype=np.uint8)


def rig_thirds(model, x) -> None:
    """Make the predictor's argmax send the lowest, middle and top third of `x` to candidates 0, 1 and 2.

    Its last linear layer scores a random direction s of its features with three
    lines, -k(s - t1), 0 and k(s - t2), thresholds midway between neighbouring
    images, so every image sits at least 4 logits from a tie.
    """
    import torch

    head = [m for m in model.predictor.modules() if isinstance(m, torch.nn.Linear)][-1]
    captured = []
    hook = head.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0]))
    with torch.no_grad():
        model.predictor_logits(x)
        hook.remove()
        direction = torch.randn(captured[0].shape[1], generator=torch.Generator().manual_seed(0))
        s = (captured[0] @ direction).sort().values
        third = len(s) // 3
        t1, t2 = (s[third - 1] + s[third]) / 2, (s[2 * third - 1] + s[2 * third]) / 2
        k = 8.0 / float(min(s[third] - s[third - 1], s[2 * third] - s[2 * third - 1]))
        head.weight.zero_()
        head.weight[0], head.weight[2] = -k * direction, k * direction
        head.bias.copy_(torch.stack([k * t1, torch.zeros(()), -k * t2]))


def build_rigged(backbone: str, images: np.ndarray) -> RiggedModel:
    """The recipe's DRNet, random weights with BN statistics from `images`, predictor rigged to a 1/3 mix of them."""
    import torch

    from trainer.data import IMAGENET_MEAN, IMAGENET_RESOLUTION, IMAGENET_STD, DataInfo
    from trainer.families import get_family
    from trainer.recipes import get_recipe

    torch.manual_seed(0)
    recipe = get_recipe(RECIPES[backbone])
    model_config = {"backbone": recipe.backbone, "depth": recipe.depth, "num_classes": 1000,
                    "options": dataclasses.asdict(recipe.options)}
    model = get_family("drnet").build(model_config)
    if len(model.resolutions) != 3:
        raise ValueError(f"{recipe.name} has {len(model.resolutions)} candidates; the 1/3 mix rig needs 3")
    info = DataInfo("imagenet", tuple(f"class{i}" for i in range(1000)), IMAGENET_MEAN, IMAGENET_STD,
                    IMAGENET_RESOLUTION)
    x = torch.from_numpy(prepare(images, Preprocessing(info.resolution, info.mean, info.std)))
    sane_drnet_bn(model, x)
    rig_thirds(model, x)
    config = checkpoint_config("drnet", f"{recipe.name}-rigged", model_config, info)
    rig = (f"{recipe.name}: random weights (torchvision init), BN statistics from the {len(images)} timed images at "
           "each candidate; the predictor's last layer rigged (three lines along a random direction of its features, "
           "thresholds at the images' tertiles) so exactly a third of the timed images pick each candidate")
    return RiggedModel(model, config, rig)


def plain_artifacts(checkpoint: Path, target: str, directory: Path, sides: list[int], max_batch: int) -> None:
    """The checkpoint's plain static backbone taking `side` px directly, per side, by the bundle's own target writer.

    BN set 0 (224 px) throughout: its statistics keep activations sane at every side, and BN folds away.
    """
    if not (directory / PLAIN_FILE).exists():
        import torch

        from exporter.graphs import ExportGraph, tensor_specs
        from exporter.targets import write_artifacts
        from trainer.checkpoint import load_checkpoint
        from trainer.macs import count_macs
        from trainer.switchable_bn import freeze_bn_set

        model, _ = load_checkpoint(checkpoint)
        network = freeze_bn_set(model.backbone, 0).eval()
        graphs = []
        for side in sides:
            image = torch.zeros(1, 3, side, side)
            graphs.append(ExportGraph(f"plain{side}", network, (image,), ("image",), ("logits",), count_macs(network, image)))
        directory.mkdir(parents=True, exist_ok=True)
        placement = write_artifacts(target, tuple(graphs), directory, device=None, max_batch=max_batch).placement
        table = {}
        for side, graph in zip(sides, graphs):
            inputs, outputs = tensor_specs(graph)
            table[side] = Graph(graph.name, *placement[graph.name], inputs, outputs, graph.macs)
        (directory / PLAIN_FILE).write_text(json.dumps({s: dataclasses.asdict(g) for s, g in table.items()}, indent=1))


def _graph(entry: dict) -> Graph:
    specs = {side: tuple(TensorSpec(t["name"], tuple(t["shape"]), t["dtype"]) for t in entry[side])
             for side in ("inputs", "outputs")}
    return Graph(**{**entry, **specs})


# ---------------------------------------------------------------- one cell, in its own process


def measure_cell(cell: Cell, work: Path, images: int, rounds: int) -> dict:
    """Every timed call of one cell in one interleaved measurement; each figure is the mean over images of per-image medians."""
    key = model_key(cell.backbone, images)
    bundle, plain_dir = RiggedBundles.directory(work, key, cell.target), plain_directory(work, key, cell.target)
    session = runtime.load(bundle, HOST_TARGETS[cell.target], threads=cell.threads)
    described = session.backend.describe()
    if f"threads={cell.threads}" not in described:
        raise RuntimeError(f"asked for {cell.threads} threads, the backend runs {described}")
    manifest, d = session.manifest, session.manifest.dispatch
    plain_graphs = json.loads((plain_dir / PLAIN_FILE).read_text())
    plain = {int(s): session.backend.load(plain_dir, manifest, _graph(g)) for s, g in plain_graphs.items()}
    pre = manifest.preprocessing
    x = stream(images)
    singles = [x[i : i + 1] for i in range(images)]
    prepared = [prepare(s, pre) for s in singles]
    at_side = {side: [prepare(s, dataclasses.replace(pre, resolution=side)) for s in singles] for side in plain}
    results = [session.run(s) for s in singles]
    paths = [r.paths[0] for r in results]
    graph_of = {p.name: p.graph for p in d.paths}
    side_of = {p.graph: p.resolution for p in d.paths}

    variants = {
        "dynamic": lambda i: lambda: session.run(singles[i]),
        "static": lambda i: lambda: session.run(singles[i], static=True),
        "predictor": lambda i: lambda: session.graphs[d.selector]([prepared[i]]),
        **{f"sub{side_of[p.graph]}": (lambda g: lambda i: lambda: session.graphs[g]([prepared[i]]))(p.graph)
           for p in d.paths},
        **{f"plain{side}": (lambda side: lambda i: lambda: plain[side]([at_side[side][i]]))(side) for side in plain},
    }
    fns = {(name, i): make(i) for i in range(images) for name, make in variants.items()}
    started = time.perf_counter()
    times = measure(fns, runs=rounds, warmup=1)
    wall = time.perf_counter() - started
    per_image = {name: [times[(name, i)].median_ms * 1e3 for i in range(images)] for name in variants}
    us = {name: float(np.mean(v)) for name, v in per_image.items()}
    # The ideal pipeline: each image's predictor plus the subgraph of the candidate it took, called directly.
    ideal = float(np.mean([per_image["predictor"][i] + per_image[f"sub{side_of[graph_of[p]]}"][i]
                           for i, p in enumerate(paths)]))
    macs = {
        "reference": manifest.graphs[d.reference].macs, "predictor": manifest.graphs[d.selector].macs,
        "dynamic": float(np.mean([r.macs[0] for r in results])),
        **{f"sub{side_of[p.graph]}": manifest.graphs[p.graph].macs for p in d.paths},
        **{f"plain{s}": g["macs"] for s, g in plain_graphs.items()},
    }
    return {"backbone": cell.backbone, "target": cell.target, "backend": HOST_TARGETS[cell.target], "threads": cell.threads,
            "describe": described, "max_batch": manifest.max_batch, "candidates": [p.resolution for p in d.paths],
            "mix": {p.name: paths.count(p.name) for p in d.paths}, "us": us, "ideal_us": ideal, "macs": macs,
            "calls": len(fns) * (rounds + 1), "measure_s": wall}


def plain_directory(work: Path, key: str, target: str) -> Path:
    return work / "plain" / f"{key}-{target}"


def model_key(backbone: str, images: int) -> str:
    """The rig depends on the timed images, so a --work directory keeps one model per image count."""
    return f"drnet-{backbone}-{images}images"


def run_cell(cell: Cell, work: Path, images: int, rounds: int) -> dict:
    command = [sys.executable, "-m", "benchmarks.resolution", "--cell", cell.backbone, cell.target, str(cell.threads),
               "--work", str(work), "--images", str(images), "--rounds", str(rounds)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(f"cell {cell} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- figures


def figures(row: dict) -> dict:
    """The report's numbers from one cell's medians and MACs."""
    us, macs = row["us"], row["macs"]
    sides = sorted((int(k[5:]) for k in us if k.startswith("plain")), reverse=True)
    top = max(sides)
    scaling = {}
    for side in sides:
        latency, work = us[f"plain{side}"] / us[f"plain{top}"], macs[f"plain{side}"] / macs[f"plain{top}"]
        scaling[side] = {
            "us": us[f"plain{side}"], "macs": macs[f"plain{side}"], "latency_fraction": latency, "macs_fraction": work,
            "scaling": (1 - latency) / (1 - work) if side != top else None,
            "ms_per_gmac": us[f"plain{side}"] / 1e3 / (macs[f"plain{side}"] / 1e9),
            "subgraph_us": us.get(f"sub{side}"),  # the bundle's graph: 224 px in, resized inside
        }
    reference = f"sub{top}"
    realized = us["static"] / us["dynamic"]
    ideal = us[reference] / row["ideal_us"]
    macs_cut = 1 - macs["dynamic"] / macs["reference"]
    worse = scaling[112]["ms_per_gmac"] / scaling[128]["ms_per_gmac"] if {112, 128} <= set(scaling) else None
    keeping = [s for s in sides if s != top and scaling[s]["scaling"] >= SCALING_FLOOR]
    return {
        "scaling": scaling,
        "predictor_share": us["predictor"] / us[reference],
        "realized_speedup": realized, "ideal_speedup": ideal, "kept": realized / ideal,
        "macs_reduction": macs["reference"] / macs["dynamic"],
        "realized_fraction": (1 - us["dynamic"] / us["static"]) / macs_cut,
        "ideal_fraction": (1 - row["ideal_us"] / us[reference]) / macs_cut,
        "pass": realized / ideal >= GOAL_KEPT,
        "per_mac_112_vs_128": worse,
        "cheapest_scaling_side": min(keeping, default=None),  # None: no lower side keeps scaling
    }


# ---------------------------------------------------------------- report


def report_md(command: str, info: dict, rows: list[dict], rigs: dict, parity: dict) -> str:
    derived = [(r, figures(r)) for r in rows]
    out = [
        "# Input resolution at ImageNet scale: DRNet on ResNet-50 and MobileNetV2, batch 1",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {info['machine']}; {info['cpus']} CPUs. Versions: {info['versions']}.",
        "",
        *method_lines(info, rigs),
        *static_section(derived),
        *pipeline_section(derived),
        *candidates_section(derived),
        "",
        "## Reading",
        "",
        *summary_lines(derived),
        "",
        "Backends and parity:",
        "",
        *[f"- {r['backbone']}/{r['backend']}, {r['threads']} threads: {r['describe']}; max_batch {r['max_batch']}; "
          f"{r['calls']} timed calls in {r['measure_s']:.0f} s" for r in rows],
        *[f"- parity of {name}: {text}" for name, text in parity.items()],
    ]
    if info["reused"]:
        out += ["", f"Bundles reused from an earlier run's --work directory: {', '.join(info['reused'])}."]
    return "\n".join(out) + "\n"


def method_lines(info: dict, rigs: dict) -> list[str]:
    return [
        "## Method",
        "",
        ("**Weights are random and the predictor is rigged**: latency depends on shapes, not weight values, so no "
         "trained model is needed, and the predictor's last layer is set so the timed images split exactly 1/3 : 1/3 "
         f": 1/3 over the three candidates (rigs below). {info['images']} distinct random uint8 224x224 images, batch "
         f"1, a new image on every call. One subprocess per backbone, backend and thread count times every call of "
         f"that cell in one `runtime.profile.timing.measure` run ({info['rounds']} interleaved rounds after one warm-up "
         "round; within a round each image's calls run back to back); a figure is the mean over images of each "
         "image's median. MACs: conv+linear multiply-accumulates per image (trainer.macs, torch.utils.flop_counter), "
         "the predictor's included in the pipeline's."),
        "",
        "What is timed:",
        "",
        "- *plain r*: the plain static backbone exported at r px (input already r px, no resize), written by the "
        "bundle's own target writer with the bundle's max_batch and loaded by the same backend code;",
        "- *subgraph r*: the bundle's graph for candidate r, called directly (224 px in, resized inside, as the "
        "bundle runs it); *predictor*: the bundle's predictor graph (224 px in, resized to 128 px inside);",
        "- *static*: `Session.run(x, static=True)`, the static full model at 224 (the bundle's reference graph); "
        "*dynamic*: `Session.run(x)` on the rigged mix. Both include the runtime's preprocessing.",
        "",
        "Definitions:",
        "",
        "- scaling of side r = (1 - latency_r / latency_224) / (1 - MACs_r / MACs_224), plain models; 1.0 means "
        "latency falls exactly as MACs do;",
        "- realized speedup = static / dynamic; ideal speedup = subgraph 224 / mean over images of (predictor + the "
        "subgraph of the candidate the image took), all called directly;",
        f"- **kept = realized speedup / ideal speedup**, the share of the static subgraphs' own speedup that "
        f"dispatch (preprocessing, Session, argmax, the Python bindings) keeps. Goal >= {GOAL_KEPT};",
        "- realized fraction = (1 - dynamic / static) / (1 - mean MACs / MACs at 224), the repo's convention; "
        "the ideal fraction uses the ideal pipeline's latency instead of the dynamic one.",
        "",
        "Rigs:",
        "",
        *[f"- {name}: {rig}" for name, rig in rigs.items()],
        "",
    ]


def static_section(derived: list[tuple[dict, dict]]) -> list[str]:
    out = [
        "## 1. Static latency and the backend's own scaling (plain static models)",
        "",
        "| backbone | backend | threads | side | MMACs | µs | latency / 224 | MACs / 224 | scaling | ms per GMAC | bundle subgraph µs |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r, f in derived:
        for side, s in f["scaling"].items():
            sub = f"{s['subgraph_us']:.0f}" if s["subgraph_us"] is not None else "-"
            scale = f"{s['scaling']:.2f}" if s["scaling"] is not None else "-"
            out.append(f"| {r['backbone']} | {r['backend']} | {r['threads']} | {side} | {s['macs'] / 1e6:.0f} | "
                       f"{s['us']:.0f} | {s['latency_fraction']:.3f} | {s['macs_fraction']:.3f} | {scale} | "
                       f"{s['ms_per_gmac']:.1f} | {sub} |")
    return out


def pipeline_section(derived: list[tuple[dict, dict]]) -> list[str]:
    out = [
        "",
        "## 2. The whole pipeline at the 1/3 : 1/3 : 1/3 mix, through `Session.run`",
        "",
        "| backbone | backend | threads | mix | predictor µs | predictor / full model | static µs | dynamic µs | "
        "ideal µs | MACs reduction | realized speedup | ideal speedup | realized fraction | ideal fraction | kept | goal |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r, f in derived:
        us = r["us"]
        mix = " / ".join(f"{k} {v}" for k, v in r["mix"].items())
        out.append(f"| {r['backbone']} | {r['backend']} | {r['threads']} | {mix} | {us['predictor']:.0f} | "
                   f"{f['predictor_share']:.3f} | {us['static']:.0f} | {us['dynamic']:.0f} | {r['ideal_us']:.0f} | "
                   f"{f['macs_reduction']:.2f}x | {f['realized_speedup']:.2f}x | {f['ideal_speedup']:.2f}x | "
                   f"{f['realized_fraction']:.2f} | {f['ideal_fraction']:.2f} | {f['kept']:.3f} | "
                   f"{'PASS' if f['pass'] else 'FAIL'} |")
    return out


def candidates_section(derived: list[tuple[dict, dict]]) -> list[str]:
    out = [
        "",
        "## 3. Which candidate sets suit each backend",
        "",
        ("Latency per MAC of the plain models at 112 against 128 px (above 1: 112 px scales worse than 128 px), and "
         f"the cheapest side whose scaling stays >= {SCALING_FLOOR}."),
        "",
        "| backbone | backend | threads | ms per GMAC at 128 | at 112 | 112 / 128 | 112 px scales worse than 128 px | cheapest side keeping >= 0.9 of its MACs cut |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r, f in derived:
        s, ratio = f["scaling"], f["per_mac_112_vs_128"]
        if ratio is None:
            continue
        cheapest = f"{f['cheapest_scaling_side']} px" if f["cheapest_scaling_side"] else "none"
        out.append(f"| {r['backbone']} | {r['backend']} | {r['threads']} | {s[128]['ms_per_gmac']:.1f} | "
                   f"{s[112]['ms_per_gmac']:.1f} | {ratio:.2f} | {'yes' if ratio > 1 else 'no'} | {cheapest} |")
    out += [
        "",
        ("Could the exporter choose candidates from measured latency rather than MACs? Not as it stands, and only "
         "partly in principle: the candidates are fixed at training time (each has its own BN set and a predictor "
         "output, from the recipe's `resolutions`), so an exporter reading a measured latency table could at most drop "
         "a trained candidate that scales badly on its target (masking that score); choosing the candidates from "
         "measured latency belongs before training, from per-backend tables like this one."),
    ]
    return out


def summary_lines(derived: list[tuple[dict, dict]]) -> list[str]:
    """Plain statements from the numbers; the misses first."""
    misses = [(r, f) for r, f in derived if not f["pass"]]
    lines = [f"- {'FAIL' if misses else 'PASS'}: dispatch keeps >= {GOAL_KEPT} of the static subgraphs' own speedup "
             + (f"everywhere ({len(derived)} cells)." if not misses else
                "except " + ", ".join(f"{r['backbone']}/{r['backend']}/{r['threads']}t {f['kept']:.3f}" for r, f in misses) + ".")]
    for r, f in derived:
        lines.append(f"- {r['backbone']}, {r['backend']}, {r['threads']} threads: {f['realized_speedup']:.2f}x realized "
                     f"against {f['ideal_speedup']:.2f}x ideal and {f['macs_reduction']:.2f}x in MACs; the predictor "
                     f"costs {f['predictor_share']:.1%} of the full model.")
    for r, f in derived:
        if f["macs_reduction"] < 1:
            macs = r["macs"]
            lines.append(f"- {r['backbone']}: the predictor alone costs {macs['predictor'] / macs['reference']:.0%} of "
                         f"the full model's MACs, so the 1/3 mix spends {1 / f['macs_reduction']:.2f}x the static "
                         "model's MACs: with this predictor DRNet cannot beat the static model, whatever dispatch keeps.")
    return lines


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = arguments()
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.images = 2, 6
    if args.images < 3 or args.images % 3:
        parser.error(f"--images must be a positive multiple of 3 (a third per candidate), got {args.images}")
    if args.rounds < 1 or min(args.threads) < 1:
        parser.error("--rounds and --threads must be at least 1")
    if args.cell:
        backbone, target, threads = args.cell
        print(json.dumps(measure_cell(Cell(backbone, target, int(threads)), args.work, args.images, args.rounds)))
        return 0

    command = shlex.join(["python", "-m", "benchmarks.resolution", *(argv if argv is not None else sys.argv[1:])])
    work = args.work or Path(tempfile.mkdtemp(prefix="resolution-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    models = {model_key(backbone, args.images): functools.partial(build_rigged, backbone) for backbone in args.backbones}
    bundles = RiggedBundles(work, stream(args.images), models)  # calibrated on the timed images: the rig splits them
    print(f"work directory {work}", flush=True)
    rows, rigs, parity = [], {}, {}
    for backbone in args.backbones:
        key = model_key(backbone, args.images)
        for target in args.backends:
            bundle, rigs[backbone] = bundles.export(key, target, key, **PARITY)
            parity[bundle.name] = bundles.parity(bundle)
            manifest = open_bundle(bundle)
            sides = sorted({p.resolution for p in manifest.dispatch.paths} | set(PROBES), reverse=True)
            plain_artifacts(work / "checkpoints" / key, target, plain_directory(work, key, target), sides, manifest.max_batch)
            for threads in args.threads:
                print(f"[{time.perf_counter() - started:5.0f} s] {backbone} on {HOST_TARGETS[target]}, {threads} threads",
                      flush=True)
                rows.append(run_cell(Cell(backbone, target, threads), work, args.images, args.rounds))
                f = figures(rows[-1])
                print(f"  {rows[-1]['calls']} calls in {rows[-1]['measure_s']:.0f} s; "
                      + ", ".join(f"{k} {v:.0f} µs" for k, v in rows[-1]["us"].items())
                      + f"; kept {f['kept']:.3f} ({'PASS' if f['pass'] else 'FAIL'})", flush=True)
    info = {**machine(), "rounds": args.rounds, "images": args.images, "reused": bundles.reused,
            "wall_s": round(time.perf_counter() - started)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"command": command, **info, "goal_kept": GOAL_KEPT, "rigs": rigs, "parity": parity,
               "rows": [{**r, "figures": figures(r)} for r in rows]}
    (RESULTS / "resolution.json").write_text(json.dumps(payload, indent=2, default=float) + "\n")
    (RESULTS / "resolution.md").write_text(report_md(command, info, rows, rigs, parity))
    print((RESULTS / "resolution.md").read_text())
    print(f"done in {info['wall_s']} s", flush=True)
    return 0


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds; medians are reported")
    parser.add_argument("--images", type=int, default=24, help="timed images, a multiple of 3 (default 24)")
    parser.add_argument("--backbones", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    parser.add_argument("--backends", nargs="+", choices=list(HOST_TARGETS), default=list(HOST_TARGETS))
    parser.add_argument("--threads", nargs="+", type=int, default=sorted({1, os.cpu_count() or 1}))
    parser.add_argument("--work", type=Path, help="keep checkpoints and bundles here and reuse them (default: a new temp dir)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 rounds over 6 images")
    parser.add_argument("--cell", nargs=3, metavar=("BACKBONE", "TARGET", "THREADS"), help=argparse.SUPPRESS)
    return parser


if __name__ == "__main__":
    sys.exit(main())
