"""Does a lower input resolution buy its MACs back in latency? DRNet on ImageNet backbones, batch 1.

python -m benchmarks.resolution [--rounds 7] [--images 24] [--backbones resnet50 mobilenet_v2]
    [--backends onnx executorch] [--threads 1 2] [--work DIR] [--quick]

DRNet on torchvision ResNet-50 (candidates 224/168/112, recipe
drnet-imagenet-resnet50) and MobileNetV2 (224/196/168, recipe
drnet-imagenet-mobilenetv2), each with its DRNet predictor at 128 px
(ResNet-10; inverted residual blocks for MobileNetV2), is exported for ONNX
and ExecuTorch (XNNPACK) from random weights, its predictor rigged to send
an equal share of the timed images to each candidate. Latency depends on shapes, not weight values. Beside each
bundle, the plain static backbone is written at every candidate side and at 128 and 112 px by the same target
writer. One subprocess per backbone, backend and thread count (ExecuTorch's thread pool cannot be resized under a
loaded method) times everything in one runtime.profile.timing.measure run: interleaved rounds, medians, a new image
on every call.

MobileNetV2 then gets a second subprocess per backend and thread count that times, in one measurement, the recipe
beside three variants (VARIANTS): its candidates chosen from the plain models' scaling just measured on that backend
(the recipe's sides keeping >= SCALING_FLOOR of their MACs cut), and the predictor at 64 px instead of 128.
Writes benchmarks/results/resolution.{md,json}.
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
from runtime.format.latency_table import PAYS
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
CHEAP_PREDICTOR = 64  # px: the cheaper predictor's input side (a deviation: the paper's sentence breaks off)
MIX_SHARES = (2, 3)  # candidate counts the rig splits the timed images over: --images is a multiple of each


@dataclass(frozen=True)
class Variant:
    """A DRNet variant timed beside the recipe: which candidates (`chosen`: the device's, else the recipe's) and
    the predictor's input side (None: the recipe's)."""

    name: str
    chosen: bool
    predictor_resolution: int | None


# Only MobileNetV2 is compared: ResNet-50 already beats its static model with the recipe.
VARIANT_BACKBONES = ("mobilenet_v2",)
VARIANTS = (
    Variant("recipe", False, None),
    Variant(f"recipe, {CHEAP_PREDICTOR} px predictor", False, CHEAP_PREDICTOR),
    Variant("device-chosen", True, None),
    Variant(f"device-chosen, {CHEAP_PREDICTOR} px predictor", True, CHEAP_PREDICTOR),
)


@dataclass(frozen=True)
class Cell:
    """One subprocess: models (keys under the work directory) on one backend at one thread count, timed together;
    `plain`: the first model's plain static backbones too. `labels` name the models in the results."""

    backbone: str
    target: str
    threads: int
    models: tuple[str, ...]
    labels: tuple[str, ...]
    plain: bool


# ---------------------------------------------------------------- the rigged model, its bundle and the plain models


def stream(count: int) -> np.ndarray:
    """The timed images: distinct random uint8 224x224 RGB, the same in the parent and every child."""
    return np.random.default_rng(1).integers(0, 256, (count, 224, 224, 3), dtype=np.uint8)


def rig_equal_shares(model, x) -> None:
    """Make the predictor's argmax send an equal share of `x` to each candidate, lowest scores to candidate 0.

    Its last linear layer scores a random direction s of its features: candidate j
    gets k * sum over i <= j of (s - t_i), with thresholds t_i midway between
    neighbouring images at the i-th of n equal shares, so candidate j wins exactly
    between t_j and t_j+1 and every image sits at least 4 logits from a tie.
    """
    import torch

    count = len(model.resolutions)
    if len(x) % count:
        raise ValueError(f"{len(x)} images do not split equally over {count} candidates")
    head = [m for m in model.predictor.modules() if isinstance(m, torch.nn.Linear)][-1]
    captured = []
    hook = head.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0]))
    with torch.no_grad():
        model.predictor_logits(x)
        hook.remove()
        direction = torch.randn(captured[0].shape[1], generator=torch.Generator().manual_seed(0))
        s = (captured[0] @ direction).sort().values
        share = len(s) // count
        cuts = [i * share for i in range(1, count)]
        thresholds = torch.stack([(s[c - 1] + s[c]) / 2 for c in cuts])
        k = 8.0 / float(min(s[c] - s[c - 1] for c in cuts))
        head.weight.copy_(k * torch.arange(count, dtype=s.dtype).unsqueeze(1) * direction)
        head.bias.copy_(-k * torch.cat([torch.zeros(1), thresholds.cumsum(0)]))


def build_rigged(backbone: str, images: np.ndarray, resolutions: tuple[int, ...] | None = None,
                 predictor_resolution: int | None = None) -> RiggedModel:
    """The recipe's DRNet (or its `resolutions` and `predictor_resolution`), random weights with BN statistics from
    `images`, predictor rigged to an equal mix of them."""
    import torch

    from trainer.data import IMAGENET_MEAN, IMAGENET_RESOLUTION, IMAGENET_STD, DataInfo
    from trainer.families import get_family
    from trainer.recipes import get_recipe

    torch.manual_seed(0)
    recipe = get_recipe(RECIPES[backbone])
    options = dataclasses.replace(recipe.options, resolutions=resolutions or recipe.options.resolutions,
                                  predictor_resolution=predictor_resolution or recipe.options.predictor_resolution)
    model_config = {"backbone": recipe.backbone, "depth": recipe.depth, "num_classes": 1000,
                    "options": dataclasses.asdict(options)}
    model = get_family("drnet").build(model_config)
    info = DataInfo("imagenet", tuple(f"class{i}" for i in range(1000)), IMAGENET_MEAN, IMAGENET_STD,
                    IMAGENET_RESOLUTION)
    x = torch.from_numpy(prepare(images, Preprocessing(info.resolution, info.mean, info.std)))
    sane_drnet_bn(model, x)
    rig_equal_shares(model, x)
    changed = [] if resolutions is None else [f"candidates {'/'.join(map(str, resolutions))}"]
    changed += [] if predictor_resolution is None else [f"predictor at {predictor_resolution} px"]
    name = recipe.name + (f" ({', '.join(changed)})" if changed else "")
    config = checkpoint_config("drnet", f"{recipe.name}-rigged", model_config, info)
    count = len(model.resolutions)
    rig = (f"{name}: random weights (torchvision init), BN statistics from the {len(images)} timed images at "
           f"each candidate; the predictor's last layer rigged ({count} lines along a random direction of its "
           f"features, thresholds between the images' {count}-quantiles) so exactly 1/{count} of the timed images "
           "pick each candidate")
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


def measure_cell(cell: Cell, work: Path, images: int, rounds: int) -> list[dict]:
    """Every timed call of one cell in one interleaved measurement, one row per model; each figure is the mean over
    images of per-image medians."""
    x = stream(images)
    singles = [x[i : i + 1] for i in range(images)]
    calls, rows = {}, []
    for index, key in enumerate(cell.models):
        session = runtime.load(RiggedBundles.directory(work, key, cell.target), HOST_TARGETS[cell.target],
                               threads=cell.threads)
        described = session.backend.describe()
        if f"threads={cell.threads}" not in described:
            raise RuntimeError(f"asked for {cell.threads} threads, the backend runs {described}")
        manifest, d = session.manifest, session.manifest.dispatch
        pre = manifest.preprocessing
        prepared = [prepare(s, pre) for s in singles]
        results = [session.run(s) for s in singles]
        side_of = {p.graph: p.resolution for p in d.paths}
        own = {
            "dynamic": lambda i, session=session: lambda: session.run(singles[i]),
            "static": lambda i, session=session: lambda: session.run(singles[i], static=True),
            "predictor": graph_call(session.graphs[d.selector], prepared),
            **{f"sub{side_of[p.graph]}": graph_call(session.graphs[p.graph], prepared) for p in d.paths},
        }
        macs = {
            "reference": manifest.graphs[d.reference].macs, "predictor": manifest.graphs[d.selector].macs,
            "dynamic": float(np.mean([r.macs[0] for r in results])),
            **{f"sub{side_of[p.graph]}": manifest.graphs[p.graph].macs for p in d.paths},
        }
        if cell.plain and index == 0:
            plain_dir = plain_directory(work, key, cell.target)
            plain_graphs = json.loads((plain_dir / PLAIN_FILE).read_text())
            for side, entry in plain_graphs.items():
                graph = session.backend.load(plain_dir, manifest, _graph(entry))
                at_side = [prepare(s, dataclasses.replace(pre, resolution=int(side))) for s in singles]
                own[f"plain{side}"] = graph_call(graph, at_side)
                macs[f"plain{side}"] = entry["macs"]
        calls.update({(index, name): make for name, make in own.items()})
        paths = [r.paths[0] for r in results]
        rows.append({"backbone": cell.backbone, "variant": cell.labels[index], "model": key, "target": cell.target,
                     "backend": HOST_TARGETS[cell.target], "threads": cell.threads, "describe": described,
                     "max_batch": manifest.max_batch, "candidates": [p.resolution for p in d.paths],
                     "predictor_resolution": predictor_side(work, key), "mix": {p.name: paths.count(p.name) for p in d.paths},
                     "path_sides": [side_of[{p.name: p.graph for p in d.paths}[name]] for name in paths],
                     "macs": macs, "names": list(own)})
    fns = {(*call, i): make(i) for i in range(images) for call, make in calls.items()}
    started = time.perf_counter()
    times = measure(fns, runs=rounds, warmup=1)
    wall = time.perf_counter() - started
    for index, row in enumerate(rows):
        per_image = {name: [times[(index, name, i)].median_ms * 1e3 for i in range(images)] for name in row.pop("names")}
        row["us"] = {name: float(np.mean(v)) for name, v in per_image.items()}
        row["spread"] = {name: float(np.mean([times[(index, name, i)].spread for i in range(images)]))
                         for name in ("static", "dynamic")}
        # The ideal pipeline: each image's predictor plus the subgraph of the candidate it took, called directly.
        row["ideal_us"] = float(np.mean([per_image["predictor"][i] + per_image[f"sub{side}"][i]
                                         for i, side in enumerate(row.pop("path_sides"))]))
        row.update(calls=len(fns) * (rounds + 1), measure_s=wall)
    return rows


def graph_call(graph, inputs: list[np.ndarray]):
    """Image index -> a call of `graph` alone on that image's prepared input."""
    return lambda i: lambda: graph([inputs[i]])


def predictor_side(work: Path, key: str) -> int:
    """The side model `key`'s predictor resizes to, from its checkpoint's DRNet options (the manifest has no field);
    read as JSON, not through trainer.checkpoint, so that the timing process imports no torch."""
    config = json.loads((work / "checkpoints" / key / "config.json").read_text())
    return config["model"]["options"]["predictor_resolution"]


def plain_directory(work: Path, key: str, target: str) -> Path:
    return work / "plain" / f"{key}-{target}"


def model_key(backbone: str, images: int, resolutions: tuple[int, ...] | None = None,
              predictor_resolution: int | None = None) -> str:
    """The rig depends on the timed images, so a --work directory keeps one model per image count (and variant)."""
    sides = f"-{'-'.join(map(str, resolutions))}" if resolutions else ""
    predictor = f"-predictor{predictor_resolution}" if predictor_resolution else ""
    return f"drnet-{backbone}{sides}{predictor}-{images}images"


def run_cell(cell: Cell, work: Path, images: int, rounds: int) -> list[dict]:
    command = [sys.executable, "-m", "benchmarks.resolution", "--cell", json.dumps(dataclasses.asdict(cell)),
               "--work", str(work), "--images", str(images), "--rounds", str(rounds)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(f"cell {cell} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def device_chosen(row: dict) -> tuple[int, ...]:
    """The recipe's full side and those of its smaller candidates whose plain model, on this row's backend and
    threads, keeps >= SCALING_FLOOR of its MACs cut as latency: the section-3 rule, from this run's measurement."""
    scaling = figures(row)["scaling"]
    full, *smaller = row["candidates"]
    return (full, *(side for side in smaller if scaling[side]["scaling"] >= SCALING_FLOOR))


# ---------------------------------------------------------------- figures


def figures(row: dict) -> dict:
    """The report's numbers from one row's medians and MACs (scaling only where the row timed plain models)."""
    us, macs = row["us"], row["macs"]
    sides = sorted((int(k[5:]) for k in us if k.startswith("plain")), reverse=True)
    top = max(row["candidates"])
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


def report_md(command: str, info: dict, rows: list[dict], comparison: list[dict], rigs: dict, parity: dict) -> str:
    derived = [(r, figures(r)) for r in rows]
    out = [
        "# Input resolution at ImageNet scale: DRNet on ResNet-50 and MobileNetV2, batch 1",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {info['machine']}; {info['cpus']} CPUs, shared with other jobs"
        + (f" (1-minute load average {info['load'][0]:.1f} at the start, {info['load'][1]:.1f} at the end)"
           if "load" in info else "") + f". Versions: {info['versions']}.",
        "",
        *([f"Not rerun: {info['carried']}, with that run's rounds, images and versions.", ""] if info["carried"] else []),
        *method_lines(info, rigs),
        *static_section(derived),
        *pipeline_section(derived),
        *candidates_section(derived),
        *variants_section([(r, figures(r)) for r in comparison]),
        "",
        "## Reading",
        "",
        *summary_lines(derived),
        *variant_lines([(r, figures(r)) for r in comparison]),
        "",
        "Backends and parity:",
        "",
        *[f"- {r['backbone']}/{r['backend']}, {r['threads']} threads: {r['describe']}; max_batch {r['max_batch']}; "
          f"{r['calls']} timed calls in {r['measure_s']:.0f} s" for r in rows],
        *[f"- {r['backbone']}/{r['backend']}, {r['threads']} threads, variants ({', '.join(labels)}): "
          f"{r['calls']} timed calls in {r['measure_s']:.0f} s" for r, labels in measurements(comparison)],
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
         "trained model is needed, and the predictor's last layer is set so the timed images split equally over the "
         "candidates (1/3 each of three, 1/2 each of two; rigs below). The machine was shared with other jobs (2 CPUs, "
         "several workers); timing runs took /tmp/bench.lock so that no other benchmark timed at the same time."
         f" {info['images']} distinct random uint8 224x224 images, batch "
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
        "bundle runs it); *predictor*: the bundle's predictor graph (224 px in, resized to its side inside: 128 px, "
        f"or {CHEAP_PREDICTOR} px in section 4);",
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
        "## 2. The whole pipeline at an equal mix over the recipe's candidates, through `Session.run`",
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
                         f"the full model's MACs, so the equal mix spends {1 / f['macs_reduction']:.2f}x the static "
                         "model's MACs: with this predictor DRNet cannot beat the static model, whatever dispatch keeps.")
    return lines


def measurements(comparison: list[dict]) -> list[tuple[dict, list[str]]]:
    """One entry per variant measurement (rows timed together share a cell): its first row and every label."""
    cells: dict[tuple, tuple[dict, list[str]]] = {}
    for r in comparison:
        cells.setdefault((r["backbone"], r["target"], r["threads"]), (r, []))[1].append(r["variant"])
    return list(cells.values())


def variants_section(derived: list[tuple[dict, dict]]) -> list[str]:
    if not derived:
        return []
    out = [
        "",
        "## 4. MobileNetV2: device-chosen candidates and a cheaper predictor",
        "",
        ("Each backend and thread count times the recipe beside its variants in one measurement (a second "
         "subprocess after section 1's), each against the static model of its own bundle. *Device-chosen*: the "
         "recipe's full side and those of its smaller candidates whose plain model, in section 1 of this run on the "
         f"same backend and threads, keeps >= {SCALING_FLOOR} of its MACs cut as latency (section 3's rule); the "
         f"model is then built with those candidates alone and rigged to an equal split over them. PAYS = {PAYS} "
         "(runtime/format/latency_table.py) is not the rule here: applied to the plain models' scaling it would "
         "keep the sides in the last column below, and where those are the recipe's it adds no variant. "
         f"*{CHEAP_PREDICTOR} px predictor*: the same inverted-residual predictor fed {CHEAP_PREDICTOR} px instead "
         "of 128 px. **A deviation**: the paper's sentence on MobileNetV2's predictor breaks off after \"we replace "
         "the residual block with an inverted residual block and\", and the official code (mindspore-ai/models, "
         "research/cv/DRNet) has only ResNet-50, its predictor fed 128 px; 64 px is unconfirmed. *Noise*: the static models "
         "of the bundles timed together are one graph, so their medians differ by noise alone: noise = largest over "
         "smallest, less one, per backend and threads. *Faster than static* takes the smaller of the realized and "
         "the ideal speedup (a realized speedup above the ideal is noise) and counts it only above 1.0x by more "
         "than the noise."),
        "",
        f"| backend | threads | plain scaling by side | keeps >= {SCALING_FLOOR} (chosen) | keeps >= PAYS {PAYS} |",
        "|---|---|---|---|---|",
    ]
    for r, _ in [d for d in derived if d[0]["variant"] == "recipe"]:
        scaling = r["plain_scaling"]
        out.append(f"| {r['backend']} | {r['threads']} | "
                   + ", ".join(f"{side} px {value:.2f}" for side, value in scaling.items())
                   + f" | {'/'.join(map(str, r['device_chosen']))} | "
                   + "/".join(str(s) for s in [r["candidates"][0], *(int(k) for k, v in scaling.items() if v >= PAYS)])
                   + " |")
    out += [
        "",
        "| backend | threads | variant | candidates | predictor px | predictor MMACs | predictor µs | predictor / full "
        "model | static µs | dynamic µs | MACs reduction | realized speedup | noise (±) | ideal speedup | kept | "
        "faster than static |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [r for r, _ in derived]
    for r, f in derived:
        us = r["us"]
        out.append(f"| {r['backend']} | {r['threads']} | {r['variant']} | {'/'.join(map(str, r['candidates']))} | "
                   f"{r['predictor_resolution']} | {r['macs']['predictor'] / 1e6:.1f} | {us['predictor']:.0f} | "
                   f"{f['predictor_share']:.3f} | {us['static']:.0f} | {us['dynamic']:.0f} | {f['macs_reduction']:.2f}x | "
                   f"{f['realized_speedup']:.2f}x | {noise(r, rows):.2f} | {f['ideal_speedup']:.2f}x | "
                   f"{f['kept']:.3f} | {verdict(r, f, rows)} |")
    return out


def noise(row: dict, rows: list[dict]) -> float:
    """How far a realized speedup can stray in `row`'s measurement: the spread of the static models of every bundle
    timed in it (the same graph, so they differ by noise alone), largest over smallest median, less one."""
    static = [r["us"]["static"] for r in rows if (r["target"], r["threads"]) == (row["target"], row["threads"])]
    return max(static) / min(static) - 1


def verdict(row: dict, f: dict, rows: list[dict]) -> str:
    """Faster than static only beyond the noise, by the smaller of the realized and the ideal speedup (dispatch
    cannot beat its own graphs called directly: a realized speedup above the ideal is noise); above 1.0x within the
    noise is not established."""
    speedup = min(f["realized_speedup"], f["ideal_speedup"])
    if speedup > 1 + noise(row, rows):
        return "yes"
    return "MISS (above 1.0x within noise)" if speedup > 1 else "MISS"


def variant_lines(derived: list[tuple[dict, dict]]) -> list[str]:
    """Whether MobileNetV2's DRNet beats its static model, per cell, and the measured cause where it does not."""
    if not derived:
        return []
    lines, rows = [], [r for r, _ in derived]
    for first, _ in measurements(rows):
        cell = [(r, f) for r, f in derived if (r["target"], r["threads"]) == (first["target"], first["threads"])]
        best, fb = max(cell, key=lambda d: d[1]["realized_speedup"])
        us = best["us"]
        top = f"sub{max(best['candidates'])}"
        saved = us[top] - (best["ideal_us"] - us["predictor"])  # the candidates' mean saving against the full subgraph
        lines.append(
            f"- {first['backbone']}, {first['backend']}, {first['threads']} threads: "
            f"{'faster than static' if verdict(best, fb, rows) == 'yes' else verdict(best, fb, rows)}; best variant "
            f"{best['variant']} ({'/'.join(map(str, best['candidates']))}, predictor {best['predictor_resolution']} px) "
            f"at {fb['realized_speedup']:.2f}x realized (noise ±{noise(best, rows):.2f}). Its candidates save {saved:.0f} µs per image on average "
            f"against the {max(best['candidates'])} px subgraph ({us[top]:.0f} µs); its predictor costs "
            f"{us['predictor']:.0f} µs and dispatch {us['dynamic'] - best['ideal_us']:.0f} µs.")
        if len(first["device_chosen"]) == 1:
            lines.append(f"  No smaller candidate keeps >= {SCALING_FLOOR} of its MACs cut here, so the device-chosen "
                         "set is the full side alone: the device runs the static model (no DRNet variant to time).")
        elif first["device_chosen"] == first["candidates"]:
            lines.append("  The device keeps every candidate here: the device-chosen variants are the recipe's rows.")
    return lines


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = arguments()
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.images = 2, 6
    share = int(np.lcm.reduce(MIX_SHARES))
    if args.images < share or args.images % share:
        parser.error(f"--images must be a positive multiple of {share} (an equal share for each of "
                     f"{' or '.join(map(str, MIX_SHARES))} candidates), got {args.images}")
    if args.rounds < 1 or min(args.threads) < 1:
        parser.error("--rounds and --threads must be at least 1")
    if args.cell:
        cell = json.loads(args.cell)
        cell = Cell(**{**cell, "models": tuple(cell["models"]), "labels": tuple(cell["labels"])})
        print(json.dumps(measure_cell(cell, args.work, args.images, args.rounds)))
        return 0

    command = shlex.join(["python", "-m", "benchmarks.resolution", *(argv if argv is not None else sys.argv[1:])])
    work = args.work or Path(tempfile.mkdtemp(prefix="resolution-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    started, load = time.perf_counter(), [os.getloadavg()[0]]
    models = {model_key(backbone, args.images): functools.partial(build_rigged, backbone) for backbone in args.backbones}
    bundles = RiggedBundles(work, stream(args.images), models)  # calibrated on the timed images: the rig splits them
    print(f"work directory {work}", flush=True)
    carried = carried_rows(args.backbones, args.backends)
    rows, comparison, rigs, parity = list(carried["rows"]), [], dict(carried["rigs"]), dict(carried["parity"])

    def export(key: str, target: str) -> Path:
        if key in rigs and RiggedBundles.directory(work, key, target).name in parity:
            return RiggedBundles.directory(work, key, target)  # exported (or found) earlier in this run
        bundle, rigs[key] = bundles.export(key, target, key, **PARITY)
        parity[bundle.name] = bundles.parity(bundle)
        return bundle

    def progress(text: str) -> None:
        print(f"[{time.perf_counter() - started:5.0f} s] {text}", flush=True)

    for backbone in args.backbones:
        key = model_key(backbone, args.images)
        for target in args.backends:
            manifest = open_bundle(export(key, target))
            sides = sorted({p.resolution for p in manifest.dispatch.paths} | set(PROBES), reverse=True)
            plain_artifacts(work / "checkpoints" / key, target, plain_directory(work, key, target), sides, manifest.max_batch)
            for threads in args.threads:
                progress(f"{backbone} on {HOST_TARGETS[target]}, {threads} threads")
                rows += run_cell(Cell(backbone, target, threads, (key,), ("recipe",), True), work, args.images, args.rounds)
                f = figures(rows[-1])
                print(f"  {rows[-1]['calls']} calls in {rows[-1]['measure_s']:.0f} s; "
                      + ", ".join(f"{k} {v:.0f} µs" for k, v in rows[-1]["us"].items())
                      + f"; kept {f['kept']:.3f} ({'PASS' if f['pass'] else 'FAIL'})", flush=True)
                if backbone in VARIANT_BACKBONES:
                    comparison += compare_variants(rows[-1], args.images, models, export, progress, work, args.rounds)
    info = {**machine(), "rounds": args.rounds, "images": args.images, "reused": bundles.reused,
            "wall_s": round(time.perf_counter() - started), "carried": carried["note"], "load": [*load, os.getloadavg()[0]]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"command": command, **info, "goal_kept": GOAL_KEPT, "rigs": rigs, "parity": parity,
               "rows": [{**r, "figures": figures(r)} for r in rows],
               "variants": [{**r, "figures": figures(r)} for r in comparison]}
    (RESULTS / "resolution.json").write_text(json.dumps(payload, indent=2, default=float) + "\n")
    (RESULTS / "resolution.md").write_text(report_md(command, info, rows, comparison, rigs, parity))
    print((RESULTS / "resolution.md").read_text())
    print(f"done in {info['wall_s']} s", flush=True)
    return 0


def carried_rows(backbones: list[str], targets: list[str]) -> dict:
    """The previous results' rows, rigs and parity of the backbones and targets this run leaves out, each row marked
    with the command that measured it: a run of one backbone or target keeps the others' figures (on a shared
    2-CPU machine each ExecuTorch export alone takes a quarter of an hour)."""
    path = RESULTS / "resolution.json"
    previous = json.loads(path.read_text()) if path.exists() else {"rows": []}
    rows = [{**{k: v for k, v in r.items() if k != "figures"}, "measured_by": r.get("measured_by", previous["command"])}
            for r in previous["rows"] if r["backbone"] not in backbones or r["target"] not in targets]
    left = sorted({f"{r['backbone']}/{r['target']}" for r in rows})
    note = (f"{', '.join(left)} rows carried from the previous results, measured by "
            f"`{' / '.join(sorted({r['measured_by'] for r in rows}))}`" if rows else None)
    pairs = [entry.split("/") for entry in left]
    return {"rows": rows, "note": note, "rigs": {k: v for k, v in previous.get("rigs", {}).items()
                                                 if any(entry.startswith(f"{k}/") for entry in left)},
            "parity": {k: v for k, v in previous.get("parity", {}).items()
                       if any(b in k and k.endswith(f"-{t}") for b, t in pairs)}}


def compare_variants(recipe_row: dict, images: int, models: dict, export, progress, work: Path, rounds: int) -> list[dict]:
    """The recipe beside VARIANTS on the recipe row's backend and threads, all timed in one measurement; the
    device-chosen candidates come from that row's plain models. Variants whose models would repeat one are left out
    (the device chose every candidate: they are the recipe's)."""
    backbone, target, threads = recipe_row["backbone"], recipe_row["target"], recipe_row["threads"]
    chosen = device_chosen(recipe_row)
    keys, labels = [], []
    for variant in VARIANTS:
        resolutions = chosen if variant.chosen and chosen != tuple(recipe_row["candidates"]) else None
        if variant.chosen and (resolutions is None or len(chosen) == 1):
            continue  # the device keeps every candidate (the recipe's rows say it) or none (nothing to dispatch)
        key = model_key(backbone, images, resolutions, variant.predictor_resolution)
        models.setdefault(key, functools.partial(build_rigged, backbone, resolutions=resolutions,
                                                 predictor_resolution=variant.predictor_resolution))
        export(key, target)
        keys.append(key)
        labels.append(variant.name)
    progress(f"{backbone} variants on {HOST_TARGETS[target]}, {threads} threads: device-chosen "
             f"{'/'.join(map(str, chosen))}")
    rows = run_cell(Cell(backbone, target, threads, tuple(keys), tuple(labels), False), work, images, rounds)
    scaling = {str(side): s["scaling"] for side, s in figures(recipe_row)["scaling"].items()
               if side in recipe_row["candidates"][1:]}
    for row in rows:
        row.update(device_chosen=list(chosen), plain_scaling=scaling)
        print(f"  {row['variant']}: static {row['us']['static']:.0f} µs, dynamic {row['us']['dynamic']:.0f} µs, "
              f"predictor {row['us']['predictor']:.0f} µs", flush=True)
    return rows


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds; medians are reported")
    parser.add_argument("--images", type=int, default=24, help="timed images, a multiple of 6 (default 24)")
    parser.add_argument("--backbones", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    parser.add_argument("--backends", nargs="+", choices=list(HOST_TARGETS), default=list(HOST_TARGETS))
    parser.add_argument("--threads", nargs="+", type=int, default=sorted({1, os.cpu_count() or 1}))
    parser.add_argument("--work", type=Path, help="keep checkpoints and bundles here and reuse them (default: a new temp dir)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 rounds over 6 images")
    parser.add_argument("--cell", help=argparse.SUPPRESS)  # a Cell as JSON: the child process's work
    return parser


if __name__ == "__main__":
    sys.exit(main())
