"""Grouping a batch by decision, and putting the groups back in input order."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

__all__ = ["groups", "scatter", "path_strings", "parse_path"]


def groups(keys: np.ndarray) -> Iterator[tuple[int, np.ndarray | slice]]:
    """(key, rows) per distinct key of a 1-D integer array; rows is `slice(None)` when every sample agrees.

    The uniform case (batch 1, or a batch that all takes one path) then
    indexes nothing and copies nothing.
    """
    first = keys[0]
    if len(keys) == 1 or (keys == first).all():
        yield int(first), slice(None)
        return
    for key in np.unique(keys):
        yield int(key), np.flatnonzero(keys == key)


def scatter(mask: np.ndarray, chosen: np.ndarray, other: np.ndarray) -> np.ndarray:
    """One array from two groups: rows where `mask` holds come from `chosen`, the rest from `other`."""
    out = np.empty((len(mask), *chosen.shape[1:]), dtype=chosen.dtype)
    out[mask] = chosen
    out[~mask] = other
    return out


def path_strings(matrix: np.ndarray) -> list[str]:
    """Each row of an (N, K) boolean matrix as a string of K '0'/'1' characters."""
    count, width = matrix.shape
    text = (np.ascontiguousarray(matrix, dtype=np.uint8) + ord("0")).tobytes().decode("ascii")
    return [text[i * width : (i + 1) * width] for i in range(count)]


def parse_path(path: str, blocks: int) -> np.ndarray:
    """The (K,) boolean row of a '0'/'1' path string; ValueError naming the problem otherwise."""
    if not isinstance(path, str) or len(path) != blocks or set(path) - {"0", "1"}:
        raise ValueError(f"path {path!r} is not a string of {blocks} '0'/'1' characters, one per block")
    return np.frombuffer(path.encode("ascii"), dtype=np.uint8) == ord("1")
