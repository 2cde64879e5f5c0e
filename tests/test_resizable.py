"""Resizable networks: fair sampling, BN calibration, static sub-networks, MACs, learner labels, the lookup table."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re

import pytest
import torch
from torch import nn

from runtime.format.lookup_table import Entry, LookupTable, read_table, write_table
from runtime.serving.costs import BudgetError
from trainer.resizable_nas import frontier, query
from trainer.bn_calibration import calibrate_batchnorm
from trainer.families.resizable import (
    ResizableNetwork, build, configuration_name, fair_configurations, learner_targets,
)
from trainer.loop import SCHEDULES, Phase
from trainer.recipes import get_recipe

FACTORS = (1.0, 0.75, 0.5)
FULL = (1.0, 1.0, 1.0)


def model_config(depth: int = 14, width: int = 8, **options) -> dict:
    return {"depth": depth, "width": width, "num_classes": 10, "options": {"factors": list(FACTORS), **options}}


def images(n: int, seed: int = 0, side: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


def distinct_bn_sets(model: nn.Module) -> None:
    """Give every BN its own affine parameters and running statistics, so a wrong BN set shows in the logits."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, nn.BatchNorm2d):
                n = bn.num_features
                bn.weight.copy_(1 + 0.5 * torch.randn(n, generator=generator))
                bn.bias.copy_(0.5 * torch.randn(n, generator=generator))
                bn.running_mean.copy_(0.2 * torch.randn(n, generator=generator))
                bn.running_var.copy_(0.5 + torch.rand(n, generator=generator))


@pytest.fixture(scope="module")
def every_configuration() -> ResizableNetwork:
    """ResNet-14 (width 8) with all 27 configurations and distinct BN sets; read-only, in eval mode."""
    torch.manual_seed(0)
    model = build(model_config())
    distinct_bn_sets(model)
    return model.eval()


@pytest.fixture
def few_configurations() -> ResizableNetwork:
    """A private ResNet-14 offering three configurations: cheap to calibrate and free to modify."""
    torch.manual_seed(0)
    model = build(model_config(configurations=[FULL, [0.75, 0.5, 1.0], [0.5, 0.5, 0.5]]))
    distinct_bn_sets(model)
    return model.eval()


# --- fair sampling -------------------------------------------------------------------------------


@pytest.mark.parametrize("factors", [FACTORS, (1.0, 0.875, 0.75, 0.5)])
def test_fair_sampling_runs_each_factor_once_per_stage_in_every_iteration(factors):
    generator = torch.Generator().manual_seed(0)
    iterations = [fair_configurations(factors, 3, generator) for _ in range(300)]
    stage_orders = set()
    for configurations in iterations:
        assert len(configurations) == len(factors), "Algorithm 1 runs len(L) sub-networks per iteration"
        for stage in range(3):
            column = [c[stage] for c in configurations]
            assert sorted(column) == sorted(factors), f"stage {stage} repeats or misses a factor: {column}"
            stage_orders.add((stage, tuple(column)))
    for stage in range(3):
        orders = [order for s, order in stage_orders if s == stage]
        assert len(orders) == math.factorial(len(factors)), f"stage {stage} is not permuted at random"
    assert len({tuple(c) for c in iterations}) > 100, "iterations must draw new configurations"


def test_fair_sampling_pairs_stages_independently():
    """Sub-networks mix factors across stages: each stage permutes L on its own."""
    generator = torch.Generator().manual_seed(0)
    drawn = {c for _ in range(300) for c in fair_configurations(FACTORS, 3, generator)}
    assert len(drawn) == len(FACTORS) ** 3


def test_fair_sampling_follows_its_generator():
    """Training is reproducible: the same seed draws the same sub-networks."""

    def draw(seed: int) -> list:
        generator = torch.Generator().manual_seed(seed)
        return [fair_configurations(FACTORS, 3, generator) for _ in range(5)]

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)


# --- BN calibration ------------------------------------------------------------------------------


class Offset(nn.Module):
    """A module with a buffer that is not a BN's, which calibration must leave alone."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("offset", torch.tensor([0.5, -1.0, 2.0, 0.0]).view(1, 4, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.offset


def conv_bn() -> nn.Sequential:
    """Conv, dropout (which must run in eval mode), a non-BN buffer, then the BN to calibrate."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Dropout(0.5), Offset(), nn.BatchNorm2d(4, momentum=0.3))
    with torch.no_grad():
        module[3].running_mean.fill_(100.0)  # stale statistics calibration must discard
        module[3].running_var.fill_(100.0)
        module[3].num_batches_tracked.fill_(7)
    return module


def test_calibration_is_the_cumulative_average_over_the_batches():
    """Equal batches, so the average of batch means is the mean over every image the BN saw."""
    module = conv_bn()
    batches = images(32, seed=1, side=8).split(8)
    with torch.no_grad():
        inputs = [module[2](module[0](b)) for b in batches]  # what the BN sees, dropout off
    calibrate_batchnorm(module, batches)
    bn = module[3]
    torch.testing.assert_close(bn.running_mean, torch.cat(inputs).mean(dim=(0, 2, 3)), rtol=0, atol=1e-5)
    per_batch_var = torch.stack([x.var(dim=(0, 2, 3), correction=1) for x in inputs])
    torch.testing.assert_close(bn.running_var, per_batch_var.mean(dim=0), rtol=1e-5, atol=1e-6)
    assert int(bn.num_batches_tracked) == len(batches)


def test_calibration_changes_only_bn_buffers():
    module = conv_bn()
    before = copy.deepcopy(module.state_dict())
    calibrate_batchnorm(module, images(16, seed=2, side=8).split(4))
    after = module.state_dict()
    bn_buffers = {"3.running_mean", "3.running_var", "3.num_batches_tracked"}
    for name, tensor in after.items():
        if name in bn_buffers:
            assert not torch.equal(tensor, before[name]), f"{name} was not recalibrated"
        else:
            assert torch.equal(tensor, before[name]), f"{name} changed"
    assert set(after) == set(before) and {"2.offset", "0.weight", "3.weight"} <= set(after)


@pytest.mark.parametrize("training", [True, False])
def test_calibration_restores_modes_and_momentum(training):
    module = conv_bn().train(training)
    module[1].eval()  # a mixed state, which must come back as it was
    modes = [m.training for m in module.modules()]
    calibrate_batchnorm(module, images(8, seed=3, side=8).split(4))
    assert [m.training for m in module.modules()] == modes
    assert module[3].momentum == 0.3


# --- ResizableNetwork.calibrate ------------------------------------------------------------------


def test_calibrate_stores_statistics_per_configuration_and_leaves_shared_weights(few_configurations):
    model = few_configurations
    x = images(4, seed=4)
    with pytest.raises(ValueError, match="rs100-100-100 has no calibrated BN statistics"):
        model.subnetwork(FULL)
    backbone, learner = copy.deepcopy(model.backbone.state_dict()), copy.deepcopy(model.learner.state_dict())
    calibration = images(48, seed=5)
    model.calibrate(calibration, batch_size=16)

    for name, tensor in model.backbone.state_dict().items():
        assert torch.equal(tensor, backbone[name]), f"backbone {name} changed"
    for name, tensor in model.learner.state_dict().items():
        assert torch.equal(tensor, learner[name]), f"learner {name} changed"
    means = []
    for c in model.configurations:
        expected = model.subnetwork(c, calibrated=False)
        calibrate_batchnorm(expected, calibration.split(16))
        calibrated = model.subnetwork(c)
        for mine, theirs in zip(calibrated.modules(), expected.modules()):
            if isinstance(mine, nn.BatchNorm2d):
                torch.testing.assert_close(mine.running_mean, theirs.running_mean, rtol=0, atol=0)
                torch.testing.assert_close(mine.running_var, theirs.running_var, rtol=0, atol=0)
        with torch.no_grad():
            assert not torch.allclose(calibrated(x), model.subnetwork(c, calibrated=False)(x), atol=1e-3)
        means.append(model.statistics[configuration_name(c)].mean)
    assert not torch.equal(means[0], means[1]) and not torch.equal(means[1], means[2]), "one set per configuration"


def test_calibrated_statistics_survive_a_state_dict_round_trip(few_configurations):
    model = few_configurations
    model.calibrate(images(32, seed=6), batch_size=16)
    rebuilt = build(model_config(configurations=[list(c) for c in model.configurations]))
    rebuilt.load_state_dict(model.state_dict())
    x = images(3, seed=7)
    with torch.no_grad():
        for c in model.configurations:
            torch.testing.assert_close(rebuilt.subnetwork(c)(x), model.subnetwork(c)(x), rtol=0, atol=0)


# --- static sub-networks -------------------------------------------------------------------------

CONFIGURATIONS = [FULL, (0.75, 0.5, 1.0), (1.0, 0.75, 0.5), (0.5, 1.0, 0.75), (0.5, 0.5, 0.5)]


@pytest.mark.parametrize("configuration", CONFIGURATIONS, ids=configuration_name)
def test_static_subnetwork_matches_the_dynamic_forward(every_configuration, configuration):
    model = every_configuration
    x = images(4, seed=8)
    with torch.no_grad():
        static = model.subnetwork(configuration, calibrated=False)(x)
        dynamic = model(x, configuration)
    torch.testing.assert_close(static, dynamic, rtol=0, atol=1e-6)
    if configuration != FULL:
        with torch.no_grad():
            assert not torch.allclose(model(x, FULL), dynamic, atol=1e-3), "configurations must differ"


def block_input_sides(blocks: nn.ModuleList, run) -> list[int]:
    """The side of the feature map each block receives during `run()`."""
    sides = []
    handles = [b.register_forward_pre_hook(lambda _, args: sides.append(args[0].shape[-1])) for b in blocks]
    with torch.no_grad():
        run()
    for handle in handles:
        handle.remove()
    return sides


def named(configuration: tuple[float, ...], *values):
    return pytest.param(configuration, *values, id=configuration_name(configuration))


@pytest.mark.parametrize(
    "configuration, sides, block_inputs",
    [
        named(FULL, {0: 32, 3: 16, 5: 8}, [32, 32, 32, 16, 16, 8]),
        named((0.75, 0.5, 1.0), {0: 24, 3: 8, 5: 8}, [24, 24, 24, 8, 8, 8]),
        named((1.0, 0.75, 0.5), {0: 32, 3: 12, 5: 4}, [32, 32, 32, 12, 12, 4]),
        named((0.5, 0.75, 0.75), {0: 16, 3: 12, 5: 6}, [16, 16, 16, 12, 12, 6]),
    ],
)
def test_stages_resize_at_their_first_non_strided_block(every_configuration, configuration, sides, block_inputs):
    """Stage 0 resizes at block 0, later stages at their second block, to round(factor * nominal side)."""
    model = every_configuration
    x = images(1, seed=9)
    assert model.sides(configuration) == sides
    static = model.subnetwork(configuration, calibrated=False)
    assert block_input_sides(static.blocks, lambda: static(x)) == block_inputs
    assert block_input_sides(model.backbone.blocks, lambda: model(x, configuration)) == block_inputs


def test_depth_20_resizes_at_blocks_0_4_and_7():
    model = build(model_config(depth=20, configurations=[FULL]))
    assert model.sides((0.5, 0.75, 0.5)) == {0: 16, 4: 12, 7: 4}


def test_the_full_configuration_is_the_plain_network_at_an_odd_resolution():
    """At 30x30 the stages' nominal sides are 30, 15 and 8 (stride 2 rounds up): full runs no resize."""
    torch.manual_seed(0)
    model = build(model_config(configurations=[FULL], resolution=30))
    distinct_bn_sets(model)
    model.eval()
    assert model.sides(FULL) == {0: 30, 3: 15, 5: 8}
    x = images(2, seed=10, side=30)
    with torch.no_grad():
        torch.testing.assert_close(model(x, FULL), model.backbone(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    "configuration, sets",
    [
        named(FULL, [0, 0, 0, 0, 0, 0]),
        named((1.0, 0.75, 0.5), [0, 0, 0, 1, 1, 2]),
        named((0.5, 1.0, 0.75), [2, 2, 2, 0, 0, 1]),
    ],
)
def test_a_strided_first_block_uses_the_previous_stage_bn_set(every_configuration, configuration, sets):
    model = every_configuration
    assert model.bn_sets(configuration) == sets
    static = model.subnetwork(configuration, calibrated=False)
    for index, (frozen, switchable) in enumerate(zip(static.blocks, model.backbone.blocks)):
        pairs = [(frozen.bn1, switchable.bn1), (frozen.bn2, switchable.bn2)]
        if switchable.downsample is not None:
            pairs.append((frozen.downsample[1], switchable.downsample[1]))
        for plain, switched in pairs:
            expected = switched.sets[sets[index]]
            assert torch.equal(plain.running_mean, expected.running_mean), f"block {index}"
            assert torch.equal(plain.weight, expected.weight), f"block {index}"


# --- MACs ----------------------------------------------------------------------------------------


def hooked_macs(module: nn.Module, x: torch.Tensor) -> int:
    """Conv and linear MACs of one image, counted layer by layer from the shapes they see."""
    total = 0

    def count(layer, inputs, output):
        nonlocal total
        if isinstance(layer, nn.Conv2d):
            kh, kw = layer.kernel_size
            height, width = output.shape[-2:]
            total += layer.out_channels * layer.in_channels // layer.groups * kh * kw * height * width
        else:
            total += layer.in_features * layer.out_features

    handles = [m.register_forward_hook(count) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        module(x)
    for handle in handles:
        handle.remove()
    return total


def test_macs_of_every_configuration_match_a_layer_by_layer_count(every_configuration):
    model = every_configuration
    x = images(1, seed=11)
    for configuration, macs in zip(model.configurations, model.macs):
        static = model.subnetwork(configuration, calibrated=False)
        assert macs == hooked_macs(static, x), configuration_name(configuration)
    assert model.full_configuration == FULL
    assert max(model.macs) == model.macs[model.configurations.index(FULL)]
    assert min(model.macs) == model.macs[model.configurations.index((0.5, 0.5, 0.5))]
    learner = nn.Sequential(model.backbone.stem, model.learner)
    assert model.learner_macs == hooked_macs(learner, x)


def test_resnet20_full_configuration_costs_40_8_mmacs():
    """Stem 0.44M + three stages (14.16M + 13.11M + 13.11M, projection shortcuts) + head 640 MACs."""
    model = build(model_config(depth=20, width=16, configurations=[FULL, (0.5, 0.5, 0.5)]))
    assert model.macs[0] == 40_813_184


# --- learner targets -----------------------------------------------------------------------------


def test_learner_targets_pick_the_cheapest_correct_configuration():
    macs = torch.tensor([400, 200, 100, 200])
    correct = torch.tensor([
        [True, True, False, True],  # 1 and 3 tie at 200 MACs: 3 gives the true class more
        [True, True, True, True],  # every one is right: the cheapest
        [False, False, False, False],  # none is right: the nearest to being right
        [True, False, False, False],  # only the dearest is right
        [False, True, False, True],  # the same tie, the other way round
    ])
    probability = torch.tensor([
        [0.9, 0.6, 0.3, 0.7],
        [0.9, 0.8, 0.6, 0.7],
        [0.2, 0.4, 0.1, 0.3],
        [0.5, 0.3, 0.2, 0.4],
        [0.9, 0.8, 0.5, 0.6],
    ])
    assert learner_targets(correct, probability, macs).tolist() == [3, 2, 1, 0, 1]


# --- the lookup table ----------------------------------------------------------------------------

KEY = "host-cpu/onnxruntime"


def entry(factors: tuple[float, ...], macs: int, accuracy: float, ms: float) -> Entry:
    return Entry(configuration_name(factors), factors, macs, accuracy, accuracy - 0.1, {KEY: ms})


# D (500 MACs) is listed before C (300 MACs) at the same accuracy: ties must not go to table order.
A = entry((1.0, 1.0, 1.0), 1000, 0.90, 10.0)
B = entry((1.0, 0.75, 0.75), 600, 0.88, 5.0)
D = entry((0.75, 0.5, 0.5), 500, 0.80, 2.0)  # dominated in MACs by C, the fastest in ms
C = entry((0.5, 0.5, 0.5), 300, 0.80, 4.0)
E = entry((0.75, 0.75, 0.75), 700, 0.85, 6.0)  # B beats it on every cost
TABLE = LookupTable(
    factors=FACTORS, stages=3, test_images=360, calibration_images=2000, configurations=(A, B, D, C, E),
    learner_macs=50_000, learner_latency_ms={KEY: 0.25}, source={"checkpoint": "runs/resizable-digits"},
)


@pytest.mark.parametrize(
    "budget, expected",
    [
        ({"budget_macs": 1e9}, A),
        ({"budget_macs": 999}, B),
        ({"budget_macs": 600}, B),
        ({"budget_macs": 550}, C),  # C and D tie on accuracy: fewer MACs wins
        ({"budget_macs": 300}, C),
        ({"budget_ms": 5.0, "key": KEY}, B),
        ({"budget_ms": 4.5, "key": KEY}, C),  # C and D both fit: fewer MACs again
        ({"budget_ms": 2.5, "key": KEY}, D),
        ({"budget_macs": 550, "budget_ms": 3.0, "key": KEY}, D),
    ],
)
def test_query_returns_the_most_accurate_within_budget(budget, expected):
    assert query(TABLE, **budget) == expected


@pytest.mark.parametrize(
    "budget, cheapest",
    [
        ({"budget_macs": 299}, "no operating point within 299 MACs: the cheapest, "),
        ({"budget_ms": 1.999, "key": KEY}, f"no operating point within 1.999 ms on {KEY}: the cheapest, "),
    ],
)
def test_a_budget_below_the_cheapest_names_the_cheapest_cost(budget, cheapest):
    with pytest.raises(BudgetError, match=re.escape(cheapest)):
        query(TABLE, **budget)
    assert issubclass(BudgetError, ValueError)


def test_a_latency_budget_needs_a_measured_key():
    with pytest.raises(ValueError, match=rf"no latency measured on 'pixel-8/executorch'.*measured on: \['{KEY}'\]"):
        query(TABLE, budget_ms=5.0, key="pixel-8/executorch")
    with pytest.raises(ValueError, match="budget_ms needs to know where latency was measured"):
        query(TABLE, budget_ms=5.0)


def test_frontier_keeps_exactly_the_pareto_optimal_entries():
    assert frontier(TABLE) == [A, B, D, C]
    by_macs_only = dataclasses.replace(
        TABLE, configurations=tuple(dataclasses.replace(e, latency_ms={}) for e in TABLE.configurations)
    )
    assert frontier(by_macs_only) == [dataclasses.replace(e, latency_ms={}) for e in (A, B, C)]


def test_a_latency_measured_on_some_configurations_only_does_not_shape_the_frontier():
    """A partial profile report merges; its key stays out of the frontier until every configuration has it."""
    partial = LookupTable((1.0, 0.5), 1, 100, 100, (
        Entry("rs100", (1.0,), 200, 0.9, 0.8, {KEY: 2.0}),
        Entry("rs050", (0.5,), 100, 0.8, 0.7),
    ))
    assert partial.latency_keys() == []
    assert [e.name for e in frontier(partial)] == ["rs100", "rs050"]


def test_a_query_agrees_with_a_frontier_bundle_where_accuracies_tie():
    """Equal accuracy: the query answers from the frontier, which is all a bundle exported from it holds."""
    tied = LookupTable((1.0, 0.75, 0.5), 1, 100, 100, (
        Entry("x", (1.0,), 200, 0.9, 0.9, {KEY: 1.0}),
        Entry("y", (0.75,), 100, 0.9, 0.9, {KEY: 2.0}),
        Entry("z", (0.5,), 50, 0.9, 0.9, {KEY: 10.0}),
    ))
    assert {e.name for e in frontier(tied)} == {"x", "z"}
    assert query(tied, budget_ms=3.0, key=KEY).name == "x"


def test_table_round_trips_through_json(tmp_path):
    path = tmp_path / "lookup_table.json"
    write_table(path, TABLE)
    assert read_table(path) == TABLE
    without_learner = dataclasses.replace(TABLE, learner_macs=None, learner_latency_ms={})
    write_table(path, without_learner)
    assert read_table(path) == without_learner


@pytest.mark.parametrize(
    "damage, field",
    [
        pytest.param(lambda data: data.update(format="something-else"), "format", id="format"),
        pytest.param(lambda data: data["configurations"][1].pop("macs"), "configurations[1]: missing field(s) ['macs']", id="missing-field"),
        pytest.param(
            lambda data: data["configurations"][2].update(factors=[1.0, 0.6, 0.5]), "configurations[2].factors",
            id="factor-outside-list",
        ),
        pytest.param(
            lambda data: data["configurations"][0].update(accuracy=1.5), "configurations[0].accuracy",
            id="accuracy-above-1",
        ),
        pytest.param(
            lambda data: data["configurations"][4]["latency_ms"].update({KEY: "fast"}),
            f"configurations[4].latency_ms['{KEY}']",
            id="latency-not-a-number",
        ),
    ],
)
def test_a_damaged_table_is_refused_naming_file_and_field(tmp_path, damage, field):
    path = tmp_path / "lookup_table.json"
    write_table(path, TABLE)
    data = json.loads(path.read_text())
    damage(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=re.escape(f"{path}: ") + ".*" + re.escape(field)):
        read_table(path)


def test_a_table_that_is_not_json_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "lookup_table.json"
    write_table(path, TABLE)
    path.write_text(path.read_text()[:100])
    with pytest.raises(ValueError, match=re.escape(f"{path}: file: not valid JSON")):
        read_table(path)


# --- options -------------------------------------------------------------------------------------


def test_depth_8_is_refused():
    with pytest.raises(ValueError, match="non-strided block in every stage"):
        build(model_config(depth=8))


@pytest.mark.parametrize("factors", [[1.0, 0.0], [1.25, 0.5], [1.0, -0.5], [1.0, 1.0, 0.5]])
def test_factors_must_be_distinct_and_in_0_1(factors):
    config = model_config()
    config["options"]["factors"] = factors
    with pytest.raises(ValueError, match=r"factors must be distinct numbers in \(0, 1\]"):
        build(config)


@pytest.mark.parametrize("target", [[0.75, 0.75, 0.75], [1.0, 1.0]])
def test_a_target_outside_the_configurations_is_refused(target):
    with pytest.raises(ValueError, match="is not among the configurations"):
        build(model_config(configurations=[FULL, [0.5, 0.5, 0.5]], target=target))


def test_a_configuration_with_a_factor_outside_the_list_is_refused():
    with pytest.raises(ValueError, match=r"configuration \(1.0, 0.6, 0.5\) is not one factor"):
        build(model_config(configurations=[FULL, [1.0, 0.6, 0.5]]))


# --- recipe and training phases ------------------------------------------------------------------


@pytest.mark.parametrize("total", [2, 3, 5, 14, 30])
def test_with_epochs_keeps_the_switched_off_target_phase_off(total):
    phases = get_recipe("resizable-digits").with_epochs(total).phases
    assert phases["target"].epochs == 0
    assert phases["supernet"].epochs >= 1 and phases["learner"].epochs >= 1
    assert sum(p.epochs for p in phases.values()) == total


def test_with_epochs_3_trains_the_learner_for_one_epoch():
    phases = get_recipe("resizable-digits").with_epochs(3).phases
    assert (phases["supernet"].epochs, phases["learner"].epochs) == (2, 1)


def test_phase_refuses_an_unknown_schedule():
    with pytest.raises(ValueError, match="unknown schedule 'exponential'"):
        Phase(10, 0.1, schedule="exponential")


def test_step_schedule_and_milestones_go_together():
    with pytest.raises(ValueError, match="the step schedule needs them"):
        Phase(10, 0.1, schedule="step")
    with pytest.raises(ValueError, match="milestones go with the step schedule"):
        Phase(10, 0.1, milestones=(0.5,))


def test_step_schedule_divides_the_rate_by_10_at_each_milestone():
    phase = Phase(10, 0.1, schedule="step", milestones=(0.3, 0.6, 0.9))
    multipliers = [SCHEDULES["step"](phase, i, 100) for i in range(100)]
    expected = [1.0] * 30 + [0.1] * 30 + [0.01] * 30 + [0.001] * 10
    assert multipliers == pytest.approx(expected, rel=1e-12)
