"""Constants and small helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# Real CIFAR-10 in ImageFolder layout next to the repository: ../shared/data/cifar10/{train,test}/<class>/*.jpg
CIFAR10_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


def slow_except(values, *kept) -> list:
    """Parameters where only `kept` run by default: the others repeat their coverage at a cost the default suite
    cannot pay, and run with -m slow."""
    import pytest

    return [pytest.param(v, marks=() if v in kept else pytest.mark.slow) for v in values]


def copy_tree(source: Path, destination: Path) -> Path:
    """A private copy of a bundle or checkpoint directory that a test may modify."""
    shutil.copytree(source, destination)
    return destination


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def write_json(path: Path, data) -> None:
    Path(path).write_text(json.dumps(data, indent=2))


def staging_leftovers(parent: Path) -> list[str]:
    """Hidden staging or retired directories an export may have left next to its output."""
    return sorted(p.name for p in Path(parent).iterdir() if p.name.endswith((".partial", ".old")))


def current_umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


BLOCK_TORCH = textwrap.dedent(
    """
    import sys

    class NoTorch:
        '''Pretend torch is not installed: refuse torch and all its submodules.'''

        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError(f"torch is blocked in this test (import of {name})")
            return None

    sys.meta_path.insert(0, NoTorch())
    assert "torch" not in sys.modules
    """
)


def run_without_torch(body: str, *args: str) -> subprocess.CompletedProcess:
    """Run `body` in a fresh interpreter where importing torch fails, as on a device without it."""
    script = BLOCK_TORCH + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", script, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )


def saved_step(directory: Path) -> tuple[int, int, int] | None:
    """(phase, epoch, step) of the training state a run in `directory` last saved, if any."""
    import torch

    from trainer.resume import STATE_FILE

    state = directory / STATE_FILE
    if not state.is_file():
        return None
    saved = torch.load(state, weights_only=True)
    return saved["phase"], saved["epoch"], saved["step"]


def script_module(name: str):
    """scripts/<name>.py imported as module `name`, so that tests can call its functions."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
