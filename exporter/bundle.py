"""Write a bundle atomically: build it in a hidden sibling directory, then rename it into place.

An interrupted or failed export leaves no bundle at the destination, and an
existing bundle is replaced only with `force`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from runtime.bundle import sha256_of
from trainer.files import apply_umask
from runtime.manifest import MANIFEST_FILE, Artifact, Manifest

__all__ = ["write_bundle", "artifact_table", "write_manifest"]


def artifact_table(directory: Path) -> dict[str, Artifact]:
    return {
        path.name: Artifact(sha256_of(path), path.stat().st_size)
        for path in sorted(directory.iterdir())
        if path.is_file() and path.name != MANIFEST_FILE
    }


def write_manifest(directory: Path, manifest: Manifest) -> None:
    (directory / MANIFEST_FILE).write_text(manifest.to_json() + "\n")


def write_bundle(out: Path, fill: Callable[[Path], None], *, force: bool = False) -> None:
    """Call `fill(staging_dir)`, then move the staging directory to `out`."""
    out = Path(out).absolute()
    if out.exists() and not force:
        raise FileExistsError(f"{out} already exists; pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        apply_umask(staging)
        fill(staging)
        if out.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, retired / out.name)
            os.replace(staging, out)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
