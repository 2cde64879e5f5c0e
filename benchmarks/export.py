"""Does the export plan turn dropped blocks into saved time? BlockDrop CIFAR ResNet-110, batch 1.

python benchmarks/export.py [--images 64] [--rounds 7]

A BlockDrop ResNet-110 whose policy drops about half of the 54 blocks, over
16 distinct paths, is exported three times per backend: the naive split (one
graph per block) and the calibrated plan (fused segments) caching the top 8
or all 16 paths.
Each bundle runs the same images against the static full model, interleaved
in one measurement. Latency depends on shapes, not weight values, so the
weights are random; the policy is rigged to the usage pattern under study.
Writes benchmarks/results/export.{md,json}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import exporter
import runtime
from exporter.splits import split_model
from exporter.targets import write_artifacts
from runtime.devices import get_device
from runtime.manifest import Preprocessing
from runtime.preprocess import prepare
from runtime.profile import profile
from trainer.checkpoint import save_checkpoint
from trainer.data import DataInfo
from trainer.families import blockdrop

RESULTS = Path(__file__).resolve().parent / "results"
DEPTH, BLOCKS = 110, 54
BACKENDS = {"onnx": "onnxruntime", "executorch": "executorch"}


MEAN, STD = (0.5,) * 3, (0.25,) * 3
UNDECIDED = 4  # blocks the policy decides per image
PATHS = 2**UNDECIDED  # distinct paths the policy takes


def normalized(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC as the runtime feeds them to the graphs."""
    return torch.from_numpy(prepare(images, Preprocessing(32, MEAN, STD)))


def rigged_blockdrop(images: np.ndarray, seed: int = 0) -> tuple[blockdrop.BlockDrop, dict]:
    """Half the blocks always off, and of the rest a few decided per image, each kept for about half of `images`."""
    torch.manual_seed(seed)
    options = blockdrop.BlockDropOptions()
    model_config = {"depth": DEPTH, "width": 16, "num_classes": 10, "options": dataclasses.asdict(options)}
    model = blockdrop.build(model_config)
    # Random weights with BN statistics measured on data, so activations (and the
    # logits parity is checked on) keep a trained network's scale through 54 blocks.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    x = normalized(images)
    with torch.no_grad():
        for _ in range(4):
            model.backbone(x)
            model.policy(x)
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    bias = torch.where(torch.rand(BLOCKS, generator=generator) < 0.5, -9.0, 9.0)
    undecided = torch.randperm(BLOCKS, generator=generator)[:UNDECIDED]
    policy = model.policy
    with torch.no_grad():
        trunk = policy.stem(x)
        for block in policy.blocks:
            trunk = block(trunk)
        features = policy.head[:-1](trunk)
        directions = torch.randn(UNDECIDED, features.shape[1], generator=generator)
        directions /= (features @ directions.T).std(dim=0).view(-1, 1)  # one std of margin per unit of logit
        head = policy.head[-1]
        head.weight.zero_()
        head.weight[undecided] = 4.0 * directions
        bias[undecided] = -4.0 * (features @ directions.T).median(dim=0).values  # each kept for half the images
        head.bias.copy_(bias)
    info = DataInfo("cifar10", tuple(f"class{i}" for i in range(10)), MEAN, STD, 32)
    config = {"family": "blockdrop", "recipe": f"blockdrop-rigged-resnet{DEPTH}", "model": model_config,
              "data": info.to_dict(), "data_root": None}
    return model, config


def cached_share(manifest, histogram: dict[str, int]) -> float:
    """Share of the timed images whose path runs as one cached graph."""
    cached = {c.path for c in manifest.dispatch.cached_paths}
    return sum(n for path, n in histogram.items() if path in cached) / sum(histogram.values())


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds; medians are reported")
    parser.add_argument("--calibration", type=int, default=256)
    args = parser.parse_args()
    command = shlex.join(["python", "benchmarks/export.py", *sys.argv[1:]])
    device = get_device("host-cpu")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8)
    calibration = rng.integers(0, 256, (args.calibration, 32, 32, 3), dtype=np.uint8)
    model, config = rigged_blockdrop(calibration)  # the policy splits on the calibration images, not the timed ones
    calibration = normalized(calibration)

    rows, work = [], Path(tempfile.mkdtemp(prefix="export-bench-"))
    checkpoint = work / "checkpoint"
    save_checkpoint(checkpoint, model, config)
    for target, backend in BACKENDS.items():
        plans = {
            "naive per-block split": {"cache_paths": 0},
            **{
                f"fused segments + top-{k} cached paths": {"calibration": calibration, "cache_paths": k}
                for k in (PATHS // 2, PATHS)
            },
        }
        for plan, options in plans.items():
            out = work / f"{target}-{len(rows)}"
            report = exporter.export(checkpoint, target, out, **options)
            session = runtime.load(out, backend, threads=device.threads)
            measured = profile(session, device, runs=args.rounds * 20, warmup=3, images=images)
            dynamic = measured["dynamic"]
            latency_cut = 1 - 1 / dynamic["speedup"]
            macs_cut = 1 - 1 / dynamic["macs_reduction"]
            rows.append({
                "target": target, "backend": session.backend.describe(), "plan": plan,
                "graphs": len(report.manifest.graphs), "bundle_bytes": size(out),
                "parity": report.parity.summary() if report.parity else None,
                "mean_blocks": float(np.mean([p.count("1") for p in session.run(images).paths])),
                "distinct_paths": len(dynamic["histogram"]),
                "cached_share": cached_share(report.manifest, dynamic["histogram"]),
                "static_ms": dynamic["static_ms_per_image"], "dynamic_ms": dynamic["dynamic_ms_per_image"],
                "speedup": dynamic["speedup"], "macs_reduction": dynamic["macs_reduction"],
                "realized": latency_cut / macs_cut,
            })
            print(json.dumps(rows[-1]), flush=True)

    static = static_sizes(model, work)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "export.json").write_text(json.dumps({"command": command, "rows": rows, "static_bytes": static}, indent=2))
    (RESULTS / "export.md").write_text(report_md(command, args, rows, static))
    print((RESULTS / "export.md").read_text())
    return 0


def static_sizes(model, work: Path) -> dict:
    """The static full model alone, per target: the baseline for bundle sizes."""
    full = tuple(g for g in split_model(model, "blockdrop", 32).graphs if g.name == "full")
    sizes = {}
    for target in BACKENDS:
        directory = work / f"static-{target}"
        directory.mkdir()
        write_artifacts(target, full, directory, device=None, max_batch=1)
        sizes[target] = size(directory)
    return sizes


def report_md(command: str, args, rows: list[dict], static: dict) -> str:
    lines = [
        f"# Export plans: BlockDrop CIFAR ResNet-{DEPTH} ({BLOCKS} blocks), batch 1, host CPU",
        "",
        f"Command: `{command}`",
        "",
        (f"{args.images} images per round, {args.rounds * 20} timing rounds of the graph table and "
        f"{max(3, args.rounds)} interleaved rounds of dynamic vs static; medians. The static full model is the "
        "manifest's reference graph, timed in the same run. MACs: conv+linear multiply-accumulates per image, "
        "policy included. *Realized* = latency reduction / MACs reduction; the goal is >= 0.9."),
        "",
        "| target | plan | graphs | bundle size | vs static model | blocks run | distinct paths | images on a cached path | static ms | dynamic ms | speedup | MACs reduction | realized |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['target']} | {r['plan']} | {r['graphs']} | {r['bundle_bytes'] / 1e6:.2f} MB | "
            f"{r['bundle_bytes'] / static[r['target']]:.2f}x | {r['mean_blocks']:.1f}/{BLOCKS} | {r['distinct_paths']} | "
            f"{r['cached_share']:.0%} | "
            f"{r['static_ms']:.2f} | {r['dynamic_ms']:.2f} | {r['speedup']:.2f}x | {r['macs_reduction']:.2f}x | {r['realized']:.2f} |"
        )
    lines += ["", "Backends and parity:", ""]
    for r in rows:
        lines.append(f"- {r['target']}, {r['plan']}: {r['backend']}; parity {r['parity']}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
