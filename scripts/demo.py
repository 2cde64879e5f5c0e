"""The end-to-end demo: train -> export -> run -> profile, offline, on CPU.

Each step is the public command a user would type; this script only strings
them together and summarizes. Outputs go to runs/demo/.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import runtime
from trainer.data import raw_images

RECIPE = "drnet-digits"
TARGETS = ("onnx", "executorch")


def step(title: str, *command: str) -> None:
    print(f"\n== {title}\n$ {shlex.join(command)}", flush=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, *command[1:]] if command[0] == "python" else command, check=True)
    print(f"({time.perf_counter() - started:.0f} s)", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs")
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
        histogram = "  ".join(f"{p}:{result.paths.count(p)}" for p in sorted(set(result.paths)))
        print(f"{target:11} top-1 {accuracy:.2%}  mean {result.macs.mean() / 1e6:.3f} MMACs/image  paths {histogram}")
    same = results["onnx"].paths == results["executorch"].paths
    print(f"onnx and executorch bundles take the same path for every image: {same}")

    reports = {}
    for target in TARGETS:
        report = out / f"profile-{target}.json"
        step(f"4. profile {target}", "python", "-m", "runtime.profile", "--bundle", str(out / f"bundle-{target}"),
             "--device", "host-cpu", "--images", str(out / "test_images.npy"), "--out", str(report))
        reports[target] = json.loads(report.read_text())

    trained = json.loads((checkpoint / "config.json").read_text())["metrics"]
    print("\n== 5. summary (MACs: conv+linear multiply-accumulates per image, predictor included)")
    model = trained["model"]
    print(f"DRNet   top-1 {model['accuracy']:.2%}, {model['mean_macs'] / 1e6:.3f} MMACs/image, resolutions {model['histogram']}")
    for name, row in trained["baselines"].items():
        print(f"{name:31} top-1 {row['accuracy']:.2%}, {row['mean_macs'] / 1e6:.3f} MMACs/image")
    for target, report in reports.items():
        d = report["dynamic"]
        print(
            f"{target:11} realized speedup vs static {report['reference']['path']}: {d['speedup']:.2f}x "
            f"({d['dynamic_ms_per_image']:.3f} vs {d['static_ms_per_image']:.3f} ms/image) "
            f"for a {d['macs_reduction']:.2f}x MACs reduction; budgets {'pass' if report['pass'] else 'FAIL'}"
        )
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s; outputs in {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
