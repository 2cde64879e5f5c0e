"""Files that appear whole or not at all: the one place the project writes atomically.

Checkpoints, bundles, TensorRT engine caches and unpacked Core ML packages
are written beside their final place and renamed into it, so a crash or a
failed export never leaves a half-written file where a reader looks.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["sha256_of", "apply_umask", "atomic_write", "atomic_directory"]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def apply_umask(path: Path) -> None:
    """mkstemp and mkdtemp create private (0600/0700) entries; give them the usual mode instead."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~mask)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(temporary_path)` beside `path`, flush it to disk, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(handle)
    temporary = Path(temporary)
    try:
        write(temporary)
        with open(temporary, "rb+") as stream:
            os.fsync(stream.fileno())
        apply_umask(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def atomic_directory(out: Path, fill: Callable[[Path], None], *, replace: bool = False) -> None:
    """Call `fill(staging_dir)` in a hidden sibling of `out`, then rename it to `out`.

    An existing `out` is an error unless `replace`; then it is swapped out only
    once the new directory is complete. If another process creates `out`
    first (say, unpacking the same archive), its copy is kept and ours dropped.
    """
    out = Path(out).absolute()
    if out.exists() and not replace:
        raise FileExistsError(f"{out} already exists; pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        apply_umask(staging)
        fill(staging)
        if out.exists() and replace:
            retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, retired / out.name)
            os.replace(staging, out)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            try:
                os.replace(staging, out)
            except OSError:
                if not out.is_dir():  # not merely another process winning the same race
                    raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
