"""The dispatch rules on stand-in graphs: every graph adds its own signature to the features, so the
logits record exactly which graphs a sample went through, and grouped batches must reproduce it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.format.fields import Graph, TensorSpec
from runtime.format.manifest import Manifest, Preprocessing
from runtime.rules import Request
from runtime.rules.block_steps import BlockStep
from runtime.rules.gated import GatedDispatch
from runtime.rules.policy import CachedPath, PolicyDispatch, Segment
from runtime.session import GraphCalls

BLOCKS = 6
IMAGE = TensorSpec("image", (3, 4, 4))
FEATURES = TensorSpec("features", (2,))


def graph(name: str, inputs, outputs, macs: int) -> Graph:
    return Graph(name, "stand-in", None, tuple(inputs), tuple(outputs), macs)


def manifest(dispatch, graphs: list[Graph]) -> Manifest:
    return Manifest(
        3, "stand-in", "onnx", ("a", "b"), 4, Preprocessing(4, (0.0,) * 3, (1.0,) * 3), {g.name: g for g in graphs},
        dispatch, {}, {},
    )


def adds(signature: float):
    """A block-like graph: features in, features plus `signature` in the first channel out."""
    return lambda inputs: [inputs[0] + np.array([signature, 0.0], dtype=np.float32)]


@pytest.fixture
def policy():
    """Blocks 0..5; block 2 was left out; blocks 3-4 fused; block 5 downsamples (its skip is a graph); path 110001 cached."""
    keep = np.random.default_rng(0).uniform(size=(40, BLOCKS)).astype(np.float32)
    keep[:8] = [1, 1, 0, 0, 0, 1]  # the cached path, for a few samples
    steps = [BlockStep(None if k == 2 else f"block{k}", "skip5" if k == 5 else None) for k in range(BLOCKS)]
    dispatch = PolicyDispatch(
        "policy", "stem", "head", tuple(steps), (Segment("blocks3to4", 3, 4),),
        (CachedPath("110001", "path0", 0.5),), None, "full",
    )
    runners = {
        "policy": lambda inputs: [keep[inputs[0][:, 0, 0, 0].astype(int)]],
        "stem": lambda inputs: [np.stack([np.zeros(len(inputs[0])), inputs[0][:, 0, 0, 0]], axis=1).astype(np.float32)],
        "head": lambda inputs: [inputs[0]],
        "path0": lambda inputs: [np.stack([np.full(len(inputs[0]), 1000.0), inputs[0][:, 0, 0, 0]], axis=1).astype(np.float32)],
        "blocks3to4": adds(2**3 + 2**4 + 100),  # a fused segment leaves its own mark
        "skip5": adds(0.5),
        **{f"block{k}": adds(2**k) for k in (0, 1, 3, 4, 5)},
    }
    graphs = [graph(name, [IMAGE if name in ("policy", "stem", "path0") else FEATURES], [FEATURES], macs)
              for name, macs in zip(runners, (7, 11, 13, 17, 19, 23, 2, 3, 5, 29, 31))]
    graphs.append(graph("full", [IMAGE], [FEATURES], 999))
    return manifest(dispatch, graphs), runners, keep


def run(manifest, runners, batch, scale=None, force=None):
    calls: list[tuple[str, int]] = []

    def counting(name, run):
        return lambda inputs: (calls.append((name, len(inputs[0]))), run(inputs))[1]

    call = GraphCalls({n: counting(n, r) for n, r in runners.items()}, manifest.max_batch, {}, Path("stand-in"))
    return manifest.dispatcher()(call, batch, Request(scale=scale, path=force)), calls


def images(count: int) -> np.ndarray:
    """Image i carries its index, which the stand-in policy reads to pick its keep-probabilities."""
    batch = np.zeros((count, 3, 4, 4), dtype=np.float32)
    batch[:, 0, 0, 0] = np.arange(count)
    return batch


def expected_signature(path: str) -> float:
    if path == "110001":
        return 1000.0
    value = sum(2**k for k in (0, 1, 5) if path[k] == "1") + (0.5 if path[5] == "0" else 0.0)
    if path[3] == path[4] == "1":
        return value + 2**3 + 2**4 + 100
    return value + sum(2**k for k in (3, 4) if path[k] == "1")


def test_policy_runs_what_each_path_asks_for(policy):
    manifest, runners, keep = policy
    decision, _ = run(manifest, runners, images(40))
    for i, path in enumerate(decision.paths):
        want = "".join("1" if p >= 0.5 and k != 2 else "0" for k, p in enumerate(keep[i]))
        assert path == want
        assert decision.logits[i, 0] == expected_signature(path), path
        assert decision.logits[i, 1] == i  # input order
        graphs = manifest.dispatch.path_graphs(path)
        assert decision.macs[i] == sum(manifest.graphs[g].macs for g in graphs)


def test_policy_batches_equal_single_samples_and_call_each_graph_once(policy):
    manifest, runners, _ = policy
    batch = images(40)
    decision, calls = run(manifest, runners, batch)
    for i in range(40):
        single, _ = run(manifest, runners, batch[i : i + 1])
        assert single.paths == [decision.paths[i]]
        np.testing.assert_array_equal(single.logits[0], decision.logits[i])
    # Each graph sees each of its samples once, in as few calls as max_batch allows: one group per graph.
    users = {name: sum(name in manifest.dispatch.path_graphs(p) for p in decision.paths) for name in runners}
    for name, count in users.items():
        samples = [n for called, n in calls if called == name]
        assert sum(samples) == count, name
        assert len(samples) == -(-count // manifest.max_batch), name
    assert all(users[name] for name in ("path0", "stem", "blocks3to4", "skip5", "block3"))


def test_batches_beyond_max_batch_are_chunked(policy):
    manifest, runners, _ = policy
    _, calls = run(manifest, runners, images(10))
    assert max(n for _, n in calls) <= manifest.max_batch
    assert sum(n for name, n in calls if name == "policy") == 10


def test_gated_dispatch_follows_the_gates_and_the_forced_path():
    """Gate k opens when the sample's scale exceeds k / 6; block k adds 2**k, its skip adds nothing."""

    def step(k: int, run: bool):
        def graph(inputs):
            features, scale = inputs
            out = features + np.array([2.0**k if run else 0.0, 0.0], dtype=np.float32)
            return [out] if k == BLOCKS - 1 else [out, scale - (k + 1) / BLOCKS]

        return graph

    runners = {"stem": lambda inputs: [np.zeros((len(inputs[0]), 2), np.float32), inputs[1]]}
    for k in range(BLOCKS):
        runners[f"block{k}"], runners[f"skip{k}"] = step(k, True), step(k, False)
    two = [FEATURES, TensorSpec("scale", ())]
    graphs = [graph("stem", [IMAGE, TensorSpec("scale", ())], two, 1), graph("full", [IMAGE], [FEATURES], 99)]
    graphs += [graph(f"{kind}{k}", two, two if k < BLOCKS - 1 else [FEATURES], 10 if kind == "block" else 1)
               for k in range(BLOCKS) for kind in ("block", "skip")]
    dispatch = GatedDispatch("stem", tuple(BlockStep(f"block{k}", f"skip{k}") for k in range(BLOCKS)), "full")
    bundle = manifest(dispatch, graphs)
    scales = np.linspace(0.05, 1.0, 9).astype(np.float32)
    decision, calls = run(bundle, runners, images(9), scales)
    for i, s in enumerate(scales):
        path = "".join("1" if s - k / BLOCKS > 0 else "0" for k in range(BLOCKS))
        assert decision.paths[i] == path
        assert decision.logits[i, 0] == sum(2**k for k in range(BLOCKS) if path[k] == "1")
        assert decision.macs[i] == 1 + sum(10 if c == "1" else 1 for c in path)
    forced, _ = run(bundle, runners, images(3), scales[:3], force="101010")
    assert forced.paths == ["101010"] * 3 and (forced.logits[:, 0] == 1 + 4 + 16).all()
