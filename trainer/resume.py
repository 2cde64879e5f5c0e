"""Training that survives a kill: `python -m trainer --resume DIR` continues bit for bit where a run stopped.

A `TrainingRun` is handed to a family's `fit`. Every `train_phase` call is
one numbered phase; every N steps
and at the end of every epoch, the run writes `run-state.pt` atomically:

- the model and every companion network the fit registered (`keep`);
- the phase's optimizer and learning-rate schedule;
- the phase, epoch and step;
- the phase's loader generator at the start of the epoch (to rebuild its
  sample order);
- the global torch (CPU and CUDA) and Python RNG states, and every generator registered
  (`generator`, `track`: the training loader's among them), plus any
  counters the fit keeps (`tensor`).

Two generations are kept: a save first links the newest state as
`run-state.previous.pt`, so a save cut short (a full disk, a power cut)
never takes the only good copy with it, and `run-state.pt` is never missing
while a run saves. `--resume` reads the newest state
that loads and checks, says which one it took and why not the other, and a
run resumed from the previous state retakes the steps since, to the same
weights.

On resume, finished phases are skipped (their results are in the restored
networks). The interrupted phase rebuilds the epoch's order, fetches and drops
the batches already trained on, so that data workers draw what they drew
before, then restores every RNG state as it was at the save. From there every
step is the one the uninterrupted run took.

Under torchrun the main rank writes the file, with every rank's RNG states
and loader generator (each rank draws its own crops and policies), and a run
resumes only with as many processes as saved it. A distributed sampler's
order needs no state: it follows the seed and the epoch.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from runtime.format.files import atomic_write
from trainer.distributed import gather_objects, ranks

__all__ = ["STATE_FILE", "PREVIOUS_STATE_FILE", "Start", "TrainingRun", "load_state", "read_tensors"]

STATE_FILE = "run-state.pt"
PREVIOUS_STATE_FILE = "run-state.previous.pt"  # the generation before STATE_FILE: what a damaged save falls back to
STATE_KEYS = frozenset({"phase", "epoch", "step", "finished", "modules", "optimizer", "scheduler", "random",
                        "world_size", "rank_random"})


def read_tensors(path: Path) -> object:
    """What torch saved at `path`, on the CPU, or ValueError saying in one line why the file cannot be read."""
    try:
        # weights_only: tensors, numbers and strings only, never arbitrary objects.
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises RuntimeError, EOFError, pickle errors... for damaged files
        reason = str(error).splitlines()[0] if str(error) else "the file is empty or cut short"
        raise ValueError(f"{path}: unreadable ({type(error).__name__}: {reason})") from None


def _read_state(path: Path) -> dict:
    """One saved state, or ValueError saying what is wrong with it."""
    state = read_tensors(path)
    missing = STATE_KEYS - state.keys() if isinstance(state, dict) else STATE_KEYS
    if missing:
        raise ValueError(f"{path}: not a complete training state (missing {sorted(missing)})")
    return state


def load_state(directory: Path) -> tuple[dict, str]:
    """The newest training state in `directory` that loads and checks, and a line saying which one it is and, where
    the newest was passed over, why. ValueError naming both files and what is wrong with each when neither loads."""
    problems = []
    for name in (STATE_FILE, PREVIOUS_STATE_FILE):
        path = Path(directory) / name
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        try:
            state = _read_state(path)
        except ValueError as error:
            problems.append(str(error))
            continue
        passed_over = f" ({problems[0]})" if problems else ""
        return state, f"resuming from {path}{passed_over}"
    if all(problem.endswith(": missing") for problem in problems):
        raise FileNotFoundError(f"{Path(directory) / STATE_FILE}: no saved training state to resume from")
    raise ValueError("no training state to resume from: " + "; ".join(problems))


@dataclass(frozen=True)
class Start:
    """Where a phase begins: from scratch, mid-way with its saved optimizer, or not at all (done before the save)."""

    epoch: int = 0
    step: int = 0
    saved: dict | None = None  # the saved state when resuming this phase: its optimizer and schedule
    done: bool = False
    mid_epoch: bool = False  # the save was mid-epoch: the epoch's first `step` batches are fetched again and dropped


class TrainingRun:
    def __init__(self, directory: Path | None = None, *, every_steps: int = 500, resume: bool = False) -> None:
        """`directory` None: a run that keeps nothing, for fits that need no checkpoints (tests, helpers)."""
        if every_steps < 1:
            raise ValueError(f"checkpoint interval must be at least 1 step, got {every_steps}")
        self.path = None if directory is None else Path(directory) / STATE_FILE
        self.every_steps = every_steps
        self.modules: dict[str, nn.Module] = {}
        self.generators: dict[str, torch.Generator] = {}
        self.tensors: dict[str, torch.Tensor] = {}
        self.phase = -1  # the phase train_phase is in; each call advances it
        self.epoch_start_loader_state: torch.Tensor | None = None
        self.saved: dict | None = None
        self.started = time.perf_counter()
        self.cpu_started = time.process_time()
        self.elapsed_before = 0.0  # training time of the processes this run resumes
        self.cpu_before = 0.0  # and their main process's CPU time
        self.resumed_from: str | None = None  # which saved state a resumed run took, and why, in words
        if resume:
            if self.path is None:
                raise ValueError("resuming needs the directory of the interrupted run")
            self.saved, self.resumed_from = load_state(self.path.parent)
            self.elapsed_before = float(self.saved.get("elapsed_s", 0.0))
            self.cpu_before = float(self.saved.get("cpu_s", 0.0))
            saved_ranks = self.saved.get("world_size", 1)
            if saved_ranks != ranks().world_size:
                raise ValueError(f"{self.path}: the run was saved by {saved_ranks} process(es); resume it with "
                                 f"as many (torchrun --nproc-per-node ... --nnodes ...), not {ranks().world_size}")

    # --- what a fit registers ---------------------------------------------------------------------------

    def keep(self, name: str, module: nn.Module) -> nn.Module:
        """Register `module` (the model, a frozen copy, a baseline); on resume it comes back as saved.

        It is loaded at once, so that what a fit computes from it on the way
        back to the saved step sees trained weights, and again at that step,
        undoing whatever that catching-up changed.
        """
        self.modules[name] = module
        self._load(name)
        return module

    def _load(self, name: str) -> None:
        if self.saved is not None and name in self.saved["modules"]:
            self.modules[name].load_state_dict(self.saved["modules"][name])

    def generator(self, name: str, seed: int) -> torch.Generator:
        """A seeded generator whose state is saved and restored with the run."""
        return self.track(name, torch.Generator().manual_seed(seed))

    def track(self, name: str, generator: torch.Generator) -> torch.Generator:
        """Save and restore an existing generator, e.g. the training loader's, which outlives any one phase."""
        self.generators[name] = generator
        return generator

    def tensor(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """A counter, or data the fit computed between phases: restored in place with the RNG states."""
        self.tensors[name] = value
        return value

    # --- what train_phase calls -------------------------------------------------------------------------

    def begin_phase(self) -> Start:
        """Number the next phase and say where it begins."""
        self.phase += 1
        if self.saved is None or self.phase > self.saved["phase"]:
            return Start()
        if self.phase < self.saved["phase"]:
            return Start(done=True)
        if self.saved["finished"]:
            self.resumed()
            return Start(done=True)
        if self.saved.get("epoch_done", False):  # RNG as it was when the epoch's loader ran dry: go on from there
            saved = self.saved
            self.resumed()
            return Start(saved["epoch"] + 1, 0, saved)
        return Start(self.saved["epoch"], self.saved["step"], self.saved, mid_epoch=True)

    def begin_epoch(self, loader: DataLoader, resuming: bool) -> None:
        """Before the epoch's batches are drawn: on resume, the epoch's sample order comes back."""
        if loader.generator is None:
            raise ValueError("a resumable phase needs a loader with its own generator: DataLoader(..., generator=...)")
        if resuming:
            saved = self._saved_random()
            loader.generator.set_state(saved["loader"] if "loader" in saved else self.saved["epoch_start_loader_state"])
        self.epoch_start_loader_state = loader.generator.get_state()

    def resumed(self) -> None:
        """The run is back where it was saved (mid-phase: its batches fetched again): from here, RNG as it was."""
        self._restore()
        self.saved = None

    def step_done(self, epoch: int, step: int, steps_per_epoch: int, optimizer, scheduler) -> None:
        """After `step` (1-based) of `epoch`, mid-epoch: save every `every_steps` steps of the phase."""
        if self.path is not None and step < steps_per_epoch and (epoch * steps_per_epoch + step) % self.every_steps == 0:
            self._save(epoch, step, optimizer, scheduler)

    def epoch_done(self, epoch: int, steps_per_epoch: int, epochs: int, optimizer, scheduler) -> None:
        """After `epoch`, its loader run dry (which draws the next order from the loader's generator): save, so
        that a kill in a run's first epoch loses at most that epoch, and a resume from here draws what the
        uninterrupted run draws next."""
        if self.path is not None:
            self._save(epoch, steps_per_epoch, optimizer, scheduler, epoch_done=True, finished=epoch + 1 == epochs)

    def elapsed(self) -> float:
        """Seconds this run has trained, over every process it took (up to the last save before a kill)."""
        return self.elapsed_before + time.perf_counter() - self.started

    def cpu_time(self) -> float:
        """CPU seconds of the main process (all its threads), over every process the run took. Unlike `elapsed`,
        it does not grow while the process is stopped or waits for a core another job holds."""
        return self.cpu_before + time.process_time() - self.cpu_started

    def times(self) -> dict[str, float]:
        """What a training record states of the run's cost."""
        return {"wall_time_s": round(self.elapsed(), 1), "cpu_time_s": round(self.cpu_time(), 1)}

    # --- files ------------------------------------------------------------------------------------------

    def _random_state(self) -> dict:
        version, internal, gauss = random.getstate()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": [*internal, version, gauss],
            "generators": {name: g.get_state() for name, g in self.generators.items()},
            "tensors": {name: t.clone() for name, t in self.tensors.items()},
            "loader": self.epoch_start_loader_state,
        }

    def _save(self, epoch: int, step: int, optimizer, scheduler, *, epoch_done: bool = False,
              finished: bool = False) -> None:
        """The main rank writes; every rank's RNG states (its own draws: crops, policies) go into the file."""
        random_states = gather_objects(self._random_state())
        if not ranks().main:
            return
        state = {
            "phase": self.phase, "epoch": epoch, "step": step, "finished": finished, "epoch_done": epoch_done,
            "elapsed_s": self.elapsed(),
            "cpu_s": self.cpu_time(),
            "modules": {name: module.state_dict() for name, module in self.modules.items()},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "random": random_states[0],
            "world_size": len(random_states),
            "rank_random": random_states,
        }
        if self.path.is_file():
            self._keep_as_previous()
        atomic_write(self.path, lambda path: torch.save(state, path))

    def _keep_as_previous(self) -> None:
        """Hard-link the newest state as the previous generation, so that `run-state.pt` exists at every moment."""
        staged = self.path.with_name(PREVIOUS_STATE_FILE + ".partial")
        staged.unlink(missing_ok=True)
        os.link(self.path, staged)
        os.replace(staged, self.path.with_name(PREVIOUS_STATE_FILE))

    def _saved_random(self) -> dict:
        """This rank's saved RNG states."""
        place = ranks()
        return self.saved["rank_random"][place.rank] if place.distributed else self.saved["random"]

    def _restore(self) -> None:
        for name in self.modules:
            self._load(name)
        saved = self._saved_random()
        torch.set_rng_state(saved["torch"])
        if saved["cuda"]:
            torch.cuda.set_rng_state_all(saved["cuda"])
        *internal, version, gauss = saved["python"]
        random.setstate((version, tuple(internal), gauss))
        for name, generator in self.generators.items():
            generator.set_state(saved["generators"][name])
        for name, value in self.tensors.items():
            value.copy_(saved["tensors"][name])

    def finish(self) -> None:
        """The run is complete and checkpointed: its state is no longer needed."""
        if self.path is not None and ranks().main:
            self.path.unlink(missing_ok=True)
            self.path.with_name(PREVIOUS_STATE_FILE).unlink(missing_ok=True)
