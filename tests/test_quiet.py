"""Third-party notices that no user can act on (ExecuTorch, coremltools) are dropped at their source, and nothing else is."""

from __future__ import annotations

import logging
import subprocess
import sys

from helpers import REPO_ROOT

from runtime.backends.quiet import (
    without_coremltools_import_notices, without_cpuinfo_lines, without_kernel_preference_notice,
)


def test_loading_and_running_an_executorch_bundle_prints_nothing(et_bundle):
    script = (
        "import numpy as np, runtime\n"
        f"session = runtime.load({str(et_bundle)!r}, threads=1)\n"
        "session.run(np.zeros((2, 3, 32, 32), np.float32))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for notice in ("cpuinfo", "threadpool", "KernelPreference"):
        assert notice not in done.stderr, done.stderr


def test_the_cpuinfo_filter_keeps_every_other_line(capsys):
    with without_cpuinfo_lines():
        sys.stderr.write("[cpuinfo_utils.cpp:71] Reading file /sys/devices/soc0/image_version\n")
        sys.stderr.write("[threadpool.cpp:66] Resetting threadpool to 1 threads.\n")
        sys.stderr.write("[method.cpp:1] a real ")
        sys.stderr.flush()
        sys.stderr.write("error\n[cpuinfo_utils.cpp:125] CPU info and manual query")
    assert capsys.readouterr().err == "[method.cpp:1] a real error\n"


def test_the_notice_filter_keeps_other_records_of_that_logger(caplog):
    log = logging.getLogger("torch.utils._pytree")
    kernel_preference = type("KernelPreference", (), {})
    with caplog.at_level(logging.WARNING, logger=log.name), without_kernel_preference_notice():
        log.warning("%s is an Enum subclass and is now natively supported", kernel_preference)
        log.warning("%s is an Enum subclass and is now natively supported", type("Other", (), {}))
    assert [r.args[0].__name__ for r in caplog.records] == ["Other"]


def test_importing_the_coreml_exporter_prints_nothing():
    done = subprocess.run([sys.executable, "-c", "import exporter.targets.coreml"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_the_coremltools_filter_keeps_its_other_records(caplog):
    log = logging.getLogger("coremltools.models.model")
    with caplog.at_level(logging.WARNING), without_coremltools_import_notices():
        log.warning("Failed to load _MLModelProxy: No module named 'coremltools.libcoremlpython'")
        log.warning("scikit-learn version 1.9.1 is not supported. Minimum required version: 0.17.")
        log.warning("a real problem")
    log.warning("Failed to load _MLModelProxy: outside the filter")
    assert [r.getMessage() for r in caplog.records] == ["a real problem", "Failed to load _MLModelProxy: outside the filter"]
