"""Split a trained dynamic model into static graphs and write a verified bundle.

    from exporter import export
    report = export("runs/drnet-digits", "executorch", "bundles/drnet-et")
    print(report.parity.summary())
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import torch

from exporter.accuracy import labelled_samples, measure_accuracy
from exporter.calibration import DEFAULT_IMAGES, load_calibration
from exporter.graphs import UnsplittableModel, tensor_specs
from exporter.quantize import CalibrationImages, QuantizationError, write_int8
from exporter.quantize.check import MAX_TOP1_DROP
from exporter.splits import plans_on_calibration, split_model
from exporter.targets import Int8Inputs, default_device, graph_precision, write_artifacts
from exporter.verify import TOLERANCE, Parity, ParityError, check_parity, verification_samples
from runtime.format.bundle import artifact_table, write_bundle, write_manifest
from runtime.format.devices import DEFAULT_DEVICES_FILE, Device, load_devices
from runtime.format.fields import Graph
from runtime.format.manifest import FORMAT_VERSION, Manifest, Preprocessing
from runtime.format.targets import get_target
from trainer.checkpoint import load_checkpoint

__all__ = ["export", "ExportReport", "ParityError", "QuantizationError", "UnsplittableModel"]

DEFAULT_MAX_BATCH = 32
ACCURACY_IMAGES = 1000


def _default_calibration(config: dict, say: Callable[[str], object]) -> tuple[torch.Tensor | None, str | None]:
    """The training split's first images, for a split whose plan is made on calibration images; where that split is
    not on this machine, none, said out loud: the plan then compiles only the full path whole."""
    source = f"{config['data']['dataset']} train, first {DEFAULT_IMAGES} images"
    try:
        images = load_calibration(f"train:{DEFAULT_IMAGES}", config)
    except (FileNotFoundError, ValueError) as error:
        say(f"WARNING: no calibration images ({error}): the plan fuses nothing and caches only the full path; "
            "pass --calibration FILE.npy or the data root the model trained on")
        return None, None
    say(f"calibrating the export plan on {source} (--calibration to choose others)")
    return images, source


def _check_cost_device(checkpoint, config: dict, target: str, device: Device | None) -> None:
    """A model whose decisions trained against one device's latency (trainer/device_costs.py) is exported for that
    device and target: on another, its choices would be tuned for the wrong costs."""
    cost = config.get("training", {}).get("cost", {})
    if cost.get("cost") != "latency":
        return
    here = (target, device.name if device else None)
    if here != (cost["target"], cost["device"]):
        raise ValueError(
            f"{checkpoint}: its decisions trained against latency on {cost['device']} for {cost['target']} "
            f"({cost['table']}); this export is for {target} on {here[1] or 'no device entry'}. Export with --target "
            f"{cost['target']} --device {cost['device']}, or retrain with costs measured there")


@dataclass(frozen=True)
class ExportReport:
    bundle: Path
    manifest: Manifest
    parity: Parity | None


def export(
    checkpoint: str | Path,
    target: str,
    out: str | Path,
    *,
    force: bool = False,
    verify: bool = True,
    samples: int = 64,
    tolerance: float = TOLERANCE,
    calibration: torch.Tensor | None = None,
    device: str | None = None,
    devices: str | Path = DEFAULT_DEVICES_FILE,
    max_batch: int | None = None,
    accuracy_images: int = ACCURACY_IMAGES,
    precision: str | None = None,
    calibration_source: str | None = None,
    max_top1_drop: float = MAX_TOP1_DROP,
    progress: Callable[[str], object] | None = None,
    plan: bool = True,
    **split_options,
) -> ExportReport:
    """Export `checkpoint` for `target` into the bundle directory `out`.

    With `verify`, the written bundle runs through the runtime on `samples`
    images before it is moved into place; a parity failure leaves no bundle.
    Logits may differ by `tolerance` x max(1, the largest |logit|).
    `calibration` (normalized NCHW images, from `calibration_source`, in
    words) drives the block families' plan: fused segments, left-out blocks
    and the most frequent paths compiled whole; an int8 bundle calibrates each
    graph on the inputs they route to it (default: the first 512 training
    images). `precision` (fp32, fp16 or int8; default: the device's) must be
    one the target writes; an int8 bundle that loses more than
    `max_top1_drop` top-1 against fp32, or moves logits beyond the int8
    tolerance, is refused (exporter/quantize).
    `device` names an entry of the `devices` file whose precision, compute
    units and batch sizes the target uses (default: the first device that
    runs the target). Every graph takes batches of 1 to `max_batch` (default: the
    device's, else 32).
    `split_options` are the options of the checkpoint's family's own split
    (its EXPORT_OPTIONS, exporter/splits); one it does not take is refused.
    `progress` is told, in a line, each stage as it starts: some take minutes.
    `plan=False` leaves out the calibration plan of a block split (no fused
    segments, left-out blocks or cached paths): every block its own graph, as a
    device cost table times them (python -m runtime.profile costs).
    Each operating point's top-1 on the first `accuracy_images` test images
    goes into the manifest, for budgets to rank points by (0, or a dataset
    not on this machine: none).
    """
    spec = get_target(target)
    out = Path(out)
    if out.exists() and not force:
        raise FileExistsError(f"{out} already exists; pass --force to replace it")
    known = load_devices(devices)
    if device is not None and device not in known:
        raise ValueError(f"unknown device {device!r}; {devices} lists {sorted(known)}")
    chosen = known[device] if device else default_device(target, known)
    max_batch = max_batch or (chosen.max_batch if chosen else DEFAULT_MAX_BATCH)
    if max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, got {max_batch}")
    model, config = load_checkpoint(checkpoint)
    _check_cost_device(checkpoint, config, target, chosen)
    data = config["data"]
    precision = precision or (chosen.precision if chosen else spec.precisions[0])
    if precision not in spec.precisions:
        why = f" (device {chosen.name}'s)" if chosen and precision == chosen.precision else ""
        raise ValueError(f"target {target} writes precision {list(spec.precisions)}, not {precision!r}{why}")
    int8_calibration = None
    if precision == "int8" and spec.calibrates_int8 and calibration is None:
        calibration_source = f"{data['dataset']} train, first {DEFAULT_IMAGES} images"
        calibration = load_calibration(f"train:{DEFAULT_IMAGES}", config)
    if precision == "int8" and spec.calibrates_int8:
        int8_calibration = CalibrationImages(calibration, calibration_source or "images passed to export()")
    say = progress or (lambda line: None)
    if calibration is None and plan and plans_on_calibration(config["family"]):
        calibration, calibration_source = _default_calibration(config, say)
    say(f"splitting the {config['family']} model")
    split = split_model(
        model, config["family"], data["resolution"], calibration=calibration if plan else None,
        checkpoint=Path(checkpoint), target=target, precision=precision, **split_options,
    )
    verify_backend = spec.verify_backend if verify else None
    labelled = labelled_samples(config, accuracy_images) if accuracy_images else None
    result: dict = {}

    def write(directory: Path, target: str, int8: Int8Inputs) -> Manifest:
        """`split`'s graphs for `target` at `precision`, those in `int8` as int8, and their manifest."""
        say(f"writing {len(split.graphs)} graphs for {target} at {precision if not int8 else 'int8'}")
        written = write_artifacts(
            target, split.graphs, directory, device=chosen, max_batch=max_batch, precision=precision, int8=int8
        )
        graphs = {}
        for graph in split.graphs:
            inputs, outputs = tensor_specs(graph)
            artifact, entry = written.placement[graph.name]
            graphs[graph.name] = Graph(graph.name, artifact, entry, inputs, outputs, graph.macs,
                                       precision=graph_precision(target, precision, graph.name in int8))
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            family=config["family"],
            target=target,
            classes=tuple(data["classes"]),
            max_batch=max_batch,
            preprocessing=Preprocessing(data["resolution"], tuple(data["mean"]), tuple(data["std"]), crop=data.get("crop")),
            graphs=graphs,
            dispatch=split.dispatch,
            artifacts=artifact_table(directory),
            producer={
                "tool": "exporter",
                "version": version("adaptive-edge"),
                "torch": torch.__version__,
                "recipe": config["recipe"],
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                **({"device": chosen.name} if chosen else {}),
            },
            build=written.build,
        )
        write_manifest(directory, manifest)
        return manifest

    def parity(bundle: Path, backend: str) -> Parity:
        say(f"checking parity with PyTorch on {samples} images through {backend}")
        return check_parity(
            bundle, split.reference, verification_samples(config, samples),
            scales=split.scales, path_reference=split.path_reference, backend=backend, tolerance=tolerance,
        )

    def fill(staging: Path) -> None:
        if precision == "int8":
            held_out = (labelled[0].numpy(), labelled[1]) if labelled else (verification_samples(config, samples).numpy(), None)
            manifest = write_int8(
                write, staging, target=target, split=split, calibration=int8_calibration, held_out=held_out,
                verify_backend=verify_backend, parity=parity, max_top1_drop=max_top1_drop,
            )
        else:
            manifest = write(staging, target, {})
            if verify_backend:
                result["parity"] = parity(staging, verify_backend)
        if labelled is not None:
            say(f"measuring each operating point's top-1 on {len(labelled[1])} test images")
            accuracy = measure_accuracy(staging, manifest, split, labelled, spec.verify_backend)
            manifest = dataclasses.replace(manifest, accuracy=accuracy)
            write_manifest(staging, manifest)
        result["manifest"] = manifest

    write_bundle(out, fill, force=force)
    return ExportReport(out, result["manifest"], result.get("parity"))
