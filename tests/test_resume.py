"""A training run killed mid-epoch and resumed ends with the same bits as one never interrupted."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import CIFAR10_ROOT, saved_step
from safetensors.torch import load_file

from trainer.recipes import get_recipe
from trainer.resume import STATE_FILE, TrainingRun

# 256 images in batches of 64: four steps an epoch, so saves every 3 steps of a phase land mid-epoch.
STEPS_PER_EPOCH = 4
ARGS = ["--subset", "256", "--checkpoint-every", "3", "--device", "cpu"]
# Resizable's 5 epochs give its supernet phase 3 (of 8 + 6), so that two mid-epoch saves follow the kill point.
EPOCHS = {"drnet-digits": 3, "blockdrop-digits": 3, "urnet-digits": 4, "resizable-digits": 5, "resnet-cifar10-20": 3}
# Where to kill: the first mid-epoch save from (phase, epoch) on, in a phase whose steps draw random numbers that
# a resume must replay: DRNet's Gumbel noise, BlockDrop's sampled policies, URNet's random-drop
# baseline, the Resizable supernet's sub-networks, and the backbone's crops and flips from their second epoch.
KILL_AT = {
    "drnet-digits": (1, 0), "blockdrop-digits": (1, 0), "urnet-digits": (1, 0), "resizable-digits": (0, 1),
    "resnet-cifar10-20": (0, 1),
}
# The plain backbone trains on CIFAR-10 in batches of 128: 512 images keep four steps an epoch.
EXTRA_ARGS = {"resnet-cifar10-20": ["--subset", "512", "--data-root", str(CIFAR10_ROOT)]}


def trainer(*args: str, **options) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "trainer", *args], stdout=subprocess.DEVNULL, **options)


def weights(directory: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Every weights file a finished run wrote: a family's checkpoint and companions, or a backbone's safetensors."""
    files = {path.name: torch.load(path, weights_only=True) for path in directory.glob("*.pt") if path.name != STATE_FILE}
    return {**files, **{path.name: load_file(path) for path in directory.glob("*.safetensors")}}


def state_stamp(directory: Path) -> tuple[int, int] | None:
    """When the run's training state was last written, and which file holds it (a save replaces it whole)."""
    try:
        status = (directory / STATE_FILE).stat()
    except FileNotFoundError:
        return None
    return status.st_mtime_ns, status.st_ino


def at_kill_point(saved: tuple[int, int, int], kill_at: tuple[int, int]) -> bool:
    """A mid-epoch save in the kill phase, at its epoch or later: a poll that misses one save catches the next."""
    phase, epoch, step = saved
    return phase == kill_at[0] and epoch >= kill_at[1] and 0 < step < STEPS_PER_EPOCH


@pytest.mark.parametrize("recipe", sorted(EPOCHS))
def test_a_run_killed_mid_epoch_resumes_to_bit_identical_weights(recipe, tmp_path):
    if recipe in EXTRA_ARGS and not CIFAR10_ROOT.is_dir():
        pytest.skip(f"real CIFAR-10 not found at {CIFAR10_ROOT}")
    command = ["--recipe", recipe, "--epochs", str(EPOCHS[recipe]), *ARGS, *EXTRA_ARGS.get(recipe, [])]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert trainer(*command, "--out", str(whole)).wait() == 0

    process = trainer(*command, "--out", str(killed))
    deadline, stamp, seen = time.monotonic() + 300, None, []
    while not seen or not at_kill_point(seen[-1], KILL_AT[recipe]):
        assert process.poll() is None, f"the run ended before a mid-epoch save from {KILL_AT[recipe]} on (saves seen: {seen})"
        assert time.monotonic() < deadline
        if (new_stamp := state_stamp(killed)) not in (None, stamp):  # read each save once: polling stays fast
            stamp = new_stamp
            if saved := saved_step(killed):
                seen.append(saved)
        time.sleep(0.001)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert [p.name for p in killed.glob("*.json")] == ["run.json"], "the run finished before it was killed"

    assert trainer("--resume", str(killed)).wait() == 0
    expected, actual = weights(whole), weights(killed)
    assert expected.keys() == actual.keys() and expected
    for file, state in expected.items():
        for key, value in state.items():
            assert torch.equal(value, actual[file][key]), f"{file}: {key} differs after resuming"
    assert not (killed / STATE_FILE).exists(), "a finished run leaves no training state behind"
    record = killed / ("config.json" if get_recipe(recipe).family else f"{recipe}.json")  # a backbone's record
    assert json.loads(record.read_text())["training"]["resumed"] is True


def test_resuming_without_a_saved_run_says_what_is_missing(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "trainer", "--resume", str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "run.json" in result.stderr


def started_phase(directory: Path, every_steps: int):
    """A run in its first phase, with the optimizer and schedule of one parameter to save."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0)
    run = TrainingRun(directory, every_steps=every_steps)
    run.begin_phase()
    return run, optimizer, scheduler


def test_saves_count_the_steps_of_the_phase_not_of_the_epoch(tmp_path):
    """An interval longer than an epoch still saves mid-phase (CIFAR: 390 steps an epoch, every 500)."""
    run, optimizer, scheduler = started_phase(tmp_path, every_steps=5)
    saves = []
    for epoch in range(4):
        for step in range(1, 4):
            run.step_done(epoch, step, 3, 4, optimizer, scheduler)
            if (state := saved_step(tmp_path)) is not None and state not in saves:
                saves.append(state)
    assert saves == [(0, 1, 2), (0, 3, 1), (0, 3, 3)]  # steps 5 and 10 of the phase, then its end


def test_cpu_time_skips_a_pause_and_carries_over_a_resume(tmp_path):
    """Training is stopped while benchmarks use the cores: wall time counts the pause, CPU time does not."""
    run, optimizer, scheduler = started_phase(tmp_path, every_steps=1)
    busy_until = time.process_time() + 0.3
    while time.process_time() < busy_until:  # training: one thread's CPU
        pass
    time.sleep(0.3)  # stopped: no CPU
    run.step_done(0, 1, 2, 1, optimizer, scheduler)
    saved = torch.load(tmp_path / STATE_FILE, weights_only=True)
    assert saved["cpu_s"] >= 0.3 and saved["elapsed_s"] >= saved["cpu_s"] + 0.25

    resumed = TrainingRun(tmp_path, resume=True).times()
    assert resumed["cpu_time_s"] >= 0.3 and resumed["wall_time_s"] >= 0.6
