"""The end-to-end demo: train -> export -> run -> profile, offline, on CPU; then whether the claims hold, in words.

Each step is the public command a user would type; this script only strings
them together, summarizes, and draws two pictures. Outputs go to runs/demo/;
`--figures docs/images` also copies the pictures where the README shows them.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import runtime
from runtime.format.latency_table import read_latency_table
from trainer.data import raw_images
from trainer.families.drnet import claims

RECIPE = "drnet-digits"
TARGETS = ("onnx", "executorch")
SHOWN_PER_PATH = 24  # test images drawn per chosen resolution in the grid


def step(title: str, *command: str) -> None:
    print(f"\n== {title}\n$ {shlex.join(command)}", flush=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, *command[1:]] if command[0] == "python" else command, check=True)
    print(f"({time.perf_counter() - started:.0f} s)", flush=True)


def plot_plane(metrics: dict, tables: dict[str, Path], path: Path) -> Path:
    """Top-1 against MACs, and against the latency measured on each backend: the static models, the random
    resolution baseline, and the dynamic model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model, baselines = metrics["model"], metrics["baselines"]
    statics = {name.removeprefix("static "): row for name, row in baselines.items() if name.startswith("static ")}
    figure, axes = plt.subplots(1, 1 + len(tables), figsize=(5 * (1 + len(tables)), 4), sharey=True)
    order = sorted(statics, key=lambda name: statics[name]["mean_macs"])
    costs = {"MMACs per image (conv + linear, predictor included)": {
        **{name: statics[name]["mean_macs"] / 1e6 for name in order}, "dynamic": model["mean_macs"] / 1e6}}
    for backend, file in tables.items():
        table = read_latency_table(file)
        overhead = table.preprocess.median_ms + table.session_overhead_ms
        costs[f"ms per image on {table.device}/{backend} (batch 1)"] = {
            **{name: overhead + table.graphs[name].batches[1].median_ms for name in order},
            "dynamic": table.pipeline.dynamic_ms}
    for axis, (label, cost) in zip(axes, costs.items()):
        xs = [cost[name] for name in order]
        axis.plot(xs, [100 * statics[n]["accuracy"] for n in order], "o--", color="gray",
                  label="static models (and random resolution between them)")
        for name, x in zip(order, xs):
            axis.annotate(name, (x, 100 * statics[name]["accuracy"]), textcoords="offset points", xytext=(4, -10))
        axis.plot([cost["dynamic"]], [100 * model["accuracy"]], "*", markersize=16, color="tab:red",
                  label="DRNet: the predictor picks per image")
        axis.set_xlabel(label)
        axis.margins(x=0.1, y=0.08)  # room for the points' names
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("top-1 on the test images (%)")
    axes[0].legend(fontsize="small", loc="lower right")
    figure.suptitle("Where the input-adaptive model stands against static ones")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_choices(images: np.ndarray, paths: list[str], order: list[str], path: Path) -> Path:
    """A grid of test images grouped by the resolution the predictor chose for them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 8
    rows_per_path = -(-SHOWN_PER_PATH // columns)
    unused = [name for name in order if name not in paths]
    order = [name for name in order if name in paths]
    figure, axes = plt.subplots(rows_per_path * len(order), columns, figsize=(columns * 0.9, rows_per_path * len(order) * 0.95),
                                squeeze=False)
    for block, name in enumerate(order):
        chosen = [i for i, p in enumerate(paths) if p == name][:SHOWN_PER_PATH]
        for k in range(rows_per_path * columns):
            axis = axes[block * rows_per_path + k // columns, k % columns]
            axis.set_xticks([])
            axis.set_yticks([])
            if k < len(chosen):
                axis.imshow(images[chosen[k]], interpolation="nearest")
            else:
                axis.axis("off")
            if k == 0:
                share = paths.count(name) / len(paths)
                axis.set_ylabel(f"{name}\n{share:.0%}", rotation=0, ha="right", va="center", fontsize=9)
    never = f" (never chosen: {', '.join(unused)})" if unused else ""
    figure.suptitle(f"Test images by the input resolution the predictor chose{never}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs")
    parser.add_argument("--figures", type=Path, metavar="DIR",
                        help="also copy the two pictures into DIR (the README's: docs/images)")
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    checkpoint = out / "checkpoint"
    epochs = ["--epochs", str(args.epochs)] if args.epochs else []
    step("1. train", "python", "-m", "trainer", "--recipe", RECIPE, "--out", str(checkpoint), "--device", "cpu", *epochs)
    for target in TARGETS:
        step(f"2. export {target}", "python", "-m", "exporter", "--checkpoint", str(checkpoint),
             "--target", target, "--out", str(out / f"bundle-{target}"), "--force")

    images, labels = raw_images("digits", "test")
    np.save(out / "test_images.npy", images)
    print(f"\n== 3. run both bundles through the runtime on the {len(images)} test images (uint8 NHWC)")
    results = {}
    for target in TARGETS:
        result = runtime.load(out / f"bundle-{target}").run(images)
        results[target] = result
        accuracy = float((result.logits.argmax(1) == labels).mean())
        print(f"{target:11} top-1 {accuracy:.2%}; {result.summary()}")
    same = results["onnx"].paths == results["executorch"].paths
    print(f"onnx and executorch bundles take the same path for every image: {same}")

    reports, tables = {}, {}
    for target in TARGETS:
        report, tables[target] = out / f"profile-{target}.json", out / f"table-{target}.json"
        step(f"4. profile {target}", "python", "-m", "runtime.profile", "--bundle", str(out / f"bundle-{target}"),
             "--device", "host-cpu", "--images", str(out / "test_images.npy"), "--out", str(report),
             "--table", str(tables[target]))
        reports[target] = json.loads(report.read_text())

    trained = json.loads((checkpoint / "config.json").read_text())["metrics"]
    print("\n== 5. summary (MACs: conv+linear multiply-accumulates per image, predictor included)")
    model = trained["model"]
    width = max(map(len, trained["baselines"]))
    print(f"{'DRNet':{width}} top-1 {model['accuracy']:.2%}, {model['mean_macs'] / 1e6:.3f} MMACs/image, "
          f"resolutions {model['histogram']}")
    for name, row in trained["baselines"].items():
        print(f"{name:{width}} top-1 {row['accuracy']:.2%}, {row['mean_macs'] / 1e6:.3f} MMACs/image")
    for claim in claims(trained):
        print(f"{claim.statement}: {'yes' if claim.holds else 'NO'} ({claim.by})")
    for target, report in reports.items():
        d = report["dynamic"]
        print(
            f"{target:11} realized speedup vs static {report['reference']['path']}: {d['speedup']:.2f}x "
            f"({d['dynamic_ms_per_image']:.3f} vs {d['static_ms_per_image']:.3f} ms/image) "
            f"for a {d['macs_reduction']:.2f}x MACs reduction; budgets {'pass' if report['pass'] else 'FAIL'}"
        )
    order = sorted(model["histogram"], key=lambda name: -int(name.removeprefix("res")))
    pictures = [plot_plane(trained, {"onnxruntime": tables["onnx"], "executorch": tables["executorch"]},
                           out / "accuracy_macs_latency.png"),
                plot_choices(images, results["onnx"].paths, order, out / "chosen_resolutions.png")]
    if args.figures:
        args.figures.mkdir(parents=True, exist_ok=True)
        pictures += [Path(shutil.copy(p, args.figures / p.name)) for p in list(pictures)]
    print("\npictures: " + ", ".join(str(p) for p in pictures))
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s; outputs in {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
