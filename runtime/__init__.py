"""On-device runtime for exported bundles. Needs numpy plus one backend; never torch for ONNX.

    import runtime
    session = runtime.load("bundles/drnet-onnx")
    result = session.run(images)   # a batch of any size: uint8 NHWC of any size, or normalized float32 NCHW
    result.logits, result.paths, result.macs, result.timings
"""

from runtime.serving.controller import AdaptiveController
from runtime.format.fields import BundleError
from runtime.format.manifest import Manifest
from runtime.session import RunResult, Session, load

__all__ = ["load", "Session", "RunResult", "Manifest", "BundleError", "AdaptiveController"]
