"""DRNet: the MACs loss, Gumbel selection in training, dispatch at inference, and its config."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer.families import drnet
from trainer.families.drnet import DRNet, DRNetOptions, build, flops_loss, random_resolution_mix
from trainer.macs import count_macs

OPTIONS = DRNetOptions(resolutions=(32, 24, 16), macs_target=0.45, eta=2.0)


def model_config(options: DRNetOptions = OPTIONS, depth: int = 8) -> dict:
    return {"depth": depth, "width": 16, "num_classes": 10, "options": dataclasses.asdict(options)}


@pytest.fixture
def model() -> DRNet:
    torch.manual_seed(0)
    return build(model_config())


def images(n: int, seed: int = 0, side: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


# --- flops_loss ----------------------------------------------------------------------------------

C_MAX, C_MIN, TARGET = 12_000_000.0, 3_000_000.0, 6_000_000.0


@pytest.mark.parametrize("expected", [0.0, 3e6, 5_999_999.0, TARGET])
def test_flops_loss_is_zero_under_the_target(expected):
    e = torch.tensor(expected, requires_grad=True)
    loss = flops_loss(e, TARGET, C_MAX, C_MIN)
    assert loss.item() == 0.0
    loss.backward()
    assert e.grad.item() == 0.0


@pytest.mark.parametrize("expected", [6_000_001.0, 9e6, 12e6, 20e6])
def test_flops_loss_is_linear_above_the_target(expected):
    e = torch.tensor(expected, dtype=torch.float64, requires_grad=True)
    loss = flops_loss(e, TARGET, C_MAX, C_MIN)
    assert loss.item() == pytest.approx((expected - TARGET) / (C_MAX - C_MIN), rel=1e-12)
    loss.backward()
    assert e.grad.item() == pytest.approx(1 / (C_MAX - C_MIN), rel=1e-12)


def test_flops_loss_works_per_sample():
    e = torch.tensor([0.0, TARGET, 9e6, 12e6], dtype=torch.float64)
    expected = torch.tensor([0.0, 0.0, 3e6 / 9e6, 6e6 / 9e6], dtype=torch.float64)
    torch.testing.assert_close(flops_loss(e, TARGET, C_MAX, C_MIN), expected)


# --- construction --------------------------------------------------------------------------------


def test_macs_tables_match_count_macs(model):
    assert len(model.backbone_macs) == len(OPTIONS.resolutions)
    for index, side in enumerate(OPTIONS.resolutions):
        measured = count_macs(model.backbone_logits, torch.zeros(1, 3, side, side), index)
        assert model.backbone_macs[index] == measured > 0
    assert model.backbone_macs == sorted(model.backbone_macs, reverse=True), "32 > 24 > 16 in MACs"
    predictor_alone = count_macs(model.predictor, torch.zeros(1, 3, 16, 16))
    assert model.predictor_macs == predictor_alone > 0
    assert model.predictor_macs < model.backbone_macs[-1]


def test_path_names(model):
    assert [model.path_name(i) for i in range(3)] == ["res32", "res24", "res16"]


def test_building_a_model_leaves_bn_statistics_at_their_initial_values(model):
    for name, buffer in model.state_dict().items():
        if name.endswith("running_var"):
            assert torch.all(buffer == 1), name
        elif name.endswith("running_mean"):
            assert torch.all(buffer == 0), name
        elif name.endswith("num_batches_tracked"):
            assert int(buffer) == 0, name


# --- training-time forward -----------------------------------------------------------------------


def test_forward_selects_exactly_one_resolution_per_sample(model, monkeypatch):
    model.eval()  # BN on running stats: each resolution's logits do not depend on the batch
    gates = []

    def spy(logits, **kwargs):
        gate = real_gumbel(logits, **kwargs)
        gates.append(gate.detach())
        return gate

    real_gumbel = F.gumbel_softmax
    monkeypatch.setattr(drnet.F, "gumbel_softmax", spy)
    x = images(16, seed=1)
    torch.manual_seed(1)
    logits, expected_macs = model(x)

    (gate,) = gates
    assert gate.shape == (16, 3)
    chosen = gate.argmax(dim=1)
    torch.testing.assert_close(gate, F.one_hot(chosen, 3).float(), rtol=0, atol=1e-6)

    with torch.no_grad():
        per_resolution = torch.stack([model.backbone_logits(x, i) for i in range(3)])  # (R, N, C)
    macs = torch.tensor(model.backbone_macs, dtype=torch.float32)
    for n in range(16):
        distances = (per_resolution[:, n] - logits[n].detach()).abs().amax(dim=1)
        assert distances[chosen[n]] <= 1e-5, f"sample {n}: logits are not those of the selected resolution"
        others = [d for i, d in enumerate(distances.tolist()) if i != chosen[n]]
        assert min(others) > 1e-3, f"sample {n}: logits mix more than one resolution"
        assert expected_macs[n].item() == pytest.approx(macs[chosen[n]].item(), rel=1e-6)


def test_forward_choices_are_random_but_hard(model):
    model.eval()
    x = images(64, seed=2)
    seen = set()
    with torch.no_grad():
        per_resolution = torch.stack([model.backbone_logits(x, i) for i in range(3)])
        for seed in range(4):
            torch.manual_seed(seed)
            logits, _ = model(x)
            distances = (per_resolution - logits[None]).abs().amax(dim=2)  # (R, N)
            assert torch.all(distances.min(dim=0).values <= 1e-5)
            seen.update(distances.argmin(dim=0).tolist())
    assert seen == {0, 1, 2}, "Gumbel noise must let every resolution be sampled"


def bn_running_means(model: DRNet, index: int) -> torch.Tensor:
    """Every switchable BN layer's running mean for resolution `index`, concatenated."""
    from trainer.switchable_bn import SwitchableBatchNorm2d

    layers = [m for m in model.backbone.modules() if isinstance(m, SwitchableBatchNorm2d)]
    assert layers
    return torch.cat([layer.sets[index].running_mean.clone() for layer in layers])


def choosing(model: DRNet, monkeypatch, choice: torch.Tensor) -> None:
    """Make the predictor choose `choice[n]` for sample n, whatever the Gumbel noise."""
    monkeypatch.setattr(model, "predictor_logits", lambda x: F.one_hot(choice[: len(x)], 3).float() * 1e4)


def test_training_routes_each_sample_to_its_chosen_resolution_and_bn_set_alone(model, monkeypatch):
    """DRNet Sec. 3.1: the batch is split by choice; a BN set's statistics see only its own samples."""
    model.train()
    choice = torch.tensor([0, 2, 2, 0, 2, 0, 2, 2])
    choosing(model, monkeypatch, choice)
    before = [bn_running_means(model, i) for i in range(3)]
    calls = []
    real = model.backbone_logits
    monkeypatch.setattr(model, "backbone_logits", lambda x, i: calls.append((i, len(x))) or real(x, i))
    model(images(8, seed=4))
    assert sorted(calls) == [(0, 3), (2, 5)], "each resolution runs once, on the samples that chose it"
    after = [bn_running_means(model, i) for i in range(3)]
    assert not torch.equal(before[0], after[0]) and not torch.equal(before[2], after[2])
    torch.testing.assert_close(before[1], after[1], rtol=0, atol=0)  # no sample chose 24 px


def test_a_bn_set_moves_with_its_own_samples_only(model, monkeypatch):
    """Set 0's statistics after a mixed batch equal those after its own samples alone: the others never reach it."""
    model.train()
    x = images(8, seed=5)
    choice = torch.tensor([0, 1, 0, 2, 0, 1, 0, 2])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    choosing(model, monkeypatch, choice)
    model(x)
    mixed = bn_running_means(model, 0)
    model.load_state_dict(state)
    choosing(model, monkeypatch, torch.zeros(8, dtype=torch.long))
    model(x[choice == 0])
    torch.testing.assert_close(mixed, bn_running_means(model, 0))


def predictor_grad_norm(model: DRNet) -> float:
    return sum(p.grad.abs().sum().item() for p in model.predictor.parameters() if p.grad is not None)


def test_cross_entropy_gradient_reaches_the_predictor(model):
    model.train()
    x, labels = images(16, seed=3), torch.arange(16) % 10
    torch.manual_seed(3)
    logits, _ = model(x)
    F.cross_entropy(logits, labels).backward()
    assert predictor_grad_norm(model) > 0
    assert sum(p.grad.abs().sum().item() for p in model.backbone.parameters() if p.grad is not None) > 0


def test_macs_gradient_reaches_the_predictor(model):
    model.train()
    torch.manual_seed(4)
    _, expected_macs = model(images(16, seed=4))
    assert expected_macs.requires_grad
    flops_loss(expected_macs.mean(), 0.0, max(model.backbone_macs), min(model.backbone_macs)).backward()
    assert predictor_grad_norm(model) > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.backbone.parameters()), (
        "the MACs term depends on the predictor only"
    )


def test_macs_gradient_pushes_towards_cheaper_resolutions(model):
    """A gradient step on the MACs loss alone makes the predictor prefer the cheapest resolution."""
    model.train()
    x = images(32, seed=5)
    optimizer = torch.optim.SGD(model.predictor.parameters(), lr=0.5)
    with torch.no_grad():
        before = model.predictor_logits(x).softmax(1)[:, 2].mean().item()
    for step in range(5):
        torch.manual_seed(step)
        _, expected_macs = model(x)
        loss = flops_loss(expected_macs.mean(), 0.0, max(model.backbone_macs), min(model.backbone_macs))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = model.predictor_logits(x).softmax(1)[:, 2].mean().item()
    assert after > before


# --- inference -----------------------------------------------------------------------------------


def test_infer_macs_are_predictor_plus_the_chosen_backbone(fresh_model, digits_test):
    _, _, normalized = digits_test
    out = fresh_model.infer(normalized[:128])
    names = [fresh_model.path_name(i) for i in range(3)]
    assert out.macs.dtype == torch.int64 and out.macs.shape == (128,)
    assert out.logits.shape == (128, 10)
    assert len(set(out.paths)) >= 2, "the trained fixture should spread images over several resolutions"
    for path, macs in zip(out.paths, out.macs.tolist()):
        assert macs == fresh_model.predictor_macs + fresh_model.backbone_macs[names.index(path)]


def test_infer_logits_are_the_chosen_resolution_alone(fresh_model, digits_test):
    _, _, normalized = digits_test
    x = normalized[:64]
    out = fresh_model.infer(x)
    names = [fresh_model.path_name(i) for i in range(3)]
    with torch.no_grad():
        chosen = fresh_model.predictor_logits(x).argmax(1).tolist()
        assert [names[c] for c in chosen] == out.paths
        for n, c in enumerate(chosen):
            single = fresh_model.backbone_logits(x[n : n + 1], c)[0]
            torch.testing.assert_close(out.logits[n], single, rtol=1e-5, atol=1e-5)


def test_infer_runs_only_the_chosen_resolutions(fresh_model, digits_test, monkeypatch):
    _, _, normalized = digits_test
    x = normalized[:96]
    calls = []
    real = fresh_model.backbone_logits

    def spy(batch, index):
        calls.append((index, len(batch)))
        return real(batch, index)

    monkeypatch.setattr(fresh_model, "backbone_logits", spy)
    out = fresh_model.infer(x)
    names = [fresh_model.path_name(i) for i in range(3)]
    chosen = [names.index(p) for p in out.paths]
    assert sorted(i for i, _ in calls) == sorted(set(chosen)), "one backbone call per chosen resolution"
    assert sum(n for _, n in calls) == len(x), "each image runs through exactly one backbone"
    for index, n in calls:
        assert n == chosen.count(index)


def test_infer_with_a_predictor_that_always_picks_one_resolution(model, monkeypatch):
    model.eval()
    with torch.no_grad():
        model.predictor.head[-1].weight.zero_()
        model.predictor.head[-1].bias.copy_(torch.tensor([0.0, 0.0, 5.0]))
    calls = []
    real = model.backbone_logits
    monkeypatch.setattr(model, "backbone_logits", lambda b, i: calls.append(i) or real(b, i))
    out = model.infer(images(8, seed=6))
    assert calls == [2]
    assert out.paths == ["res16"] * 8
    assert out.macs.tolist() == [model.predictor_macs + model.backbone_macs[2]] * 8


# --- random resolution baseline ------------------------------------------------------------------

MACS = [12_501_632, 7_032_448, 3_125_888]


@pytest.mark.parametrize("target", [3_125_888, 4e6, 7_032_448, 9e6, 12_501_632])
def test_random_mix_hits_the_target(target):
    mix = random_resolution_mix(MACS, target)
    assert sum(mix) == pytest.approx(1.0, abs=1e-12)
    assert all(0 <= p <= 1 for p in mix)
    assert sum(p * m for p, m in zip(mix, MACS)) == pytest.approx(target, rel=1e-12)
    assert sum(p > 0 for p in mix) <= 2, "only the two bracketing resolutions mix"


def test_random_mix_mixes_the_bracketing_pair():
    mix = random_resolution_mix(MACS, 9e6)
    assert mix[2] == 0.0
    assert mix[0] == pytest.approx((9e6 - MACS[1]) / (MACS[0] - MACS[1]))


@pytest.mark.parametrize("target, expected", [(0.0, [0, 0, 1]), (1e6, [0, 0, 1]), (2e7, [1, 0, 0]), (1e12, [1, 0, 0])])
def test_random_mix_clips_outside_the_range(target, expected):
    assert random_resolution_mix(MACS, target) == [float(p) for p in expected]


@settings(max_examples=60, deadline=None)
@given(
    macs=st.lists(st.integers(1, 10**9), min_size=1, max_size=6, unique=True),
    fraction=st.floats(-0.5, 1.5),
)
def test_random_mix_properties(macs, fraction):
    low, high = min(macs), max(macs)
    target = low + fraction * (high - low)
    mix = random_resolution_mix(macs, target)
    assert len(mix) == len(macs)
    assert all(p >= 0 for p in mix)
    assert sum(mix) == pytest.approx(1.0, abs=1e-9)
    expected = min(max(target, low), high)
    assert sum(p * m for p, m in zip(mix, macs)) == pytest.approx(expected, rel=1e-9)


# --- config round trip ---------------------------------------------------------------------------


def test_build_round_trips_through_a_json_config(model):
    config = json.loads(json.dumps(model_config()))  # as read back from config.json: lists, not tuples
    rebuilt = build(config)
    assert rebuilt.options == OPTIONS
    assert isinstance(rebuilt.options.resolutions, tuple)
    assert rebuilt.resolutions == OPTIONS.resolutions
    assert rebuilt.backbone_macs == model.backbone_macs
    assert rebuilt.predictor_macs == model.predictor_macs
    assert rebuilt.state_dict().keys() == model.state_dict().keys()

    with torch.no_grad():  # give the model non-default weights and statistics
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand_like(tensor) + 0.5)
    rebuilt.load_state_dict(model.state_dict())
    model.eval()
    rebuilt.eval()
    x = images(6, seed=7)
    a, b = model.infer(x), rebuilt.infer(x)
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=0)
    assert a.paths == b.paths
    assert torch.equal(a.macs, b.macs)


def test_build_honours_the_options():
    options = DRNetOptions(resolutions=(28, 20), predictor_depth=14, predictor_width=4, predictor_resolution=12)
    model = build(model_config(options, depth=14))
    assert model.resolutions == (28, 20)
    assert model.predictor.head[-1].out_features == 2
    assert len(model.predictor.blocks) == 6 and model.predictor.stem[0].out_channels == 4
    assert len(model.backbone.blocks) == 6
    bn = model.backbone.stem[1]
    assert len(bn.sets) == 2
    assert model.predictor_macs == count_macs(model.predictor, torch.zeros(1, 3, 12, 12))
