"""scripts/arm_check.sh and its comparison (scripts/arm_compare.py): ARM's decisions against x86's, per image."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import CIFAR10_ROOT, REPO_ROOT, run_without_torch, script_module

SCRIPT = REPO_ROOT / "scripts" / "arm_compare.py"
DATA_ROOT = CIFAR10_ROOT

arm_compare = script_module("arm_compare")


def _run(paths, logits, margins):
    return {"paths": np.array(paths), "logits": np.array(logits, dtype=np.float32), "margins": np.array(margins)}


def test_compare_judges_logits_only_where_paths_agree_and_reports_each_flips_margin():
    labels = np.array([0, 1, 1, 0])
    x86 = _run(["a", "a", "b", "b"], [[1, 0], [0, 1], [0, 1], [1, 0]], [0.5, 0.01, 0.3, 0.2])
    arm = _run(["a", "b", "b", "b"], [[1.0005, 0], [5, 0], [0, 1], [1, 0]], [0.5, 0.002, 0.3, 0.2])
    row = arm_compare.compare("drnet-onnx-fp32", x86, arm, labels)
    assert (row.backend, row.precision, row.bundle) == ("onnxruntime", "fp32", "drnet-fp32")
    assert row.same_path == 0.75 and row.flips == 1
    assert row.max_logit_delta == pytest.approx(5e-4, rel=1e-3)  # the flipped image's logits (off by 5) are not in it
    assert row.flip_margins == [0.01]  # x86's margin: how close the reference came to the other path
    assert row.close_calls == 1  # no other image was as close as the flipped one
    assert (row.top1_x86, row.top1_arm, row.same_top1) == (1.0, 0.75, 0.75)
    assert row.verdict == "MISS"  # 75% on the same path, and top-1 off by 25 pp
    same = arm_compare.compare("drnet-onnx-int8", x86, x86, labels)
    assert (same.same_path, same.max_logit_delta, same.verdict) == (1.0, 0.0, "held")


def test_decision_margin_of_a_scored_selector_is_its_best_score_minus_the_runner_up(onnx_session, digits_test):
    images = digits_test[0][:12]
    selector = onnx_session.manifest.dispatch.selector
    scores = []

    def record(name, inputs, call):
        outputs = call(inputs)
        if name == selector:
            scores.append(outputs[0])
        return outputs

    with onnx_session.hooked(record):
        onnx_session.run(images)
    ranked = np.sort(np.concatenate(scores), axis=1)
    margins = arm_compare.decision_margins(onnx_session, images, {})
    np.testing.assert_allclose(margins, ranked[:, -1] - ranked[:, -2], rtol=1e-5, atol=1e-6)


def test_run_needs_only_numpy_and_the_runtime_and_the_report_holds_a_bundle_to_itself(onnx_bundle, digits_test,
                                                                                        tmp_path):
    images, labels, _ = digits_test
    work = tmp_path / "work"
    shutil.copytree(onnx_bundle, work / "bundles" / "drnet-onnx-fp32")
    np.save(work / "images.npy", images[:40])
    np.save(work / "labels.npy", labels[:40])
    for side in ("x86", "arm"):
        done = run_without_torch(
            "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')",
            str(SCRIPT), "run", str(work), "--backend", "onnxruntime", "--out", str(work / f"{side}.npz"),
            "--batch", "16", *(["--margins"] if side == "x86" else []),
        )
        assert done.returncode == 0, done.stderr
    out = tmp_path / "arm"
    done = subprocess.run(
        ["python", str(SCRIPT), "report", str(work), "--x86", str(work / "x86.npz"), "--arm", str(work / "arm.npz"),
         "--out", str(out), "--note", "a note"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert (row["same_path"], row["max_logit_delta"], row["verdict"]) == (1.0, 0.0, "held")
    assert "| drnet-fp32 | onnxruntime | 40 | 100.0% |" in out.with_suffix(".md").read_text()


def _emulation_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root: binfmt_misc, debootstrap and chroot"
    if not Path("/proc/sys/fs/binfmt_misc").is_dir():
        return "the kernel has no binfmt_misc: qemu-user cannot run aarch64 programs here"
    if not (shutil.which("qemu-aarch64-static") or shutil.which("apt-get")):
        return "no qemu-aarch64-static, and no apt-get to install it"
    if not (DATA_ROOT / "test").is_dir():
        return f"no CIFAR-10 test images at {DATA_ROOT / 'test'}"
    return None


@pytest.mark.slow
@pytest.mark.skipif(_emulation_unavailable() is not None, reason=str(_emulation_unavailable()))
def test_arm_check_runs_the_bundles_on_emulated_aarch64_and_reports_every_one(tmp_path):
    """The whole check (from scratch: ~40 min and 6 GB; ARM_ENV_DIR reuses an environment)."""
    env_dir = os.environ.get("ARM_ENV_DIR", "/var/tmp/adaptive-edge-arm")
    out = tmp_path / "arm"
    done = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "arm_check.sh"), env_dir], cwd=REPO_ROOT,
                          env=os.environ | {"OUT": str(out)}, capture_output=True, text=True, timeout=4 * 3600)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(out.with_suffix(".json").read_text())
    assert {r["runs"] for r in [{"runs": m["machine"]} for m in report["runs"]["arm"]]} == {"aarch64"}
    assert len(report["rows"]) == 12  # three models x two backends x fp32, int8
