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
from helpers import CIFAR10_ROOT, saved_step, slow_except
from safetensors.torch import load_file

from trainer.recipes import get_recipe
from trainer.resume import PREVIOUS_STATE_FILE, STATE_FILE, TrainingRun, load_state

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
    files = {path.name: torch.load(path, weights_only=True) for path in directory.glob("*.pt")
             if path.name not in (STATE_FILE, PREVIOUS_STATE_FILE)}
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


def kill_at_save(command: list[str], out: Path, kill_at: tuple[int, int]) -> None:
    """Start the run and kill -9 it right after a mid-epoch save from `kill_at` on."""
    process = trainer(*command, "--out", str(out))
    deadline, stamp, seen = time.monotonic() + 300, None, []
    while not seen or not at_kill_point(seen[-1], kill_at):
        assert process.poll() is None, f"the run ended before a mid-epoch save from {kill_at} on (saves seen: {seen})"
        assert time.monotonic() < deadline
        if (new_stamp := state_stamp(out)) not in (None, stamp):  # read each save once: polling stays fast
            stamp = new_stamp
            if saved := saved_step(out):
                seen.append(saved)
        time.sleep(0.001)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert [p.name for p in out.glob("*.json")] == ["run.json"], "the run finished before it was killed"


def assert_same_weights(whole: Path, resumed: Path) -> None:
    expected, actual = weights(whole), weights(resumed)
    assert expected.keys() == actual.keys() and expected
    for file, state in expected.items():
        for key, value in state.items():
            assert torch.equal(value, actual[file][key]), f"{file}: {key} differs after resuming"


# Every family's resume state, by default BlockDrop's: it keeps the most (policy, baselines, sampling generator).
@pytest.mark.parametrize("recipe", slow_except(sorted(EPOCHS), "blockdrop-digits"))
def test_a_run_killed_mid_epoch_resumes_to_bit_identical_weights(recipe, tmp_path):
    if recipe in EXTRA_ARGS and not CIFAR10_ROOT.is_dir():
        pytest.skip(f"real CIFAR-10 not found at {CIFAR10_ROOT}")
    command = ["--recipe", recipe, "--epochs", str(EPOCHS[recipe]), *ARGS, *EXTRA_ARGS.get(recipe, [])]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert trainer(*command, "--out", str(whole)).wait() == 0
    kill_at_save(command, killed, KILL_AT[recipe])

    assert trainer("--resume", str(killed)).wait() == 0
    assert_same_weights(whole, killed)
    assert not (killed / STATE_FILE).exists(), "a finished run leaves no training state behind"
    assert not (killed / PREVIOUS_STATE_FILE).exists()
    record = killed / ("config.json" if get_recipe(recipe).family else f"{recipe}.json")  # a backbone's record
    assert json.loads(record.read_text())["training"]["resumed"] is True


def test_a_run_whose_newest_state_is_truncated_resumes_from_the_previous_one_to_the_same_weights(tmp_path):
    """A disk that filled during the last save costs the steps since the save before it, not the run."""
    recipe = "drnet-digits"
    command = ["--recipe", recipe, "--epochs", str(EPOCHS[recipe]), *ARGS]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert trainer(*command, "--out", str(whole)).wait() == 0
    kill_at_save(command, killed, KILL_AT[recipe])
    newest = killed / STATE_FILE
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 3])

    resumed = subprocess.run([sys.executable, "-m", "trainer", "--resume", str(killed)], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {killed / PREVIOUS_STATE_FILE} ({newest}: unreadable" in resumed.stdout
    assert_same_weights(whole, killed)


def saved_states(directory: Path, every_steps: int = 1) -> None:
    """Two generations of a one-phase run's state in `directory`: steps 1 and 2."""
    run, optimizer, scheduler = started_phase(directory, every_steps=every_steps)
    for step in (1, 2):
        run.step_done(0, step, 4, optimizer, scheduler)


def test_a_save_keeps_the_generation_before_it(tmp_path):
    saved_states(tmp_path)
    assert saved_step(tmp_path) == (0, 0, 2)
    assert torch.load(tmp_path / PREVIOUS_STATE_FILE, weights_only=True)["step"] == 1


def test_the_newest_state_is_in_place_while_the_next_one_is_written(tmp_path, monkeypatch):
    """A reader (a monitor, the distributed kill test) never finds the run without a state between two saves."""
    import trainer.resume

    present_during_writes, atomic_write = [], trainer.resume.atomic_write

    def write_checking(path, write):
        present_during_writes.append((tmp_path / STATE_FILE).is_file())
        atomic_write(path, write)

    monkeypatch.setattr(trainer.resume, "atomic_write", write_checking)
    saved_states(tmp_path)
    assert present_during_writes == [False, True]
    assert saved_step(tmp_path) == (0, 0, 2)


@pytest.mark.parametrize("damage", [
    pytest.param(lambda path: path.write_bytes(b""), id="empty"),
    pytest.param(lambda path: path.write_bytes(path.read_bytes()[:100]), id="truncated"),
    pytest.param(lambda path: torch.save({"phase": 0}, path), id="incomplete"),
    pytest.param(lambda path: path.unlink(), id="missing"),
])
def test_resume_reads_the_newest_state_that_loads_and_says_why_not_the_other(tmp_path, damage):
    saved_states(tmp_path)
    damage(tmp_path / STATE_FILE)
    state, said = load_state(tmp_path)
    assert state["step"] == 1
    assert said.startswith(f"resuming from {tmp_path / PREVIOUS_STATE_FILE} ({tmp_path / STATE_FILE}: ")


def test_when_no_state_loads_one_line_names_both_files_and_why(tmp_path):
    saved_states(tmp_path)
    (tmp_path / STATE_FILE).write_bytes(b"")
    (tmp_path / PREVIOUS_STATE_FILE).write_bytes(b"not a zip archive")
    with pytest.raises(ValueError) as error:
        load_state(tmp_path)
    message = str(error.value)
    assert "\n" not in message
    assert f"{tmp_path / STATE_FILE}: unreadable" in message and f"{tmp_path / PREVIOUS_STATE_FILE}: unreadable" in message
    (tmp_path / "run.json").write_text(json.dumps({"recipe": "drnet-digits", "device": "cpu"}))
    result = subprocess.run([sys.executable, "-m", "trainer", "--resume", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "no training state to resume from" in result.stderr


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


def test_saves_count_the_steps_of_the_phase_and_close_every_epoch(tmp_path):
    """An interval longer than an epoch still saves mid-phase (CIFAR: 390 steps an epoch, every 500), and every
    epoch ends with a save, so a kill in a run's first epoch loses at most that epoch."""
    run, optimizer, scheduler = started_phase(tmp_path, every_steps=5)
    saves = []
    for epoch in range(4):
        for step in range(1, 4):
            run.step_done(epoch, step, 3, optimizer, scheduler)
            if (state := saved_step(tmp_path)) is not None and state not in saves:
                saves.append(state)
        run.epoch_done(epoch, 3, 4, optimizer, scheduler)
        saves.append(saved_step(tmp_path))
    assert saves == [(0, 0, 3), (0, 1, 2), (0, 1, 3), (0, 2, 3), (0, 3, 1), (0, 3, 3)]  # epoch ends, steps 5 and 10


def test_cpu_time_skips_a_pause_and_carries_over_a_resume(tmp_path):
    """Training is stopped while benchmarks use the cores: wall time counts the pause, CPU time does not."""
    run, optimizer, scheduler = started_phase(tmp_path, every_steps=1)
    busy_until = time.process_time() + 0.3
    while time.process_time() < busy_until:  # training: one thread's CPU
        pass
    time.sleep(0.3)  # stopped: no CPU
    run.step_done(0, 1, 2, optimizer, scheduler)
    saved = torch.load(tmp_path / STATE_FILE, weights_only=True)
    assert saved["cpu_s"] >= 0.3 and saved["elapsed_s"] >= saved["cpu_s"] + 0.25

    resumed = TrainingRun(tmp_path, resume=True).times()
    assert resumed["cpu_time_s"] >= 0.3 and resumed["wall_time_s"] >= 0.6


class Stopped(Exception):
    """Stands for a kill right after a save."""


@pytest.mark.parametrize("boundary", ["epoch_done", "finished"])
def test_a_run_stopped_right_after_an_epoch_or_phase_end_save_resumes_to_the_same_weights(boundary, tmp_path, monkeypatch):
    """The save closing an epoch is taken once its loader ran dry, which draws the next order from the loader's
    generator: a resume from it draws what the uninterrupted run drew (saved inside the epoch, it did not)."""
    from trainer.train import train

    recipe = get_recipe("drnet-digits").with_epochs(4)
    train(recipe, tmp_path / "whole", subset=256, checkpoint_every=3)
    save = TrainingRun._save

    def stopping(self, epoch, step, optimizer, scheduler, **flags):
        save(self, epoch, step, optimizer, scheduler, **flags)
        if self.phase == 0 and flags.get(boundary):
            raise Stopped

    monkeypatch.setattr(TrainingRun, "_save", stopping)
    with pytest.raises(Stopped):
        train(recipe, tmp_path / "stopped", subset=256, checkpoint_every=3)
    monkeypatch.setattr(TrainingRun, "_save", save)
    train(recipe, tmp_path / "stopped", subset=256, checkpoint_every=3, resume=True)
    assert_same_weights(tmp_path / "whole", tmp_path / "stopped")
