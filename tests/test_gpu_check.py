"""scripts/gpu_check.py in its CPU form: the trainer's own commands on synthetic CIFAR-shaped data, and the checks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO_ROOT, script_module

SCRIPT = REPO_ROOT / "scripts" / "gpu_check.py"

gpu_check = script_module("gpu_check")


def _check(tmp_path: Path, *options: str, timeout: int) -> dict:
    out = tmp_path / "gpu.md"
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--reduced", "--work", str(tmp_path / "w"),
                           "--out", str(out), *options], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    assert out.is_file(), done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.with_suffix(".json").read_text())
    return {"returncode": done.returncode, "text": out.read_text(), "results": {r["name"]: r for r in report["results"]},
            "output": done.stdout + done.stderr}


def test_the_epoch_lines_give_the_rate_and_the_loss_of_the_longest_phase():
    output = [  # trainer/loop.py's _epoch_summary lines, as a DRNet run prints them
        "pretrain backbone 1/2: 6 images/s, 40 s, ce 2.587, trained 1",
        "pretrain backbone 2/2: 7 images/s, 39 s, ce 2.6, trained 1",
        "finetune with predictor 1/3: 7 images/s, 36 s, ce 2.37, macs 26.81, trained 1",
        "finetune with predictor 2/3: 10 images/s, 27 s, ce 1.815, macs 27.85, trained 1",
        "finetune with predictor 3/3: 12 images/s, 27 s, ce 1.7, macs 27.85, trained 1",
    ]
    epochs = [m.groupdict() for m in map(gpu_check.EPOCH_LINE.match, output) if m]
    assert [float(e["rate"]) for e in epochs] == [6, 7, 7, 10, 12]
    assert gpu_check.loss_of_longest_phase(epochs) == (2.37, 1.7)


def test_a_family_is_compared_with_the_plain_resnet_of_its_depth_compiled_alike():
    results = [gpu_check.Result("resnet-cifar10-20", "", images_per_s=1000.0),
               gpu_check.Result("resnet-cifar10-20 --compile", "", images_per_s=2000.0),
               gpu_check.Result("drnet-cifar10", "", images_per_s=900.0),
               gpu_check.Result("drnet-cifar10 --compile", "", images_per_s=1000.0)]
    gpu_check.compare_with_plain(results, compiled_suffix=" --compile")
    assert [(r.plain, r.ratio) for r in results[2:]] == [("resnet-cifar10-20", 0.9),
                                                          ("resnet-cifar10-20 --compile", 0.5)]


def test_a_run_that_would_not_fit_the_budget_is_not_started_and_the_report_says_so(tmp_path):
    report = _check(tmp_path, "--families", "drnet", "--depths", "20", "--budget-s", "5", "--min-run-s", "10",
                    timeout=600)
    assert report["returncode"] == 0
    assert {r["status"] for r in report["results"].values()} == {"skipped"}
    assert "| drnet-cifar10 | skipped (" in report["text"]


def test_the_plain_resnet_trains_on_synthetic_data_reloads_on_the_cpu_and_exports_to_onnx(tmp_path):
    report = _check(tmp_path, "--families", "--depths", "20", "--no-distributed", timeout=600)
    assert report["returncode"] == 0, report["output"][-3000:]
    run = report["results"]["resnet-cifar10-20"]
    assert run["status"] == "ok" and run["images_per_s"] > 0
    assert run["loss"] is not None  # two epochs, each a training step, their losses parsed
    assert (run["reloads_on_cpu"], run["onnx"]) == ("ok", "ok")


@pytest.mark.slow
def test_every_family_trains_and_torchrun_steps_and_resumes_after_a_kill(tmp_path):
    """The whole CPU form: each family and both plain ResNets, then torchrun (gloo) one step and a kill-and-resume."""
    report = _check(tmp_path, "--budget-s", "3000", timeout=3600)
    assert report["returncode"] == 0, report["output"][-3000:]
    results = report["results"]
    assert {r["status"] for r in results.values()} == {"ok"}, {n: r["notes"] for n, r in results.items()}
    for name, run in results.items():
        if not name.startswith("torchrun"):
            assert (run["reloads_on_cpu"], run["onnx"]) == ("ok", "ok"), name
    assert results["drnet-cifar10"]["plain"] == "resnet-cifar10-20"
