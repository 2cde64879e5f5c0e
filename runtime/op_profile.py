"""Where each operating point's time goes, op by op, from onnxruntime's own profiler.

`python -m runtime.profile ops --bundle BUNDLE --device NAME` runs every
operating point (runtime/operating_points.py) with profiling on, in sessions
of its own, and sums onnxruntime's per-node kernel times by op type: the top
ops per path, and the share of kernel time on each execution provider (a
check, node by node, that the provider asked for really ran). ExecuTorch's
ETDump and TensorRT's IProfiler need builds this project does not ship: not
covered.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from runtime.bundle import open_bundle
from runtime.devices import Device
from runtime.operating_points import operating_points
from runtime.session import Session

__all__ = ["op_breakdown"]


def op_breakdown(bundle: str | Path, device: Device, *, runs: int = 20, top: int = 5) -> dict[str, dict]:
    """Per operating point: its top ops (op type, ms per image, share of kernel time) and its providers' shares."""
    from runtime.backends.onnxruntime import DEFAULT_PROVIDERS, OnnxRuntimeBackend

    bundle, manifest = Path(bundle), open_bundle(Path(bundle))
    side, channels = manifest.preprocessing.resolution, len(manifest.preprocessing.mean)
    images = np.random.default_rng(0).integers(0, 256, (runs, 1, side, side, channels), dtype=np.uint8)
    report = {}
    with tempfile.TemporaryDirectory() as scratch:
        probe = Session(bundle, manifest, OnnxRuntimeBackend(device.threads, tuple(device.providers or DEFAULT_PROVIDERS)))
        for index, (name, _, _, options) in enumerate(operating_points(probe.manifest)):
            backend = OnnxRuntimeBackend(device.threads, tuple(device.providers or DEFAULT_PROVIDERS))
            backend.options.enable_profiling = True
            backend.options.profile_file_prefix = str(Path(scratch) / f"point{index}")
            session = Session(bundle, manifest, backend, device.name)
            session.run(images[0], **options)  # warm-up: the first run's allocations are not the point's cost
            for image in images:
                session.run(image, **options)
            kernels, providers = Counter(), Counter()
            for graph_session in backend.sessions.values():
                events = json.loads(Path(graph_session.end_profiling()).read_text())
                for event in events:
                    if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
                        kernels[event["args"]["op_name"]] += event["dur"]
                        providers[event["args"]["provider"]] += event["dur"]
            total = sum(kernels.values()) or 1
            report[name] = {
                "kernel_ms_per_image": total / 1e3 / (runs + 1),
                "top_ops": [{"op": op, "ms_per_image": us / 1e3 / (runs + 1), "share": us / total}
                            for op, us in kernels.most_common(top)],
                "providers": {p: us / total for p, us in providers.most_common()},
            }
    return report
