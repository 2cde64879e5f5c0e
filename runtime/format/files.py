"""Files that appear whole or not at all: the one place the project writes atomically.

Checkpoints, bundles, TensorRT engine caches and unpacked Core ML packages
are written beside their final place and renamed into it, so a crash or a
failed export never leaves a half-written file where a reader looks. The
hidden staging entry names the process that writes it (`.NAME.PID.*`), and
the next write of the same target removes those whose process is gone, so a
killed write leaves nothing behind for long.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["sha256_of", "apply_umask", "atomic_write", "atomic_directory", "remove_stale_staging"]


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


def _staging_prefix(target: Path) -> str:
    return f".{target.name}.{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_staging(target: Path) -> list[Path]:
    """Remove the hidden staging entries of `target` (`.NAME.PID.*.partial` and `.old`) whose process is gone."""
    removed = []
    prefix = f".{target.name}."
    for entry in target.parent.glob(f"{glob.escape(prefix)}*"):
        owner = entry.name[len(prefix):].split(".", 1)[0]
        if not entry.name.endswith((".partial", ".old")) or not owner.isdigit() or _alive(int(owner)):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(temporary_path)` beside `path`, flush it to disk, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(path)
    handle, temporary = tempfile.mkstemp(prefix=_staging_prefix(path), suffix=".partial", dir=path.parent)
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
    remove_stale_staging(out)
    staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(out), suffix=".partial", dir=out.parent))
    try:
        apply_umask(staging)
        fill(staging)
        if out.exists() and replace:
            retired = Path(tempfile.mkdtemp(prefix=_staging_prefix(out), suffix=".old", dir=out.parent))
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
