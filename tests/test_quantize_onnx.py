"""exporter.quantize.onnx_qdq: int8 QDQ ONNX of one graph, checked against fp32 eager on a small trained CNN.

The CNN (conv-BN-ReLU, a residual branch, a strided stage, global pool, linear)
trains for a few dozen steps on ten synthetic classes, so that its BN running
statistics are far from the identity and its logits have margins to keep.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from exporter.graphs import ExportGraph
from exporter.quantize.onnx_qdq import quantize_qdq
from exporter.targets.onnx import export_onnx

CLASSES = 10
MAX_BATCH = 8
# Largest |int8 - fp32| logit as a share of max(1, max |logit|): measured 0.006 to 0.027 over
# six seeds of this CNN (MinMax calibration on 64 images, onnxruntime CPU), so twice the worst.
TOLERANCE = 0.05
TOP1_AGREEMENT = 0.9


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU()
    )


class SmallCnn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn_relu(3, 16)
        self.branch = nn.Sequential(conv_bn_relu(16, 16), nn.Conv2d(16, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16))
        self.down = conv_bn_relu(16, 32, stride=2)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(32, CLASSES))

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.branch(x))
        return self.head(self.down(x))


def synthetic_images(templates: Tensor, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """`count` noisy copies of random class templates, and their classes."""
    labels = torch.randint(0, CLASSES, (count,), generator=generator)
    return templates[labels] + 0.5 * torch.randn(count, 3, 32, 32, generator=generator), labels


@pytest.fixture(scope="module")
def task() -> SimpleNamespace:
    """The trained CNN as an ExportGraph, 4 calibration batches of 16 images, and 64 held-out images."""
    torch.manual_seed(3)
    generator = torch.Generator().manual_seed(3)
    smooth = F.interpolate(torch.randn(CLASSES, 3, 4, 4, generator=generator), size=32, mode="bilinear")
    templates = 0.8 * smooth + 2 * torch.rand(CLASSES, 3, 1, 1, generator=generator)
    model = SmallCnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        images, labels = synthetic_images(templates, 32, generator)
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    graph = ExportGraph("small_cnn", model, (torch.zeros(1, 3, 32, 32),), ("images",), ("logits",), macs=0)
    calibration = [(synthetic_images(templates, 16, generator)[0].numpy(),) for _ in range(4)]
    held_out, _ = synthetic_images(templates, 64, generator)
    fp32 = export_onnx(graph, max_batch=MAX_BATCH)
    return SimpleNamespace(graph=graph, fp32=fp32, calibration=calibration, held_out=held_out)


@pytest.fixture(scope="module")
def quantized(task) -> onnx.ModelProto:
    return quantize_qdq(task.graph, task.fp32, task.calibration)


def run(model: onnx.ModelProto, images: Tensor) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images.numpy()})[0]


def initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer}


def nodes(model: onnx.ModelProto, op_type: str) -> list[onnx.NodeProto]:
    return [node for node in model.graph.node if node.op_type == op_type]


def input_scale(model: onnx.ModelProto) -> float:
    """The scale of the QuantizeLinear that quantizes the graph input."""
    (quantize,) = [node for node in nodes(model, "QuantizeLinear") if node.input[0] == "images"]
    return float(initializers(model)[quantize.input[1]])


def test_int8_logits_match_eager_at_any_batch(task, quantized):
    for value in (*quantized.graph.input, *quantized.graph.output):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
    with torch.no_grad():
        eager = task.graph.module(task.held_out).numpy()
    atol = TOLERANCE * max(1.0, np.abs(eager).max())
    for rows in (slice(0, 1), slice(1, 6)):  # batch 1 and batch 5 through the one dynamic-batch model
        assert np.allclose(run(quantized, task.held_out[rows]), eager[rows], rtol=0, atol=atol)
    int8 = np.concatenate([run(quantized, task.held_out[i:i + MAX_BATCH]) for i in range(0, 64, MAX_BATCH)])
    error = np.abs(int8 - eager).max() / max(1.0, np.abs(eager).max())
    assert error <= TOLERANCE, f"int8 logits off by {error:.3f} x max(1, max |logit|)"
    assert (int8.argmax(1) == eager.argmax(1)).mean() >= TOP1_AGREEMENT


def test_int8_qdq_with_each_bn_folded_into_per_channel_weights(task, quantized):
    assert nodes(quantized, "QuantizeLinear") and nodes(quantized, "DequantizeLinear")
    assert not nodes(quantized, "BatchNormalization")
    weights = initializers(quantized)
    producers = {output: node for node in quantized.graph.node for output in node.output}
    dequantized = []
    for conv in nodes(quantized, "Conv"):
        dequantize = producers[conv.input[1]]
        assert dequantize.op_type == "DequantizeLinear"
        integers, scale = weights[dequantize.input[0]], weights[dequantize.input[1]]
        assert integers.dtype == np.int8 and scale.shape == (integers.shape[0],)  # a scale per output channel
        dequantized.append((integers * scale.reshape(-1, 1, 1, 1), scale.reshape(-1, 1, 1, 1)))
    layers = list(task.graph.module.modules())
    pairs = [(conv, bn) for conv, bn in zip(layers, layers[1:]) if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)]
    assert len(dequantized) == len(pairs) == 4
    for conv, bn in pairs:
        folded, _ = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
        folded = folded.detach().numpy()
        assert any(
            values.shape == folded.shape and np.all(np.abs(values - folded) <= 0.501 * scale) for values, scale in dequantized
        ), "a conv's int8 weights are not its BN-folded fp32 weights"
    activation_zero_points = [weights[node.input[2]] for node in nodes(quantized, "QuantizeLinear")]
    assert all(zero_point.dtype == np.uint8 for zero_point in activation_zero_points)


def test_calibration_sets_the_activation_ranges(task, quantized):
    wider = quantize_qdq(task.graph, task.fp32, [(4 * images,) for (images,) in task.calibration])
    assert input_scale(wider) == pytest.approx(4 * input_scale(quantized), rel=1e-4)


def test_symmetric_activations_are_int8_with_zero_point_0(task):
    model = quantize_qdq(task.graph, task.fp32, task.calibration, symmetric_activations=True)
    weights = initializers(model)
    for quantize in nodes(model, "QuantizeLinear"):  # activations; weights are stored int8 already
        zero_point = weights[quantize.input[2]]
        assert zero_point.dtype == np.int8 and not zero_point.any(), quantize.name


def test_refuses_empty_calibration(task):
    with pytest.raises(ValueError, match="'small_cnn'.*empty"):
        quantize_qdq(task.graph, task.fp32, [])


@pytest.mark.parametrize("shape", [(2, 3, 28, 28), (3, 32, 32), (2, 1, 32, 32)])
def test_refuses_calibration_of_the_wrong_shape(task, shape):
    with pytest.raises(ValueError, match="'small_cnn'.*'images'"):
        quantize_qdq(task.graph, task.fp32, [*task.calibration, (np.zeros(shape, np.float32),)])
