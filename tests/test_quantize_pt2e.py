"""Int8 PT2E quantization for XNNPACK (exporter/quantize/pt2e.py), run through executorch.runtime.

One small CIFAR-like CNN, trained for a few seconds on noisy synthetic
10-class images so that its logits mean something and its BN statistics are
not the defaults, becomes two graphs, at 32x32 and 24x24 input (like DRNet's
resolutions). Both are quantized and lowered once, as two methods of one
program; the tests share that program.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
from executorch.exir import EdgeProgramManager, to_edge_transform_and_lower
from executorch.exir.lowered_backend_module import get_lowered_backend_modules
from executorch.runtime import Method, Runtime
from torch import Tensor, nn

from exporter.graphs import ExportGraph
from exporter.quantize.pt2e import quantize_pt2e

CLASSES = 10
RESOLUTIONS = (32, 24)
MAX_BATCH = 4
HELD_OUT = 64
# Of max(1, max |logit|). Measured on the 64 held-out images, the same at batch 1 and MAX_BATCH:
# max |int8 - fp32| 0.093 for logits up to 2.50 at 32x32 (3.7%), 0.036 for logits up to 2.95 at 24x24 (1.2%).
LOGIT_TOLERANCE = 0.1
MIN_TOP1_AGREEMENT = 0.9  # measured: 62 of 64 at 32x32, 63 of 64 at 24x24


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    conv = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels), nn.ReLU())


class SmallResNet(nn.Module):
    """A conv-BN-ReLU stem, one residual block, a strided conv-BN-ReLU, global pooling and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn_relu(3, 16)
        self.conv1, self.bn1 = nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.down = conv_bn_relu(16, 32, stride=2)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(32, CLASSES))

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))
        return self.head(self.down(x))


class Images:
    """Noisy images of 10 smooth class prototypes (random 4x4 patterns, upsampled to 32x32)."""

    def __init__(self) -> None:
        prototypes = torch.randn(CLASSES, 3, 4, 4, generator=torch.Generator().manual_seed(0))
        self.prototypes = F.interpolate(prototypes, size=32, mode="bilinear", align_corners=False)

    def sample(self, count: int, seed: int) -> tuple[Tensor, Tensor]:
        generator = torch.Generator().manual_seed(seed)
        labels = torch.randint(0, CLASSES, (count,), generator=generator)
        return self.prototypes[labels] + 2.5 * torch.randn(count, 3, 32, 32, generator=generator), labels


def at_resolution(images: Tensor, resolution: int) -> Tensor:
    if resolution == images.shape[-1]:
        return images
    return F.interpolate(images, size=resolution, mode="bilinear", align_corners=False)


def graph_name(resolution: int) -> str:
    return f"res{resolution}"


@pytest.fixture(scope="module")
def images() -> Images:
    return Images()


@pytest.fixture(scope="module")
def network(images) -> SmallResNet:
    """SmallResNet after 60 Adam steps (a few seconds): ~70% held-out accuracy, BN statistics of real activations."""
    torch.manual_seed(0)
    network = SmallResNet()
    optimizer = torch.optim.Adam(network.parameters(), lr=3e-3)
    for step in range(60):
        inputs, labels = images.sample(32, seed=100 + step)
        loss = F.cross_entropy(network(inputs), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return network.eval()


def export_graph(network: nn.Module, resolution: int) -> ExportGraph:
    example = torch.zeros(1, 3, resolution, resolution)
    return ExportGraph(graph_name(resolution), network, (example,), ("images",), ("logits",), macs=0)


@pytest.fixture(scope="module")
def lowered(network, images) -> tuple[EdgeProgramManager, bytes, dict[str, Tensor]]:
    """Both graphs quantized and lowered as the methods of one program: (edge program, .pte buffer, state before)."""
    state_before = {name: value.clone() for name, value in network.state_dict().items()}
    calibration, _ = images.sample(64, seed=1)  # larger than MAX_BATCH: quantize_pt2e chunks it
    programs = {
        graph_name(resolution): quantize_pt2e(
            export_graph(network, resolution), [(at_resolution(calibration, resolution),)], max_batch=MAX_BATCH
        )
        for resolution in RESOLUTIONS
    }
    edge = to_edge_transform_and_lower(programs, partitioner=[XnnpackPartitioner()])
    return edge, edge.to_executorch().buffer, state_before


@pytest.fixture(scope="module")
def methods(lowered) -> dict[str, Method]:
    program = Runtime.get().load_program(lowered[1])
    return {name: program.load_method(name) for name in map(graph_name, RESOLUTIONS)}


@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_quantized_methods_match_fp32_at_batch_1_and_max_batch(resolution, network, images, methods):
    held_out, _ = images.sample(HELD_OUT, seed=2)
    inputs = at_resolution(held_out, resolution)
    with torch.no_grad():
        reference = network(inputs)
    method = methods[graph_name(resolution)]
    tolerance = LOGIT_TOLERANCE * max(1.0, reference.abs().max().item())

    at_max_batch = torch.cat([method.execute([batch])[0] for batch in inputs.split(MAX_BATCH)])
    one_by_one = torch.cat([method.execute([inputs[i : i + 1]])[0] for i in range(MAX_BATCH)])

    assert at_max_batch.shape == reference.shape and one_by_one.shape == (MAX_BATCH, CLASSES)
    assert (at_max_batch - reference).abs().max().item() <= tolerance
    assert (one_by_one - reference[:MAX_BATCH]).abs().max().item() <= tolerance
    agreement = (at_max_batch.argmax(1) == reference.argmax(1)).float().mean().item()
    assert agreement >= MIN_TOP1_AGREEMENT


def test_quantizing_leaves_the_module_untouched(network, lowered):
    state_before = lowered[2]
    assert all(torch.equal(value, state_before[name]) for name, value in network.state_dict().items())


@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_every_conv_and_quantize_op_runs_inside_xnnpack(resolution, lowered):
    graph_module = lowered[0].exported_program(graph_name(resolution)).graph_module
    outside = [str(node.target) for node in graph_module.graph.nodes if node.op == "call_function"]
    assert not [op for op in outside if "convolution" in op or "quantize" in op], outside  # also dequantize

    delegates = get_lowered_backend_modules(graph_module)
    assert delegates and {delegate.backend_id for delegate in delegates} == {"XnnpackBackend"}
    inside = {
        str(node.target)
        for delegate in delegates
        for node in delegate.original_module.graph.nodes
        if node.op == "call_function"
    }
    assert any("aten.convolution" in op for op in inside)
    assert not [op for op in [*outside, *inside] if "batch_norm" in op]  # folded into the convs
    assert any("dequantize_per_channel" in op for op in inside)  # int8 weights, one scale per output channel


def first_activation_scale(program: torch.export.ExportedProgram) -> float:
    """The scale of the first activation quantize op: the graph's input, as calibrated (weights are folded to int8)."""
    quantize = torch.ops.quantized_decomposed.quantize_per_tensor.default
    node = next(node for node in program.graph.nodes if node.op == "call_function" and node.target is quantize)
    return node.args[1]


def test_calibration_sets_the_activation_ranges(network, images):
    graph = export_graph(network, 32)
    calibration, _ = images.sample(2 * MAX_BATCH, seed=3)
    scale = first_activation_scale(quantize_pt2e(graph, [(calibration,)], max_batch=MAX_BATCH))
    wider_scale = first_activation_scale(quantize_pt2e(graph, [(4 * calibration,)], max_batch=MAX_BATCH))
    assert wider_scale == pytest.approx(4 * scale, rel=0.05)  # measured: exactly 4x


@pytest.mark.parametrize(
    ("calibration", "message"),
    [
        ([], r"graph 'res32': calibration is empty"),
        ([(torch.zeros(2, 3, 24, 24),)], r"graph 'res32', calibration element 0: input 'images' has shape \(2, 3, 24, 24\)"),
        ([(torch.zeros(3, 32, 32),)], r"graph 'res32', calibration element 0: input 'images' has shape \(3, 32, 32\)"),
        ([(torch.zeros(0, 3, 32, 32),)], r"graph 'res32', calibration element 0: batch sizes \[0\]"),
        ([torch.zeros(2, 3, 32, 32)], r"graph 'res32', calibration element 0: expected a tuple of tensors"),
    ],
    ids=["empty", "wrong-resolution", "no-batch-axis", "empty-batch", "bare-tensor"],
)
def test_bad_calibration_is_refused_naming_the_graph_and_input(calibration, message):
    with pytest.raises(ValueError, match=message):
        quantize_pt2e(export_graph(SmallResNet().eval(), 32), calibration, max_batch=MAX_BATCH)


def test_a_module_in_training_mode_is_refused():
    with pytest.raises(ValueError, match=r"graph 'res32': the module is in training mode"):
        quantize_pt2e(export_graph(SmallResNet(), 32), [(torch.zeros(1, 3, 32, 32),)], max_batch=MAX_BATCH)
