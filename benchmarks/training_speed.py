"""CPU training throughput on real CIFAR-10: the data pipeline and memory layout before and after.

python -m benchmarks.training_speed [--data-root ../shared/data/cifar10] [--depths 20 56] [--rounds 5] [--steps 15]

Each setting trains the real training loop's step (SGD, cross-entropy) of a CIFAR
ResNet on the real training split, batch 128:

- `jpeg + workers, NCHW`: the pipeline before: torchvision's ImageFolder, PIL
  crops and flips, ToTensor and Normalize in 2 DataLoader workers;
- `in-memory, NCHW`: decoded uint8 images in memory, batches augmented on tensors (trainer.data);
- `in-memory, channels_last`: the same, model and batches in channels_last (what `python -m trainer` runs);
- the last at 1 thread, to show what the second core buys.

Settings take turns within each round (interleaved), and the medians over
rounds are reported. Writes benchmarks/results/training_speed.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from runtime.format.files import atomic_write
from trainer.backbone import cifar_resnet
from trainer.data import CIFAR10_MEAN, CIFAR10_STD, load_split

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
BATCH = 128


@dataclass(frozen=True)
class Setting:
    name: str
    in_memory: bool
    channels_last: bool
    threads: int


SETTINGS = (
    Setting("jpeg + workers, NCHW", in_memory=False, channels_last=False, threads=2),
    Setting("in-memory, NCHW", in_memory=True, channels_last=False, threads=2),
    Setting("in-memory, channels_last", in_memory=True, channels_last=True, threads=2),
    Setting("in-memory, channels_last, 1 thread", in_memory=True, channels_last=True, threads=1),
)


def batches(setting: Setting, data_root: Path) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """An endless stream of augmented training batches, as the setting's pipeline makes them."""
    if setting.in_memory:
        dataset, _ = load_split("cifar10", "train", data_root=data_root, augment=True)
        workers = 0
    else:
        augment = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]
        normalize = [transforms.ToTensor(), transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD)]
        dataset = datasets.ImageFolder(str(data_root / "train"), transform=transforms.Compose(augment + normalize))
        workers = 2
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, drop_last=True, num_workers=workers,
                        persistent_workers=workers > 0)
    while True:
        yield from loader


def trainer_step(setting: Setting, depth: int, data_root: Path) -> Callable[[int], int]:
    """`run(steps)`: that many training steps; returns the images trained on."""
    torch.manual_seed(0)
    model = cifar_resnet(depth, num_classes=10, shortcut="zero-pad")
    layout = torch.channels_last if setting.channels_last else torch.contiguous_format
    model = model.to(memory_format=layout).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    stream = batches(setting, data_root)

    def run(steps: int) -> int:
        torch.set_num_threads(setting.threads)
        for _ in range(steps):
            images, labels = next(stream)
            loss = torch.nn.functional.cross_entropy(model(images.contiguous(memory_format=layout)), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return steps * BATCH

    return run


def measure(depth: int, data_root: Path, rounds: int, steps: int) -> dict[str, list[float]]:
    runs = {s.name: trainer_step(s, depth, data_root) for s in SETTINGS}
    for run in runs.values():  # warm-up: allocations, oneDNN kernels, workers started
        run(2)
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            started = time.perf_counter()
            images = run(steps)
            rates[name].append(images / (time.perf_counter() - started))
    torch.set_num_threads(2)
    return rates


def report(command: str, results: dict[int, dict[str, list[float]]], args) -> str:
    lines = [
        "# CPU training throughput, CIFAR-10 (benchmarks/training_speed.py)",
        "",
        f"Command: `{command}`",
        "",
        f"{platform.machine()}, {torch.get_num_threads()} threads available, torch {torch.__version__}. "
        f"Batch {BATCH}, SGD step of the real loop, real training split with crops and flips. "
        f"{args.rounds} interleaved rounds of {args.steps} steps per setting; medians, with the range over rounds.",
        "",
        "| backbone | setting | images/s (median) | range | vs before | epoch of 50k |",
        "|---|---|---:|---|---:|---:|",
    ]
    for depth, rates in results.items():
        before = statistics.median(rates[SETTINGS[0].name])
        for name, values in rates.items():
            median = statistics.median(values)
            lines.append(
                f"| ResNet-{depth} | {name} | {median:.0f} | {min(values):.0f}-{max(values):.0f} | "
                f"{median / before:.2f}x | {50_000 / median:.0f} s |"
            )
    lines += [
        "",
        "`python -m trainer` runs the `in-memory, channels_last` setting at torch's default thread count "
        "(the physical cores). torch.compile (inductor, CPU) was tried on ResNet-20 and was no faster here, "
        "after 40 s of compilation; it is left to issue 12's `--compile` for CUDA.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data" / "cifar10")
    parser.add_argument("--depths", type=int, nargs="+", default=[20, 56])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=15, help="training steps per setting per round")
    args = parser.parse_args()
    if not (args.data_root / "train").is_dir():
        parser.error(f"no CIFAR-10 ImageFolder tree at {args.data_root}")
    command = shlex.join(["python", "-m", "benchmarks.training_speed", *sys.argv[1:]])
    results = {depth: measure(depth, args.data_root, args.rounds, args.steps) for depth in args.depths}
    RESULTS.mkdir(exist_ok=True)
    text = report(command, results, args)
    atomic_write(RESULTS / "training_speed.md", lambda path: Path(path).write_text(text))
    payload = json.dumps({"command": command, "batch": BATCH, "images_per_s": results}, indent=2)
    atomic_write(RESULTS / "training_speed.json", lambda path: Path(path).write_text(payload))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
