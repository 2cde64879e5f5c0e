"""Session.run refuses bad input, and runtime.load refuses a bad bundle, with messages that say why."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import copy_tree, read_json, write_json

import runtime
from runtime import BundleError
from runtime.format.manifest import MANIFEST_FILE

# --- bad input -----------------------------------------------------------------------------------


def good_uint8(n: int = 2, side: int = 32) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


def good_float(n: int = 2) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, 3, 32, 32)).astype(np.float32)


def test_good_inputs_run(onnx_session):
    for images in (good_uint8(), good_uint8(side=40), good_float()):
        result = onnx_session.run(images)
        assert result.logits.shape == (2, 10) and result.logits.dtype == np.float32
        assert np.isfinite(result.logits).all()


@pytest.mark.parametrize(
    "images, message",
    [
        pytest.param(good_uint8(1)[0], r"4-D batch.*\(32, 32, 3\)", id="uint8-3d"),
        pytest.param(good_float(1)[0], r"4-D batch.*\(3, 32, 32\)", id="float-3d"),
        pytest.param(good_float(1)[None], r"4-D batch", id="float-5d"),
        pytest.param(np.zeros((2, 32, 32, 4), np.uint8), r"3 channels.*\(2, 32, 32, 4\)", id="uint8-4-channels"),
        pytest.param(np.zeros((2, 32, 32, 1), np.uint8), r"3 channels.*\(2, 32, 32, 1\)", id="uint8-1-channel"),
        pytest.param(np.zeros((2, 3, 32, 32), np.uint8), r"3 channels.*\(2, 3, 32, 32\)", id="uint8-nchw"),
        pytest.param(np.zeros((2, 1, 32, 32), np.float32), r"\(N, 3, 32, 32\).*\(2, 1, 32, 32\)", id="float-1-channel"),
        pytest.param(np.zeros((2, 3, 24, 24), np.float32), r"\(N, 3, 32, 32\).*\(2, 3, 24, 24\)", id="float-resolution"),
        pytest.param(np.zeros((2, 32, 32, 3), np.float32), r"\(N, 3, 32, 32\).*\(2, 32, 32, 3\)", id="float-nhwc"),
        pytest.param(good_float().astype(np.float64), r"dtype float64", id="float64"),
        pytest.param(good_float().astype(np.float16), r"dtype float16", id="float16"),
        pytest.param(np.zeros((2, 32, 32, 3), np.int32), r"dtype int32", id="int32"),
        pytest.param(np.zeros((2, 32, 32, 3), bool), r"dtype bool", id="bool"),
        pytest.param(np.zeros((0, 32, 32, 3), np.uint8), r"empty batch", id="empty-uint8"),
        pytest.param(np.zeros((0, 3, 32, 32), np.float32), r"empty batch", id="empty-float"),
        pytest.param(np.zeros((1, 0, 32, 3), np.uint8), r"empty side", id="uint8-empty-side"),
        pytest.param(good_float().tolist(), r"numpy array, got list", id="list"),
        pytest.param(None, r"numpy array, got NoneType", id="none"),
    ],
)
def test_bad_input_is_refused(onnx_session, images, message):
    with pytest.raises(ValueError, match=message):
        onnx_session.run(images)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_refused(onnx_session, bad):
    images = good_float()
    images[1, 2, 5, 7] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        onnx_session.run(images)


def test_a_refused_batch_does_not_break_the_session(onnx_session):
    expected = onnx_session.run(good_float())
    with pytest.raises(ValueError):
        onnx_session.run(np.zeros((2, 3, 24, 24), np.float32))
    again = onnx_session.run(good_float())
    np.testing.assert_allclose(again.logits, expected.logits, rtol=0, atol=1e-6)
    assert again.paths == expected.paths


# --- bad bundle ----------------------------------------------------------------------------------


@pytest.fixture
def bundle(onnx_bundle, tmp_path):
    """A private copy of the ONNX bundle to corrupt."""
    return copy_tree(onnx_bundle, tmp_path / "bundle")


def edit_manifest(bundle, edit) -> None:
    manifest = read_json(bundle / MANIFEST_FILE)
    edit(manifest)
    write_json(bundle / MANIFEST_FILE, manifest)


def as_version(manifest: dict, version: int) -> None:
    """`manifest` written as an older exporter would: the version, without the fields added since."""
    manifest["format_version"] = version
    if version < 6:
        manifest.pop("accuracy", None)
    if version < 7:
        manifest["preprocessing"]["resize"] = "bilinear"


def refused(bundle, match: str) -> str:
    with pytest.raises(BundleError, match=match) as error:
        runtime.load(bundle)
    return str(error.value)


def test_the_copy_loads(bundle):
    assert runtime.load(bundle).manifest.family == "drnet"


def test_bundle_error_is_a_value_error():
    assert issubclass(BundleError, ValueError)


def test_missing_manifest(bundle):
    (bundle / MANIFEST_FILE).unlink()
    message = refused(bundle, "manifest is missing")
    assert str(bundle / MANIFEST_FILE) in message


def test_missing_directory(tmp_path):
    missing = tmp_path / "no-such-bundle"
    message = refused(missing, "not a bundle directory")
    assert str(missing) in message


def test_a_file_is_not_a_bundle(bundle):
    message = refused(bundle / MANIFEST_FILE, "not a bundle directory")
    assert str(bundle / MANIFEST_FILE) in message


def test_invalid_json(bundle):
    text = (bundle / MANIFEST_FILE).read_text()
    (bundle / MANIFEST_FILE).write_text(text[: len(text) // 2])
    message = refused(bundle, "not valid JSON")
    assert str(bundle / MANIFEST_FILE) in message


def test_binary_garbage_manifest(bundle):
    (bundle / MANIFEST_FILE).write_bytes(b"\xff\xfe\x00garbage")
    refused(bundle, f"{bundle / MANIFEST_FILE}: not valid JSON")


@pytest.mark.parametrize("version", [0, 8, "1", 1.0, True])
def test_unknown_format_version(bundle, version):
    edit_manifest(bundle, lambda m: m.update(format_version=version))
    refused(bundle, f"{bundle / MANIFEST_FILE}: format_version")


def test_format_version_message_names_the_versions_read(bundle):
    edit_manifest(bundle, lambda m: m.update(format_version=8))
    message = refused(bundle, "unknown format_version 8")
    assert "reads [1, 2, 3, 4, 5, 6, 7]" in message


def test_a_rule_newer_than_the_bundle_version_is_refused(bundle):
    """A version 3 manifest cannot name the budget rule, which version 4 introduced."""
    edit_manifest(bundle, lambda m: (as_version(m, 3), m.update(dispatch={**m["dispatch"], "rule": "budget"})))
    refused(bundle, "dispatch.rule: 'budget' exists from format_version 4, not 3")


def test_an_old_version_needs_batch_1_shapes(bundle):
    edit_manifest(bundle, lambda m: as_version(m, 2))
    refused(bundle, r"graphs\['predictor'\]\.inputs\[0\]\.shape: a version 2 graph has batch 1 first")


@pytest.mark.parametrize("field", ["classes", "max_batch", "graphs", "dispatch", "artifacts", "macs_convention"])
def test_missing_top_level_field(bundle, field):
    edit_manifest(bundle, lambda m: m.pop(field))
    refused(bundle, rf"{bundle / MANIFEST_FILE}: manifest: missing field\(s\) \['{field}'\]")


def test_missing_nested_field(bundle):
    edit_manifest(bundle, lambda m: m["graphs"]["res24"].pop("macs"))
    refused(bundle, rf"{bundle / MANIFEST_FILE}: graphs\['res24'\]: missing field\(s\) \['macs'\]")


def test_unknown_top_level_field(bundle):
    edit_manifest(bundle, lambda m: m.update(quantized=True))
    refused(bundle, rf"{bundle / MANIFEST_FILE}: manifest: unknown field\(s\) \['quantized'\]")


def test_unknown_nested_field(bundle):
    edit_manifest(bundle, lambda m: m["preprocessing"].update(antialias=False))
    refused(bundle, rf"{bundle / MANIFEST_FILE}: preprocessing: unknown field\(s\) \['antialias'\]")


def test_wrong_field_type(bundle):
    edit_manifest(bundle, lambda m: m["graphs"]["predictor"].update(macs="808768"))
    refused(bundle, rf"{bundle / MANIFEST_FILE}: graphs\['predictor'\]\.macs: expected int")


def test_non_positive_std(bundle):
    edit_manifest(bundle, lambda m: m["preprocessing"].update(std=[0.2, 0.0, 0.2]))
    refused(bundle, rf"{bundle / MANIFEST_FILE}: preprocessing\.std: must be positive")


@pytest.mark.parametrize("crop", [0, 1.5, -0.5])
def test_a_crop_outside_0_1_is_refused(bundle, crop):
    edit_manifest(bundle, lambda m: m["preprocessing"].update(crop=crop))
    refused(bundle, rf"{bundle / MANIFEST_FILE}: preprocessing\.crop: must be in \(0, 1\]")


def test_a_version_4_manifest_cannot_ask_for_a_crop(bundle):
    """Version 5 introduced the field: a version 4 manifest that names it is refused, not misread."""
    edit_manifest(bundle, lambda m: (as_version(m, 4), m["preprocessing"].update(crop=0.875)))
    refused(bundle, r"preprocessing: unknown field\(s\) \['crop'\]")


def test_a_version_5_manifest_cannot_carry_accuracy(bundle):
    """Version 6 introduced per-point accuracy and graph precision; a version 5 manifest naming them is refused."""
    edit_manifest(bundle, lambda m: m.update(format_version=5))
    refused(bundle, r"manifest: unknown field\(s\) \['accuracy'\]")
    edit_manifest(bundle, lambda m: (as_version(m, 5), m["graphs"]["res24"].update(precision="int8")))
    refused(bundle, r"graphs\['res24'\]: unknown field\(s\) \['precision'\]")


@pytest.mark.parametrize(("edit", "match"), [
    (lambda m: m["accuracy"]["points"][0].update(top1=1.5), r"accuracy\.points\[0\]\.top1: must be in \[0, 1\]"),
    (lambda m: m["accuracy"]["points"][0].update(value=0.5), r"accuracy\.points\[0\]\.value: a path point has no value"),
    (lambda m: m["accuracy"]["points"].append(m["accuracy"]["points"][0]), r"accuracy\.points: point names repeat"),
    (lambda m: m["graphs"]["res24"].update(precision="int4"), r"graphs\['res24'\]\.precision: 'int4' is not one of"),
    (lambda m: m.update(quantization={"precision": "int8", "calibration": None, "selector": None, "check": None}),
     r"quantization\.calibration: int8 graphs on onnx need their calibration recorded"),
])
def test_version_6_fields_are_validated(bundle, edit, match):
    edit_manifest(bundle, edit)
    refused(bundle, rf"{bundle / MANIFEST_FILE}: {match}")


def test_dispatch_selector_naming_a_missing_graph(bundle):
    edit_manifest(bundle, lambda m: m["dispatch"].update(selector="router"))
    refused(bundle, rf"{bundle / MANIFEST_FILE}: dispatch\.selector: 'router' is not one of")


def test_dispatch_path_naming_a_missing_graph(bundle):
    edit_manifest(bundle, lambda m: m["dispatch"]["paths"][1].update(graph="res20"))
    refused(bundle, rf"{bundle / MANIFEST_FILE}: dispatch\.paths\[1\]\.graph: 'res20' is not one of")


def test_selector_scores_must_match_the_paths(bundle):
    edit_manifest(bundle, lambda m: m["dispatch"]["paths"].pop())
    refused(bundle, rf"{bundle / MANIFEST_FILE}: dispatch\.selector: 'predictor' emits scores of shape \[3\], not \[2\]")


def test_reference_must_be_a_graph(bundle):
    edit_manifest(bundle, lambda m: m["dispatch"].update(reference="res64"))
    refused(bundle, rf"{bundle / MANIFEST_FILE}: dispatch\.reference: 'res64' is not one of")


def test_reference_must_be_a_path_s_graph(bundle):
    edit_manifest(bundle, lambda m: m["dispatch"].update(reference="predictor"))
    refused(bundle, rf"{bundle / MANIFEST_FILE}: dispatch\.reference: 'predictor' is not the graph of any path")


@pytest.mark.parametrize("max_batch", [0, -1, 2.5, "8", None])
def test_max_batch_must_be_a_positive_int(bundle, max_batch):
    edit_manifest(bundle, lambda m: m.update(max_batch=max_batch))
    refused(bundle, rf"{bundle / MANIFEST_FILE}: max_batch")


def test_graph_artifact_must_be_listed(bundle):
    edit_manifest(bundle, lambda m: m["graphs"]["res16"].update(artifact="elsewhere.onnx"))
    refused(bundle, rf"{bundle / MANIFEST_FILE}: graphs\['res16'\]\.artifact: 'elsewhere.onnx' is not listed")


@pytest.mark.parametrize("name", ["../res16.onnx", "sub/res16.onnx", MANIFEST_FILE])
def test_artifact_names_must_be_plain_files_in_the_bundle(bundle, name):
    def edit(m):
        m["artifacts"][name] = m["artifacts"].pop("res16.onnx")
        m["graphs"]["res16"]["artifact"] = name

    edit_manifest(bundle, edit)
    refused(bundle, "must be a plain file name inside the bundle")


@pytest.mark.parametrize("file", ["res24.onnx", "weights.bin"])
def test_artifact_with_a_wrong_sha256(bundle, file):
    artifact = bundle / file
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0x01
    artifact.write_bytes(bytes(data))
    message = refused(bundle, "does not match the manifest's")
    assert str(artifact) in message


def test_artifact_replaced_by_another_valid_graph(bundle):
    (bundle / "res16.onnx").write_bytes((bundle / "res32.onnx").read_bytes())
    refused(bundle, f"{bundle / 'res16.onnx'}: sha256")


def test_malformed_sha256_in_the_manifest(bundle):
    edit_manifest(bundle, lambda m: m["artifacts"]["res32.onnx"].update(sha256="ABC"))
    refused(bundle, rf"{bundle / MANIFEST_FILE}: artifacts\['res32.onnx'\]\.sha256: not a lowercase hex sha256")


def test_missing_artifact_file(bundle):
    (bundle / "predictor.onnx").unlink()
    message = refused(bundle, "artifact listed in the manifest is missing")
    assert str(bundle / "predictor.onnx") in message


def test_unknown_backend_for_the_target(bundle):
    with pytest.raises(ValueError, match="'executorch' cannot run a bundle exported for target 'onnx'"):
        runtime.load(bundle, backend="executorch")
    with pytest.raises(ValueError, match="unknown backend 'tflite'"):
        runtime.load(bundle, backend="tflite")


# --- artifacts that do not declare what the manifest says ----------------------------------------


def test_a_declared_image_input_must_match_the_preprocessing(bundle):
    """A predictor declared to take 7x7 images, while the bundle preprocesses to 32x32."""
    edit_manifest(bundle, lambda m: m["graphs"]["predictor"]["inputs"][0].update(shape=[3, 7, 7]))
    refused(bundle, r"graphs\['predictor'\]\.inputs\[0\]\.shape: \[3, 7, 7\] differs from the preprocessed image")


def test_a_tensor_name_the_artifact_does_not_declare(bundle):
    edit_manifest(bundle, lambda m: m["graphs"]["res16"]["outputs"][0].update(name="scores"))
    message = refused(bundle, r"graphs\['res16'\]\.outputs\[0\]\.name is 'scores' but the artifact's is 'logits'")
    assert str(bundle / "res16.onnx") in message


def test_a_max_batch_beyond_what_the_artifact_takes(checkpoint_dir, tmp_path):
    """ONNX graphs exported for batch 1 alone, under a manifest that promises batches of 8."""
    import exporter

    bundle = tmp_path / "batch1"
    exporter.export(checkpoint_dir, "onnx", bundle, max_batch=1, verify=False)
    assert runtime.load(bundle).manifest.max_batch == 1
    edit_manifest(bundle, lambda m: m.update(max_batch=8))
    refused(bundle, r"the artifact takes at most 1 samples, the manifest's max_batch is 8")


@pytest.mark.parametrize("target", ["onnx", "executorch"])
def test_a_feature_shape_the_artifact_does_not_take(block_bundles, tmp_path, target):
    bundle = copy_tree(block_bundles["blockdrop", target], tmp_path / "bundle")
    edit_manifest(bundle, lambda m: m["graphs"]["head"]["inputs"][0].update(shape=[64, 4, 4]))
    message = refused(bundle, r"graphs\['head'\]\.inputs\[0\]\.shape is \[64, 4, 4\] but the artifact's is")
    assert "graph 'head'" in message


def test_executorch_max_batch_beyond_the_program_bound(et_bundle, tmp_path):
    bundle = copy_tree(et_bundle, tmp_path / "bundle")
    exported = runtime.load(et_bundle).manifest.max_batch
    edit_manifest(bundle, lambda m: m.update(max_batch=exported + 1))
    refused(
        bundle,
        rf"model\.pte \(graph 'predictor', method 'predictor'\): graphs\['predictor'\]\.inputs\[0\]: "
        rf"the artifact takes at most {exported} samples, the manifest's max_batch is {exported + 1}",
    )


def rehash(bundle, file: str) -> None:
    """Make the manifest vouch for `file` as it now is: damage the sha256 check cannot catch."""
    from runtime.format.files import sha256_of

    path = bundle / file
    edit_manifest(bundle, lambda m: m["artifacts"][file].update(sha256=sha256_of(path), bytes=path.stat().st_size))


def test_a_truncated_onnx_graph_names_the_file_and_graph(bundle):
    path = bundle / "res24.onnx"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    rehash(bundle, "res24.onnx")
    message = refused(bundle, "onnxruntime cannot load it")
    assert f"{path} (graph 'res24')" in message


@pytest.mark.parametrize("damage", ["truncated", "header"])
def test_a_damaged_program_names_the_file(et_bundle, tmp_path, damage):
    bundle = copy_tree(et_bundle, tmp_path / "bundle")
    path = bundle / "model.pte"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else data[:4] + b"\xff\xfe" + data[6:])
    rehash(bundle, "model.pte")
    message = refused(bundle, "ExecuTorch cannot load|not an ExecuTorch program")
    assert str(path) in message



def test_onnxruntime_refuses_providers_it_does_not_have(onnx_bundle):
    import dataclasses

    from runtime.format.devices import get_device

    device = dataclasses.replace(get_device("host-cpu"), providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
    with pytest.raises(RuntimeError, match=r"not \['CUDAExecutionProvider'\]; install the onnxruntime build"):
        runtime.load(onnx_bundle, device=device)
