"""Int8 bundles: each graph calibrated on the inputs routed to it, checked against fp32 and eager, refused with
the numbers when accuracy collapses.

The digits models are the session's tiny trained ones; a rigged DRNet
predictor (its last linear layer set by hand) makes the routing known in
advance, so the recorded inputs can be compared with it exactly.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from torch import nn

import exporter
import runtime
from exporter.__main__ import main as export_main
from exporter.quantize import SELECTOR_AGREEMENT
from exporter.quantize.routing import MINIMUM_SAMPLES, record_routed_inputs
from runtime.format.manifest import read_manifest
from trainer.checkpoint import load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def int8_bundles(checkpoint_dir, calibration, tmp_path_factory):
    """The digits DRNet as int8 for both runnable targets, calibrated on the session's 256 training images."""
    bundles = {}
    for target in ("onnx", "executorch"):
        out = tmp_path_factory.mktemp("int8") / f"drnet-{target}"
        exporter.export(checkpoint_dir, target, out, precision="int8", calibration=calibration,
                        calibration_source="digits train, first 256 images")
        bundles[target] = out
    return bundles


def rigged_drnet(checkpoint_dir, directory, images: torch.Tensor, *, margin: float | None) -> torch.Tensor:
    """A copy of the DRNet checkpoint whose predictor picks res32 or res16 by the sum of its pooled features,
    split in the widest gap between the middle half of `images`, scores `margin` apart per standard deviation;
    res24 is never chosen. With `margin` None every image picks res16, by a wide margin. Returns which pick res32."""
    model, config = load_checkpoint(checkpoint_dir)
    last = [m for m in model.predictor.modules() if isinstance(m, nn.Linear)][-1]
    features = []
    hook = last.register_forward_hook(lambda _, inputs, __: features.append(inputs[0].sum(1)))
    with torch.no_grad():
        model.eval().predictor_logits(images)
    hook.remove()
    total = features[0]
    ordered = total.sort().values
    quarter = len(ordered) // 4
    widest = quarter + int((ordered[quarter + 1 : 3 * quarter] - ordered[quarter : 3 * quarter - 1]).argmax())
    split = float(ordered[widest : widest + 2].mean())
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0, -1e3, 10.0]))
        if margin is not None:
            last.weight[0] = margin / float(total.std())
            last.bias[0] = -split * float(last.weight[0, 0])
            last.bias[2] = 0.0
    saved = {k: v for k, v in config.items() if k not in ("config_version", "extras", "weights_sha256")}
    save_checkpoint(directory, model, saved)
    return total > split if margin is not None else torch.zeros(len(images), dtype=torch.bool)


def test_an_int8_bundle_matches_eager_within_its_stated_tolerance(int8_bundles, onnx_bundle, et_bundle, eager, digits_test):
    _, labels, normalized = digits_test
    for target, fp32 in (("onnx", onnx_bundle), ("executorch", et_bundle)):
        session = runtime.load(int8_bundles[target])
        manifest = session.manifest
        selector = manifest.quantization.selector
        assert selector.precision == ("int8" if selector.agreement >= selector.threshold else "fp32")
        assert {g.name: g.precision for g in manifest.graphs.values()} == {
            "predictor": selector.precision, "res32": "int8", "res24": "int8", "res16": "int8"}
        check = manifest.quantization.check
        result = session.run(normalized.numpy())
        same = np.array([a == b for a, b in zip(result.paths, eager.paths)])
        assert same.mean() >= SELECTOR_AGREEMENT - 0.01
        assert np.abs(result.logits - eager.logits.numpy())[same].max() <= check.tolerance
        assert check.top1 >= check.top1_fp32 - 0.01 and check.top1 == pytest.approx(np.mean(result.logits.argmax(1) == labels))
        # Smaller, though not 4x: fp32 stores the convolutions once for all resolutions (BN as an affine after
        # them), int8 folds each resolution's BN set into its own copy of them.
        size = sum(a.bytes for a in manifest.artifacts.values())
        assert size < sum(a.bytes for a in runtime.load(fp32).manifest.artifacts.values())


def test_the_manifest_records_the_calibration_and_each_graphs_share(int8_bundles, calibration):
    quantization = runtime.load(int8_bundles["onnx"]).manifest.quantization
    recorded = quantization.calibration
    assert recorded.images == 256 and recorded.source == "digits train, first 256 images"
    assert recorded.sha256 == hashlib.sha256(calibration.numpy().astype(np.float32).tobytes()).hexdigest()
    assert recorded.routed.get("predictor", 256) == 256, "the predictor, when int8, sees every image"
    assert sum(recorded.routed[p] for p in ("res32", "res24", "res16")) == 256, "each image runs one resolution"


def test_each_resolution_is_calibrated_on_exactly_the_images_routed_to_it(checkpoint_dir, calibration, tmp_path):
    picks_res32 = rigged_drnet(checkpoint_dir, tmp_path / "rigged", calibration, margin=50.0)
    assert 0 < int(picks_res32.sum()) < len(calibration)
    bundle = tmp_path / "fp32"
    exporter.export(tmp_path / "rigged", "onnx", bundle, accuracy_images=0)
    routed = record_routed_inputs(bundle, calibration.numpy())
    assert routed.routed == {"predictor": 256, "res32": int(picks_res32.sum()), "res24": 0,
                             "res16": int((~picks_res32).sum())}
    seen = {name: np.concatenate([batch[0] for batch in batches]) for name, batches in routed.inputs.items()}
    np.testing.assert_array_equal(seen["res32"], calibration.numpy()[picks_res32.numpy()])
    np.testing.assert_array_equal(seen["res16"], calibration.numpy()[~picks_res32.numpy()])
    assert routed.forced == {"res24": 256}, f"only the never-routed resolution is topped up (under {MINIMUM_SAMPLES})"


def test_a_selector_with_clear_margins_runs_int8(checkpoint_dir, calibration, tmp_path):
    rigged_drnet(checkpoint_dir, tmp_path / "rigged", calibration, margin=None)
    manifest = exporter.export(tmp_path / "rigged", "onnx", tmp_path / "int8", precision="int8",
                               calibration=calibration).manifest
    chosen = manifest.quantization.selector
    assert chosen.precision == "int8" and chosen.agreement >= chosen.threshold == SELECTOR_AGREEMENT
    assert {g.precision for g in manifest.graphs.values()} == {"int8"}
    assert manifest.quantization.calibration.routed["predictor"] == 256


def test_a_selector_that_int8_would_misroute_stays_float(checkpoint_dir, calibration, tmp_path):
    """Scores a hair apart: int8 rounds them together and routes half the images elsewhere."""
    rigged_drnet(checkpoint_dir, tmp_path / "rigged", calibration, margin=1e-4)
    manifest = exporter.export(tmp_path / "rigged", "onnx", tmp_path / "int8", precision="int8",
                               calibration=calibration).manifest
    chosen = manifest.quantization.selector
    assert chosen.precision == "fp32" and chosen.agreement < chosen.threshold == SELECTOR_AGREEMENT
    assert manifest.graphs["predictor"].precision == "fp32" and manifest.graphs["res32"].precision == "int8"
    assert "predictor" not in manifest.quantization.calibration.routed
    assert manifest.quantization.check.path_agreement == 1.0, "with the float selector, routing is fp32's"


def test_a_broken_calibration_set_is_refused_with_the_numbers(checkpoint_dir, tmp_path, capsys):
    """All-black calibration images: every activation range collapses, and so does top-1."""
    black = tmp_path / "black.npy"
    np.save(black, np.zeros((64, 32, 32, 3), np.uint8))
    out = tmp_path / "int8"
    code = export_main(["--checkpoint", str(checkpoint_dir), "--target", "onnx", "--out", str(out),
                        "--precision", "int8", "--calibration", str(black)])
    error = capsys.readouterr().err
    assert code == 1 and not out.exists()
    assert "quantization check failed, no bundle written" in error and "top-1 fell from" in error


def test_a_precision_the_target_cannot_write_is_refused(checkpoint_dir, tmp_path):
    with pytest.raises(ValueError, match=r"target onnx writes precision \['fp32', 'int8'\], not 'fp16'"):
        exporter.export(checkpoint_dir, "onnx", tmp_path / "fp16", precision="fp16")


def test_urnet_and_blockdrop_quantize_block_by_block(block_checkpoints, calibration, digits_test, tmp_path):
    """BlockDrop caches every path its calibration images take: no image reaches its stem, blocks or head, which
    are then calibrated on the inputs they get when every block runs."""
    for family, checkpoint in block_checkpoints.items():
        options = {"cache_paths": 256} if family == "blockdrop" else {}
        manifest = exporter.export(checkpoint, "onnx", tmp_path / family, precision="int8", calibration=calibration,
                                   **options).manifest
        calibrated = manifest.quantization.calibration
        assert set(calibrated.routed) | set(calibrated.forced) == {g for g, x in manifest.graphs.items() if x.precision == "int8"}
        assert all(calibrated.routed[g] + calibrated.forced.get(g, 0) > 0 for g in calibrated.routed)
        check = manifest.quantization.check
        assert check.max_abs_diff <= check.tolerance and check.top1 >= check.top1_fp32 - 0.01
        if family == "blockdrop":
            assert calibrated.routed["stem"] == 0 < calibrated.forced["stem"]
    urnet = runtime.load(tmp_path / "urnet")
    usage = [np.mean([p.count("1") / len(p) for p in urnet.run(digits_test[0], scale=s).paths]) for s in (0.2, 1.0)]
    assert usage[0] < usage[1], "int8 gates still follow S"


def test_a_version_6_int8_manifest_round_trips(int8_bundles):
    manifest = runtime.load(int8_bundles["onnx"]).manifest
    text = json.loads(manifest.to_json())
    assert text["graphs"]["res32"]["precision"] == "int8" and text["quantization"]["precision"] == "int8"
    assert read_manifest(int8_bundles["onnx"]) == manifest
