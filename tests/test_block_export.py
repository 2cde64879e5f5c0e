"""BlockDrop and URNet bundles: the calibration plan, dispatch through cached paths and segments, parity, size."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

import runtime
from exporter.splits import split_model
from exporter.splits.block_graphs import choose_cached_paths, fused_segments, plan_blocks
from exporter.targets import write_artifacts
from runtime.rules.gated import SCALES

TARGETS = ("onnx", "executorch")


def test_the_top_k_paths_are_cached():
    counts = Counter({"111": 5, "101": 9, "001": 2, "110": 5, "011": 5})
    assert choose_cached_paths(counts, 3) == [("101", 9), ("011", 5), ("110", 5)]
    assert choose_cached_paths(counts, 10)[-1] == ("001", 2)


def test_segments_fuse_runs_of_always_on_blocks():
    assert fused_segments([1.0, 1.0, 0.5, 1.0, 1.0, 1.0, 0.0, 1.0]) == [(0, 1), (3, 5)]
    assert fused_segments([1.0, 0.9, 1.0]) == []


def test_plan_records_usage_coverage_and_blocks_left_out():
    executed = torch.tensor([[1, 0, 1, 1], [1, 0, 1, 0], [1, 0, 1, 1], [1, 0, 0, 1]], dtype=torch.bool)
    plan = plan_blocks(executed, cache_paths=1)
    assert plan.usage == (1.0, 0.0, 0.75, 0.75)
    assert plan.cached == (("1011", 0.5),)
    assert plan.coverage == 0.5
    assert plan.left_out == (1,)
    assert plan.segments == ()


@pytest.mark.parametrize("target", TARGETS)
def test_blockdrop_bundle_matches_eager_on_the_test_split(block_checkpoints, block_bundles, digits_test, target):
    from trainer.checkpoint import load_checkpoint

    model, config = load_checkpoint(block_checkpoints["blockdrop"])
    split = split_model(model, "blockdrop", 32)  # no calibration: nothing left out, so eager is the reference
    images, _, normalized = digits_test
    session = runtime.load(block_bundles["blockdrop", target])
    left_out = [k for k, step in enumerate(session.manifest.dispatch.blocks) if step.run is None]
    expected = model.infer(normalized)
    result = session.run(images)
    asks_left_out = np.array([any(p[k] == "1" for k in left_out) for p in expected.paths], dtype=bool)
    same = [a == b for a, b in zip(expected.paths, result.paths)]
    assert all(s for s, asked in zip(same, asks_left_out) if not asked)
    kept = ~asks_left_out
    assert np.abs(expected.logits.numpy()[kept] - result.logits[kept]).max() < 1e-4
    assert np.array_equal(result.macs[kept], expected.macs.numpy()[kept])
    assert split.dispatch.calibration is None


def test_cached_paths_run_as_one_graph(block_bundles, digits_test):
    session = runtime.load(block_bundles["blockdrop", "onnx"])
    dispatch = session.manifest.dispatch
    images, _, _ = digits_test
    cached = {c.path: c.graph for c in dispatch.cached_paths}
    for i in range(20):
        result = session.run(images[i : i + 1])
        ran = set(result.timings) - {"preprocess", dispatch.selector}
        if result.paths[0] in cached:
            assert ran == {cached[result.paths[0]]}
        else:
            assert dispatch.stem in ran and dispatch.head in ran


def test_segments_are_used_when_all_their_blocks_run(block_checkpoints, tmp_path, digits_test):
    """A calibration set on which the policy keeps blocks 0 and 1 always yields a fused segment."""
    from trainer.checkpoint import load_checkpoint

    model, _ = load_checkpoint(block_checkpoints["blockdrop"])
    with torch.no_grad():
        head = model.policy.head[-1]
        head.weight.zero_()
        head.bias.copy_(torch.tensor([9.0, 9.0, -9.0, 9.0, -9.0, 9.0]))
    split = split_model(model, "blockdrop", 32, calibration=digits_test[2][:16], cache_paths=0)
    assert [(s.first, s.last) for s in split.dispatch.segments] == [(0, 1)]
    assert [k for k, step in enumerate(split.dispatch.blocks) if step.run is None] == [2, 4]
    assert {c.path for c in split.dispatch.cached_paths} == {"111111"}


@pytest.mark.parametrize("target", TARGETS)
def test_a_skipped_downsampling_block_is_a_parameter_free_graph_with_zero_macs(block_checkpoints, block_bundles, digits_test, target):
    """Option A shortcuts (the block recipes' default): skipping a stage's first block costs nothing, and matches eager."""
    from trainer.backbone import ZeroPadShortcut
    from trainer.checkpoint import load_checkpoint

    model, _ = load_checkpoint(block_checkpoints["blockdrop"])
    downsampling = [k for k, block in enumerate(model.backbone.blocks) if block.downsample is not None]
    assert downsampling == [2, 4]  # ResNet-14: the first block of stages 2 and 3
    assert all(isinstance(model.backbone.blocks[k].downsample, ZeroPadShortcut) for k in downsampling)
    assert not any(p.numel() for k in downsampling for p in model.backbone.blocks[k].downsample.parameters())

    session = runtime.load(block_bundles["blockdrop", target])
    dispatch, graphs = session.manifest.dispatch, session.manifest.graphs
    assert [graphs[dispatch.blocks[k].skip].macs for k in downsampling] == [0, 0]
    runnable = [step.run is not None for step in dispatch.blocks]
    path = "".join("1" if ran and k not in downsampling else "0" for k, ran in enumerate(runnable))
    images, _, normalized = digits_test
    result = session.run(images[:16], path=path)
    keep = torch.tensor([c == "1" for c in path]).expand(16, -1)
    with torch.no_grad():
        expected = model.run_policy(normalized[:16], keep)
    assert result.paths == [path] * 16
    assert np.abs(expected.logits.numpy() - result.logits).max() < 1e-4
    assert np.array_equal(result.macs, expected.macs.numpy())


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("scale", [0.2, 0.6, 1.0])
def test_urnet_bundle_follows_eager_at_every_scale(block_checkpoints, block_bundles, digits_test, target, scale):
    from trainer.checkpoint import load_checkpoint

    model, _ = load_checkpoint(block_checkpoints["urnet"])
    images, _, normalized = digits_test
    expected = model.infer(normalized[:64], scale)
    result = runtime.load(block_bundles["urnet", target]).run(images[:64], scale=scale)
    assert result.paths == expected.paths
    assert np.abs(expected.logits.numpy() - result.logits).max() < 1e-4
    assert np.array_equal(result.macs, expected.macs.numpy())


def test_urnet_bundle_block_usage_follows_the_scale(block_bundles, digits_test):
    session = runtime.load(block_bundles["urnet", "onnx"])
    usage = [np.mean([p.count("1") / len(p) for p in session.run(digits_test[0][:64], scale=s).paths]) for s in SCALES]
    assert usage == sorted(usage), dict(zip(SCALES, usage))
    assert usage[-1] - usage[0] >= 0.5, dict(zip(SCALES, usage))


def test_urnet_bundle_needs_a_scale_in_range(block_bundles, digits_test):
    session = runtime.load(block_bundles["urnet", "onnx"])
    with pytest.raises(ValueError, match=r"scale must lie in \[0, 1\]"):
        session.run(digits_test[0][:2], scale=1.5)
    with pytest.raises(ValueError, match="has no compute scale"):
        runtime.load(block_bundles["blockdrop", "onnx"]).run(digits_test[0][:2], scale=0.5)


def test_urnet_gates_cost_no_extra_call(block_bundles, digits_test):
    session = runtime.load(block_bundles["urnet", "onnx"])
    result = session.run(digits_test[0][:1], scale=1.0)
    blocks = len(session.manifest.dispatch.blocks)
    assert len(set(result.timings) - {"preprocess"}) <= blocks + 1  # stem plus one graph per block


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("family", ["blockdrop", "urnet"])
def test_bundle_stores_weights_once(block_checkpoints, block_bundles, tmp_path, family, target):
    """Close to the full model (plus policy or gates) alone, however many graphs share its blocks.

    Each graph adds a few KB of its own (its structure, XNNPACK's graph
    description, small tensors such as BN vectors kept inline), about 10% over
    this tiny ResNet-14's 0.7 MB across a dozen or more graphs; one weight copy
    per graph would be several times the size.
    """
    from trainer.checkpoint import load_checkpoint

    model, _ = load_checkpoint(block_checkpoints[family])
    split = split_model(model, family, 32)
    alone = [g for g in split.graphs if g.name in ("full", "policy")]
    if family == "urnet":  # the gates ride along with the block graphs
        alone += [g for g in split.graphs if g.name == "stem"]
    single = tmp_path / "single"
    single.mkdir()
    write_artifacts(target, tuple(alone), single, device=None, max_batch=32)
    single_size = sum(path.stat().st_size for path in single.iterdir())
    bundle = block_bundles[family, target]
    manifest = runtime.load(bundle).manifest
    sizes = {name: artifact.bytes for name, artifact in manifest.artifacts.items()}
    # URNet's conditional graph (--control-flow graph) repeats every block's structure, not its weights.
    conditional = manifest.dispatch.conditional if family == "urnet" else None
    structure = sizes.pop(manifest.graphs[conditional].artifact) if conditional else 0
    assert structure <= 0.15 * single_size, f"the conditional graph holds {structure} bytes of its own"
    bundle_size = sum(sizes.values())
    assert bundle_size <= 1.2 * single_size, (
        f"{len(manifest.graphs)} graphs take {bundle_size} bytes vs {single_size} alone"
    )
