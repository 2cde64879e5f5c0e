"""URNet's conditional graph (--control-flow graph): one call per image that equals the per-block dispatch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import runtime
from exporter.__main__ import main as exporter_main
from runtime.format.devices import get_device
from runtime.format.fields import BundleError
from runtime.profile.ops import self_times
from runtime.rules.gated import SCALES

SINGLE_IMAGES = 6


@pytest.fixture(scope="module")
def flows(block_checkpoints, calibration, tmp_path_factory):
    """The tiny digits URNet (6 blocks) for onnx, once with a conditional graph and once with a call per block,
    loaded as host-cpu serves them (weights shared); compared with each other and with eager here."""
    import exporter

    bundles = {}
    for flow in ("graph", "calls"):
        out = tmp_path_factory.mktemp("control-flow") / flow
        exporter.export(block_checkpoints["urnet"], "onnx", out, calibration=calibration, verify=False,
                        accuracy_images=0, control_flow=flow)
        bundles[flow] = runtime.load(out, device=get_device("host-cpu"))
    return bundles


@pytest.mark.parametrize("scale", SCALES)
def test_single_images_follow_eager(flows, block_checkpoints, digits_test, scale):
    from trainer.checkpoint import load_checkpoint

    model, _ = load_checkpoint(block_checkpoints["urnet"])
    expected = model.infer(digits_test[2][:SINGLE_IMAGES], scale)
    for i in range(SINGLE_IMAGES):
        result = flows["graph"].run(digits_test[0][i : i + 1], scale=scale)
        assert result.paths == expected.paths[i : i + 1]
        assert result.macs[0] == int(expected.macs[i])
        np.testing.assert_allclose(result.logits[0], expected.logits[i].numpy(), atol=1e-4)


def test_the_manifest_records_the_choice(flows):
    graph, calls = flows["graph"].manifest, flows["calls"].manifest
    assert (graph.dispatch.control_flow, graph.dispatch.conditional) == ("graph", "conditional")
    assert (calls.dispatch.control_flow, calls.dispatch.conditional) == ("calls", None)
    written = json.loads((flows["calls"].bundle / "manifest.json").read_text())["dispatch"]
    assert "control_flow" not in written  # a per-block section reads as before version 7


def test_one_image_is_one_call(flows, digits_test):
    result = flows["graph"].run(digits_test[0][:1], scale=1.0)
    assert set(result.timings) == {"preprocess", "conditional"}


def test_every_path_equals_per_block_dispatch(flows, digits_test):
    """Each of the 64 paths forced, image by image, against the per-block graphs: same logits, path and MACs."""
    graph, calls = flows["graph"], flows["calls"]
    count = len(graph.manifest.dispatch.blocks)
    images = digits_test[0][:2]
    for code in range(2**count):
        path = format(code, f"0{count}b")
        expected = calls.run(images, path=path)
        for i in range(len(images)):
            got = graph.run(images[i : i + 1], path=path)
            assert got.paths == [path] == expected.paths[i : i + 1]
            assert got.macs[0] == expected.macs[i]
            np.testing.assert_allclose(got.logits[0], expected.logits[i], atol=1e-4)


@pytest.mark.parametrize("scale", SCALES)
def test_every_scale_equals_per_block_dispatch(flows, digits_test, scale):
    graph, calls = flows["graph"], flows["calls"]
    images = digits_test[0][:SINGLE_IMAGES]
    expected = calls.run(images, scale=scale)
    singles = [graph.run(images[i : i + 1], scale=scale) for i in range(len(images))]
    assert [r.paths[0] for r in singles] == expected.paths
    assert [int(r.macs[0]) for r in singles] == expected.macs.tolist()
    np.testing.assert_allclose(np.concatenate([r.logits for r in singles]), expected.logits, atol=1e-4)


def test_the_graph_takes_batches_with_mixed_decisions(flows, digits_test):
    """Called on a whole batch whose samples disagree on blocks, the conditional graph still gives each sample its
    own path (the mixed branch), as the per-block dispatch does."""
    graph, calls = flows["graph"], flows["calls"]
    count = len(graph.manifest.dispatch.blocks)
    scale = np.where(np.arange(32) % 2, 0.2, 1.0).astype(np.float32)  # one S per image: the gates disagree
    batch = graph.run(digits_test[0][:32], scale=scale)  # several images: per-block calls
    assert len(set(batch.paths)) > 1, "no mixed decisions: the test would not reach the mixed branch"
    from runtime.preprocess import prepare

    prepared = prepare(digits_test[0][:32], graph.manifest.preprocessing)
    for force, expected in ((np.full((32, count), -1.0, np.float32), batch),
                            (np.tile(np.float32([1, 0, 1, 0, 0, 1]), (32, 1)), calls.run(digits_test[0][:32], path="101001"))):
        logits, gates = graph.graphs["conditional"]([prepared, scale, force])
        assert ["".join("1" if g > 0.5 else "0" for g in row) for row in gates] == expected.paths
        np.testing.assert_allclose(logits, expected.logits, atol=1e-4)


def test_the_op_view_times_each_node_once_under_its_ifs(flows, digits_test, tmp_path):
    """onnxruntime times an If whole, its branch nodes included, and each branch node too: summed naively, the
    kernels of the conditional graph took longer than the runs they ran in."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.enable_profiling = 1, True
    options.profile_file_prefix = str(tmp_path / "profile")
    manifest = flows["graph"].manifest
    graph = manifest.graphs[manifest.dispatch.conditional]
    session = ort.InferenceSession(str(flows["graph"].bundle / graph.artifact), options,
                                   providers=["CPUExecutionProvider"])
    force = np.ones((1, len(manifest.dispatch.blocks)), np.float32)  # every block runs, inside its If
    for image in digits_test[2][:8].numpy():  # normalized, as the graph takes them
        session.run(None, {"image": image[None], "scale": np.ones(1, np.float32), "force": force})
    events = json.loads(Path(session.end_profiling()).read_text())
    runs = sum(e["dur"] for e in events if e.get("cat") == "Session" and e["name"] == "model_run")
    assert sum(us for _, us in self_times(events)) <= runs
    assert {e["args"]["op_name"] for e, _ in self_times(events)} >= {"If", "Conv"}


def test_graph_on_executorch_is_refused_by_name(block_checkpoints, tmp_path, capsys):
    code = exporter_main(["--checkpoint", str(block_checkpoints["urnet"]), "--target", "executorch",
                          "--out", str(tmp_path / "refused"), "--control-flow", "graph", "--no-verify"])
    assert code == 2
    error = capsys.readouterr().err
    assert "--control-flow graph on executorch" in error and "XNNPACK" in error
    assert not (tmp_path / "refused").exists()


def test_an_unknown_control_flow_is_refused(block_checkpoints, tmp_path, capsys):
    code = exporter_main(["--checkpoint", str(block_checkpoints["urnet"]), "--target", "onnx",
                          "--out", str(tmp_path / "refused"), "--control-flow", "sometimes"])
    assert code == 2
    assert "control_flow (--control-flow): one of ['auto', 'graph', 'calls']" in capsys.readouterr().err


def _rewrite_manifest(bundle, tmp_path, change):
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    data = json.loads((copy / "manifest.json").read_text())
    change(data)
    (copy / "manifest.json").write_text(json.dumps(data))
    return copy


def test_a_version_6_per_block_bundle_runs_unchanged(flows, digits_test, tmp_path):
    """A bundle written before control flow existed: version 6, no control_flow field."""
    def version_6(data):
        data.update(format_version=6)
        data["preprocessing"]["resize"] = "bilinear"  # version 6's only resize; these images need none

    old = _rewrite_manifest(flows["calls"].bundle, tmp_path, version_6)
    session = runtime.load(old, device=get_device("host-cpu"))
    assert session.manifest.dispatch.control_flow == "calls"
    expected = flows["calls"].run(digits_test[0][:8], scale=0.6)
    result = session.run(digits_test[0][:8], scale=0.6)
    assert result.paths == expected.paths and np.array_equal(result.macs, expected.macs)
    np.testing.assert_allclose(result.logits, expected.logits, atol=1e-5)


@pytest.mark.parametrize("change, field", [
    (lambda d: d["dispatch"].update(control_flow="graph"), "dispatch.conditional"),
    (lambda d: d["dispatch"].update(control_flow="maybe"), "dispatch.control_flow"),
    (lambda d: d["dispatch"].update(conditional="full"), "dispatch.conditional"),
])
def test_a_wrong_control_flow_section_is_refused_by_field(flows, tmp_path, change, field):
    with pytest.raises(BundleError, match=field.replace(".", r"\.")):
        runtime.load(_rewrite_manifest(flows["calls"].bundle, tmp_path, change), device=get_device("host-cpu"))
