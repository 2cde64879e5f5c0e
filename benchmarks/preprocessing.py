"""Preprocessing on real frames: speed, and agreement with the training evaluation transform.

flock /tmp/bench.lock python -m benchmarks.preprocessing [--rounds 100] [--cifar-images 2000] [--work DIR]

- Speed, one thread: a 1920 x 1080 uint8 frame to the 224 px input of an
  ImageNet model (resize 256, central 224), and one 32 x 32 image to a
  CIFAR-10 bundle's input, through `runtime.preprocess.prepare`, a new frame
  on every call, medians of interleaved rounds (runtime.profile.timing.measure):
  wall time, and the thread's CPU time beside it (the machine is shared). The
  definition before version 7 ("bilinear") runs in the same rounds, and the
  32 x 32 image also through `Session.run` of the trained CIFAR-10 DRNet (the
  committed checkpoint, exported for ONNX), its static full model.
  Goals: <= 1 ms and <= 5 us.
- Agreement: the runtime's input against torchvision's evaluation transform
  on PIL images (`trainer.data.evaluation_transform`), in normalized units, on scikit-learn's
  two photos (ImageNet settings) and on CIFAR-10 test images upsampled to
  256 px with PIL (the bundle's own settings); and the bundle's top-1 on those
  upsampled images, prepared by the runtime and by torchvision, beside its
  top-1 on the originals. Goal: <= 1e-2 mean absolute, the same top-1.

Writes benchmarks/results/preprocessing.{md,json}.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from runtime.format.manifest import Preprocessing

__all__ = ["training_preprocessed"]

FRAME = (1080, 1920)
IMAGENET = Preprocessing(224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), crop=224 / 256)
UPSAMPLED = 256
POOL = 8  # distinct inputs cycled through, so that no call reuses the previous one's
GOALS = {"frame_ms": 1.0, "small_us": 5.0, "mean_abs": 1e-2}
TODAY = {"frame_ms": 9.2, "small_us": 26.0, "mean_abs": "0.07-0.15"}  # issue 32, benchmarks/results/runtime.md


def training_preprocessed(images: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """uint8 NHWC images through the trainer's evaluation transform (trainer.data.evaluation_transform): float32
    NCHW."""
    import torch
    from PIL import Image

    from trainer.data import evaluation_transform

    transform = evaluation_transform(pre.resolution, pre.crop, pre.mean, pre.std)
    return torch.stack([transform(Image.fromarray(image)) for image in images]).numpy()


def _frames() -> list[np.ndarray]:
    """POOL distinct 1080p frames of real content: scikit-learn's two photos enlarged, shifted and mirrored."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = [np.asarray(Image.fromarray(p).resize(FRAME[::-1], Image.Resampling.BICUBIC)) for p in load_sample_images().images]
    frames = []
    for i in range(POOL):
        frame = np.roll(photos[i % 2], 7 * i, axis=1)
        frames.append(np.ascontiguousarray(frame[:, ::-1] if i % 4 >= 2 else frame)[None])
    return frames


def _timed(fns: dict, rounds: int, warmup: int = 5) -> dict:
    """Wall medians from `measure`, and the median CPU time (this thread's) of the calls it timed."""
    from runtime.profile.timing import measure

    cpu: dict = {name: [] for name in fns}

    def counting(name, fn):
        def call():
            start = time.thread_time()
            fn()
            cpu[name].append(time.thread_time() - start)
        return call

    times = measure({name: counting(name, fn) for name, fn in fns.items()}, runs=rounds, warmup=warmup)
    # measure calls each once per warm-up round, then twice a round and times the second.
    return {name: {"wall_ms": times[name].median_ms, "cpu_ms": float(np.median(cpu[name][warmup + 1 :: 2])) * 1e3}
            for name in fns}


def speed(rounds: int, session) -> dict:
    """Each call on a new input; beside the two goals' calls, what bounds them (Pillow's resample, one numpy op)."""
    from PIL import Image

    from runtime.preprocess import pil_geometry, prepare

    pool = _frames()
    frames = itertools.cycle(pool).__next__
    pictures = itertools.cycle([Image.fromarray(frame[0]) for frame in pool]).__next__
    (height, width), (top, left) = pil_geometry(*FRAME, IMAGENET)
    scale_y, scale_x = FRAME[0] / height, FRAME[1] / width
    box = (left * scale_x, top * scale_y, (left + IMAGENET.resolution) * scale_x, (top + IMAGENET.resolution) * scale_y)
    rng = np.random.default_rng(0)
    small = itertools.cycle([rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8) for _ in range(POOL)]).__next__
    floats = itertools.cycle([rng.random((1, 3, 32, 32), dtype=np.float32) for _ in range(POOL)]).__next__
    old = Preprocessing(IMAGENET.resolution, IMAGENET.mean, IMAGENET.std, "bilinear", IMAGENET.crop)
    cifar = session.manifest.preprocessing
    mean, std = np.float32(cifar.mean), np.float32(cifar.std)
    fns = {
        "frame pil-bilinear": lambda: prepare(frames(), IMAGENET),
        "frame bilinear (before version 7)": lambda: prepare(frames(), old),
        "frame: Pillow's resample of the kept square alone (a PIL image already)": lambda: pictures().resize(
            (IMAGENET.resolution,) * 2, Image.Resampling.BILINEAR, box=box),
        "frame: torchvision's way, the whole frame resized, then cropped": lambda: pictures().resize(
            (width, height), Image.Resampling.BILINEAR).crop((left, top, left + IMAGENET.resolution, top + IMAGENET.resolution)),
        "32x32 prepare": lambda: prepare(small(), cifar),
        "32x32 one numpy op of the same size (x + x)": lambda: np.add(floats(), floats()),
        "32x32 the float arithmetic before (no checks)": lambda: np.ascontiguousarray(
            ((small().astype(np.float32) / 255 - mean) / std).transpose(0, 3, 1, 2)),
        "32x32 Session.run, static model": lambda: session.run(small(), static=True),
    }
    return _timed(fns, rounds)


def photo_agreement() -> list[dict]:
    from sklearn.datasets import load_sample_images

    from runtime.preprocess import prepare

    rows = []
    data = load_sample_images()
    for name, photo in zip(data.filenames, data.images):
        expected = training_preprocessed(photo[None], IMAGENET)
        for resize in ("pil-bilinear", "bilinear"):
            pre = Preprocessing(IMAGENET.resolution, IMAGENET.mean, IMAGENET.std, resize, IMAGENET.crop)
            difference = np.abs(prepare(photo[None], pre) - expected)
            rows.append({"image": Path(name).name, "shape": list(photo.shape), "resize": resize,
                         "mean_abs": float(difference.mean()), "max_abs": float(difference.max()),
                         "differing": float((difference > 1e-6).mean())})
    return rows


def cifar_agreement(session, data_root: Path, count: int) -> dict:
    from PIL import Image

    from runtime.preprocess import prepare
    from trainer.data import _decoded_cifar10

    images, labels, _ = _decoded_cifar10("test", data_root)
    picked = np.random.default_rng(0).permutation(len(labels))[:count]
    images, labels = images[picked], labels[picked]
    upsampled = np.stack([np.asarray(Image.fromarray(i).resize((UPSAMPLED,) * 2, Image.Resampling.BILINEAR)) for i in images])
    pre = session.manifest.preprocessing
    expected = training_preprocessed(upsampled, pre)
    out = {"images": int(count), "source": f"CIFAR-10 test, {count} seeded picks, upsampled to {UPSAMPLED} px (PIL bilinear)"}
    for resize in ("pil-bilinear", "bilinear"):
        difference = np.abs(prepare(upsampled, Preprocessing(pre.resolution, pre.mean, pre.std, resize)) - expected)
        out[resize] = {"mean_abs": float(difference.mean()), "max_abs": float(difference.max())}
    top1 = {}
    predictions = {}
    for label, batch in (("originals", images), ("upsampled, runtime", upsampled), ("upsampled, torchvision", expected)):
        predicted = session.run(batch, static=True).logits.argmax(axis=1)
        predictions[label] = predicted
        top1[label] = float((predicted == labels).mean())
    out["top1"] = top1
    out["same_prediction"] = float((predictions["upsampled, runtime"] == predictions["upsampled, torchvision"]).mean())
    return out


RESAMPLE = "frame: Pillow's resample of the kept square alone (a PIL image already)"
WHOLE = "frame: torchvision's way, the whole frame resized, then cropped"
ONE_OP = "32x32 one numpy op of the same size (x + x)"


def _held(value: float, goal: float) -> str:
    return "held" if value <= goal else "**MISS**"


def report_md(command: str, results: dict) -> str:
    info, timing, cifar = results["machine"], results["speed"], results["cifar10"]
    frame, small = timing["frame pil-bilinear"], timing["32x32 prepare"]
    photos = [r for r in results["photos"] if r["resize"] == "pil-bilinear"]
    worst_photo = max(r["mean_abs"] for r in photos)
    same_top1 = cifar["top1"]["upsampled, runtime"] == cifar["top1"]["upsampled, torchvision"]
    lines = [
        "# Preprocessing on real frames", "", f"Command: `{command}`", "",
        f"Machine: {info['machine']}, {info['cpus']} CPUs, **shared with other jobs** (2 cores, several workers): wall "
        "times carry their waits, so the thread's CPU time of the same calls stands beside them. "
        f"{info['versions']}, Pillow {results['pillow']}, torchvision {results['torchvision']}. One thread; medians "
        f"of {results['rounds']} interleaved rounds, a new input on every call.", "",
        "## Goals", "",
        "| goal | today (issue 32) | now: wall | now: CPU | |", "|---|---:|---:|---:|---|",
        f"| 1920 x 1080 uint8 frame to the 224 px input, <= {GOALS['frame_ms']:g} ms | {TODAY['frame_ms']} ms | "
        f"{frame['wall_ms']:.2f} ms | {frame['cpu_ms']:.2f} ms | {_held(frame['cpu_ms'], GOALS['frame_ms'])} |",
        f"| one 32 x 32 image, <= {GOALS['small_us']:g} µs | {TODAY['small_us']:g} µs | {small['wall_ms'] * 1e3:.1f} µs | "
        f"{small['cpu_ms'] * 1e3:.1f} µs | {_held(small['cpu_ms'] * 1e3, GOALS['small_us'])} |",
        f"| agreement with the training evaluation transform, <= {GOALS['mean_abs']:g} mean absolute | "
        f"{TODAY['mean_abs']} | photos {worst_photo:.1e}, CIFAR-10 upsampled {cifar['pil-bilinear']['mean_abs']:.1e} "
        f"| | {_held(max(worst_photo, cifar['pil-bilinear']['mean_abs']), GOALS['mean_abs'])} |",
        f"| the same top-1 on the trained bundle | | {cifar['top1']['upsampled, runtime']:.2%} (runtime) against "
        f"{cifar['top1']['upsampled, torchvision']:.2%} (torchvision) | | {'held' if same_top1 else '**MISS**'} |", "",
        "## Speed", "",
        "| call | wall ms | CPU ms |", "|---|---:|---:|",
        *[f"| {name} | {t['wall_ms']:.4f} | {t['cpu_ms']:.4f} |" for name, t in timing.items()], "",
        "**Why the speed goals are missed.** The frame: Pillow's resample is scalar C, about 7 million "
        "multiply-adds for the kept square (955 source rows x 224 x ~9.4 taps x 3 channels, then 224 x 224 x 9.4 x 3): "
        f"{timing[RESAMPLE]['cpu_ms']:.1f} ms CPU of the {frame['cpu_ms']:.1f} ms, the rest the frame's window copied "
        "into Pillow and the normalization; resizing only the kept square already saves "
        f"{timing[WHOLE]['cpu_ms'] / timing[RESAMPLE]['cpu_ms']:.1f}x against torchvision's whole-frame resize. An exact "
        "1 ms needs a vectorized resample (pillow-simd, not measured here: not installable beside Pillow) or a "
        "smaller camera stream. The 32 x 32 image: three numpy operations (cast and transpose, channel offset, "
        f"gather) and the checks, each paying numpy's call overhead; one numpy op of that size costs "
        f"{timing[ONE_OP]['wall_ms'] * 1e3:.1f} µs here, interleaved as it is. 5 µs would need the normalization "
        "compiled into one loop, e.g. inside the graph (uint8 input), a format change not made here.", "",
        "The static model here is the CIFAR-10 DRNet's static full model at 32 px (`Session.run(static=True)`), prepare "
        f"included: one 32 x 32 image's preparation is {small['wall_ms'] / timing['32x32 Session.run, static model']['wall_ms']:.1%} "
        "of it (wall). No 224 px bundle is exported in this run: the 1080p frame's time stands alone, against "
        "the issue's 4.6 ms for the static MobileNetV2 measured elsewhere (benchmarks/results/runtime.md), not here.",
        "",
        "## Agreement with torchvision's evaluation transform", "",
        "Absolute differences in normalized units ((x - mean) / std), the runtime's input against torchvision's "
        "Resize + CenterCrop (+ ToTensor + Normalize) on PIL images of the same pixels. *differing*: share of values "
        "that differ at all; one level in 255 is about 0.017.", "",
        "| image | shape | resize | mean abs | max abs | differing |", "|---|---|---|---:|---:|---:|",
        *[f"| {r['image']} | {'x'.join(map(str, r['shape']))} | {r['resize']} | {r['mean_abs']:.2e} | {r['max_abs']:.3f} | "
          f"{r['differing']:.3%} |" for r in results["photos"]],
        f"| {cifar['source']} | 256x256x3 | pil-bilinear | {cifar['pil-bilinear']['mean_abs']:.2e} | "
        f"{cifar['pil-bilinear']['max_abs']:.3f} | |",
        f"| the same | 256x256x3 | bilinear | {cifar['bilinear']['mean_abs']:.2e} | {cifar['bilinear']['max_abs']:.3f} | |",
        "",
        f"Top-1 of the trained CIFAR-10 DRNet bundle (ONNX, its static full model) on {cifar['images']} test images: "
        + ", ".join(f"{k} {v:.2%}" for k, v in cifar["top1"].items())
        + f"; the runtime and torchvision predict the same class on {cifar['same_prediction']:.2%} of the upsampled "
        "images. The originals' top-1 differs because upsampling and shrinking back blurs: that is the round trip, "
        "not the runtime.", "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import PIL
    import torchvision

    import exporter
    import runtime
    from benchmarks.evidence import PUBLISHED, RESULTS
    from benchmarks.rigs import machine
    from runtime.format.files import atomic_write

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--cifar-images", type=int, default=2000)
    parser.add_argument("--data-root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10")
    parser.add_argument("--work", type=Path, help="keep the exported bundle here (default: a new temp dir)")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "benchmarks.preprocessing", *(argv if argv is not None else sys.argv[1:])])

    work = args.work or Path(tempfile.mkdtemp(prefix="preprocessing-"))
    bundle = work / "drnet-cifar10-onnx"
    if not (bundle / "manifest.json").is_file():
        exporter.export(PUBLISHED / "drnet_cifar10" / "drnet", "onnx", bundle, accuracy_images=0, force=True)
    session = runtime.load(bundle, threads=1)
    results = {
        "command": command, "machine": machine(), "pillow": PIL.__version__, "torchvision": torchvision.__version__,
        "rounds": args.rounds, "goals": GOALS, "today": TODAY,
        "photos": photo_agreement(),
        "cifar10": cifar_agreement(session, args.data_root, args.cifar_images),
        "speed": speed(args.rounds, session),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=1) + "\n"
    atomic_write(RESULTS / "preprocessing.json", lambda path: path.write_text(text))
    atomic_write(RESULTS / "preprocessing.md", lambda path: path.write_text(report_md(command, results)))
    print((RESULTS / "preprocessing.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
