"""The profiler CLI: a JSON report of MACs, latency and budgets, and exit codes that gate CI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml
from helpers import REPO_ROOT

from runtime.profile import cli as profile_module
from runtime.format.devices import DEFAULT_DEVICES_FILE, ONNXRUNTIME_PROVIDERS, get_device, load_devices

# Latency is machine-dependent; the budgets that must pass get a latency budget no machine misses,
# so the exit code depends on MACs alone. Nothing here asserts how fast anything ran.
GENEROUS_LATENCY_MS = 1e9


def devices_file(tmp_path, **changes) -> str:
    """A copy of the repository's devices.yaml with host-cpu budgets replaced."""
    devices = yaml.safe_load(DEFAULT_DEVICES_FILE.read_text())
    devices["host-cpu"]["budgets"] = {"macs": 50_000_000, "latency_ms": GENEROUS_LATENCY_MS, **changes}
    path = tmp_path / "devices.yaml"
    path.write_text(yaml.safe_dump(devices))
    return str(path)


@pytest.fixture
def images_npy(digits_test, tmp_path):
    images, _, _ = digits_test
    path = tmp_path / "images.npy"
    np.save(path, images[:20])
    return path


def profile_args(bundle, devices, images, out, device="host-cpu"):
    return [
        "--bundle", str(bundle), "--device", device, "--devices", devices, "--runs", "5", "--warmup", "1",
        "--images", str(images), "--out", str(out),
    ]


def test_profile_writes_a_passing_report(onnx_bundle, onnx_session, images_npy, tmp_path, capsys):
    out = tmp_path / "reports" / "report.json"
    code = profile_module.main(profile_args(onnx_bundle, devices_file(tmp_path), images_npy, out))
    captured = capsys.readouterr()
    stdout = captured.out
    assert code == 0
    assert captured.err.startswith(f"runtime.profile: timing every graph and operating point of {onnx_bundle} on "
                                   "host-cpu, 1 warm-up and 5 interleaved rounds\n"), "piped, a line says what runs"
    report = json.loads(out.read_text())
    assert {"graphs", "paths", "dynamic", "budgets", "pass", "reference", "command"} <= report.keys()
    assert report["pass"] is True and stdout.rstrip().endswith("PASS")
    assert report["device"] == "host-cpu" and report["runs"] == 5
    assert "onnxruntime" in report["backend"] and "threads=1" in report["backend"]
    assert report["command"].startswith("python -m runtime.profile --bundle")

    manifest = onnx_session.manifest
    assert set(report["graphs"]) == set(manifest.graphs)
    for name, graph in report["graphs"].items():
        assert graph["macs"] == manifest.graphs[name].macs
        assert graph["median_ms"] > 0 and graph["p90_ms"] >= graph["median_ms"]
    assert list(report["paths"]) == ["res32", "res24", "res16"]
    for path in manifest.dispatch.paths:
        entry = report["paths"][path.name]
        assert entry["macs"] == manifest.dispatch.path_macs(manifest.graphs)[path.name]
        assert entry["median_ms"] > 0
        assert entry["speedup"] == pytest.approx(report["reference"]["median_ms"] / entry["median_ms"])
        assert entry["macs_reduction"] == pytest.approx(report["reference"]["macs"] / entry["macs"])


def test_reference_path_is_measured_against_the_static_model(onnx_bundle, onnx_session, images_npy, tmp_path):
    out = tmp_path / "report.json"
    assert profile_module.main(profile_args(onnx_bundle, devices_file(tmp_path), images_npy, out)) == 0
    report = json.loads(out.read_text())
    manifest = onnx_session.manifest
    reference = report["reference"]
    assert reference["path"] == "res32"
    assert reference["macs"] == manifest.graphs["res32"].macs
    assert reference["median_ms"] > 0  # Session.run(static=True): the reference graph alone, through the API
    own = report["paths"]["res32"]
    assert math.isfinite(own["speedup"]) and own["speedup"] > 0
    assert own["speedup"] == pytest.approx(reference["median_ms"] / own["median_ms"])
    # The reference path runs the selector too, so it has more MACs than the static model it is compared to.
    assert own["macs_reduction"] == pytest.approx(manifest.graphs["res32"].macs / manifest.dispatch.path_macs(manifest.graphs)["res32"])
    assert own["macs_reduction"] < 1


def test_dynamic_section_summarizes_the_real_images(onnx_bundle, onnx_session, images_npy, tmp_path):
    out = tmp_path / "report.json"
    assert profile_module.main(profile_args(onnx_bundle, devices_file(tmp_path), images_npy, out)) == 0
    dynamic = json.loads(out.read_text())["dynamic"]
    result = onnx_session.run(np.load(images_npy))
    assert dynamic["images"] == 20
    assert dynamic["histogram"] == {p: result.paths.count(p) for p in set(result.paths)}
    assert dynamic["batched_speedup"] == pytest.approx(dynamic["batched_static_ms_per_image"] / dynamic["batched_dynamic_ms_per_image"])
    assert dynamic["mean_macs"] == pytest.approx(float(result.macs.mean()))
    assert dynamic["macs_reduction"] == pytest.approx(onnx_session.manifest.graphs["res32"].macs / result.macs.mean())
    assert dynamic["speedup"] == pytest.approx(dynamic["static_ms_per_image"] / dynamic["dynamic_ms_per_image"])


def test_budgets_check_the_dearest_path(onnx_bundle, onnx_session, images_npy, tmp_path):
    out = tmp_path / "report.json"
    profile_module.main(profile_args(onnx_bundle, devices_file(tmp_path), images_npy, out))
    budgets = json.loads(out.read_text())["budgets"]
    manifest = onnx_session.manifest
    assert budgets["macs"] == {
        "value": max(manifest.dispatch.path_macs(manifest.graphs).values()),
        "budget": 50_000_000,
        "path": "res32",
        "pass": True,
    }
    assert budgets["latency_ms"]["budget"] == GENEROUS_LATENCY_MS and budgets["latency_ms"]["pass"] is True


def test_a_tiny_macs_budget_fails(onnx_bundle, images_npy, tmp_path, capsys):
    out = tmp_path / "report.json"
    code = profile_module.main(profile_args(onnx_bundle, devices_file(tmp_path, macs=1000), images_npy, out))
    stdout = capsys.readouterr().out
    assert code == 1
    report = json.loads(out.read_text())
    assert report["pass"] is False
    assert report["budgets"]["macs"]["pass"] is False and report["budgets"]["macs"]["budget"] == 1000
    assert report["budgets"]["latency_ms"]["pass"] is True
    assert "budget macs: worst path res32" in stdout and ": FAIL" in stdout
    assert stdout.rstrip().endswith("FAIL")


def test_a_macs_budget_just_below_the_dearest_path_fails(onnx_bundle, onnx_session, images_npy, tmp_path):
    manifest = onnx_session.manifest
    dearest = max(manifest.dispatch.path_macs(manifest.graphs).values())
    out = tmp_path / "report.json"
    devices = devices_file(tmp_path, macs=dearest - 1)
    assert profile_module.main(profile_args(onnx_bundle, devices, images_npy, out)) == 1
    devices = devices_file(tmp_path, macs=dearest)
    assert profile_module.main(profile_args(onnx_bundle, devices, images_npy, out)) == 0


def test_unknown_device_exits_2_with_a_message(onnx_bundle, images_npy, tmp_path, capsys):
    out = tmp_path / "report.json"
    code = profile_module.main(profile_args(onnx_bundle, devices_file(tmp_path), images_npy, out, device="toaster"))
    err = capsys.readouterr().err
    assert code == 2
    assert "unknown device 'toaster'" in err and "host-cpu" in err
    assert not out.exists()


def test_a_device_without_the_bundles_backend_exits_2(onnx_bundle, images_npy, tmp_path, capsys):
    out = tmp_path / "report.json"
    code = profile_module.main(profile_args(onnx_bundle, devices_file(tmp_path), images_npy, out, device="iphone-15"))
    assert code == 2
    assert "device iphone-15 runs ['coreml'], not onnxruntime" in capsys.readouterr().err


def test_a_bad_bundle_exits_2(tmp_path, images_npy, capsys):
    code = profile_module.main(profile_args(tmp_path / "missing", devices_file(tmp_path), images_npy, tmp_path / "r.json"))
    assert code == 2
    assert "not a bundle directory" in capsys.readouterr().err


def test_bad_images_exit_2(onnx_bundle, tmp_path, capsys):
    images = tmp_path / "images.npy"
    np.save(images, np.zeros((4, 32, 32), np.uint8))
    code = profile_module.main(profile_args(onnx_bundle, devices_file(tmp_path), images, tmp_path / "r.json"))
    assert code == 2
    assert "4-D batch" in capsys.readouterr().err


# --- devices.yaml --------------------------------------------------------------------------------


def test_repository_devices_file_loads():
    # Package data, so an installed device finds it (tests/test_device_install.py checks the wheel).
    assert DEFAULT_DEVICES_FILE == REPO_ROOT / "runtime" / "format" / "devices.yaml"
    assert (REPO_ROOT / "devices.yaml").resolve() == DEFAULT_DEVICES_FILE, "one file, where people look for it"
    devices = load_devices()
    assert "host-cpu" in devices
    names = " ".join(devices)
    descriptions = " ".join(d.description for d in devices.values())
    assert "jetson" in names
    assert "iphone" in names
    assert "Android" in descriptions
    for device in devices.values():
        assert device.macs_budget > 0 and device.latency_budget_ms > 0, device.name
        assert device.backends, device.name
        assert 1 <= device.opt_batch <= device.max_batch, device.name
        assert device.providers is None or "onnxruntime" in device.backends, device.name
    host = devices["host-cpu"]
    assert host.backends[0] == "onnxruntime" and "executorch" in host.backends
    assert host.threads == 1 and host.precision == "fp32"
    assert (host.opt_batch, host.max_batch, host.providers) == (1, 32, ("CPUExecutionProvider",))
    jetson = devices["jetson-orin-nano"]
    assert jetson.workspace_mb == 1024
    assert (jetson.opt_batch, jetson.max_batch) == (8, 32)
    assert jetson.providers == ("TensorrtExecutionProvider", "CUDAExecutionProvider")
    iphone, pixel = devices["iphone-15"], get_device("pixel-8")
    assert iphone.compute_units == "ALL" and (iphone.opt_batch, iphone.max_batch, iphone.providers) == (1, 8, None)
    assert pixel.backends == ("executorch",) and (pixel.opt_batch, pixel.max_batch, pixel.providers) == (1, 8, None)


MINIMAL = "description: d, backends: [onnxruntime], budgets: {macs: 1, latency_ms: 1}"


def test_batch_and_providers_are_optional(tmp_path):
    path = tmp_path / "devices.yaml"
    path.write_text(f"plain: {{{MINIMAL}}}\nset: {{{MINIMAL}, batch: {{opt: 4, max: 4}}, providers: [{', '.join(ONNXRUNTIME_PROVIDERS)}]}}\n")
    devices = load_devices(path)
    assert (devices["plain"].opt_batch, devices["plain"].max_batch, devices["plain"].providers) == (1, 32, None)
    assert (devices["set"].opt_batch, devices["set"].max_batch, devices["set"].providers) == (4, 4, ONNXRUNTIME_PROVIDERS)


@pytest.mark.parametrize(
    "fields, problem",
    [
        ("batch: 8", "batch must hold exactly opt and max"),
        ("batch: {max: 8}", "batch must hold exactly opt and max"),
        ("batch: {opt: 1, max: 8, min: 1}", "batch must hold exactly opt and max"),
        ("batch: {opt: 0, max: 8}", "batch must be integers with 1 <= opt <= max"),
        ("batch: {opt: 16, max: 8}", "batch must be integers with 1 <= opt <= max"),
        ("batch: {opt: 1, max: 8.5}", "batch must be integers with 1 <= opt <= max"),
        ("batch: {opt: true, max: 8}", "batch must be integers with 1 <= opt <= max"),
        ("providers: CPUExecutionProvider", "providers must be a non-empty list"),
        ("providers: []", "providers must be a non-empty list"),
        ("providers: [CpuExecutionProvider]", r"providers \['CpuExecutionProvider'\] are not among \['CPUExecutionProvider'"),
        ("providers: [CPUExecutionProvider, CPUExecutionProvider]", "providers must not repeat a provider"),
    ],
)
def test_bad_batch_or_providers_are_named(tmp_path, fields, problem):
    path = tmp_path / "devices.yaml"
    path.write_text(f"edge: {{{MINIMAL}, {fields}}}\n")
    with pytest.raises(ValueError, match=problem) as error:
        load_devices(path)
    assert f"{path}: device 'edge': " in str(error.value)


def test_providers_need_the_onnxruntime_backend(tmp_path):
    path = tmp_path / "devices.yaml"
    path.write_text(f"edge: {{{MINIMAL.replace('[onnxruntime]', '[coreml]')}, providers: [CoreMLExecutionProvider]}}\n")
    with pytest.raises(ValueError, match=r"device 'edge': providers are set but backends \['coreml'\] do not include onnxruntime"):
        load_devices(path)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("host: [unclosed", "not valid YAML"),
        ("- just\n- a list\n", "expected a mapping of device names"),
        ("", "expected a mapping of device names"),
        ("host: 3\n", "device 'host': expected a mapping"),
        ("host: {description: d, backends: [onnxruntime]}\n", "device 'host': missing field 'budgets'"),
        ("host: {description: d, backends: [], budgets: {macs: 1, latency_ms: 1}}\n", "backends must be a non-empty list"),
        ("host: {description: d, backends: [x], budgets: {macs: 1}}\n", "budgets must hold exactly macs and latency_ms"),
        ("host: {description: d, backends: [x], budgets: {macs: -5, latency_ms: 1}}\n", "budgets must be positive"),
        ("host: {description: d, backends: [x], budgets: {macs: 1, latency_ms: 0}}\n", "budgets must be positive"),
        ("host: {description: d, backends: [x], threads: 0, budgets: {macs: 1, latency_ms: 1}}\n", "threads must be"),
        ("host: {description: d, backends: [x], precision: fp8, budgets: {macs: 1, latency_ms: 1}}\n", "precision 'fp8'"),
        ("host: {description: d, backends: [x], colour: red, budgets: {macs: 1, latency_ms: 1}}\n", r"unknown field\(s\) \['colour'\]"),
    ],
)
def test_a_malformed_devices_file_is_named(tmp_path, text, problem):
    path = tmp_path / "devices.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=problem) as error:
        load_devices(path)
    assert str(path) in str(error.value)


def test_a_missing_devices_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "none.yaml")):
        load_devices(tmp_path / "none.yaml")


def test_a_malformed_devices_file_fails_the_cli(onnx_bundle, tmp_path, images_npy, capsys):
    path = tmp_path / "devices.yaml"
    path.write_text("host-cpu: {description: d}\n")
    args = ["--bundle", str(onnx_bundle), "--device", "host-cpu", "--devices", str(path), "--runs", "1"]
    assert profile_module.main(args) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "missing field" in err
