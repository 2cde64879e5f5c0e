"""A batch is dispatched grouped by path, with the same results as one sample at a time, in input order."""

from __future__ import annotations

import re

import numpy as np
import pytest

import runtime

TARGETS = ("onnx", "executorch")
FAMILIES = ("drnet", "blockdrop", "urnet")


@pytest.fixture(scope="module")
def bundles(onnx_bundle, et_bundle, block_bundles):
    return {("drnet", "onnx"): onnx_bundle, ("drnet", "executorch"): et_bundle, **block_bundles}


@pytest.fixture(scope="module")
def sessions(bundles):
    return {key: runtime.load(bundle) for key, bundle in bundles.items()}


def scales_for(session, count: int):
    """Per-image scales spread over [0.2, 1] for URNet, so that the batch mixes paths; None otherwise."""
    return np.linspace(0.2, 1.0, count).astype(np.float32) if session.takes_scale else None


def one_at_a_time(session, images, scales):
    results = [
        session.run(images[i : i + 1], scale=None if scales is None else float(scales[i])) for i in range(len(images))
    ]
    return (
        np.concatenate([r.logits for r in results]),
        [r.paths[0] for r in results],
        np.concatenate([r.macs for r in results]),
    )


class CallCounter:
    """Wraps a session's graph runners to count calls and the samples each call carried."""

    def __init__(self, session) -> None:
        self.calls: list[tuple[str, int]] = []
        for name, run in list(session.graphs.items()):
            session.graphs[name] = self._counting(name, run)

    def _counting(self, name, run):
        def counted(inputs):
            self.calls.append((name, len(inputs[0])))
            return run(inputs)

        return counted


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("family", FAMILIES)
def test_grouped_batches_equal_one_sample_at_a_time(sessions, digits_test, family, target):
    """Batch sizes 1, 7, the maximum and the maximum + 1 (two chunks), against per-sample dispatch."""
    session = sessions[family, target]
    top = session.manifest.max_batch
    images = digits_test[0][: top + 1]
    scales = scales_for(session, len(images))
    logits, paths, macs = one_at_a_time(session, images, scales)
    assert len(set(paths)) > 1, "the images must take several paths for grouping to be exercised"
    for size in (1, 7, top, top + 1):
        result = session.run(images[:size], scale=None if scales is None else scales[:size])
        assert result.paths == paths[:size], size
        np.testing.assert_array_equal(result.macs, macs[:size])
        np.testing.assert_allclose(result.logits, logits[:size], rtol=0, atol=1e-5)


@pytest.mark.parametrize("target", TARGETS)
def test_argmax_calls_each_chosen_path_once(bundles, digits_test, target):
    session = runtime.load(bundles["drnet", target])
    images = digits_test[0][:24]
    chosen = session.run(images).paths
    counter = CallCounter(session)
    session.run(images)
    dispatch, size = session.manifest.dispatch, session.manifest.max_batch
    graph_of = {p.name: p.graph for p in dispatch.paths}
    wanted = {dispatch.selector: 24, **{graph_of[p]: chosen.count(p) for p in set(chosen)}}
    for graph, samples in wanted.items():
        calls = [n for name, n in counter.calls if name == graph]
        assert sum(calls) == samples and len(calls) == -(-samples // size), (graph, calls)
    assert {name for name, _ in counter.calls} == set(wanted)


def test_policy_batch_calls_each_graph_at_most_once(bundles, digits_test):
    session = runtime.load(bundles["blockdrop", "onnx"])
    counter = CallCounter(session)
    result = session.run(digits_test[0][:32])
    names = [name for name, _ in counter.calls]
    assert len(names) == len(set(names)), names
    assert sum(samples for name, samples in counter.calls if name == session.manifest.dispatch.selector) == 32
    assert len(set(result.paths)) > 1


def test_gated_batch_runs_each_block_once_per_decision(bundles, digits_test):
    session = runtime.load(bundles["urnet", "onnx"])
    counter = CallCounter(session)
    result = session.run(digits_test[0][:32], scale=np.linspace(0.2, 1.0, 32))
    blocks = session.manifest.dispatch.blocks
    assert len(counter.calls) <= 1 + 2 * len(blocks)
    for k, step in enumerate(blocks):
        opened = sum(path[k] == "1" for path in result.paths)
        assert dict(counter.calls).get(step.run, 0) == opened
        assert dict(counter.calls).get(step.skip, 0) == 32 - opened


@pytest.mark.parametrize("family", FAMILIES)
def test_a_forced_path_is_taken_by_every_sample(sessions, digits_test, family):
    session = sessions[family, "onnx"]
    path = session.manifest.dispatch.full_path()
    result = session.run(digits_test[0][:5], path=path)
    assert result.paths == [path] * 5
    assert (result.macs == result.macs[0]).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_static_runs_the_reference_graph_alone(sessions, digits_test, family):
    session = sessions[family, "onnx"]
    reference = session.manifest.dispatch.reference
    result = session.run(digits_test[0][:5], static=True)
    assert set(result.timings) == {"preprocess", reference}
    assert (result.macs == session.manifest.graphs[reference].macs).all()


def test_a_path_that_does_not_exist_is_refused(sessions, digits_test):
    with pytest.raises(ValueError, match="not one of this bundle's paths"):
        sessions["drnet", "onnx"].run(digits_test[0][:2], path="res99")
    with pytest.raises(ValueError, match="'0'/'1' characters"):
        sessions["blockdrop", "onnx"].run(digits_test[0][:2], path="10")


@pytest.mark.parametrize(
    "scale, message",
    [(1.5, r"lie in \[0, 1\]"), (-0.1, r"lie in \[0, 1\]"), (float("nan"), r"lie in \[0, 1\]"), ([0.5, 0.5, 0.5], "one per image")],
)
def test_bad_scales_are_refused(sessions, digits_test, scale, message):
    with pytest.raises(ValueError, match=message):
        sessions["urnet", "onnx"].run(digits_test[0][:2], scale=scale)


def test_a_forced_path_through_a_left_out_block_is_refused_unless_it_is_cached(sessions, digits_test):
    session = sessions["blockdrop", "onnx"]
    dispatch = session.manifest.dispatch
    left_out = [k for k, step in enumerate(dispatch.blocks) if step.run is None]
    if not left_out:
        pytest.skip("this plan left no block out")
    cached = {c.path for c in dispatch.cached_paths}
    through = "".join("1" if k == left_out[0] or step.run is not None else "0" for k, step in enumerate(dispatch.blocks))
    if through in cached:
        through = "".join("1" if k == left_out[0] else "0" for k in range(len(dispatch.blocks)))
    assert through not in cached
    with pytest.raises(ValueError, match=re.escape(f"runs blocks {left_out}, which this bundle's plan left out")):
        session.run(digits_test[0][:2], path=through)
    every = "1" * len(dispatch.blocks)
    if every in cached:  # the full path is compiled whole, left-out blocks included
        assert session.run(digits_test[0][:2], path=every).paths == [every, every]