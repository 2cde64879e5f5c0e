"""Core ML backend: functions of the bundle's multifunction ML program, run through coremltools.

The bundle ships the .mlpackage directory zipped into one artifact file; it is
unzipped once into a cache directory named by the archive's sha256, so a
changed bundle never meets a stale package. Prediction needs macOS: elsewhere
coremltools can only convert and inspect models, and `load` says so.
"""

from __future__ import annotations

import os
import platform
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from runtime.backends.quiet import without_coremltools_import_notices
from runtime.format.devices import Device
from runtime.format.files import atomic_directory
from runtime.format.fields import BundleError, Graph
from runtime.format.manifest import Manifest

with without_coremltools_import_notices():
    import coremltools as ct

__all__ = ["CoreMLBackend", "default_cache", "unpack", "create", "enumerated_batches", "split_batch"]

ARCHIVE_SUFFIX = ".zip"


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "adaptive-edge" / "coreml"


def unpack(archive: Path, sha256: str, cache: Path) -> Path:
    """The package zipped in `archive` (`model.mlpackage.zip` holds `model.mlpackage/`), unzipped under `cache`."""
    package = cache / sha256 / archive.name.removesuffix(ARCHIVE_SUFFIX)

    def extract(staging: Path) -> None:
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(staging)
        if not (staging / package.name).is_dir():
            raise BundleError(f"{archive}: does not hold a {package.name}/ directory")

    if not package.parent.is_dir():
        atomic_directory(package.parent, extract)
    return package


def enumerated_batches(max_batch: int) -> tuple[int, ...]:
    """The batch sizes a single-input function is compiled for: powers of two below `max_batch`, and `max_batch`.

    Enumerated shapes, unlike a range, keep every one of them eligible for the
    Neural Engine; a range runs there only at its default shape. The exporter
    and this backend both derive the sizes from the manifest's `max_batch`.
    """
    sizes = {max_batch}
    size = 1
    while size < max_batch:
        sizes.add(size)
        size *= 2
    return tuple(sorted(sizes))


def split_batch(count: int, sizes: Sequence[int]) -> list[int]:
    """`count` as a sum of allowed `sizes`, largest first (`sizes` holds 1, so greedy always ends)."""
    parts = []
    for size in sorted(sizes, reverse=True):
        while count >= size:
            parts.append(size)
            count -= size
    return parts


class CoreMLBackend:
    name = "coreml"

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self.compute_units: str | None = None  # read from the bundle's build plan at load

    def load(self, bundle: Path, manifest: Manifest, graph: Graph):
        if platform.system() != "Darwin":
            raise RuntimeError(
                f"{bundle / graph.artifact}: Core ML prediction needs macOS, and this is {platform.system()}; "
                "run the bundle on a Mac or an Apple device, or export for onnx or executorch to run it here"
            )
        self.compute_units = (manifest.build.compute_units if manifest.build else None) or "ALL"
        package = unpack(bundle / graph.artifact, manifest.artifacts[graph.artifact].sha256, self.cache)
        model = ct.models.MLModel(
            str(package), compute_units=ct.ComputeUnit[self.compute_units], function_name=graph.entry
        )
        inputs = [spec.name for spec in graph.inputs]
        outputs = [spec.name for spec in graph.outputs]
        sizes = enumerated_batches(manifest.max_batch) if len(inputs) == 1 else None  # else a batch range

        def predict(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
            predicted = model.predict(dict(zip(inputs, arrays)))
            return [predicted[name] for name in outputs]

        def run(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
            if sizes is None or len(arrays[0]) in sizes:
                return predict(arrays)
            parts, start = [], 0
            for size in split_batch(len(arrays[0]), sizes):
                parts.append(predict([a[start : start + size] for a in arrays]))
                start += size
            return [np.concatenate(chunks) for chunks in zip(*parts)]

        return run

    def describe(self) -> str:
        return f"coremltools {ct.__version__}, compute_units={self.compute_units or 'from the bundle build plan'}"


def create(*, threads: int | None = None, device: Device | None = None) -> CoreMLBackend:
    if threads is not None:
        raise ValueError(f"Core ML schedules its own threads; threads={threads} cannot be honoured (use threads: null)")
    return CoreMLBackend(default_cache())
