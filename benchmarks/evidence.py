"""What the CIFAR-10 evidence scripts share: named runs from a pretrained backbone, resumable, and checked claims.

A run is a family recipe at a stated budget, trained from a committed backbone
(`--init`, the papers' protocol). Its checkpoint directory makes it resumable
over sessions: a finished run is read back, an interrupted one resumes exactly.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from runtime.format.files import atomic_write, sha256_of
from trainer.checkpoint import publish_checkpoint, read_config
from trainer.device_costs import DeviceCosts
from trainer.families import get_family
from trainer.pretrained import load_backbone
from trainer.recipes import Recipe, get_recipe
from trainer.resume import STATE_FILE
from trainer.train import train

__all__ = ["Evidence", "Run", "arguments", "summary", "run_section", "claim", "write_results", "results_name",
           "DEFAULT_INIT", "PUBLISHED", "RESULTS", "TRAINED"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_INIT = ROOT / "benchmarks" / "weights" / "resnet-cifar10-20.safetensors"
PUBLISHED = ROOT / "benchmarks" / "weights"  # <evidence>/<run>/: the deployed runs' models, committed
TRAINED = {  # label: checkpoint directory of a trained model, as the demo writes it or the evidence publishes it
    "DRNet, digits (demo)": ROOT / "runs" / "demo" / "checkpoint",
    "URNet, CIFAR-10": PUBLISHED / "blocks_cifar10" / "urnet-paper-gates-100",
    "BlockDrop, CIFAR-10": PUBLISHED / "blocks_cifar10" / "blockdrop-finetune-30",
    "DRNet, CIFAR-10": PUBLISHED / "drnet_cifar10" / "drnet",
}


def results_name(name: str, *, reduced: bool) -> str:
    """The results' name of a run of a benchmark: a reduced or partial run adds `_smoke`, which git ignores,
    so that it never replaces the evidence."""
    return f"{name}_smoke" if reduced else name


def residual_blocks(depth: int) -> int:
    """A CIFAR ResNet-`depth` has three stages of (depth - 2) / 6 blocks."""
    return 3 * ((depth - 2) // 6)


@dataclass(frozen=True)
class Run:
    """One trained model of the evidence: a recipe, its epochs at this budget, and what differs from the paper."""

    name: str
    recipe: str
    epochs: dict[str, int | str]  # per phase; "blocks": one epoch per residual block (BlockDrop's curriculum)
    lr: dict[str, float] = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    deviations: tuple[str, ...] = ()  # may name {backbone} and {blocks}: the pretrained ResNet's
    default: bool = True  # run unless --runs names others
    deployed: bool = False  # the deployment benchmarks measure it (TRAINED): its model is published to PUBLISHED

    def recipe_for(self, depth: int, epoch_scale: float = 1.0) -> Recipe:
        """The recipe at this budget, on a backbone of `depth` (the pretrained one's). Unlisted phases are off."""
        recipe = get_recipe(self.recipe)
        blocks = residual_blocks(depth)
        epochs = {name: blocks if count == "blocks" else count for name, count in self.epochs.items()}
        phases = {
            name: dataclasses.replace(
                phase, epochs=max(1, round(epochs[name] * epoch_scale)) if name in epochs else 0,
                lr=self.lr.get(name, phase.lr),
            )
            for name, phase in recipe.phases.items()
        }
        options = dataclasses.replace(recipe.options, **self.options)
        return dataclasses.replace(recipe, name=f"{self.name}-cifar10", depth=depth, phases=phases, options=options)


def arguments(description: str) -> argparse.ArgumentParser:
    """The options every evidence script takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data" / "cifar10")
    parser.add_argument("--init", type=Path, default=DEFAULT_INIT, help="the pretrained backbone (default: %(default)s)")
    parser.add_argument("--subset", type=int, help="train on a fixed random subset (default: all 50,000 images)")
    parser.add_argument("--epoch-scale", type=float, default=1.0, help="scale every phase's epochs (smoke runs)")
    parser.add_argument("--out", type=Path, help="the runs' directory (default: runs/<the evidence's name>)")
    return parser


@dataclass(frozen=True)
class Evidence:
    """One evidence script's runs and report, from one pretrained backbone.

    From the default backbone the name is the script's (blocks_cifar10); from
    another it adds the backbone's recipe (blocks_cifar10_resnet-cifar10-56).
    Runs of the same name from two backbones thus never share a checkpoint
    directory, a report or figures. A reduced run (`--subset`, `--epoch-scale`)
    adds `_smoke`: it never replaces the evidence.
    """

    name: str  # benchmarks/results/<name>.{md,json}, figures under results/<name>_<run>/
    runs: Path  # <runs>/<run>: each run's checkpoint directory
    reduced: bool  # --subset or --epoch-scale: results *_smoke, nothing published
    init: Path
    init_sha256: str
    depth: int  # the backbone's, which the recipes are built for

    @classmethod
    def from_arguments(cls, args: argparse.Namespace, script: str) -> Evidence:
        _, record = load_backbone(args.init)
        if record is None:
            raise ValueError(f"{args.init}: the CIFAR evidence starts from a backbone with its record "
                             "(benchmarks/weights/*.safetensors and .json)")
        default = args.init.resolve() == DEFAULT_INIT.resolve()
        reduced = args.subset is not None or args.epoch_scale != 1.0
        name = results_name(script if default else f"{script}_{record.recipe}", reduced=reduced)
        return cls(name, args.out or ROOT / "runs" / name, reduced, args.init, sha256_of(args.init),
                   record.architecture["depth"])

    def previous_results(self) -> dict:
        """The runs an earlier invocation reported from this backbone: the report keeps them."""
        path = RESULTS / f"{self.name}.json"
        results = json.loads(path.read_text())["results"] if path.is_file() else {}
        return {name: result for name, result in results.items() if result["init"]["sha256"] == self.init_sha256}

    def trained(self, recipe: Recipe, run: Run, *, data_root: Path, subset: int | None,
                costs: DeviceCosts | None = None) -> tuple[dict, str]:
        """The run's checkpoint config (with its metrics) and how it came about: in one go or resumed, and whether
        this process trained it or read it back. A deployed run's model is published to PUBLISHED. `costs`: the
        decisions train against a device's latency (trainer/device_costs.py)."""
        config, how = self._trained(recipe, run.name, data_root=data_root, subset=subset, costs=costs)
        if run.deployed and not self.reduced:
            publish_checkpoint(self.runs / run.name, PUBLISHED / self.name / run.name)
        return config, how

    def _trained(self, recipe: Recipe, run: str, *, data_root: Path, subset: int | None,
                 costs: DeviceCosts | None) -> tuple[dict, str]:
        out = self.runs / run
        finished = (out / "config.json").is_file() and not (out / STATE_FILE).is_file()
        if finished:
            config = read_config(out)
            started_from = config["training"]["init"]
            if started_from["sha256"] != self.init_sha256:
                raise ValueError(f"{out} was trained from {started_from['weights']}, not {self.init}; "
                                 "give runs from another backbone their own --out")
            cost, trained = "macs" if costs is None else "latency", config["training"].get("cost", {"cost": "macs"})
            if trained["cost"] != cost:
                raise ValueError(f"{out} was trained against {trained['cost']}, not {cost}; "
                                 "move it aside to train the run again")
            if changed := _changed_settings(recipe, config):
                raise ValueError(f"{out / 'config.json'} was trained with other settings than run {run!r} now "
                                 f"states ({'; '.join(changed)}); move it aside to train the run again")
        else:
            config = train(recipe, out, data_root=data_root, subset=subset, init=self.init,
                           resume=(out / STATE_FILE).is_file(), costs=costs)
        how = "resumed after an interruption" if config["training"]["resumed"] else "trained in one go"
        return config, f"{how}, read back" if finished else how


def _changed_settings(recipe: Recipe, config: dict) -> list[str]:
    """What a finished run was trained with that its Run no longer states: phases and family options.

    Both sides go through JSON, as the trainer records them (tuples become lists), and without the phases
    a start from pretrained weights skips, as the trainer records them.
    """
    recipe = recipe.without(get_family(recipe.family).init_skips)
    stated = json.loads(json.dumps({
        **{f"{name} {key}": value for name, phase in recipe.phases.items()
           for key, value in dataclasses.asdict(phase).items()},
        **{f"option {key}": value for key, value in dataclasses.asdict(recipe.options).items()},
    }))
    recorded = {
        **{f"{name} {key}": value for name, phase in config["training"]["phases"].items() for key, value in phase.items()},
        **{f"option {key}": value for key, value in config["model"]["options"].items()},
    }
    return [f"{key}: trained {recorded.get(key)}, stated {value}"
            for key, value in stated.items() if recorded.get(key) != value]


def summary(run: Run, config: dict, how: str, command: str) -> dict:
    """What the results keep of a run: its settings, deviations, starting point, cost and metrics."""
    training, depth = config["training"], config["model"]["depth"]
    deviations = [d.format(backbone=f"ResNet-{depth}", blocks=residual_blocks(depth)) for d in run.deviations]
    return {
        "command": command, "family": config["family"], "phases": training["phases"],
        "options": config["model"]["options"], "deviations": deviations, "init": training["init"],
        "train_images": training["train_images"], "how": how, "wall_time_s": training["wall_time_s"],
        "cpu_time_s": training.get("cpu_time_s"),  # runs trained before it was recorded have none
        "metrics": config["metrics"],
    }


def run_section(name: str, result: dict) -> list[str]:
    """A results section's opening for one run (as `summary` keeps it): command, phases, cost, options, deviations."""
    phases = ", ".join(f"{n} {p['epochs']} epochs ({p['optimizer']}, lr {p['lr']:g}, {p['schedule']})"
                       for n, p in result["phases"].items() if p["epochs"])
    return [
        "",
        f"## {name}",
        "",
        f"Command: `{result['command']}`. {result['train_images']} training images. Phases: {phases}. "
        f"Wall time {result['wall_time_s']:.0f} s{_cpu_time(result)} ({result['how']}).",
        "",
        "Options: " + ", ".join(f"{k}={v}" for k, v in result["options"].items()) + ".",
        "",
        "Deviations from the paper: " + ("; ".join(result["deviations"]) or "none") + ".",
        "",
    ]


def _cpu_time(result: dict) -> str:
    """Wall time counts the pauses of a shared machine (training is stopped while benchmarks run); CPU time not."""
    cpu = result.get("cpu_time_s")
    return "" if cpu is None else f", CPU time {cpu:.0f} s"


def claim(text: str, holds: bool | None, evidence: str) -> dict:
    return {"claim": text, "verdict": {True: "holds", False: "does not hold", None: "not measured"}[holds],
            "evidence": evidence}


def write_results(stem: str, command: str, results: dict, claims: list[dict], text: str) -> None:
    """benchmarks/results/<stem>.{json,md}, each written atomically, and the verdicts printed."""
    payload = json.dumps({"command": command, "results": results, "claims": claims}, indent=2)
    atomic_write(RESULTS / f"{stem}.json", lambda path: Path(path).write_text(payload))
    atomic_write(RESULTS / f"{stem}.md", lambda path: Path(path).write_text(text))
    for verdict in claims:
        print(f"{verdict['verdict']}: {verdict['claim']} ({verdict['evidence']})")
