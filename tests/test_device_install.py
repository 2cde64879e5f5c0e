"""A device installs the runtime alone: the project's wheel plus one backend, and no torch.

The tests build the wheel from a clean copy of the sources, install it with the
device-onnxruntime extra into a venv of its own, and load, run and profile a
bundle there with that venv's python (isolated, so the checkout is not on its path).

Only the first run downloads: the device venv, with its third-party packages,
is kept under ~/.cache/adaptive-edge/device-venvs/ (or $XDG_CACHE_HOME), keyed
by the wheel's device requirements and the interpreter, and later runs reinstall
just the project's wheel. A lock file serializes concurrent test runs on it.
"""

from __future__ import annotations

import email
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO_ROOT

DEVICE_EXTRA = "device-onnxruntime"
# What the wheel is built from (pyproject.toml's packages, plus the README it names).
SOURCES = ("pyproject.toml", "README.md", "trainer", "exporter", "runtime")


def _run(*command: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=600)


def _pip(python: Path, *args: str | Path) -> None:
    done = _run(python, "-m", "pip", "--disable-pip-version-check", *args)
    if done.returncode == 0:
        return
    # An unreachable index looks like a missing package ("from versions: none"), so ask it about pip itself.
    if _run(python, "-m", "pip", "--disable-pip-version-check", "index", "versions", "pip").returncode != 0:
        pytest.skip(f"pip cannot reach the package index: {done.stderr.strip().splitlines()[-1]}")
    pytest.fail(f"pip {' '.join(map(str, args))} failed:\n{done.stdout}\n{done.stderr}")


def _requirements(wheel: Path) -> dict[str | None, list[str]]:
    """The wheel's Requires-Dist by extra (None: the base install)."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        requires = email.message_from_bytes(archive.read(metadata)).get_all("Requires-Dist") or []
    by_extra: dict[str | None, list[str]] = {}
    for line in requires:
        requirement, _, marker = line.partition(";")
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", marker)
        by_extra.setdefault(extra and extra.group(1), []).append(requirement.strip())
    return by_extra


def _names(requirements: list[str]) -> set[str]:
    return {re.match(r"[A-Za-z0-9._-]+", r).group().lower() for r in requirements}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # A copy, not the checkout: setuptools' build/ directory can carry stale modules
    # into a wheel, and other test runs may be building at the same time.
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        if (REPO_ROOT / name).is_dir():
            shutil.copytree(REPO_ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO_ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    done = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", out, source)
    assert done.returncode == 0, done.stderr
    (built,) = out.glob("*.whl")
    return built


@pytest.fixture(scope="module")
def device_venv(wheel) -> Path:
    """A venv holding the wheel with the device extra, reused across runs; locked while in use."""
    requirements = _requirements(wheel)
    key = json.dumps([requirements.get(None), requirements.get(DEVICE_EXTRA), sys.version, sys.base_prefix])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "adaptive-edge" / "device-venvs"
    venv = cache / hashlib.sha256(key.encode()).hexdigest()[:16]
    python, ready = venv / "bin" / "python", venv / ".ready"
    cache.mkdir(parents=True, exist_ok=True)
    with open(f"{venv}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ready.exists() and python.exists():
            _pip(python, "install", "--quiet", "--no-deps", "--force-reinstall", wheel)
        else:
            # New, or left half-built by an interrupted run.
            shutil.rmtree(venv, ignore_errors=True)
            done = _run(sys.executable, "-m", "venv", venv)
            assert done.returncode == 0, done.stderr
            _pip(python, "install", "--quiet", f"{wheel}[{DEVICE_EXTRA}]")
            ready.touch()
        yield venv


def _device_python(venv: Path, *args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    # -I: no PYTHONPATH, user site or working directory on sys.path, so `runtime` is the installed one.
    return _run(venv / "bin" / "python", "-I", *args, cwd=cwd)


def _device_script(venv: Path, script: str, *args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    return _device_python(venv, "-c", textwrap.dedent(script), *args, cwd=cwd)


@pytest.fixture
def images_npy(digits_test, tmp_path) -> Path:
    images, _, _ = digits_test
    path = tmp_path / "images.npy"
    np.save(path, images[:16])
    return path


def test_the_wheel_ships_every_runtime_module_and_the_devices_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "runtime/format/devices.yaml" in names
    modules = {p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "runtime").rglob("*.py")}
    assert "runtime/backends/__init__.py" in modules
    assert sorted(modules - names) == []


def test_the_base_install_is_the_runtime_and_each_device_extra_one_backend(wheel):
    requirements = {extra: _names(r) for extra, r in _requirements(wheel).items()}
    assert requirements[None] == {"numpy", "pyyaml", "pillow"}
    assert requirements["device-onnxruntime"] == {"onnxruntime"}
    assert requirements["device-coreml"] == {"coremltools"}
    assert {"torch", "torchvision"} <= requirements["train"] and "torch" in requirements["export"]


def test_a_device_install_has_no_torch_and_finds_its_devices_file(device_venv, tmp_path):
    script = """
        import importlib.util, json
        import runtime, runtime.format.devices
        print(json.dumps({
            "torch": importlib.util.find_spec("torch") is not None,
            "runtime": runtime.__file__,
            "devices_file": str(runtime.format.devices.DEFAULT_DEVICES_FILE),
            "devices": sorted(runtime.format.devices.load_devices()),
        }))
    """
    done = _device_script(device_venv, script, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["torch"] is False
    package = Path(found["runtime"]).parent
    assert package.resolve().is_relative_to(device_venv.resolve()) and package.parent.name == "site-packages"
    assert Path(found["devices_file"]) == package / "format" / "devices.yaml"
    assert "host-cpu" in found["devices"]


def test_a_device_install_runs_a_bundle_like_the_dev_install(device_venv, onnx_bundle, images_npy, tmp_path):
    import runtime

    script = """
        import json, sys
        import numpy as np
        import runtime
        result = runtime.load(sys.argv[1]).run(np.load(sys.argv[2]))
        print(json.dumps({"logits": result.logits.tolist(), "paths": list(result.paths)}))
    """
    done = _device_script(device_venv, script, onnx_bundle, images_npy, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    expected = runtime.load(onnx_bundle).run(np.load(images_npy))
    np.testing.assert_allclose(np.asarray(out["logits"], np.float32), expected.logits, rtol=0, atol=1e-5)
    assert out["paths"] == list(expected.paths)


def test_a_device_install_profiles_a_bundle(device_venv, onnx_bundle, images_npy, tmp_path):
    done = _device_python(
        device_venv, "-m", "runtime.profile", "--bundle", onnx_bundle, "--device", "host-cpu",
        "--runs", "3", "--warmup", "1", "--images", images_npy, cwd=tmp_path,
    )
    # 1 is a failed budget (latency depends on the machine); anything else is a crash or a refusal.
    assert done.returncode in (0, 1) and "Traceback" not in done.stderr, done.stderr
    assert "budget macs: worst path" in done.stdout
    assert done.stdout.rstrip().splitlines()[-1] == ("PASS" if done.returncode == 0 else "FAIL")
