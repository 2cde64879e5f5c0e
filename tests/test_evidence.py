"""The evidence scripts keep each backbone's runs apart, and never let a smoke run replace the evidence."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
from helpers import CIFAR10_ROOT, REPO_ROOT

from benchmarks.blocks_cifar10 import blockdrop_run, urnet_sweep
from benchmarks.evidence import DEFAULT_INIT, Evidence, arguments
from runtime.format.files import sha256_of
from trainer.checkpoint import CONFIG_VERSION
from trainer.pretrained import record_path


def evidence(*argv: str) -> Evidence:
    return Evidence.from_arguments(arguments("test").parse_args(list(argv)), "blocks_cifar10")


def moved_backbone(tmp_path, recipe: str):
    """The committed ResNet-20 under another name, its record claiming `recipe` (sha256 unchanged)."""
    weights = tmp_path / f"{recipe}.safetensors"
    shutil.copy(DEFAULT_INIT, weights)
    record = json.loads(record_path(DEFAULT_INIT).read_text()) | {"recipe": recipe}
    record_path(weights).write_text(json.dumps(record))
    return weights


def test_the_default_backbone_keeps_the_scripts_name():
    default = evidence()
    assert default.name == "blocks_cifar10" and default.runs.name == "blocks_cifar10"
    assert default.depth == 20 and default.init_sha256 == sha256_of(DEFAULT_INIT)


def test_another_backbone_names_its_runs_and_report_after_its_recipe(tmp_path):
    other = evidence("--init", str(moved_backbone(tmp_path, "resnet-cifar10-56")))
    assert other.name == "blocks_cifar10_resnet-cifar10-56"
    assert other.runs.name == "blocks_cifar10_resnet-cifar10-56"


@pytest.mark.parametrize("reduced", [["--subset", "256"], ["--epoch-scale", "0.1"]])
def test_a_reduced_run_is_named_apart_from_the_evidence(reduced):
    assert evidence(*reduced).name == "blocks_cifar10_smoke"


RUN = blockdrop_run("blockdrop", 10)
BLOCKDROP = RUN.recipe_for(depth=20)


def finished_run(tmp_path, *, init: dict, resumed: bool = False, finetune_epochs: int = 10):
    """A finished BlockDrop run's checkpoint config, as the trainer records it, under tmp_path/runs/blockdrop."""
    run = tmp_path / "runs" / "blockdrop"
    run.mkdir(parents=True)
    trained = blockdrop_run("blockdrop", finetune_epochs).recipe_for(depth=20).without(("pretrain",))
    config = {
        "config_version": CONFIG_VERSION,
        "model": {"options": dataclasses.asdict(trained.options)},
        "training": {"resumed": resumed, "init": init,
                     "phases": {name: dataclasses.asdict(phase) for name, phase in trained.phases.items()}},
    }
    (run / "config.json").write_text(json.dumps(config))
    return json.loads((run / "config.json").read_text())


def test_a_run_trained_from_other_weights_is_refused_by_name(tmp_path):
    finished_run(tmp_path, init={"weights": "elsewhere.safetensors", "sha256": "0" * 64})
    from_default = evidence("--out", str(tmp_path / "runs"))
    with pytest.raises(ValueError, match=r"blockdrop was trained from elsewhere\.safetensors, not .*resnet-cifar10-20"):
        from_default.trained(BLOCKDROP, RUN, data_root=None, subset=None)


def test_a_run_trained_from_the_same_weights_is_read_back_with_how_it_came_about(tmp_path):
    config = finished_run(tmp_path, init={"weights": str(DEFAULT_INIT), "sha256": sha256_of(DEFAULT_INIT)}, resumed=True)
    read, how = evidence("--out", str(tmp_path / "runs")).trained(BLOCKDROP, RUN, data_root=None, subset=None)
    assert read == config and how == "resumed after an interruption, read back"


def test_a_run_trained_with_other_settings_than_its_run_states_is_refused_by_setting(tmp_path):
    """A run whose definition changed (here 30 joint epochs) must not report the old checkpoint as the new run."""
    finished_run(tmp_path, init={"weights": str(DEFAULT_INIT), "sha256": sha256_of(DEFAULT_INIT)}, finetune_epochs=30)
    with pytest.raises(ValueError, match=r"blockdrop/config\.json was trained with other settings .*"
                                         r"finetune epochs: trained 30, stated 10"):
        evidence("--out", str(tmp_path / "runs")).trained(BLOCKDROP, RUN, data_root=None, subset=None)


@pytest.mark.parametrize("reduced", [[], ["--subset", "256"]])
def test_a_deployed_run_is_published_for_the_deployment_benchmarks_unless_reduced(tmp_path, monkeypatch, reduced):
    """What TRAINED points at must be in the repository: a fresh clone measures it without retraining."""
    import benchmarks.evidence as module

    published = []
    monkeypatch.setattr(module, "publish_checkpoint", lambda source, to: published.append((source, to)))
    monkeypatch.setattr(module, "PUBLISHED", tmp_path / "weights")
    finished_run(tmp_path, init={"weights": str(DEFAULT_INIT), "sha256": sha256_of(DEFAULT_INIT)})
    runs = ["--out", str(tmp_path / "runs")]
    evidence(*runs, *reduced).trained(BLOCKDROP, RUN, data_root=None, subset=None)
    assert published == []
    evidence(*runs, *reduced).trained(BLOCKDROP, dataclasses.replace(RUN, deployed=True), data_root=None, subset=None)
    assert published == ([] if reduced else [(tmp_path / "runs" / "blockdrop", tmp_path / "weights" / "blocks_cifar10" / "blockdrop")])


def test_the_scale_sweep_holds_each_urnet_run_as_the_share_of_its_blocks_run():
    def point(scale, accuracy, blocks):
        return {"scale": scale, "model": {"accuracy": accuracy, "blocks_mean": blocks}}

    results = {
        "urnet-a": {"family": "urnet", "metrics": {"num_blocks": 9, "operating_points": [point(0.2, 0.5, 1.8),
                                                                                         point(1.0, 0.9, 9.0)]}},
        "blockdrop": {"family": "blockdrop", "metrics": {"num_blocks": 9}},
    }
    assert urnet_sweep(results) == {"urnet-a": {0.2: (50.0, 0.2), 1.0: (90.0, 1.0)}}


def test_trained_points_at_the_runs_the_evidence_deploys():
    from benchmarks import blocks_cifar10, drnet_cifar10
    from benchmarks.evidence import PUBLISHED, TRAINED

    deployed = {PUBLISHED / script / name for script, runs in (("blocks_cifar10", blocks_cifar10.RUNS),
                                                               ("drnet_cifar10", drnet_cifar10.RUNS))
                for name, run in runs.items() if run.deployed}
    assert deployed == {path for path in TRAINED.values() if path.is_relative_to(PUBLISHED)}


PUBLISHED_MODELS = sorted(path.parent for path in (REPO_ROOT / "benchmarks" / "weights").glob("*/*/config.json"))


@pytest.mark.parametrize("directory", PUBLISHED_MODELS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_published_model_loads_by_sha256_and_stays_small(directory):
    from trainer.checkpoint import WEIGHTS_FILE, load_checkpoint

    assert (directory / WEIGHTS_FILE).stat().st_size < 4 * 2**20, "committed weights stay under 4 MB"
    _, config = load_checkpoint(directory)
    assert config["extras"] == [] and config["metrics"]["model"]["accuracy"] > 0.5


@pytest.mark.slow  # every family's full evaluation on 10,000 images: a few minutes per model
@pytest.mark.skipif(not CIFAR10_ROOT.is_dir(), reason=f"real CIFAR-10 not found at {CIFAR10_ROOT}")
@pytest.mark.parametrize("directory", PUBLISHED_MODELS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_published_model_scores_its_recorded_top1(directory):
    from trainer.checkpoint import load_checkpoint
    from trainer.evaluate import evaluate_model

    model, config = load_checkpoint(directory)
    metrics = evaluate_model(model, config, data_root=CIFAR10_ROOT)
    assert metrics["model"]["accuracy"] == pytest.approx(config["metrics"]["model"]["accuracy"], abs=2e-4)


def test_a_latency_trained_point_beats_the_macs_trained_model_only_at_equal_top1_or_latency():
    """Faster at a lower top-1 is no win: the MACs-trained model reaches that point too, by a mix of its operating
    point and its static model (benchmarks/latency_training.py)."""
    from benchmarks.latency_training import frontier_goal

    macs = {"dynamic": {"top1": 0.85, "ms": 1.0}, "static": {"top1": 0.87, "ms": 2.0}}
    point = lambda top1, ms: {"dynamic": {"top1": top1, "ms": ms}}  # noqa: E731
    assert not frontier_goal(macs, point(0.80, 0.95))[0], "5% faster at 5 pp less"
    assert frontier_goal(macs, point(0.848, 0.85))[0], "18% faster within 0.3 pp"
    assert not frontier_goal(macs, point(0.848, 0.95))[0], "5% faster within 0.3 pp"
    assert frontier_goal(macs, point(0.866, 1.5))[0], "at 1.5 ms a mix reaches 86.0%: 0.6 pp better"
    assert not frontier_goal(macs, point(0.862, 1.5))[0], "0.2 pp better than that mix"


def test_a_selector_that_sends_every_image_down_one_path_wins_nothing():
    """The MACs-trained bundle can be made to take each of its paths: a latency-trained DRNet that routes every image
    to res16 only matches the MACs-trained model's own res16, and forced paths are not the latency arm's choices."""
    from benchmarks.latency_training import frontier_goal

    macs = {"dynamic": {"top1": 0.78, "ms": 0.65}, "path=res16": {"top1": 0.767, "ms": 0.55},
            "static": {"top1": 0.86, "ms": 1.2}}
    assert not frontier_goal(macs, {"dynamic": {"top1": 0.768, "ms": 0.543}})[0]
    assert not frontier_goal(macs, {"path=res16": {"top1": 0.768, "ms": 0.4}})[0], "forced paths are no candidates"
    unforced = {k: v for k, v in macs.items() if k != "path=res16"}
    assert frontier_goal(unforced, {"dynamic": {"top1": 0.768, "ms": 0.543}})[0], "without res16 the MACs side is slower"


def test_a_block_rules_floor_is_reported_but_reaches_nothing():
    """Every block dropped (10% top-1) mixed with the static model would reach any latency in between, and make a
    latency-trained policy "better at equal latency" than a deployment nobody would choose."""
    from benchmarks.latency_training import frontier_goal

    macs = {"dynamic": {"top1": 0.863, "ms": 2.0}, "static": {"top1": 0.87, "ms": 1.43}}
    latency = {"dynamic": {"top1": 0.814, "ms": 1.335}, "floor": {"top1": 0.11, "ms": 0.88}}
    assert not frontier_goal(macs, latency)[0], "7% faster than the static model, 5 pp below it"
    assert frontier_goal(macs | {"path=000000000": {"top1": 0.13, "ms": 0.88}}, latency)[0], "as a reach, it would"
    assert not frontier_goal(macs | {"floor": {"top1": 0.13, "ms": 0.88}}, latency)[0]
