"""The exporter: bundles that reproduce PyTorch eager, share weights, and appear atomically."""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np
import onnx
import pytest
import torch
from helpers import copy_tree, current_umask, read_json, staging_leftovers, write_json

import exporter
import runtime
from exporter import ParityError, UnsplittableModel, export
from exporter.__main__ import main as exporter_main
from exporter.splits import split_model
from exporter.targets import onnx as onnx_target
from exporter.targets import write_artifacts
from runtime.format.devices import get_device
from runtime.format.files import sha256_of
from runtime.format.manifest import FORMAT_VERSION, MANIFEST_FILE
from trainer import families
from trainer.checkpoint import CONFIG_FILE
from trainer.switchable_bn import SwitchableBatchNorm2d

TOLERANCE = 1e-4
PATHS = ("res32", "res24", "res16")


def run_bundle(session, normalized: torch.Tensor):
    return session.run(normalized.numpy().astype(np.float32))


@pytest.fixture(scope="module")
def executorch_session(et_bundle):
    return runtime.load(et_bundle)


# --- parity --------------------------------------------------------------------------------------


def test_the_reference_spreads_over_several_paths(eager):
    """Parity is only meaningful if the dispatch actually takes different paths."""
    assert len(set(eager.paths)) >= 2, f"the fixture model sends every image down {set(eager.paths)}"


@pytest.mark.parametrize("which", ["onnx", "executorch"])
def test_bundle_matches_pytorch_eager(which, request, eager, digits_test):
    session = request.getfixturevalue(f"{which}_session")
    _, _, normalized = digits_test
    result = run_bundle(session, normalized)
    assert len(result.paths) == len(normalized) == 360
    mismatched = [i for i, (a, b) in enumerate(zip(result.paths, eager.paths)) if a != b]
    assert not mismatched, f"{len(mismatched)} samples took another path, e.g. {mismatched[:5]}"
    diff = np.abs(result.logits - eager.logits.numpy()).max()
    assert diff <= TOLERANCE, f"max |logit diff| {diff:.2e}"
    np.testing.assert_array_equal(result.macs, eager.macs.numpy())


@pytest.mark.parametrize("which", ["onnx", "executorch"])
def test_bundle_on_uint8_images_matches_eager(which, request, eager, digits_test):
    session = request.getfixturevalue(f"{which}_session")
    images, _, _ = digits_test
    result = session.run(images)
    assert result.paths == eager.paths
    assert np.abs(result.logits - eager.logits.numpy()).max() <= TOLERANCE


def test_onnx_and_executorch_bundles_agree(onnx_session, executorch_session, digits_test):
    _, _, normalized = digits_test
    a, b = run_bundle(onnx_session, normalized), run_bundle(executorch_session, normalized)
    assert a.paths == b.paths
    assert np.abs(a.logits - b.logits).max() <= TOLERANCE
    np.testing.assert_array_equal(a.macs, b.macs)


def test_run_reports_timings_per_stage(onnx_session, digits_test):
    images, _, _ = digits_test
    result = onnx_session.run(images[:16])
    assert {"preprocess", "predictor"} <= result.timings.keys()
    assert set(result.timings) - {"preprocess", "predictor"} == set(result.paths)


# --- artifacts -----------------------------------------------------------------------------------


def test_onnx_artifacts_pass_the_checker_with_a_symbolic_batch(onnx_bundle):
    files = sorted(onnx_bundle.glob("*.onnx"))
    assert [f.name for f in files] == sorted(f"{g}.onnx" for g in ("predictor", *PATHS))
    locations = set()
    for file in files:
        onnx.checker.check_model(str(file), full_check=True)
        model = onnx.load(str(file), load_external_data=False)
        opset = {entry.domain: entry.version for entry in model.opset_import}
        assert opset.get("", opset.get("ai.onnx", 0)) >= 17, file.name
        initializers = {init.name for init in model.graph.initializer}
        inputs = [i for i in model.graph.input if i.name not in initializers]
        assert [i.name for i in inputs] == ["image"], file.name
        for tensor in inputs:
            dims = tensor.type.tensor_type.shape.dim
            assert [d.WhichOneof("value") for d in dims] == ["dim_param"] + ["dim_value"] * 3, file.name
            assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 32, 32], file.name
        external = [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
        locations.update(entry.value for t in external for entry in t.external_data if entry.key == "location")
    assert locations == {onnx_target.WEIGHTS_FILE}, "every external weight lives in the one shared file"


def test_executorch_bundle_is_one_multi_method_program(et_bundle):
    manifest = read_json(et_bundle / MANIFEST_FILE)
    assert sorted(p.name for p in et_bundle.iterdir()) == sorted([MANIFEST_FILE, "model.pte"])
    assert list(manifest["artifacts"]) == ["model.pte"]
    for name, graph in manifest["graphs"].items():
        assert graph["artifact"] == "model.pte" and graph["entry"] == name


@pytest.mark.parametrize("target", ["onnx", "executorch"])
def test_graphs_share_their_weights(trained, request, tmp_path, target):
    """At most 1.1x the full-resolution model (with its predictor) plus the extra BN sets, as affine vectors."""
    model, config = trained
    split = split_model(model, "drnet", config["data"]["resolution"])
    alone = tuple(g for g in split.graphs if g.name in ("res32", "predictor"))
    single = tmp_path / "single"
    single.mkdir()
    write_artifacts(target, alone, single, device=None, max_batch=32)
    single_size = sum(path.stat().st_size for path in single.iterdir())
    extra_bn_bytes = sum(
        (len(m.sets) - 1) * 2 * m.sets[0].num_features * 4
        for m in model.backbone.modules() if isinstance(m, SwitchableBatchNorm2d)
    )
    bundle = request.getfixturevalue({"onnx": "onnx_bundle", "executorch": "et_bundle"}[target])
    bundle_size = sum(artifact.bytes for artifact in runtime.load(bundle).manifest.artifacts.values())
    backbone_bytes = 4 * sum(p.numel() for p in model.backbone.parameters() if p.dim() > 1)
    assert single_size > backbone_bytes, "the single-graph artifacts hold the backbone's conv weights"
    assert bundle_size <= 1.1 * (single_size + extra_bn_bytes), (
        f"the bundle is {bundle_size} bytes, {bundle_size / single_size:.2f}x the {single_size} bytes of res32 alone; "
        "the three resolutions must share one copy of the conv weights"
    )


def test_manifest_describes_the_model(trained, onnx_bundle, et_bundle):
    model, config = trained
    for bundle, target in ((onnx_bundle, "onnx"), (et_bundle, "executorch")):
        manifest = runtime.load(bundle).manifest
        assert manifest.format_version == FORMAT_VERSION and manifest.family == "drnet" and manifest.target == target
        assert manifest.classes == tuple(config["data"]["classes"])
        assert manifest.producer["recipe"] == "drnet-digits"
        assert manifest.producer["torch"] == torch.__version__
        dispatch = manifest.dispatch
        assert dispatch.rule == "argmax" and dispatch.selector == "predictor"
        assert [p.name for p in dispatch.paths] == list(PATHS)
        assert [p.resolution for p in dispatch.paths] == [32, 24, 16]
        assert dispatch.reference == "res32"
        assert manifest.max_batch == get_device("host-cpu" if target == "onnx" else "pixel-8").max_batch
        assert manifest.graphs["predictor"].macs == model.predictor_macs
        assert manifest.graphs["predictor"].outputs[0].shape == (3,)
        for index, path in enumerate(dispatch.paths):
            assert manifest.graphs[path.graph].macs == model.backbone_macs[index]
            assert dispatch.path_macs(manifest.graphs)[path.name] == model.predictor_macs + model.backbone_macs[index]
            assert manifest.graphs[path.graph].outputs[0].shape == (10,)
        for file, artifact in manifest.artifacts.items():
            assert artifact.sha256 == sha256_of(bundle / file)
            assert artifact.bytes == (bundle / file).stat().st_size


# --- where bundles land --------------------------------------------------------------------------


def test_existing_bundle_is_not_overwritten_without_force(checkpoint_dir, onnx_bundle, tmp_path):
    out = copy_tree(onnx_bundle, tmp_path / "bundle")
    before = (out / MANIFEST_FILE).read_bytes()
    with pytest.raises(FileExistsError, match=str(out)):
        export(checkpoint_dir, "onnx", out)
    assert (out / MANIFEST_FILE).read_bytes() == before
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileExistsError):
        export(checkpoint_dir, "onnx", empty)
    assert staging_leftovers(tmp_path) == []


def test_force_replaces_an_existing_bundle(checkpoint_dir, onnx_bundle, tmp_path):
    out = copy_tree(onnx_bundle, tmp_path / "bundle")
    (out / "stale.txt").write_text("left over from the previous bundle")
    manifest = read_json(out / MANIFEST_FILE)
    manifest["producer"]["created"] = "1970-01-01T00:00:00+00:00"
    write_json(out / MANIFEST_FILE, manifest)

    report = export(checkpoint_dir, "onnx", out, force=True, verify=False)
    assert report.parity is None
    assert not (out / "stale.txt").exists()
    assert read_json(out / MANIFEST_FILE)["producer"]["created"] != "1970-01-01T00:00:00+00:00"
    assert runtime.load(out).manifest == report.manifest
    assert sorted(os.listdir(tmp_path)) == ["bundle"], "no staging or retired directories left behind"


def failing_write(error: BaseException):
    def write(target, graphs, directory, *, device, max_batch, precision, int8):
        (directory / "predictor.onnx").write_bytes(b"half an artifact")
        raise error

    return write


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()], ids=["error", "interrupt"])
def test_a_failed_export_leaves_no_bundle(checkpoint_dir, tmp_path, monkeypatch, error):
    monkeypatch.setattr(exporter, "write_artifacts", failing_write(error))
    out = tmp_path / "bundle"
    with pytest.raises(type(error)):
        export(checkpoint_dir, "onnx", out)
    assert not out.exists()
    assert os.listdir(tmp_path) == [], "no .partial staging directory may survive"


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()], ids=["error", "interrupt"])
def test_a_failed_forced_export_keeps_the_old_bundle(checkpoint_dir, onnx_bundle, tmp_path, monkeypatch, error):
    out = copy_tree(onnx_bundle, tmp_path / "bundle")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(exporter, "write_artifacts", failing_write(error))
    with pytest.raises(type(error)):
        export(checkpoint_dir, "onnx", out, force=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(os.listdir(tmp_path)) == ["bundle"]
    runtime.load(out)


def test_parity_failure_fails_the_cli_with_numbers_and_writes_nothing(checkpoint_dir, tmp_path, capsys):
    """A real parity check, made impossible to pass by --tolerance: the CLI exits 1, says by how much, and leaves nothing."""
    out = tmp_path / "bundles" / "drnet"
    code = exporter_main(["--checkpoint", str(checkpoint_dir), "--target", "onnx", "--out", str(out), "--samples", "16",
                          "--tolerance", "-1"])
    err = capsys.readouterr().err
    assert code == 1
    assert "parity check failed, no bundle written" in err
    assert "20 samples on onnxruntime" in err and "20/20 same path" in err  # 16, and the first 4 one at a time
    assert re.search(r"max \|logit diff\| \d\.\d\de[-+]\d\d", err), err
    assert not out.exists()
    assert os.listdir(out.parent) == []


def test_parity_error_reports_the_tolerance_in_force(trained, onnx_bundle, digits_test):
    model, _ = trained
    _, _, normalized = digits_test
    with pytest.raises(ParityError) as error:
        exporter.check_parity(onnx_bundle, lambda x, _: model.infer(x), normalized[:8], tolerance=-1.0)
    assert "tolerance -1e+00" in str(error.value)


def test_the_tolerance_scales_with_the_largest_logit():
    """1e-4 for logits up to 1; float32 rounding grows with larger logits (an ImageNet-size ResNet's), and so does the bound."""
    from exporter.verify import Parity

    small, large = (Parity(16, 0, 1.5e-4, 1e-4, "onnxruntime", scale) for scale in (1.0, 50.0))
    assert not small.within_tolerance and large.within_tolerance
    assert "tolerance 1e-04 x max(1, |logit|) = 5.0e-03" in large.summary()


def test_check_parity_raises_on_a_different_model(trained, onnx_bundle, digits_test):
    """check_parity compares against the model it is given: a perturbed model must not pass."""
    model, config = trained
    other = families.get_family("drnet").build(config["model"])
    other.load_state_dict(model.state_dict())
    other.eval()
    with torch.no_grad():
        other.backbone.head[-1].bias.add_(0.01)
    _, _, normalized = digits_test
    with pytest.raises(ParityError, match=r"max \|logit diff\| 1\.00e-02"):
        exporter.check_parity(onnx_bundle, lambda x, _: other.infer(x), normalized[:32])
    assert exporter.check_parity(onnx_bundle, lambda x, _: model.infer(x), normalized[:32]).path_mismatches == 0


def test_cli_refuses_to_overwrite(checkpoint_dir, onnx_bundle, tmp_path, capsys):
    out = copy_tree(onnx_bundle, tmp_path / "bundle")
    code = exporter_main(["--checkpoint", str(checkpoint_dir), "--target", "onnx", "--out", str(out)])
    assert code == 2
    assert "already exists; pass --force" in capsys.readouterr().err


def test_cli_names_a_missing_checkpoint(tmp_path, capsys):
    code = exporter_main(["--checkpoint", str(tmp_path / "nope"), "--target", "onnx", "--out", str(tmp_path / "b")])
    assert code == 2
    assert str(tmp_path / "nope" / CONFIG_FILE) in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_unknown_target_is_refused(checkpoint_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown target 'tflite'"):
        export(checkpoint_dir, "tflite", tmp_path / "b")
    assert os.listdir(tmp_path) == []


# --- unsplittable models -------------------------------------------------------------------------


def test_a_family_without_a_split_is_refused(checkpoint_dir, tmp_path, monkeypatch):
    """A family whose split module does not exist is refused by name, leaving nothing."""
    drnet = families.get_family("drnet")
    fake = dataclasses.replace(drnet, name="fakenet", split="exporter.splits.fakenet")
    monkeypatch.setitem(families.FAMILIES, "fakenet", fake)
    checkpoint = copy_tree(checkpoint_dir, tmp_path / "ckpt")
    config = read_json(checkpoint / CONFIG_FILE)
    config["family"] = "fakenet"
    write_json(checkpoint / CONFIG_FILE, config)
    out = tmp_path / "bundles" / "fakenet"
    with pytest.raises(UnsplittableModel, match="'fakenet'"):
        export(checkpoint, "onnx", out)
    assert not out.parent.exists() or os.listdir(out.parent) == []


def test_an_unknown_family_in_the_checkpoint_is_refused_by_name(checkpoint_dir, tmp_path):
    checkpoint = copy_tree(checkpoint_dir, tmp_path / "ckpt")
    config = read_json(checkpoint / CONFIG_FILE)
    config["family"] = "nosuchnet"
    write_json(checkpoint / CONFIG_FILE, config)
    with pytest.raises(ValueError, match="'nosuchnet'"):
        export(checkpoint, "onnx", tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()


def test_split_model_refuses_unknown_families_and_wrong_models(trained):
    model, _ = trained
    with pytest.raises(UnsplittableModel, match="'fakenet'"):
        split_model(model, "fakenet", 32)
    with pytest.raises(UnsplittableModel, match="expects a DRNet, got Linear"):
        split_model(torch.nn.Linear(3, 3), "drnet", 32)
    assert issubclass(UnsplittableModel, ValueError)


def test_split_graphs_match_the_model(trained, digits_test):
    """Each split graph alone reproduces the model's per-resolution logits and predictor scores."""
    model, config = trained
    split = split_model(model, "drnet", config["data"]["resolution"])
    _, _, normalized = digits_test
    x = normalized[:8]
    graphs = {g.name: g for g in split.graphs}
    assert list(graphs) == ["predictor", *PATHS]
    with torch.no_grad():
        torch.testing.assert_close(graphs["predictor"].module(x), model.predictor_logits(x), rtol=0, atol=1e-6)
        for index, name in enumerate(PATHS):
            modules = list(graphs[name].module.modules())
            assert not any(isinstance(m, SwitchableBatchNorm2d) for m in modules), "BN set not frozen"
            torch.testing.assert_close(graphs[name].module(x), model.backbone_logits(x, index), rtol=0, atol=1e-5)


def test_bundle_directory_gets_ordinary_permissions(onnx_bundle):
    assert onnx_bundle.stat().st_mode & 0o777 == 0o777 & ~current_umask()
