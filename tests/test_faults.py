"""Faults lose nothing, and bad input is refused by name: killed exports, altered weights, arguments of the wrong kind."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO_ROOT, copy_tree, staging_leftovers

import runtime
from runtime.format.files import remove_stale_staging, sha256_of
from runtime.format.manifest import MANIFEST_FILE
from runtime.session import NonFiniteOutput

DEAD_PID = 2**22 + 1  # above Linux's default pid_max: no process has it


# --- killed exports leave no debris ------------------------------------------------------------------


def test_stale_staging_entries_of_a_target_are_removed_and_live_ones_kept(tmp_path):
    target = tmp_path / "bundle"
    dead = [tmp_path / f".bundle.{DEAD_PID}.x1.partial", tmp_path / f".bundle.{DEAD_PID}.x2.old"]
    for entry in dead:
        entry.mkdir()
        (entry / "graph.onnx").write_bytes(b"half")
    (tmp_path / f".bundle.{DEAD_PID}.x3.partial").write_bytes(b"a half-written file")
    live = tmp_path / f".bundle.{Path('/proc/self').resolve().name}.x4.partial"  # this process: alive
    live.mkdir()
    other = tmp_path / f".other.{DEAD_PID}.x5.partial"  # another target's
    other.mkdir()
    removed = remove_stale_staging(target)
    assert sorted(p.name for p in removed) == sorted([*(e.name for e in dead), f".bundle.{DEAD_PID}.x3.partial"])
    assert staging_leftovers(tmp_path) == sorted([live.name, other.name])


def test_three_killed_exports_then_a_good_one_leave_only_the_bundle(checkpoint_dir, tmp_path):
    out = tmp_path / "exports" / "bundle"
    command = [sys.executable, "-m", "exporter", "--checkpoint", str(checkpoint_dir), "--target", "onnx",
               "--out", str(out), "--force", "--accuracy-images", "0"]
    for _ in range(3):
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not list(out.parent.glob(".bundle.*.partial/*.onnx")):  # killed mid-write: a graph in staging
            assert process.poll() is None, "the export finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert staging_leftovers(out.parent), "the kills left staging directories to clean"
    assert subprocess.run(command, cwd=REPO_ROOT, capture_output=True).returncode == 0
    assert [p.name for p in out.parent.iterdir()] == ["bundle"]


# --- non-finite outputs are refused ------------------------------------------------------------------


def poisoned(bundle: Path, tmp_path: Path) -> Path:
    """`bundle` with every weight of its ONNX weights file set to NaN, and the manifest re-hashed to match:
    an edit the sha256 cannot catch, by design."""
    copy = copy_tree(bundle, tmp_path / "poisoned")
    weights = copy / "weights.bin"
    weights.write_bytes(np.full(weights.stat().st_size // 4, np.nan, np.float32).tobytes())
    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    manifest["artifacts"]["weights.bin"]["sha256"] = sha256_of(weights)
    (copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    return copy


def test_a_graph_answering_nan_is_refused_naming_bundle_graph_and_sample(onnx_bundle, digits_test, tmp_path):
    bundle = poisoned(onnx_bundle, tmp_path)
    session = runtime.load(bundle)
    selector = session.manifest.dispatch.selector
    with pytest.raises(NonFiniteOutput, match=rf"{bundle}: graph '{selector}' answered NaN or inf in output 0 for "
                                              r"sample 0 of the 3 it ran on \(3 non-finite\)"):
        session.run(digits_test[0][:3])
    with pytest.raises(NonFiniteOutput, match="graph 'res32'"):
        session.run(digits_test[0][:1], static=True)


def test_the_profiler_refuses_non_finite_outputs_in_one_line(onnx_bundle, tmp_path):
    bundle = poisoned(onnx_bundle, tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "runtime.profile", "--bundle", str(bundle), "--device", "host-cpu", "--runs", "2",
         "--warmup", "1"], cwd=REPO_ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 2
    started, error = result.stderr.splitlines()  # what it set out to time, then the one-line error
    assert started.startswith("runtime.profile: timing every graph")
    assert error.startswith("runtime.profile: error: ") and "answered NaN or inf" in error


def test_finite_outputs_pass_the_check(onnx_session, digits_test):
    assert np.isfinite(onnx_session.run(digits_test[0][:8]).logits).all()


# --- one argument check for every rule ---------------------------------------------------------------


@pytest.mark.parametrize("arguments, message", [
    ({"budget_ms": "5"}, "budget_ms must be a positive number, got '5'"),
    ({"budget_macs": True}, "budget_macs must be a positive number, got True"),
    ({"budget_macs": float("nan")}, "budget_macs must be a positive number, got nan"),
    ({"scale": "abc"}, "scale must be a number in [0, 1], or one per image, got 'abc'"),
    ({"scale": "0.5"}, "scale must be a number in [0, 1], or one per image, got '0.5'"),
    ({"scale": True}, "scale must be a number in [0, 1], or one per image, got True"),
    ({"scale": [0.5, "1"]}, "scale must be a number in [0, 1], or one per image, got [0.5, '1']"),
    ({"path": 3}, "path must be a path's name (a string), got 3"),
    ({"static": "yes"}, "static must be True or False, got 'yes'"),
    ({"static": True, "budget_macs": 1}, "pass either static=True or a budget, not both: the static model has one cost"),
    ({"static": True, "path": "res16"}, "pass either path= or static=True, not both"),
    ({"path": "res16", "budget_macs": 1e9}, "pass either path= or a budget, not both"),
])
def test_each_argument_is_checked_by_name_before_anything_runs(onnx_session, digits_test, arguments, message):
    with pytest.raises(ValueError) as error:
        onnx_session.run(digits_test[0][:2], **arguments)
    assert str(error.value) == message


@pytest.mark.parametrize("family", ["blockdrop", "urnet"])
def test_the_block_rules_refuse_a_budget_with_static_or_path_alike(block_bundles, digits_test, family):
    session = runtime.load(block_bundles[family, "onnx"])
    path = session.manifest.dispatch.full_path()
    for arguments, message in (({"static": True, "budget_macs": 1}, "pass either static=True or a budget"),
                               ({"path": path, "budget_macs": 1}, "pass either path= or a budget")):
        with pytest.raises(ValueError, match=message):
            session.run(digits_test[0][:1], **arguments)


def test_a_numpy_scale_per_image_is_a_number(block_bundles, digits_test):
    result = runtime.load(block_bundles["urnet", "onnx"]).run(digits_test[0][:3], scale=np.array([0.2, 0.6, 1.0], np.float32))
    assert len(result.paths) == 3
