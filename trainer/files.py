"""Writing files atomically, with the permissions a plain open() would have given them."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "apply_umask"]


def apply_umask(path: Path) -> None:
    """mkstemp and mkdtemp create private (0600/0700) entries; give them the usual mode instead."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~mask)


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call `write(temporary_path)` beside `path`, then rename it over `path`."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    try:
        write(temporary)
        apply_umask(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
