"""Int8 bundles whose savings compound with the dynamic ones: each graph calibrated on the inputs routed to it.

The staged flow, for a target whose int8 needs activation ranges:

1. the fp32 bundle, as ONNX, checked against eager (the reference of every later check);
2. the calibration images run through it: each graph's routed inputs (routing.py);
3. the target's int8 bundle, each graph calibrated on its own inputs (onnx_qdq.py, pt2e.py);
4. checked against the fp32 bundle and eager on held-out images (check.py). A
   selector that routes fewer than SELECTOR_AGREEMENT of them as fp32 does is
   written again in float, and the bundle checked again;
5. refused, with the numbers, if it lost more top-1 than allowed or its logits
   moved beyond the int8 tolerance.

A weights-only target (Core ML: 8-bit weights, fp16 compute) needs no ranges
and skips 1-2; without a backend on this machine, 4-5 are left to the device.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from exporter.graphs import Split
from exporter.quantize.check import TOLERANCES, QuantizationError, compare_to_fp32, failures
from exporter.quantize.routing import record_routed_inputs
from exporter.targets import Int8Inputs
from runtime.format.bundle import write_manifest
from runtime.format.manifest import Int8Calibration, Manifest, Quantization, SelectorPrecision
from runtime.format.targets import get_target
from runtime.rules import graphs_in_role

__all__ = ["CalibrationImages", "QuantizationError", "SELECTOR_AGREEMENT", "write_int8"]

SELECTOR_AGREEMENT = 0.99  # share of held-out images the int8 selector must route as the fp32 one does
REFERENCE_TARGET = "onnx"  # the fp32 bundle that routing is recorded on and int8 is checked against


@dataclass(frozen=True)
class CalibrationImages:
    images: torch.Tensor  # normalized float32 NCHW
    source: str  # where they came from, in words


def write_int8(
    write: Callable[[Path, str, Int8Inputs], Manifest], staging: Path, *, target: str, split: Split,
    calibration: CalibrationImages | None, held_out: tuple[np.ndarray, np.ndarray | None], verify_backend: str | None,
    parity: Callable[[Path, str], object], max_top1_drop: float,
) -> Manifest:
    """Write the int8 bundle of `split` for `target` into `staging` and return its manifest, or raise
    QuantizationError. `write(directory, target, int8)` writes a bundle; `parity(bundle, backend)` checks one
    against eager; `held_out` are normalized images (and labels, or None) the calibration did not use."""
    if not get_target(target).calibrates_int8:
        manifest = write(staging, target, {graph.name: () for graph in split.graphs})
        return _record(staging, manifest, Quantization("int8", None, None, None))
    if calibration is None:
        raise ValueError(f"int8 {target} bundles calibrate each graph on routed inputs: pass calibration images")
    images = np.ascontiguousarray(calibration.images.numpy(), dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix=".int8-", dir=staging.parent) as scratch:
        fp32 = Path(scratch) / "fp32"
        fp32.mkdir()
        write(fp32, REFERENCE_TARGET, {})
        parity(fp32, get_target(REFERENCE_TARGET).verify_backend)
        routed = record_routed_inputs(fp32, images)
        int8 = dict(routed.inputs)
        selector = next(iter(graphs_in_role(split.dispatch, "selector")), None)

        def attempt(name: str) -> tuple[Manifest, Path]:
            directory = Path(scratch) / name
            directory.mkdir()
            return write(directory, target, int8), directory

        manifest, written = attempt("int8")
        check = _compare(written, fp32, held_out, split, verify_backend)
        choice = None
        if selector is not None and check is not None:
            agreement = check.path_agreement
            if agreement < SELECTOR_AGREEMENT:
                del int8[selector]
                manifest, written = attempt("float-selector")
                check = _compare(written, fp32, held_out, split, verify_backend)
            choice = SelectorPrecision(manifest.graphs[selector].precision, agreement, SELECTOR_AGREEMENT)
        for item in written.iterdir():
            shutil.move(str(item), staging / item.name)
    calibrated = Int8Calibration(
        source=calibration.source, images=len(images), sha256=hashlib.sha256(images.tobytes()).hexdigest(),
        routed={name: routed.routed[name] for name in int8}, forced={n: c for n, c in routed.forced.items() if n in int8},
    )
    manifest = _record(staging, manifest, Quantization("int8", calibrated, choice, check))
    found = failures(check, max_top1_drop) if check else []
    if found:
        raise QuantizationError(f"the int8 {target} bundle is refused: " + "; ".join(found))
    return manifest


def _compare(bundle: Path, fp32: Path, held_out, split: Split, backend: str | None):
    if backend is None:
        return None
    images, labels = held_out
    return compare_to_fp32(
        bundle, fp32, images, labels, backend=backend, fp32_backend=get_target(REFERENCE_TARGET).verify_backend,
        reference=split.reference, scales=split.scales, tolerance=TOLERANCES["int8"],
    )


def _record(staging: Path, manifest: Manifest, quantization: Quantization) -> Manifest:
    manifest = dataclasses.replace(manifest, quantization=quantization)
    write_manifest(staging, manifest)
    return manifest
