"""Constants and small helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# Real CIFAR-10 in ImageFolder layout next to the repository: ../shared/data/cifar10/{train,test}/<class>/*.jpg
CIFAR10_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


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
