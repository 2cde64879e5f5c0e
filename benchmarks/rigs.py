"""What the deployment benchmarks share: the targets they run here, the machine they ran on, and the rigged models.

Latency depends on shapes, not weight values, so the deployment benchmarks
export models with random weights, BN statistics measured on calibration
images (so that activations keep a trained network's scale through every
block), and a selector, policy or gates rigged to the usage pattern under
study. `RiggedBundles` builds each rigged checkpoint and exports its bundles
once under a work directory.

Nothing here imports torch until a model is built: runtime_costs.py's memory
probes import this module in fresh processes and measure what they load.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import numpy as np

from runtime.format.latency_table import walk_paths
from runtime.format.manifest import Preprocessing
from runtime.format.targets import TARGETS
from runtime.preprocess import prepare

__all__ = [
    "HOST_TARGETS", "MEAN", "STD", "DEPTH", "BLOCKS", "UNDECIDED", "SCALE", "UNDECIDED_GATES", "CALLS_PER_ROUND",
    "FORCED", "FLOOR", "machine", "image_stream", "timed_points", "normalized",
    "sane_bn", "sane_drnet_bn", "checkpoint_config", "rigged_blockdrop", "RiggedModel", "build_drnet",
    "build_blockdrop", "build_urnet", "MODELS", "Bench", "RiggedBundles", "write_static_model",
]

# The targets the deployment benchmarks run on this machine, each by its own backend: those whose backend is the one
# that verifies them here (onnx on onnxruntime, executorch on executorch).
HOST_TARGETS: dict[str, str] = {t.name: t.backend for t in TARGETS.values() if t.verify_backend == t.backend}

MEAN, STD = (0.5,) * 3, (0.25,) * 3  # the rigged CIFAR-shaped models' normalization
DEPTH, BLOCKS = 110, 54  # the rigged BlockDrop and URNet: a CIFAR ResNet-110
UNDECIDED = 4  # rigged BlockDrop: the blocks its policy decides per image (2**UNDECIDED paths)
SCALE = 0.5  # rigged URNet: the compute scale S its gates are rigged at
UNDECIDED_GATES = 4  # rigged URNet: the gates decided per image (the rest fixed open or closed)


def machine() -> dict:
    """Where a benchmark ran: the machine, its CPU count, and the versions of what it measured."""
    versions = [f"python {platform.python_version()}", f"numpy {np.__version__}"]
    for package in ("onnxruntime", "onnx", "executorch", "torch"):
        try:
            versions.append(f"{package} {version(package)}")
        except Exception:  # not installed: the row that needs it will fail loudly
            pass
    return {"machine": f"{platform.machine()} {platform.system()} {platform.release()}", "cpus": os.cpu_count(),
            "versions": ", ".join(versions)}


CALLS_PER_ROUND = 20  # single-image calls in one timed sample of a dynamic model


def image_stream(session, images: np.ndarray, seed: int = 0, **options) -> Callable[[], object]:
    """One timed sample of a dynamic model: CALLS_PER_ROUND calls of `session.run`, each on a new image drawn from
    `images` in a seeded random order.

    A dynamic model's latency is its mean over the images it serves (paths of
    different cost), so a sample spans many images and the benchmark reports
    the median of samples over CALLS_PER_ROUND: the mean per image, robust to
    the noisy rounds a single call's median would need to be robust to, and
    not the cost of whichever path the median image happens to take.
    """
    singles = [images[i : i + 1] for i in range(len(images))]
    picks = iter(np.random.default_rng(seed).permutation(np.resize(np.arange(len(singles)), 10**6)))
    return lambda: [session.run(singles[next(picks)], **options) for _ in range(CALLS_PER_ROUND)]


FORCED = "path="  # a point that forces one path: reached by the model, not chosen by its selector
FLOOR = "floor"  # a block rule's every block dropped: its latency floor, what no user deploys


def timed_points(session, scales: tuple[float, ...] | None = None) -> dict[str, dict]:
    """The `Session.run` options a benchmark times a bundle at, by point name: its one dynamic point, or where it is
    steered (URNet) each S of `scales` (default: the S points it offers); each path it can be forced to (DRNet's
    resolutions, BlockDrop's cached paths); its floor where it walks blocks; and its static full model."""
    dispatch = session.manifest.dispatch
    offered = dispatch.operating_points(session.manifest.graphs)
    steered = [p.value for p in offered if p.kind == "scale"]
    points = {f"S={s}": {"scale": s} for s in scales or steered} if steered else {"dynamic": {}}
    points |= {f"{FORCED}{p.name}": p.options for p in offered if p.kind == "path"}
    walk = dispatch.block_walk()
    if walk is not None:
        points[FLOOR] = {"path": walk_paths(len(walk.starts))[0]}
    return points | {"static": {"static": True}}


# ---------------------------------------------------------------- rigging


def normalized(images: np.ndarray):
    """uint8 NHWC images as the runtime feeds them to a rigged CIFAR-shaped model's graphs: a torch tensor."""
    import torch

    return torch.from_numpy(prepare(images, Preprocessing(32, MEAN, STD)))


def sane_bn(model, passes: Callable[[], None]) -> None:
    """Random weights, BN statistics measured over what `passes` runs (the calibration images), then eval mode."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average over the passes
    model.train()
    with torch.no_grad():
        passes()
    model.eval()


def sane_drnet_bn(model, x) -> None:
    """A DRNet's BN statistics from `x` (normalized): every candidate's BN set at its resolution, and the predictor's."""
    def passes():
        for index in range(len(model.resolutions)):
            model.backbone_logits(x, index)
        model.predictor_logits(x)

    sane_bn(model, passes)


def checkpoint_config(family: str, recipe: str, model_config: dict, info) -> dict:
    """The checkpoint config of a rigged model: no dataset on disk (`info` is a trainer.data.DataInfo)."""
    return {"family": family, "recipe": recipe, "model": model_config, "data": info.to_dict(), "data_root": None}


def _rigged_cifar10():
    """The data a rigged CIFAR-shaped model states: ten classes, the rig's normalization."""
    from trainer.data import DataInfo

    return DataInfo("cifar10", tuple(f"class{i}" for i in range(10)), MEAN, STD, 32)


def rigged_blockdrop(images: np.ndarray, seed: int = 0):
    """BlockDrop ResNet-110: half the blocks always off, and of the rest UNDECIDED decided per image, each kept for
    about half of `images`. Returns (model, checkpoint config)."""
    import torch

    from trainer.families import blockdrop

    torch.manual_seed(seed)
    model_config = {"depth": DEPTH, "width": 16, "num_classes": 10,
                    "options": dataclasses.asdict(blockdrop.BlockDropOptions())}
    model = blockdrop.build(model_config)
    x = normalized(images)

    def passes():
        for _ in range(4):
            model.backbone(x)
            model.policy(x)

    sane_bn(model, passes)
    generator = torch.Generator().manual_seed(seed)
    bias = torch.where(torch.rand(BLOCKS, generator=generator) < 0.5, -9.0, 9.0)
    undecided = torch.randperm(BLOCKS, generator=generator)[:UNDECIDED]
    policy = model.policy
    with torch.no_grad():
        trunk = policy.stem(x)
        for block in policy.blocks:
            trunk = block(trunk)
        features = policy.head[:-1](trunk)
        directions = torch.randn(UNDECIDED, features.shape[1], generator=generator)
        directions /= (features @ directions.T).std(dim=0).view(-1, 1)  # one std of margin per unit of logit
        head = policy.head[-1]
        head.weight.zero_()
        head.weight[undecided] = 4.0 * directions
        bias[undecided] = -4.0 * (features @ directions.T).median(dim=0).values  # each kept for half the images
        head.bias.copy_(bias)
    return model, checkpoint_config("blockdrop", f"blockdrop-rigged-resnet{DEPTH}", model_config, _rigged_cifar10())


@dataclass
class RiggedModel:
    """A rigged model, its checkpoint config, and what was rigged, in words (the results state it)."""

    model: object
    config: dict
    rig: str


def build_drnet(depth: int, images: np.ndarray, seed: int = 0) -> RiggedModel:
    """The drnet-digits recipe's DRNet options at `depth`; its predictor rigged to spread images over the resolutions."""
    import torch

    from trainer.data import load_split
    from trainer.families import drnet
    from trainer.recipes import get_recipe

    torch.manual_seed(seed)
    recipe = get_recipe("drnet-digits")
    if depth == recipe.depth:
        info, name = load_split(recipe.dataset, "test")[1], recipe.name  # the demo's classes and statistics
    else:
        info, name = _rigged_cifar10(), f"drnet-rigged-resnet{depth}"
    model_config = {"depth": depth, "width": recipe.width, "num_classes": len(info.classes),
                    "options": dataclasses.asdict(recipe.options)}
    model = drnet.build(model_config)
    x = torch.from_numpy(prepare(images, Preprocessing(32, info.mean, info.std)))
    sane_drnet_bn(model, x)
    # The rig: the predictor's last linear layer scores each resolution along a random
    # direction of its features, centred on the calibration images, so argmax spreads them.
    head = model.predictor.head[-1]
    captured = []
    hook = head.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0]))
    with torch.no_grad():
        model.predictor_logits(x)
        hook.remove()
        features = captured[0]
        generator = torch.Generator().manual_seed(seed)
        directions = torch.randn(len(model.resolutions), features.shape[1], generator=generator)
        directions /= (features @ directions.T).std(dim=0).view(-1, 1)
        head.weight.copy_(2.0 * directions)
        head.bias.copy_(-2.0 * (features @ directions.T).median(dim=0).values)
    rig = ("random weights, BN statistics from the calibration images; predictor's last layer rigged "
           "(random directions of its features, centred) so argmax spreads images over the resolutions")
    return RiggedModel(model, checkpoint_config("drnet", name, model_config, info), rig)


def build_blockdrop(images: np.ndarray) -> RiggedModel:
    model, config = rigged_blockdrop(images)
    rig = (f"benchmarks/rigs.py's rigged_blockdrop: random weights, BN statistics from data; policy rigged so about "
           f"half the {BLOCKS} blocks are always off and {UNDECIDED} are decided per image (up to {2**UNDECIDED} paths)")
    return RiggedModel(model, config, rig)


def build_urnet(images: np.ndarray, seed: int = 0) -> RiggedModel:
    """URNet ResNet-110 (urnet-cifar10-resnet110's options), random weights; gates rigged only if S=0.5 does not mix them."""
    import torch

    from trainer.families import urnet
    from trainer.recipes import get_recipe

    torch.manual_seed(seed)
    recipe = get_recipe("urnet-cifar10-resnet110")
    model_config = {"depth": recipe.depth, "width": recipe.width, "num_classes": 10,
                    "options": dataclasses.asdict(recipe.options)}
    model = urnet.build(model_config)
    x = normalized(images)
    sane_bn(model, lambda: model.backbone(x))
    natural = model.infer(x, SCALE)
    usage = float(natural.blocks.float().mean())
    distinct = len(set(natural.paths))
    note = f"unrigged at S={SCALE}: block usage {usage:.2f}, {distinct} distinct paths over {len(x)} images"
    if 0.1 < usage < 0.9 and distinct > 1:
        rig = f"random weights, BN statistics from data; gates not rigged ({note})"
    else:
        rig = f"random weights, BN statistics from data; {note}, so the gates are rigged: {_rig_gates(model, x, seed)}"
    config = checkpoint_config("urnet", "urnet-rigged-resnet110", model_config, _rigged_cifar10())
    return RiggedModel(model, config, rig)


def _rig_gates(model, x, seed: int) -> str:
    """Rig URNet's gates at S=SCALE: about half the blocks always closed, the rest open, UNDECIDED_GATES decided per
    image. Returns the rig, in words."""
    import torch

    from trainer.block_loop import run_blocks

    count = model.num_blocks
    generator = torch.Generator().manual_seed(seed)
    side = torch.where(torch.rand(count, generator=generator) < 0.5, -9.0, 9.0)
    undecided = set(torch.randperm(count, generator=generator)[:UNDECIDED_GATES].tolist())
    scale = torch.full((len(x),), SCALE)

    def decide(k: int, h):
        # At S=SCALE, gate k's logit without its last bias, scaled to unit spread over the images;
        # the bias then centres it (undecided: open for half) or pushes it 9 spreads open or closed.
        gate = model.gates[k]
        gate.fc2.bias.zero_()
        raw = gate(h, scale)
        gate.fc2.weight.div_(raw.std().clamp_min(1e-6))
        raw = gate(h, scale)
        middle = raw.median()
        gate.fc2.bias.fill_(float(-middle + (0.0 if k in undecided else side[k])))
        return gate(h, scale) > 0

    with torch.no_grad():
        run_blocks(model.backbone, x, decide)
    rigged = model.infer(x, SCALE)
    return (f"each gate's last layer is rescaled and biased at S={SCALE} so about half the {count} blocks are always "
            f"closed, the rest open, and {UNDECIDED_GATES} are decided per image (calibration: usage "
            f"{float(rigged.blocks.float().mean()):.2f}, {len(set(rigged.paths))} distinct paths)")


MODELS: dict[str, Callable[[np.ndarray], RiggedModel]] = {  # rigged model name -> its builder from calibration images
    "drnet-digits": lambda images: build_drnet(8, images),
    "drnet-resnet56": lambda images: build_drnet(56, images),
    "blockdrop-resnet110": build_blockdrop,
    "urnet-resnet110": build_urnet,
}


# ---------------------------------------------------------------- bundles


@dataclass(frozen=True)
class Bench:
    """A bundle a benchmark exports: a rigged model and how it is exported."""

    name: str
    model: str  # key of the models RiggedBundles builds
    options: dict = field(default_factory=dict)  # the family split's own export options (its EXPORT_OPTIONS)
    calibrate: bool = False  # export with the calibration images: the block families' plan


class RiggedBundles:
    """Rigged checkpoints and their bundles under `work`, each built once (and reused across runs when `work` is kept).

    `models` maps a model's name to its builder, which gets the calibration images.
    """

    def __init__(self, work: Path, calibration: np.ndarray,
                 models: Mapping[str, Callable[[np.ndarray], RiggedModel]] = MODELS) -> None:
        self.work, self.calibration, self.models = work, calibration, models
        self.reused: list[str] = []  # bundles found in `work`, not exported by this run

    def checkpoint(self, model: str) -> tuple[Path, str]:
        """The rigged model's checkpoint directory, and its rig in words."""
        from trainer.checkpoint import save_checkpoint

        directory = self.work / "checkpoints" / model
        note = directory / "rig.txt"
        if not (directory / "config.json").exists():
            started = time.perf_counter()
            built = self.models[model](self.calibration)
            save_checkpoint(directory, built.model, built.config)
            note.write_text(built.rig)
            print(f"  built {model} in {time.perf_counter() - started:.0f} s", flush=True)
        return directory, note.read_text()

    def export(self, model: str, target: str, name: str, **options) -> tuple[Path, str]:
        """The rigged `model` exported for `target` with `exporter.export`'s `options`, as the bundle `<name>-<target>`:
        its directory and the model's rig. Its parity goes beside it (`parity`)."""
        import exporter

        checkpoint, rig = self.checkpoint(model)
        out = self.directory(self.work, name, target)
        if (out / "manifest.json").exists():
            if out.name not in self.reused:
                self.reused.append(out.name)
            return out, rig
        started = time.perf_counter()
        report = exporter.export(checkpoint, target, out, **options)
        parity = report.parity.summary() if report.parity else "not verified"
        self._parity_file(out).write_text(parity)
        print(f"  exported {out.name} in {time.perf_counter() - started:.0f} s; parity {parity}", flush=True)
        return out, rig

    def bundle(self, bench: Bench, target: str) -> tuple[Path, str]:
        """`bench`'s bundle for `target`, and its model's rig."""
        options = dict(bench.options)
        if bench.calibrate:
            options["calibration"] = normalized(self.calibration)
        return self.export(bench.model, target, bench.name, **options)

    @staticmethod
    def directory(work: Path, name: str, target: str) -> Path:
        """Where bundle `<name>-<target>` lives under the work directory `work`."""
        return work / "bundles" / f"{name}-{target}"

    def parity(self, bundle: Path) -> str:
        """The parity check of an exported bundle, in words."""
        path = self._parity_file(bundle)
        return path.read_text() if path.exists() else "unknown"

    @staticmethod
    def _parity_file(bundle: Path) -> Path:
        return bundle.parent / f"{bundle.name}.parity.txt"


def write_static_model(model, family: str, target: str, directory: Path, max_batch: int) -> Path:
    """The static full model alone (the split's `full` graph), written once into `directory` by the same target writer
    as the bundles: the honest baseline of a bundle's size and memory."""
    from exporter.splits import split_model
    from exporter.targets import write_artifacts

    if not directory.exists():
        directory.mkdir(parents=True)
        full = tuple(g for g in split_model(model, family, 32).graphs if g.name == "full")
        write_artifacts(target, full, directory, device=None, max_batch=max_batch)
    return directory
