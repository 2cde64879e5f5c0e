"""Version-2 bundles written by the old exporter (commit ae18dd8) still load and run, with the old runtime's results.

The fixtures in tests/data/v2 are real exports, never regenerated (see its README).
A version-2 bundle reads as version 3 with max_batch 1, so running all 12 images at
once also exercises the runtime's chunking.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest

import runtime
import runtime.profile

DATA = Path(__file__).parent / "data" / "v2"
BUNDLES = ("drnet-onnx", "drnet-executorch", "blockdrop-onnx", "urnet-onnx")
URNET_SCALES = {"_s00": 0.0, "_s05": 0.5, "_s10": 1.0}


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    images = np.load(DATA / "images.npy", allow_pickle=False)
    assert images.dtype == np.uint8 and images.shape == (12, 32, 32, 3)
    return images


def expected(name: str) -> dict[str, np.ndarray]:
    with np.load(DATA / f"{name}.expected.npz", allow_pickle=False) as npz:
        return dict(npz)


def load(name: str) -> runtime.Session:
    if name.endswith("executorch"):
        pytest.importorskip("executorch")
    return _load(name)


@cache
def _load(name: str) -> runtime.Session:
    """One session per bundle for the module (loading dominates its run time); tests only call run."""
    return runtime.load(DATA / name)


def assert_matches(result, recorded: dict[str, np.ndarray], suffix: str) -> None:
    assert list(result.paths) == recorded["paths" + suffix].tolist()
    np.testing.assert_array_equal(np.asarray(result.macs), recorded["macs" + suffix])
    np.testing.assert_allclose(np.asarray(result.logits), recorded["logits" + suffix], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", BUNDLES)
def test_v2_bundle_loads_as_batch_1(name):
    session = load(name)
    assert session.manifest.format_version == 2
    assert session.manifest.max_batch == 1
    assert session.manifest.family == name.split("-")[0]
    assert session.manifest.target == name.split("-", 1)[1]


@pytest.mark.parametrize("name", [n for n in BUNDLES if not n.startswith("urnet")])
def test_v2_bundle_reproduces_the_old_runtime(name, images):
    session = load(name)
    assert len(images) > session.manifest.max_batch  # chunked
    assert_matches(session.run(images), expected(name), "")


@pytest.mark.parametrize("suffix", URNET_SCALES)
def test_v2_urnet_bundle_reproduces_the_old_runtime_at_each_scale(suffix, images):
    session = load("urnet-onnx")
    assert_matches(session.run(images, scale=URNET_SCALES[suffix]), expected("urnet-onnx"), suffix)


def test_v2_blockdrop_batch_mixing_cached_and_uncached_paths(images):
    """Test image 87 takes a path that is not cached, so it runs block by block, in the same batch as cached paths."""
    session = load("blockdrop-onnx")
    recorded = expected("blockdrop-onnx")
    cached = {entry.path for entry in session.manifest.dispatch.cached_paths}
    assert recorded["paths_mixed"][-1] not in cached
    assert set(recorded["paths_mixed"][:-1]) <= cached
    assert_matches(session.run(np.concatenate([images, recorded["extra_image"]])), recorded, "_mixed")


def test_v2_bundle_profiles(capsys):
    code = runtime.profile.main(
        ["--bundle", str(DATA / "drnet-onnx"), "--device", "host-cpu", "--runs", "3", "--warmup", "1"]
    )
    out, err = capsys.readouterr()
    assert code in (0, 1), err
    assert out.strip().splitlines()[-1] in ("PASS", "FAIL")
    assert "budget macs" in out
