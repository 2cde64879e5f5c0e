"""Version-2 bundles still load and run: read as version 3 with max_batch 1, with the same results.

A version-2 bundle is batch-1 graphs plus a version-2 manifest. The graphs are
made here by exporting with max_batch 1 (static batch-1 graphs, as the
version-2 exporter wrote them); the manifest is then rewritten in version 2's
terms, as docs/bundle.md specifies them: batch 1 first in every shape, the
argmax reference named by its path, the gated section carrying the policy
rule's unused fields. Running more images than max_batch exercises chunking.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import read_json, write_json

import exporter
import runtime
from runtime.profile.cli import main as profile_main
from runtime.format.manifest import MANIFEST_FILE

BUNDLES = (("drnet", "onnx"), ("drnet", "executorch"), ("blockdrop", "onnx"), ("urnet", "onnx"))


def as_version_2(manifest: dict) -> dict:
    """A version-3 manifest of batch-1 graphs, written as the version-2 exporter wrote it."""
    assert manifest.pop("max_batch") == 1
    for graph in manifest["graphs"].values():
        for tensor in (*graph["inputs"], *graph["outputs"]):
            tensor["shape"] = [1, *tensor["shape"]]
    dispatch = manifest["dispatch"]
    if dispatch["rule"] == "argmax":
        reference = dispatch.pop("reference")
        dispatch["reference_path"] = next(p["name"] for p in dispatch["paths"] if p["graph"] == reference)
    if dispatch["rule"] == "gated":
        dispatch.update(selector=None, head=None, segments=[], cached_paths=[], calibration=None)
        for field in ("control_flow", "conditional"):  # version 7: URNet's conditional graph
            dispatch.pop(field, None)
    manifest["preprocessing"]["resize"] = "bilinear"  # version 7 added "pil-bilinear"; these images need no resize
    manifest["macs_convention"] = "conv+linear multiply-accumulates per image, batch 1"
    manifest.setdefault("build", None)
    manifest.pop("accuracy", None)  # version 6
    return {**manifest, "format_version": 2}


@pytest.fixture(scope="module")
def bundles(checkpoint_dir, block_checkpoints, calibration, tmp_path_factory):
    """(version-3 session, version-2 bundle directory) per family and target, on the same batch-1 artifacts."""
    checkpoints = {"drnet": checkpoint_dir, **block_checkpoints}
    made = {}
    for family, target in BUNDLES:
        v3 = tmp_path_factory.mktemp("batch1") / f"{family}-{target}"
        # Version 2 bundles ran URNet's gated blocks one call each: the twin keeps them so.
        options = {"blockdrop": {"calibration": calibration, "cache_paths": 4},
                   "urnet": {"control_flow": "calls"}}.get(family, {})
        # No accuracy measurement: a version-2 manifest has no accuracy section.
        exporter.export(checkpoints[family], target, v3, max_batch=1, accuracy_images=0, **options)
        v2 = tmp_path_factory.mktemp("v2") / f"{family}-{target}"
        v2.mkdir()
        for file in v3.iterdir():
            (v2 / file.name).write_bytes(file.read_bytes())
        write_json(v2 / MANIFEST_FILE, as_version_2(read_json(v3 / MANIFEST_FILE)))
        made[family, target] = runtime.load(v3), v2
    return made


@pytest.mark.parametrize("family, target", BUNDLES)
def test_a_version_2_bundle_runs_as_its_version_3_twin(bundles, digits_test, family, target):
    native, v2 = bundles[family, target]
    session = runtime.load(v2)
    assert session.manifest.format_version == 2 and session.manifest.max_batch == 1
    assert session.manifest.dispatch == native.manifest.dispatch
    images = digits_test[0][:12]
    for scale in (0.2, 1.0) if session.takes_scale else (None,):
        old, new = session.run(images, scale=scale), native.run(images, scale=scale)
        assert old.paths == new.paths
        np.testing.assert_array_equal(old.macs, new.macs)
        np.testing.assert_allclose(old.logits, new.logits, rtol=0, atol=1e-6)


def test_a_version_2_argmax_bundle_matches_eager(bundles, eager, digits_test):
    session = runtime.load(bundles["drnet", "onnx"][1])
    result = session.run(digits_test[0][:12])
    assert result.paths == eager.paths[:12]
    np.testing.assert_allclose(result.logits, eager.logits.numpy()[:12], rtol=0, atol=1e-4)


def test_a_version_2_gated_section_with_policy_fields_set_is_refused(bundles, tmp_path):
    _, v2 = bundles["urnet", "onnx"]
    manifest = read_json(v2 / MANIFEST_FILE)
    manifest["dispatch"]["segments"] = [{"graph": "block0", "first": 0, "last": 1}]
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for file in v2.iterdir():
        (bundle / file.name).write_bytes(file.read_bytes())
    write_json(bundle / MANIFEST_FILE, manifest)
    with pytest.raises(runtime.BundleError, match=r"dispatch\.segments: a gated dispatch has none"):
        runtime.load(bundle)


def test_a_version_2_bundle_profiles(bundles, capsys):
    code = profile_main(
        ["--bundle", str(bundles["drnet", "onnx"][1]), "--device", "host-cpu", "--runs", "3", "--warmup", "1"]
    )
    out, err = capsys.readouterr()
    assert code in (0, 1), err
    assert out.strip().splitlines()[-1] in ("PASS", "FAIL")
