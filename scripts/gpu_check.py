"""Whether the trainer's GPU path works: every family's CIFAR-10 recipe, bf16 and channels_last, compiled or not.

    python scripts/gpu_check.py                      # on a CUDA machine: about 7 minutes on one H100
    python scripts/gpu_check.py --device cpu --reduced --out DIR/gpu.md   # CI: a few steps, gloo, no compile

Needs torch and torchvision (any recent versions) and the project's train
extra; no network and no dataset: the runs train on synthetic CIFAR-shaped
images (learnable: each class its own colour and stripes, under noise),
written as arrays that trainer.data reads like CIFAR-10. Each run is the
trainer's own command line (`python -m trainer --recipe ...`), and then:

- the loss falls: the first epoch's mean loss against the last one's, in the run's longest phase;
- the checkpoint reloads on the CPU, and exports to ONNX (exporter; a plain backbone through torch.onnx);
- images/s, the median over the epochs after the first (compilation and warm-up), against the plain ResNet of
  the same depth trained the same way. Goal: each family at >= 0.8x.

Then, under `torchrun --nproc-per-node=1` (NCCL on CUDA, gloo on the CPU): one
training step, and one run killed at its first save and resumed. The whole
check keeps to `--budget-s`: a run that would not fit is not started, one
that overruns is stopped, and the report names both.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a checkout, with or without the project installed

from runtime.format.files import atomic_write  # noqa: E402
from trainer.families import FAMILIES  # noqa: E402
from trainer.recipes import RECIPES  # noqa: E402
from trainer.resume import STATE_FILE  # noqa: E402

DEPTH = 20  # the families' recipes at this depth; the plain ResNets at these:
PLAIN_DEPTHS = (20, 56)
GOAL_RATIO = 0.8  # family images/s over the plain ResNet's
CLASSES = 10
TRAIN_IMAGES, TEST_IMAGES = 12_800, 500
REDUCED_IMAGES = (1024, 64)  # train, test: 8 steps of 128 (the kill-and-resume run), or 4 of 256
EPOCH_LINE = re.compile(r"^(?P<desc>.+?) (?P<epoch>\d+)/(?P<epochs>\d+): (?P<rate>[\d.]+) images/s, [\d.]+ s(?P<logs>.*)$")


@dataclass(frozen=True)
class Scale:
    """How much each run trains: steps per epoch, and epochs per phase that trains."""

    steps_per_epoch: int
    epochs_per_phase: int


FULL = Scale(steps_per_epoch=40, epochs_per_phase=3)  # ~300 steps a family on the GPU
REDUCED = Scale(steps_per_epoch=1, epochs_per_phase=2)


@dataclass
class Result:
    """One run of the check, as the report states it."""

    name: str
    command: str
    status: str = "not run"  # ok, failed, stopped (over budget), skipped (would not fit the budget)
    seconds: float = 0.0
    images_per_s: float | None = None
    plain: str | None = None  # the run it is compared with
    ratio: float | None = None
    loss: tuple[float, float] | None = None  # first and last epoch of the longest phase
    loss_falls: bool | None = None
    reloads_on_cpu: str = "-"
    onnx: str = "-"
    notes: list[str] = field(default_factory=list)


def main(argv: list[str] | None = None) -> int:
    args = arguments().parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device is visible; run with --device cpu --reduced for the CPU form")
    scale = REDUCED if args.reduced else FULL
    out = args.out or (ROOT / "benchmarks" / "results" / ("gpu.md" if args.device == "cuda" and not args.reduced
                                                          else "gpu_smoke.md"))
    deadline = time.monotonic() + args.budget_s
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        data = work / "data"
        write_synthetic_cifar(data, *((TRAIN_IMAGES, TEST_IMAGES) if not args.reduced else REDUCED_IMAGES))
        plans = plan_runs(args, scale, data, work)
        results = []
        for name, command, checks in plans:
            result = Result(name, shlex.join(command))
            results.append(result)
            left = deadline - time.monotonic()
            if left < args.min_run_s:
                result.status = "skipped"
                result.notes.append(f"{left:.0f} s of the budget left")
                continue
            run_one(result, command, cwd=ROOT, timeout=left, checks=checks)
            print(f"gpu_check: {describe(result)}", flush=True)
        compare_with_plain(results, compiled_suffix=" --compile")
    text = format_report(args, results, time.monotonic() - (deadline - args.budget_s))
    payload = json.dumps({"argv": argv if argv is not None else sys.argv[1:], "device": device_name(args.device),
                          "results": [asdict(r) for r in results]}, indent=2) + "\n"
    atomic_write(out, lambda path: Path(path).write_text(text))
    atomic_write(out.with_suffix(".json"), lambda path: Path(path).write_text(payload))
    print(text)
    failed = [r.name for r in results if r.status == "failed"]
    return 1 if failed else 0


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--reduced", action="store_true", help="a few steps, no --compile: the CI form")
    parser.add_argument("--families", nargs="*", choices=sorted(FAMILIES), default=sorted(FAMILIES),
                        help=f"the families to train, each its CIFAR-10 recipe at ResNet-{DEPTH} (default: all)")
    parser.add_argument("--depths", nargs="*", type=int, choices=PLAIN_DEPTHS, default=list(PLAIN_DEPTHS),
                        help="the plain ResNets to train, the families' baselines (default: %(default)s)")
    parser.add_argument("--no-distributed", dest="distributed", action="store_false",
                        help="leave out the torchrun step and the kill-and-resume")
    parser.add_argument("--budget-s", type=float, default=450.0,
                        help="stop within this many seconds (default: %(default)s, under 8 minutes with the set-up)")
    parser.add_argument("--min-run-s", type=float, default=20.0,
                        help="start no run with less of the budget left (default: %(default)s)")
    parser.add_argument("--work", type=Path, help="where data and runs go (default: a temporary directory)")
    parser.add_argument("--out", type=Path, help="the report (default: benchmarks/results/gpu.md on CUDA)")
    return parser


def write_synthetic_cifar(root: Path, train_images: int, test_images: int) -> None:
    """CIFAR-shaped uint8 arrays, `root/{train,test}.npz`, that a network can learn: each class a colour and a
    stripe frequency of its own, under noise. Seeded: every run sees the same images."""
    rng = np.random.default_rng(0)
    colours = rng.integers(40, 216, size=(CLASSES, 3))
    rows = np.arange(32)[:, None]
    for split, count in (("train", train_images), ("test", test_images)):
        labels = rng.integers(0, CLASSES, size=count)
        stripes = 40 * np.sin(rows * (1 + labels[:, None, None]) * np.pi / 16)  # N, 32, 1
        images = colours[labels][:, None, None, :] + stripes[..., None] + rng.normal(0, 48, (count, 32, 32, 3))
        images = np.clip(images, 0, 255).astype(np.uint8)
        classes = np.array([f"class{k}" for k in range(CLASSES)])
        atomic_write(root / f"{split}.npz", lambda path, arrays={"images": images, "labels": labels,
                                                                  "classes": classes}: _savez(path, arrays))


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as stream:  # np.savez to a path would add .npz to atomic_write's staging name
        np.savez(stream, **arrays)


def family_recipe(family: str) -> str:
    """The family's CIFAR-10 recipe at DEPTH, from the recipe registry."""
    names = [r.name for r in RECIPES.values() if r.family == family and r.dataset == "cifar10" and r.depth == DEPTH]
    if not names:
        raise SystemExit(f"gpu_check: no CIFAR-10 recipe of {family} at depth {DEPTH}")
    return min(names, key=len)  # the plain one, not a variant (e.g. resizable-...-aug)


def plan_runs(args, scale: Scale, data: Path, work: Path) -> list[tuple[str, list[str], dict]]:
    """(name, command, what to check after it) for every run, in order: plain ResNets first (the baselines)."""
    recipes = [RECIPES[f"resnet-cifar10-{d}"] for d in args.depths] + [RECIPES[family_recipe(f)] for f in args.families]
    variants = [False] if args.reduced else [False, True]
    plans = []
    for compiled in variants:
        for recipe in recipes:
            phases = sum(1 for p in recipe.phases.values() if p.epochs > 0)
            out = work / "runs" / (recipe.name + ("-compiled" if compiled else ""))
            command = trainer_command(recipe.name, args.device, data, out, scale.epochs_per_phase * phases,
                                      scale.steps_per_epoch * recipe.batch_size, compiled)
            plans.append((recipe.name + (" --compile" if compiled else ""), command,
                          {"checkpoint": out, "recipe": recipe.name, "depth": recipe.depth, "family": recipe.family}))
    if args.distributed:
        plain = RECIPES[f"resnet-cifar10-{DEPTH}"]
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1"]
        step = work / "runs" / "torchrun-step"
        plans.append(("torchrun: one step", launcher + trainer_command(plain.name, args.device, data, step, 1,
                                                                       plain.batch_size, False)[1:], {}))
        resumed = work / "runs" / "torchrun-resume"
        # Long enough (8 steps an epoch) that it is still training when its first save is seen and it is killed.
        command = launcher + trainer_command(plain.name, args.device, data, resumed, 2,
                                             max(scale.steps_per_epoch, 8) * plain.batch_size, False)[1:]
        plans.append(("torchrun: kill and resume", command + ["--checkpoint-every", "1"],
                      {"kill_at_save": resumed, "launcher": launcher}))
    return plans


def trainer_command(recipe: str, device: str, data: Path, out: Path, epochs: int, subset: int,
                    compiled: bool) -> list[str]:
    return [sys.executable, "-m", "trainer", "--recipe", recipe, "--device", device, "--data-root", str(data),
            "--out", str(out), "--epochs", str(epochs), "--subset", str(subset), *(["--compile"] if compiled else [])]


def run_one(result: Result, command: list[str], *, cwd: Path, timeout: float, checks: dict) -> None:
    """Run `command`; then what `checks` asks for. Sets result's status, figures and notes."""
    started = time.monotonic()
    if "kill_at_save" in checks:
        status, output = kill_and_resume(command, checks["kill_at_save"], checks["launcher"], cwd, timeout)
    else:
        status, output = run_process(command, cwd, timeout)
    result.seconds = time.monotonic() - started
    result.status = status
    if status != "ok":
        result.notes.append(output.strip().splitlines()[-1] if output.strip() else "no output")
        return
    epochs = [m.groupdict() for m in map(EPOCH_LINE.match, output.splitlines()) if m]
    rates = [float(e["rate"]) for e in epochs]
    result.images_per_s = statistics.median(rates[1:] or rates) if rates else None
    result.loss = loss_of_longest_phase(epochs)
    if result.loss:
        result.loss_falls = result.loss[1] < result.loss[0]
    if "checkpoint" in checks:
        result.reloads_on_cpu, result.onnx = reload_and_export(checks)


def run_process(command: list[str], cwd: Path, timeout: float) -> tuple[str, str]:
    """("ok" | "failed" | "stopped", its output). A process over `timeout` is stopped with its children."""
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True, env=os.environ | {"PYTHONPATH": str(ROOT)})
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return "stopped", output + f"\nstopped: over the budget ({timeout:.0f} s left)"
    return ("ok" if process.returncode == 0 else "failed"), output


def kill_and_resume(command: list[str], out: Path, launcher: list[str], cwd: Path, timeout: float) -> tuple[str, str]:
    """Start `command`, kill its process group (SIGKILL: no clean-up) once its first state is saved, then resume
    it under the same launcher; ok if the resumed run finishes and says where it resumed from."""
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True, env=os.environ | {"PYTHONPATH": str(ROOT)})
    while not (out / STATE_FILE).is_file() and process.poll() is None and time.monotonic() - started < timeout:
        time.sleep(0.05)
    if process.poll() is not None:
        output = process.stdout.read()
        return "failed", output + "\nthe run ended before its first save was seen: nothing to kill"
    kill_with_ranks(process)
    output = process.communicate()[0]
    if not (out / STATE_FILE).is_file():  # it finished (and cleared its state) before the kill landed
        return "failed", output + "\nthe run ended before the kill landed: nothing to resume"
    status, output = run_process(launcher + ["-m", "trainer", "--resume", str(out)], cwd,
                                 timeout - (time.monotonic() - started))
    if status == "ok" and "resum" not in output.lower():
        return "failed", output + "\nthe second run did not say that it resumed"
    return status, output


def kill_with_ranks(process: subprocess.Popen) -> None:
    """SIGKILL a torchrun launch and its ranks with their own children (data loader workers): torchrun starts each
    rank in a session of its own, which killing the launch's process group leaves training (this check once saw
    such ranks finish, not die)."""
    ranks = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
    process.kill()
    for pid in ranks:
        with contextlib.suppress(ProcessLookupError):  # not a rank's session leader, or gone already
            os.killpg(int(pid), signal.SIGKILL)
    process.wait()


def loss_of_longest_phase(epochs: list[dict]) -> tuple[float, float] | None:
    """The mean loss of the first and the last epoch of the phase with the most epochs (its first logged value
    named loss, else ce)."""
    phases: dict[str, list[float]] = {}
    for epoch in epochs:
        logs = dict(re.findall(r", ([^\s,]+) ([^\s,]+)", epoch["logs"]))
        key = next((k for k in ("loss", "ce") if k in logs), None)
        if key is not None:
            phases.setdefault(epoch["desc"], []).append(float(logs[key]))
    longest = max(phases.values(), key=len, default=[])
    return (longest[0], longest[-1]) if len(longest) >= 2 else None


def reload_and_export(checks: dict) -> tuple[str, str]:
    """Whether the run's checkpoint loads on the CPU, and exports to ONNX (each: "ok", or why not)."""
    out = Path(checks["checkpoint"])
    try:
        if checks["family"] is None:
            from trainer.backbone import backbone_from_config
            from trainer.pretrained import load_backbone

            weights = out / f"{checks['recipe']}.safetensors"
            state, record = load_backbone(weights)
            model = backbone_from_config(record.architecture)
            model.load_state_dict(state)
        else:
            from trainer.checkpoint import load_checkpoint

            model, _ = load_checkpoint(out)
    except Exception as error:  # the report names it; the check goes on with the next run
        return f"fails: {error}", "-"
    return "ok", export_onnx(model.eval(), checks, out)


def export_onnx(model: torch.nn.Module, checks: dict, out: Path) -> str:
    try:
        if checks["family"] is None:
            torch.onnx.export(model, (torch.zeros(1, 3, 32, 32),), str(out / "backbone.onnx"), verbose=False)
        else:
            from exporter import export

            export(out, "onnx", out / "bundle-onnx", calibration=calibration_images(), device="host-cpu")
    except ImportError as error:
        return f"not checked: {error}"
    except Exception as error:
        return f"fails: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return "ok"


def calibration_images() -> torch.Tensor:
    """A few normalized CIFAR-shaped images: the block families' export plan needs some."""
    return torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def compare_with_plain(results: list[Result], *, compiled_suffix: str) -> None:
    """Each run's images/s over the plain ResNet's of the same depth, compiled alike."""
    by_name = {r.name: r for r in results}
    for result in results:
        recipe = RECIPES.get(result.name.removesuffix(compiled_suffix))
        if recipe is None or recipe.family is None or result.images_per_s is None:
            continue
        plain = f"resnet-cifar10-{recipe.depth}" + (compiled_suffix if result.name.endswith(compiled_suffix) else "")
        baseline = by_name.get(plain)
        if baseline and baseline.images_per_s:
            result.plain, result.ratio = plain, result.images_per_s / baseline.images_per_s


def describe(result: Result) -> str:
    rate = f"{result.images_per_s:.0f} images/s" if result.images_per_s else "no rate"
    ratio = f" = {result.ratio:.2f}x {result.plain}" if result.ratio else ""
    loss = (f"loss {result.loss[0]:.3f} -> {result.loss[1]:.3f} ({'falls' if result.loss_falls else 'DOES NOT FALL'})"
            if result.loss else "loss: fewer than two epochs in a phase")
    return (f"{result.name}: {result.status} in {result.seconds:.0f} s; {rate}{ratio}; {loss}; reloads on CPU: "
            f"{result.reloads_on_cpu}; ONNX: {result.onnx}" + "".join(f"; {n}" for n in result.notes))


def device_name(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    return f"CPU ({os.cpu_count()} cores)"


def format_report(args, results: list[Result], seconds: float) -> str:
    verdict = {True: "held", False: "**MISS**", None: "-"}
    lines = [
        "# The trainer on a GPU: bf16, channels_last, torch.compile, torchrun",
        "",
        f"Command: `python scripts/gpu_check.py {shlex.join(sys.argv[1:])}`  ",
        f"Device: {device_name(args.device)}; torch {torch.__version__}; {seconds:.0f} s of a {args.budget_s:.0f} s "
        "budget. Synthetic CIFAR-shaped data (learnable classes), trained through `python -m trainer`.",
        "",
        f"Goal: each family at ≥ {GOAL_RATIO}x the images/s of the plain ResNet of its depth, compiled alike.",
        "",
        "| run | status | s | images/s | vs plain | goal | loss first → last epoch | reloads on CPU | ONNX |",
        "|---|---|---:|---:|---:|---|---|---|---|",
    ]
    for r in results:
        rate = f"{r.images_per_s:.0f}" if r.images_per_s else "-"
        ratio = f"{r.ratio:.2f}x" if r.ratio else "-"
        goal = verdict[None if r.ratio is None else r.ratio >= GOAL_RATIO]
        loss = (f"{r.loss[0]:.3f} → {r.loss[1]:.3f} ({'falls' if r.loss_falls else '**does not fall**'})"
                if r.loss else "-")
        status = r.status + "".join(f" ({n})" for n in r.notes)
        lines.append(f"| {r.name} | {status} | {r.seconds:.0f} | {rate} | {ratio} | {goal} | {loss} | "
                     f"{r.reloads_on_cpu} | {r.onnx} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
