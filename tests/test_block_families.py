"""BlockDrop and URNet: rewards, gates, curriculum, real skipping, and checkpoints."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from trainer.backbone import cifar_resnet
from trainer.block_loop import block_costs, blend_blocks, run_blocks
from trainer.families import blockdrop, urnet
from trainer.families.blockdrop import (
    BlockDropOptions, baseline_masks, bound_probabilities, curriculum_learned, policy_loss, reward,
    self_critical_advantage,
)
from trainer.families.urnet import URNetOptions, sample_scale, scale_loss, straight_through
from trainer.recipes import RECIPES

MODEL = {"depth": 20, "width": 8, "num_classes": 10}


def test_reward_is_sparsity_when_correct_and_penalty_otherwise():
    executed = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0]], dtype=torch.float)
    correct = torch.tensor([True, True, True, False])
    assert reward(executed, correct, gamma=5.0).tolist() == pytest.approx([0.0, 1 - 0.25**2, 1.0, -5.0])


def test_self_critical_advantage_is_sampled_minus_greedy():
    sampled, greedy = torch.tensor([0.5, -1.0, 1.0]), torch.tensor([0.25, 0.75, 1.0])
    assert self_critical_advantage(sampled, greedy).tolist() == [0.25, -1.75, 0.0]


def test_bounded_probabilities_keep_exploring():
    probs = torch.tensor([0.0, 0.5, 1.0])
    assert bound_probabilities(probs, 0.8).tolist() == pytest.approx([0.2, 0.5, 0.8])


def test_curriculum_hands_over_one_block_per_epoch_from_the_end():
    assert [curriculum_learned(5, epoch, 10) for epoch in range(7)] == [1, 2, 3, 4, 5, 5, 5]
    # A curriculum shorter than K still ends with every block learned.
    assert [curriculum_learned(6, epoch, 3) for epoch in range(3)] == [2, 4, 6]


def test_forced_blocks_take_no_part_in_the_policy_loss():
    probs = torch.full((4, 5), 0.6, requires_grad=True)
    sampled = torch.bernoulli(torch.full((4, 5), 0.5), generator=torch.Generator().manual_seed(0))
    learned = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0])
    policy_loss(probs, sampled, torch.tensor([1.0, -1.0, 0.5, 2.0]), learned, entropy=0.1).backward()
    assert torch.all(probs.grad[:, :3] == 0)
    assert torch.all(probs.grad[:, 3:] != 0)


def test_positive_advantage_raises_the_sampled_actions_probability():
    logits = torch.zeros(1, 3, requires_grad=True)
    sampled = torch.tensor([[1.0, 0.0, 1.0]])
    loss = policy_loss(torch.sigmoid(logits), sampled, torch.tensor([1.0]), torch.ones(3), entropy=0.0)
    loss.backward()
    # Gradient descent moves logits against the gradient: up where kept, down where dropped.
    assert (-logits.grad).sign().tolist() == [[1.0, -1.0, 1.0]]


def test_baselines_keep_exactly_k_blocks():
    backbone = cifar_resnet(20, num_classes=10)
    generator = torch.Generator().manual_seed(0)
    first = baseline_masks("FirstK", 4, backbone, 3, generator)
    assert first[0].tolist() == [True] * 4 + [False] * 5
    spread = baseline_masks("DistributeK", 4, backbone, 3, generator)
    assert spread[0].tolist() == [True, True, False, True, False, False, True, False, False]
    randomk = baseline_masks("RandomK", 4, backbone, 50, generator)
    assert torch.all(randomk.sum(1) == 4) and len({tuple(r) for r in randomk.tolist()}) > 1


def test_straight_through_is_binary_forward_and_sigmoid_backward():
    logits = torch.tensor([-2.0, -0.1, 0.3, 4.0], requires_grad=True)
    gates = straight_through(logits)
    assert gates.tolist() == [0.0, 0.0, 1.0, 1.0]
    gates.sum().backward()
    sigmoid = torch.sigmoid(logits.detach())
    assert torch.allclose(logits.grad, sigmoid * (1 - sigmoid))


def test_scale_loss_sign_and_magnitude():
    gates = torch.ones(2, 4, requires_grad=True)
    loss = scale_loss(gates, torch.tensor([0.5, 0.5]))
    assert loss.item() == pytest.approx(0.25)
    loss.backward()
    assert torch.all(gates.grad > 0)  # too many open gates: descent closes them
    assert scale_loss(torch.full((2, 4), 0.5), torch.tensor([0.5, 0.5])).item() == 0.0


def test_fixed_scale_anneals_from_one_to_target_and_stays_at_most_one():
    options = URNetOptions(fixed_scale=0.4, scale_noise=0.0)
    rng = torch.Generator().manual_seed(0)
    assert sample_scale(options, 0.0, rng, 3).tolist() == pytest.approx([1.0] * 3)
    assert sample_scale(options, 0.5, rng, 3).tolist() == pytest.approx([0.7] * 3)
    assert sample_scale(options, 1.0, rng, 3).tolist() == pytest.approx([0.4] * 3)
    noisy = URNetOptions(fixed_scale=0.9, scale_noise=0.5)
    assert all(sample_scale(noisy, 0.0, rng, 1).item() <= 1.0 for _ in range(200))


@pytest.mark.parametrize("per_sample", [True, False])
def test_free_scale_spans_the_range_per_sample_or_per_batch(per_sample):
    options = URNetOptions(scale_per_sample=per_sample)
    rng = torch.Generator().manual_seed(0)
    batches = torch.stack([sample_scale(options, 0.3, rng, 64) for _ in range(50)])
    assert 0.2 <= batches.min() < 0.25 and 0.95 < batches.max() <= 1.0
    spread_within_batches = (batches.max(dim=1).values - batches.min(dim=1).values).min().item()
    assert spread_within_batches > 0.3 if per_sample else spread_within_batches == 0.0


def _calls(module: torch.nn.Module) -> list[int]:
    counter = [0]
    module.register_forward_hook(lambda *_: counter.__setitem__(0, counter[0] + 1))
    return counter


@pytest.mark.parametrize("dropped", [2, 3])  # an identity block and a downsampling block
def test_a_dropped_block_is_not_called_and_saves_exactly_its_macs(dropped):
    backbone = cifar_resnet(20, num_classes=10).eval()
    costs = block_costs(backbone, 32)
    calls = _calls(backbone.blocks[dropped])
    x = torch.randn(2, 3, 32, 32)
    keep = torch.ones(2, 9, dtype=torch.bool)
    keep[:, dropped] = False
    logits, executed = run_blocks(backbone, x, lambda k, _: keep[:, k])
    assert calls[0] == 0
    full = costs.macs(torch.ones(2, 9, dtype=torch.bool))
    assert (full - costs.macs(executed)).tolist() == [costs.run[dropped] - costs.skip[dropped]] * 2
    assert torch.allclose(logits, blend_blocks(backbone, x, lambda k, _: keep[:, k].float()), atol=1e-5)


def test_blockdrop_infer_skips_per_sample_and_counts_what_ran():
    model = blockdrop.build({**MODEL, "options": dataclasses.asdict(BlockDropOptions())}).eval()
    x = torch.randn(6, 3, 32, 32)
    out = model.infer(x)
    assert out.blocks.shape == (6, 9)
    expected = model.policy_macs + model.costs.macs(out.blocks)
    assert torch.equal(out.macs, expected)
    assert out.paths == ["".join(str(int(b)) for b in row) for row in out.blocks.tolist()]
    # Per-sample masks match running each sample alone with its own policy.
    for i in range(len(x)):
        alone = model.run_policy(x[i : i + 1], out.blocks[i : i + 1])
        assert torch.allclose(alone.logits, out.logits[i : i + 1], atol=1e-5)


def test_closed_urnet_gates_skip_blocks_and_macs_include_every_gate():
    model = urnet.build({**MODEL, "options": dataclasses.asdict(URNetOptions())}).eval()
    for gate in model.gates[::2]:
        torch.nn.init.constant_(gate.fc2.bias, -100.0)  # always closed
        torch.nn.init.zeros_(gate.fc2.weight)
    calls = [_calls(block) for block in model.backbone.blocks]
    out = model.infer(torch.randn(3, 3, 32, 32), scale=0.5)
    assert [c[0] for c in calls] == [0 if k % 2 == 0 else 1 for k in range(9)]
    assert out.paths == ["010101010"] * 3
    assert torch.equal(out.macs, model.gate_macs + model.costs.macs(out.blocks))
    assert model.gate_macs > 0


DIRECT = URNetOptions(gate_mode="direct-scale", soft_probability=0.5)


def test_urnet_gates_open_more_as_the_scale_rises_from_the_start():
    """Direct-scale mode: before any training, the gate logit rises with S, through the direct path and the MLP input alike."""
    model = urnet.build({**MODEL, "options": dataclasses.asdict(DIRECT)}).eval()
    gate = model.gates[0]
    torch.nn.init.normal_(gate.fc1.weight, generator=torch.Generator().manual_seed(0))
    features = torch.randn(1, 8, 32, 32)
    logits = [gate(features, torch.tensor([s])).item() for s in (0.2, 0.6, 1.0)]
    assert logits[0] < logits[1] < logits[2]
    gate.scale_weight.data.zero_()  # the MLP alone still sees S
    assert gate(features, torch.tensor([0.2])).item() != gate(features, torch.tensor([1.0])).item()


def test_urnet_training_gradients_reach_the_gates_through_binary_gates():
    """Direct-scale mode: binary gates pass the sigmoid's gradient."""
    torch.manual_seed(0)
    model = urnet.build({**MODEL, "options": dataclasses.asdict(DIRECT)}).train()
    scale = torch.full((4,), 0.5)
    logits, gates = model(torch.randn(4, 3, 32, 32), scale, soft=False)
    assert set(gates.detach().unique().tolist()) <= {0.0, 1.0}
    (torch.nn.functional.cross_entropy(logits, torch.arange(4)) + scale_loss(gates, scale)).backward()
    # Every gate's output layer learns, open or closed: the step passes the sigmoid's gradient.
    assert all(g.fc2.bias.grad is not None and g.fc2.bias.grad.abs().item() > 0 for g in model.gates)


@pytest.mark.parametrize("recipe_name", ["blockdrop-digits", "urnet-digits"])
def test_digits_recipes_train_and_reload_with_weights_only(recipe_name, tmp_path):
    from trainer.checkpoint import WEIGHTS_FILE, load_checkpoint, load_extras
    from trainer.evaluate import evaluate_model
    from trainer.recipes import get_recipe
    from trainer.train import train

    recipe = get_recipe(recipe_name)
    config = train(recipe.with_epochs(len(recipe.phases)), tmp_path, subset=192)
    state = torch.load(tmp_path / WEIGHTS_FILE, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    model, loaded = load_checkpoint(tmp_path)
    assert loaded["family"] == recipe.family
    extras = load_extras(tmp_path, loaded)
    assert sorted(extras) == loaded["extras"]
    again = evaluate_model(model, loaded, extras=extras)
    assert again["model"]["accuracy"] == pytest.approx(config["metrics"]["model"]["accuracy"])
    assert again["model"]["mean_macs"] == pytest.approx(config["metrics"]["model"]["mean_macs"])


@pytest.mark.slow
@pytest.mark.parametrize("recipe_name", ["blockdrop-digits", "urnet-digits"])
def test_digits_recipes_train_end_to_end_within_two_minutes(recipe_name, tmp_path):
    from trainer.recipes import get_recipe
    from trainer.train import train

    config = train(get_recipe(recipe_name), tmp_path)
    assert config["training"]["wall_time_s"] < 120
    assert config["metrics"]["model"]["accuracy"] > 0.5
    if recipe_name == "urnet-digits":  # block usage follows S
        usage = {p["scale"]: p["model"]["usage"] for p in config["metrics"]["operating_points"]}
        assert list(usage.values()) == sorted(usage.values()), usage
        assert all(abs(usage[s] - s) <= 0.25 for s in (0.4, 0.6, 0.8, 1.0)), usage


def test_baselines_are_evaluated_with_running_bn_statistics():
    """Companion networks arrive from training in train mode; the test split is class-ordered, so batch
    statistics would wipe out the class signal. At S = 1 'rand, val' is the plain ResNet in eval mode."""

    from trainer.evaluate import evaluate_model

    torch.manual_seed(0)
    config = {"family": "urnet", "data": {"dataset": "digits"},
              "model": {**MODEL, "options": dataclasses.asdict(URNetOptions())}}
    model = urnet.build(config["model"])
    resnet = urnet.build_extra(config["model"], "resnet")
    with torch.no_grad():  # give BN running statistics that differ from any batch's
        for m in resnet.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
    metrics = evaluate_model(model, config, extras={"resnet": resnet.train()})
    from trainer.data import load_split

    dataset, _ = load_split("digits", "test")
    images, labels = map(torch.stack, zip(*(dataset[i] for i in range(len(dataset)))))
    with torch.no_grad():
        expected = (resnet.eval()(images).argmax(1) == labels).float().mean().item()
    at_one = next(p for p in metrics["operating_points"] if p["scale"] == 1.0)
    assert at_one["baselines"]["rand, val"]["accuracy"] == pytest.approx(expected)


def test_option_a_shortcut_pools_then_pads_with_zero_channels():
    from trainer.backbone import ZeroPadShortcut, cifar_resnet

    x = torch.randn(2, 16, 8, 8)
    out = ZeroPadShortcut(16, 32, 2)(x)
    assert out.shape == (2, 32, 4, 4)
    torch.testing.assert_close(out[:, :16], torch.nn.functional.avg_pool2d(x, 2))
    assert not out[:, 16:].any()
    projection, zero_pad = (sum(p.numel() for p in cifar_resnet(20, num_classes=10, shortcut=s).parameters()) for s in ("projection", "zero-pad"))
    assert projection - zero_pad == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)  # two 1x1 convs and their BNs
    with pytest.raises(ValueError, match="unknown shortcut 'c'"):
        cifar_resnet(20, num_classes=10, shortcut="c")


def test_option_a_refuses_an_odd_map_by_name():
    """Pooling rounds an odd side down where the strided conv rounds it up: a clear error, not a shape mismatch."""
    from trainer.backbone import cifar_resnet

    network = cifar_resnet(8, num_classes=10, shortcut="zero-pad").eval()
    assert network(torch.randn(1, 3, 20, 20)).shape == (1, 10)
    with pytest.raises(ValueError, match="halves a 9x9 map: option A backbones need inputs whose sides are multiples of 4"):
        network(torch.randn(1, 3, 18, 18))


@pytest.mark.parametrize("mean, k", [(3.0, 3), (3.01, 4), (2.5, 3), (5.999, 6)])
def test_table_1_rounds_k_up(mean, k):
    assert blockdrop.blocks_kept(mean) == k


@pytest.mark.parametrize("depth, gamma", [(20, 5.0), (32, 5.0), (56, 5.0), (110, 10.0)])
def test_cifar_recipes_take_table_3s_gamma_for_the_nearest_paper_depth(depth, gamma):
    recipe = RECIPES[f"blockdrop-cifar10-resnet{depth}"]
    assert recipe.options.gamma == gamma
    assert f"gamma {gamma:g}, Table 3's for ResNet-{32 if gamma == 5 else 110}" in recipe.description


def test_table_1_protocol_measures_the_baselines_on_the_pretrained_resnet(block_checkpoints):
    """BlockDrop Table 1: heuristics at K = ceil(mean blocks) on the pretrained ResNet and fine-tuned with their own
    policies, the curriculum-only policy, and the pretrained full ResNet; the pretrained network is kept apart."""
    from trainer.checkpoint import load_checkpoint, load_extras, read_config

    config = read_config(block_checkpoints["blockdrop"])
    metrics = config["metrics"]
    k = blockdrop.blocks_kept(metrics["model"]["blocks_mean"])
    rows = set(metrics["baselines"])
    assert {f"{name} (K={k}), pretrained" for name in blockdrop.BASELINES} <= rows
    assert {"curriculum only, pretrained", "full ResNet, pretrained"} <= rows
    finetuned = {row for row in rows if row.endswith("fine-tuned with its policy")}
    assert len(finetuned) == 3, rows
    extras = load_extras(block_checkpoints["blockdrop"], config)
    assert {"pretrained", "curriculum_policy"} <= extras.keys()
    model, _ = load_checkpoint(block_checkpoints["blockdrop"])
    pretrained, finetuned_backbone = extras["pretrained"].state_dict(), model.backbone.state_dict()
    assert any(not torch.equal(pretrained[key], finetuned_backbone[key]) for key in pretrained), "joint finetuning moved the ResNet"
    # The rows measure the pretrained network, not BlockDrop's fine-tuned backbone.
    from trainer.data import load_split

    test_set, _ = load_split("digits", "test")
    images = torch.stack([test_set[i][0] for i in range(len(test_set))])
    labels = torch.tensor([test_set[i][1] for i in range(len(test_set))])
    with torch.no_grad():
        full = (extras["pretrained"](images).argmax(1) == labels).float().mean().item()
        mask = blockdrop.baseline_masks("FirstK", k, extras["pretrained"], len(images), torch.Generator())
        first_k, _ = run_blocks(extras["pretrained"], images, lambda b, _: mask[:, b])
    assert metrics["baselines"]["full ResNet, pretrained"]["accuracy"] == pytest.approx(full)
    assert metrics["baselines"][f"FirstK (K={k}), pretrained"]["accuracy"] == pytest.approx(
        (first_k.argmax(1) == labels).float().mean().item()
    )


def test_urnet_paper_mode_binary_gates_pass_no_gradient_and_sigmoid_gates_do():
    """The paper's gate training: a binary step has no gradient; only the p share of sigmoid iterations trains the CGMs."""
    model = urnet.build({**MODEL, "options": dataclasses.asdict(URNetOptions())}).train()
    assert model.options.gate_mode == "paper" and model.gates[0].scale_weight is None
    scale, x, labels = torch.full((4,), 0.5), torch.randn(4, 3, 32, 32), torch.arange(4)
    for soft in (False, True):
        learns = soft
        model.zero_grad()
        logits, gates = model(x, scale, soft=soft)
        assert set(gates.detach().unique().tolist()) <= {0.0, 1.0} or soft
        (torch.nn.functional.cross_entropy(logits, labels) + scale_loss(gates, scale)).backward()
        grads = [g.fc2.bias.grad for g in model.gates]
        assert all(g is not None and g.abs().item() > 0 for g in grads) if learns else all(g is None or g.abs().item() == 0 for g in grads)


@pytest.mark.parametrize("p", [0.0, 0.5])
def test_urnet_paper_mode_gate_phase_computes_only_its_sigmoid_iterations(p):
    """The CGMs alone, the ResNet frozen: a binary iteration passes the CGMs no gradient, so it is drawn but not
    computed, and p = 0 (the paper's URNet-BG) leaves the CGMs untrained, as the paper says."""
    from torch.utils.data import DataLoader, TensorDataset

    from trainer.loop import Phase

    torch.manual_seed(0)
    model = urnet.build({**MODEL, "options": dataclasses.asdict(URNetOptions(soft_probability=p))})
    loader = DataLoader(TensorDataset(torch.randn(64, 3, 32, 32), torch.arange(64) % 10), batch_size=8, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    off = Phase(epochs=0, lr=0.1)
    phases = {"pretrain": off, "joint": off, "gates": Phase(epochs=2, lr=1e-2, optimizer="adam", weight_decay=0.0)}
    before = {k: v.clone() for k, v in model.gates.state_dict().items()}
    forwards = []
    model.backbone.stem.register_forward_hook(lambda *_: forwards.append(1))
    urnet.fit(model, loader, phases=phases, device=torch.device("cpu"))

    draws = torch.Generator().manual_seed(1)  # fit's "gates" generator: one draw per iteration
    sigmoid_iterations = sum(bool(torch.rand(1, generator=draws) < p) for _ in range(2 * len(loader)))
    assert len(forwards) == sigmoid_iterations and (sigmoid_iterations > 0) == (p > 0)
    moved = any(not torch.equal(before[k], v) for k, v in model.gates.state_dict().items())
    assert moved == (p > 0)


def test_urnet_paper_mode_draws_once_per_iteration_from_the_seeded_generator():
    model = urnet.build({**MODEL, "options": dataclasses.asdict(URNetOptions(soft_probability=0.5))}).train()
    scale, x = torch.full((2,), 0.6), torch.randn(2, 3, 32, 32)
    kinds = []
    for seed in range(12):
        _, gates = model(x, scale, generator=torch.Generator().manual_seed(seed))
        binary = ((gates == 0) | (gates == 1)).all(dim=0)
        assert binary.all() or not binary.any(), "every gate of an iteration is of one kind"
        kinds.append(bool(binary.all()))
        _, again = model(x, scale, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(gates, again)
    assert len(set(kinds)) == 2


def test_configs_from_before_gate_modes_rebuild_the_direct_scale_cgm():
    options = dataclasses.asdict(DIRECT)
    del options["gate_mode"], options["anneal_epochs"]
    model = urnet.build({**MODEL, "options": options})
    assert model.options.gate_mode == "direct-scale" and model.gates[0].scale_weight is not None
