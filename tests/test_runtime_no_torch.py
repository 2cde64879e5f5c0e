"""A device installs numpy and one backend: `import runtime` and the ONNX path must never need torch."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import run_without_torch

import runtime



def test_the_blocker_really_blocks_torch():
    done = run_without_torch(
        """
        try:
            import torch
        except ImportError as error:
            print("blocked:", error)
        else:
            raise SystemExit("torch imported despite the blocker")
        """
    )
    assert done.returncode == 0, done.stderr
    assert "blocked: torch is blocked" in done.stdout


def test_onnx_bundle_runs_without_torch(onnx_bundle, digits_test, tmp_path):
    images, _, _ = digits_test
    np.save(tmp_path / "images.npy", images[:40])
    expected = runtime.load(onnx_bundle).run(images[:40])

    done = run_without_torch(
        """
        import json
        import numpy as np
        import runtime

        session = runtime.load(sys.argv[1])
        result = session.run(np.load(sys.argv[2]))
        print(json.dumps({
            "torch_loaded": sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")),
            "logits": result.logits.tolist(),
            "paths": result.paths,
            "macs": result.macs.tolist(),
            "backend": session.backend.name,
        }))
        """,
        str(onnx_bundle),
        str(tmp_path / "images.npy"),
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["torch_loaded"] == []
    assert out["backend"] == "onnxruntime"
    assert out["paths"] == expected.paths
    np.testing.assert_allclose(np.asarray(out["logits"], np.float32), expected.logits, rtol=0, atol=1e-5)
    assert out["macs"] == expected.macs.tolist()


def test_profiler_and_devices_import_without_torch():
    done = run_without_torch(
        """
        import runtime.profile, runtime.format.devices, runtime.profile.timing, runtime.format.manifest, runtime.format.bundle
        runtime.format.devices.load_devices()
        assert "torch" not in sys.modules
        print("ok")
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_executorch_backend_without_torch_names_what_is_missing(et_bundle):
    done = run_without_torch(
        """
        import runtime
        try:
            runtime.load(sys.argv[1])
        except ImportError as error:
            print("refused:", error)
        """,
        str(et_bundle),
    )
    assert done.returncode == 0, done.stderr
    assert "refused: backend 'executorch' needs a package that is missing" in done.stdout
    assert "pip install adaptive-edge[device-executorch]" in done.stdout


def test_executorch_bundle_loads_in_a_normal_process(et_bundle, digits_test):
    session = runtime.load(et_bundle)
    assert session.backend.name == "executorch"
    assert set(session.graphs) == {"predictor", "res32", "res24", "res16"}
    images, _, _ = digits_test
    result = session.run(images[:8])
    assert result.logits.shape == (8, 10) and np.isfinite(result.logits).all()


@pytest.mark.parametrize("module", ["runtime", "runtime.session", "runtime.preprocess", "runtime.backends.onnxruntime"])
def test_runtime_modules_do_not_import_torch_at_top_level(module):
    done = run_without_torch(f"import {module}\nprint('ok')")
    assert done.returncode == 0, done.stderr
