"""Training against a device's latency table: each family's cost term follows the table, and tables are checked.

Each family test edits one graph's latency in a table and asserts that the cost
term the family trains with moves the way it should: a cost term that ignored
the table, or read the wrong graph, fails it.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import torch

from helpers import REPO_ROOT
from runtime.format.latency_table import (
    GraphRow, Latency, LatencyTable, PointRow, read_latency_table, walk_paths, write_latency_table,
)
from trainer.device_costs import BlockLatency, DeviceCosts, read_device_costs
from trainer.families import blockdrop, drnet, resizable, urnet
from trainer.families.blockdrop import BlockDropOptions, reward
from trainer.families.resizable import configuration_name, learner_targets
from trainer.families.urnet import URNetOptions, scale_loss
from trainer.recipes import get_recipe

BACKBONE = {"depth": 8, "width": 8, "num_classes": 10}  # CIFAR ResNet-8: 3 blocks, two of them downsampling


def latency(ms: float) -> Latency:
    return Latency(ms, ms, ms, 0.0, 10)


def costs_of(graphs: dict[str, float], *, static_ms: float = 10.0, recipe: str = "r", per_call_ms: float = 0.05,
             tmp_path=None) -> DeviceCosts:
    table = LatencyTable(
        bundle="b", manifest_sha256="0" * 64, family="f", device="host-cpu", backend="onnxruntime",
        backend_detail="onnxruntime", threads=1, created="2026-12-07T00:00:00+00:00", command="", warmup=1, runs=10,
        noise_threshold=0.1, preprocess=latency(0.1), reference=next(iter(graphs)), static=latency(static_ms),
        session_overhead_ms=0.2, dispatch_ms_per_call=per_call_ms,
        graphs={name: GraphRow(name, 1000, {1: latency(ms)}) for name, ms in graphs.items()}, points=(), fit=None,
        target="onnx", recipe=recipe,
    )
    return DeviceCosts(table, tmp_path or "costs.json")


def edited(costs: DeviceCosts, graph: str, ms: float) -> DeviceCosts:
    graphs = dict(costs.table.graphs)
    graphs[graph] = GraphRow(graph, 1000, {1: latency(ms)})
    return dataclasses.replace(costs, table=dataclasses.replace(costs.table, graphs=graphs))


# --- DRNet: each resolution's path, predictor included -----------------------------------------------


def test_drnet_budget_follows_each_paths_latency():
    torch.manual_seed(0)
    model = drnet.build({**BACKBONE, "options": dataclasses.asdict(drnet.DRNetOptions(macs_target=0.5))})
    costs = costs_of({"res32": 6.0, "predictor": 0.5, "res24": 4.0, "res16": 2.0})
    paths, target = drnet.budget(model, costs)
    assert paths == pytest.approx([0.1 + 0.2 + 0.05 + 0.5 + ms for ms in (6.0, 4.0, 2.0)])
    assert target == pytest.approx(0.5 * costs.static_ms)
    slower, _ = drnet.budget(model, edited(costs, "res24", 9.0))
    assert slower[1] == pytest.approx(paths[1] + 5.0) and slower[::2] == paths[::2]
    dearer, _ = drnet.budget(model, edited(costs, "predictor", 1.5))
    assert dearer == pytest.approx([p + 1.0 for p in paths]), "the predictor runs on every path"
    gate = torch.tensor([[0.0, 1.0, 0.0]])  # an image sent to 24 px
    assert (gate @ torch.tensor(slower)).item() > (gate @ torch.tensor(paths)).item()


def test_drnet_keeps_the_papers_macs_without_costs():
    model = drnet.build({**BACKBONE, "options": dataclasses.asdict(drnet.DRNetOptions(macs_target=0.5))})
    paths, target = drnet.budget(model, None)
    assert paths == model.backbone_macs and target == 0.5 * model.backbone_macs[0]


# --- BlockDrop and URNet: a path run block by block --------------------------------------------------


def _block_graphs(skips: range | tuple) -> dict[str, float]:
    graphs = {"full": 8.0, "policy": 0.4, "stem": 0.3, "head": 0.2}
    graphs |= {f"block{k}": 1.0 + k for k in range(3)}
    return graphs | {f"skip{k}": 0.25 for k in skips}


def test_blockdrop_reward_charges_a_block_its_measured_latency_and_its_call():
    model = blockdrop.build({**BACKBONE, "options": dataclasses.asdict(BlockDropOptions())})
    costs = costs_of(_block_graphs(skips=(1, 2)))  # blocks 1 and 2 downsample: dropping them runs a skip graph
    usage = blockdrop.usage_of(model, costs)
    paths = torch.tensor([[1, 1, 1], [0, 1, 1], [1, 0, 1]])
    correct = torch.ones(3, dtype=torch.bool)
    shares = usage(paths.float())
    assert shares[0] * costs.static_ms == pytest.approx(0.1 + 0.2 + 0.05 * 5 + 0.4 + 0.3 + 0.2 + 1 + 2 + 3)
    assert shares[1] * costs.static_ms == pytest.approx(shares[0] * costs.static_ms - 1.0 - 0.05), \
        "dropping an identity block saves its graph and its call"
    assert shares[2] * costs.static_ms == pytest.approx(shares[0] * costs.static_ms - 2.0 + 0.25), \
        "dropping a downsampling block still runs its skip graph"
    slower_block0 = blockdrop.usage_of(model, edited(costs, "block0", 4.0))
    before, after = reward(paths, correct, 10.0, usage), reward(paths, correct, 10.0, slower_block0)
    assert after[0] < before[0] and after[2] < before[2], "paths running block 0 earn less"
    assert after[1] == pytest.approx(before[1]), "a path that drops block 0 is unchanged"


def test_blockdrop_reward_keeps_the_papers_block_share_without_costs():
    model = blockdrop.build({**BACKBONE, "options": dataclasses.asdict(BlockDropOptions())})
    paths = torch.tensor([[1, 0, 1]])
    assert reward(paths, torch.tensor([True]), 10.0, blockdrop.usage_of(model, None)).item() == pytest.approx(1 - (2 / 3) ** 2)


def test_urnet_scale_means_a_share_of_the_devices_latency():
    model = urnet.build({**BACKBONE, "options": dataclasses.asdict(URNetOptions())})
    graphs = {k: v for k, v in _block_graphs(skips=range(3)).items() if k not in ("policy", "head")}
    costs = costs_of(graphs)
    gates = torch.tensor([[1.0, 0.0, 1.0]], requires_grad=True)
    scale = torch.tensor([0.3])  # S = 0.3: the path below takes half the static model's time, over budget
    loss = scale_loss(gates, scale, urnet.usage_of(model, costs))
    share = (0.1 + 0.2 + 0.05 * 3 + 0.3 + 1.0 + 0.25 + 3.0) / costs.static_ms
    assert share == pytest.approx(0.5) and loss.item() == pytest.approx((share - 0.3) ** 2)
    loss.backward()
    assert gates.grad[0, 2] > gates.grad[0, 0] > 0, "over budget, the dearest open block is pushed closed hardest"
    dearer = scale_loss(gates, scale, urnet.usage_of(model, edited(costs, "block0", 3.0)))
    assert dearer.item() > loss.item()
    cheaper_skip = scale_loss(gates, scale, urnet.usage_of(model, edited(costs, "skip1", 0.05)))
    assert cheaper_skip.item() < loss.item(), "the closed block's skip graph is on the path"


def test_a_block_walk_timed_on_its_forced_paths_replaces_the_graph_rows():
    """URNet's conditional graph runs one image in one call: its block walk is what `Session.run` measured on the
    walk's forced paths, not a sum of per-block graphs and calls."""
    model = urnet.build({**BACKBONE, "options": dataclasses.asdict(URNetOptions())})
    graphs = {k: v for k, v in _block_graphs(skips=range(3)).items() if k not in ("policy", "head")}
    costs = costs_of(graphs)
    measured = dict(zip(walk_paths(3), (4.0, 5.5, 4.0, 6.0)))  # block 1 within the noise: no dearer than none
    points = [PointRow(path, "path", None, 0.0, {"conditional": 1.0}, latency(ms), 0.0) for path, ms in measured.items()]
    walked = dataclasses.replace(costs, table=dataclasses.replace(costs.table, points=points))
    assert walked.blocks(3, fixed=("stem",)) == BlockLatency(4.0, (1.5, 0.0, 2.0), costs.static_ms, measured=True)
    usage = urnet.usage_of(model, walked)
    assert usage(torch.tensor([[1.0, 1.0, 0.0]])).item() == pytest.approx((4.0 + 1.5) / costs.static_ms)
    macs = {"full": 3000, "block2": 1000, "skip2": 100}
    rows = {name: dataclasses.replace(row, macs=macs.get(name, row.macs)) for name, row in walked.table.graphs.items()}
    saving = dataclasses.replace(walked.table, graphs=rows).kept_block_saving(2)
    assert saving == pytest.approx(2.0 / costs.static_ms / (900 / 3000)), "the measured 2 ms, not block2 less skip2"
    partial = dataclasses.replace(costs, table=dataclasses.replace(costs.table, points=points[:-1]))
    assert partial.blocks(3, fixed=("stem",)) == costs.blocks(3, fixed=("stem",)), "a walk with a path missing is not used"
    assert not costs.blocks(3, fixed=("stem",)).measured


# --- Resizable: each configuration's graph ----------------------------------------------------------


def test_resizable_learner_labels_the_cheapest_right_configuration_on_the_device():
    options = resizable.ResizableOptions(configurations=((1.0, 1.0, 1.0), (0.75, 0.75, 0.75), (0.5, 0.5, 0.5)))
    model = resizable.build({"depth": 14, "width": 8, "num_classes": 10, "options": dataclasses.asdict(options)})
    names = [configuration_name(c) for c in model.configurations]
    costs = costs_of({names[0]: 5.0, names[1]: 3.0, names[2]: 2.0})
    correct = torch.tensor([[True, True, False]])
    probability = torch.tensor([[0.9, 0.8, 0.3]])
    assert learner_targets(correct, probability, resizable.configuration_costs(model, costs)).item() == 1
    slow_middle = resizable.configuration_costs(model, edited(costs, names[1], 6.0))
    assert learner_targets(correct, probability, slow_middle).item() == 0, "a configuration slower on the device loses"
    macs = resizable.configuration_costs(model, None)
    assert macs.tolist() == model.macs


def test_the_learner_margin_takes_the_cheapest_within_reach_of_the_best():
    correct = torch.tensor([[True, False, False]])
    probability = torch.tensor([[0.50, 0.45, 0.10]])
    cost = torch.tensor([3.0, 2.0, 1.0])
    assert learner_targets(correct, probability, cost).item() == 0, "the paper's rule: the cheapest right one"
    assert learner_targets(correct, probability, cost, margin=0.1).item() == 1
    assert learner_targets(correct, probability, cost, margin=0.5).item() == 2


# --- the table: checked, and measured by one command --------------------------------------------------


def test_a_table_for_another_recipe_is_refused_by_name(tmp_path):
    path = tmp_path / "costs.json"
    write_latency_table(path, costs_of({"res32": 1.0}, recipe="drnet-digits").table)
    assert read_device_costs(path, "drnet-digits").table.recipe == "drnet-digits"
    with pytest.raises(ValueError, match="measured for recipe drnet-digits, not urnet-digits; make one with: "
                                         "python -m runtime.profile costs --recipe urnet-digits"):
        read_device_costs(path, "urnet-digits")


def test_a_graph_missing_from_the_table_is_named():
    model = blockdrop.build({**BACKBONE, "options": dataclasses.asdict(BlockDropOptions())})
    graphs = _block_graphs(skips=())
    del graphs["block1"]
    with pytest.raises(ValueError, match="no graph 'block1'"):
        blockdrop.usage_of(model, costs_of(graphs))


# ExecuTorch's export of URNet's 20 graphs takes minutes on 2 cores: with the long runs (-m slow).
@pytest.mark.parametrize("target", ["onnx", pytest.param("executorch", marks=pytest.mark.slow)])
def test_the_cost_command_measures_a_recipes_untrained_graphs(tmp_path, target):
    out = tmp_path / "costs.json"
    done = subprocess.run(
        [sys.executable, "-m", "runtime.profile", "costs", "--recipe", "urnet-digits", "--target", target,
         "--device", "host-cpu", "--runs", "3", "--warmup", "1", "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr
    table = read_latency_table(out)
    assert (table.recipe, table.target, table.device) == ("urnet-digits", target, "host-cpu")
    blocks = sum(name.startswith("block") for name in table.graphs)
    assert blocks > 0 and all(f"skip{k}" in table.graphs for k in range(blocks)), sorted(table.graphs)
    recipe = get_recipe("urnet-digits")
    model = urnet.build({"depth": recipe.depth, "width": recipe.width, "num_classes": 10,
                         "options": dataclasses.asdict(recipe.options)})
    costs = read_device_costs(out, "urnet-digits")
    walk = costs.blocks(model.num_blocks, fixed=("stem",))
    assert walk.measured, "the walk's forced paths are measured through Session.run"
    assert {p.name for p in table.points} >= set(walk_paths(model.num_blocks))
    full = urnet.usage_of(model, costs)(torch.ones(1, model.num_blocks)).item()
    assert 0.5 < full < 5, "every block run: about the static model's latency, plus what dispatch adds"


def test_a_latency_trained_model_exports_only_for_its_device(checkpoint_dir, tmp_path):
    from exporter import export
    from helpers import copy_tree

    checkpoint = copy_tree(checkpoint_dir, tmp_path / "checkpoint")
    config = json.loads((checkpoint / "config.json").read_text())
    config["training"]["cost"] = {"cost": "latency", "table": "costs.json", "recipe": config["recipe"],
                                  "target": "onnx", "device": "host-cpu", "backend": "onnxruntime", "static_ms": 1.0}
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="trained against latency on host-cpu for onnx .*Export with --target onnx "
                                         "--device host-cpu"):
        export(checkpoint, "executorch", tmp_path / "bundle", accuracy_images=0)



def candidate_table(ms: dict[str, float]) -> DeviceCosts:
    """res32/res24/res16 points at 100%, 56% and 25% of the MACs, each costing `ms` through Session.run."""

    costs = costs_of({"res32": 6.0, "predictor": 0.5, "res24": 4.0, "res16": 2.0})
    graphs = {name: dataclasses.replace(row, macs=macs)
              for (name, row), macs in zip(costs.table.graphs.items(), (100, 5, 56, 25))}
    points = [PointRow(name, "path", None, macs, {}, latency(ms[name]), ms[name])
              for name, macs in (("res32", 105), ("res24", 61), ("res16", 30))]
    return dataclasses.replace(costs, table=dataclasses.replace(costs.table, graphs=graphs, points=points))


def test_the_candidate_report_says_which_points_do_not_pay_on_the_device():
    from runtime.profile.cli import format_candidates

    lines = format_candidates(candidate_table({"res32": 11.0, "res24": 9.5, "res16": 4.0}).table).splitlines()
    assert "no MACs saved" in lines[1]
    assert "keeps 0.13 of the saving (does not pay here)" in lines[2], "5% of the time for 39% of the MACs"
    assert lines[3].endswith("keeps 0.86 of the saving")


def test_the_candidate_report_says_which_blocks_do_not_pay_when_left_out():
    from runtime.profile.cli import format_candidates

    costs = costs_of({"full": 10.0, "block0": 3.0, "block1": 0.5, "skip1": 0.3})
    macs = {"full": 3000, "block0": 1000, "block1": 1000, "skip1": 100}
    graphs = {name: dataclasses.replace(row, macs=macs[name]) for name, row in costs.table.graphs.items()}
    table = dataclasses.replace(costs.table, graphs=graphs)
    assert table.kept_block_saving(0) == pytest.approx((3.0 + 0.05) / 10 / (1000 / 3000)), "its call is saved too"
    assert table.kept_block_saving(1) == pytest.approx((0.5 - 0.3) / 10 / (900 / 3000)), "its skip graph still runs"
    assert table.kept_block_saving(2) is None
    lines = format_candidates(table).splitlines()
    assert lines[-2].endswith("block0           keeps 0.92 of its saving")
    assert lines[-1].endswith("block1           keeps 0.07 of its saving (does not pay here)")


def test_drnet_trains_only_the_resolutions_that_pay_on_the_device():
    paying = drnet.DRNetOptions(candidates="paying")
    costs = candidate_table({"res32": 11.0, "res24": 9.5, "res16": 4.0})
    assert drnet.choose_candidates(paying, costs).resolutions == (32, 16)
    costs = candidate_table({"res32": 11.0, "res24": 7.0, "res16": 4.0})
    assert drnet.choose_candidates(paying, costs).resolutions == (32, 24, 16), "a cheaper res24 pays"
    assert drnet.choose_candidates(drnet.DRNetOptions(), costs).resolutions == (32, 24, 16), "the paper: all"


def test_drnet_candidates_from_the_device_need_a_table_where_one_pays():
    paying = drnet.DRNetOptions(candidates="paying")
    with pytest.raises(ValueError, match="--cost latency --costs TABLE"):
        drnet.choose_candidates(paying, None)
    with pytest.raises(ValueError, match="no resolution below 32 pays on host-cpu/onnxruntime"):
        drnet.choose_candidates(paying, candidate_table({"res32": 11.0, "res24": 10.5, "res16": 10.0}))
    with pytest.raises(ValueError, match="unknown candidates 'cheap'"):
        drnet.DRNetOptions(candidates="cheap")
