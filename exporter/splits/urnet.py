"""URNet's split: each block's run and skip graphs also emit the next gate's logit, so a gate costs no call.

The stem graph emits the first gate; the last block's graphs end in the head.
Every graph takes the user's scale S as a second input.

`--control-flow graph` adds one conditional graph, the whole network with each
block under an `If`, so that an image costs one call instead of one per block;
`auto` (the default) adds it where the target runs conditionals and it beat the
per-block calls when timed on the export host (runtime/rules/gated.py says
which calls take it). Every block keeps its own graphs either way, so a
device cost table (`python -m runtime.profile costs`) exports with the same
choice the trained model will get, and times its block walk as it will run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from exporter.graphs import ExportGraph, Split, SplitOptions
from exporter.splits.block_graphs import BlockChain, block_inputs
from exporter.targets.onnx import IfChain, time_on_host
from runtime.format.block_names import CONDITIONAL_GRAPH, block_graph, skip_graph
from runtime.rules.block_steps import BlockStep
from runtime.rules.gated import SCALES, GatedDispatch
from trainer.backbone import CifarResNet
from trainer.families.urnet import ConditionalGate, URNet
from trainer.macs import count_macs


CONTROL_FLOW_OPTIONS = ("auto", "graph", "calls")
# Why a target cannot run the conditional graph at full speed; a target not listed can.
NO_CONDITIONALS = {
    "executorch": "XNNPACK's partitioner does not delegate the ops inside torch.cond's branches, so every block "
                  "would run in portable kernels",
    "coreml": "Core ML's conditionals are not converted or measured here",
}
TIMING_ROUNDS = 20  # batch-1 rounds per option when `auto` times them on the export host
TIMED_MAX_BATCH = 32  # the graphs it times take batches up to this, the exporter's default, so it writes the same ones


@dataclass(frozen=True)
class URNetExport:
    """How gated blocks run on the target."""

    control_flow: str = field(default="auto", metadata={
        "help": "graph: one conditional graph per image (ONNX If; onnx and tensorrt only), calls: a graph call per "
                "block, auto: graph where the target runs it and it is faster on this host, timed at export",
        "metavar": "|".join(CONTROL_FLOW_OPTIONS)})

    def __post_init__(self) -> None:
        if self.control_flow not in CONTROL_FLOW_OPTIONS:
            raise ValueError(f"control_flow (--control-flow): one of {list(CONTROL_FLOW_OPTIONS)}, got {self.control_flow!r}")


EXPORT_OPTIONS = URNetExport


class ConditionalNetwork(nn.Module):
    """The whole gated network as one graph: each block under a conditional (torch.cond, ONNX `If`).

    This forward is its eager meaning (torch.cond exports it too, but slowly: exporter.targets.onnx.IfChain).
    Takes (image, scale, force) and emits (logits, gates): `gates[:, k]` is 1 where block k ran. `force[:, k]`
    below 0 lets gate k decide; 0 or 1 forces block k skipped or run, as `Session.run(path=...)` asks. An `If`
    takes one condition for the whole batch: the block runs when every sample keeps it, its shortcut when none
    does, and a mixed batch runs both and keeps each sample's own (per-block dispatch does less work there).
    """

    def __init__(self, backbone: CifarResNet, gates: nn.ModuleList, if_chain: IfChain) -> None:
        super().__init__()
        self.backbone = backbone
        self.gates = gates
        self.if_chain = if_chain  # the ONNX writers compose the graph from the stem's and blocks' own

    def forward(self, image: Tensor, scale: Tensor, force: Tensor) -> tuple[Tensor, Tensor]:
        x = self.backbone.stem(image)
        taken = []
        for k, block in enumerate(self.backbone.blocks):
            opened = torch.where(force[:, k] < 0, self.gates[k](x, scale) > 0, force[:, k] > 0)
            x = torch.cond(opened.all(), _run(block), _mixed_or_skip(block), (x, opened))
            taken.append(opened)
        return self.backbone.head(x), torch.stack(taken, dim=1).to(image.dtype)


def _run(block: nn.Module):
    return lambda x, opened: block(x)


def _skip(block: nn.Module):
    # A branch may not return its input itself (torch.cond): an identity shortcut returns a copy.
    return lambda x, opened: block.shortcut(x).clone()


def _mixed_or_skip(block: nn.Module):
    def mixed(x: Tensor, opened: Tensor) -> Tensor:
        return torch.where(opened.view(-1, 1, 1, 1), block(x), block.shortcut(x))

    return lambda x, opened: torch.cond(opened.any(), mixed, _skip(block), (x, opened))


class GatedStep(nn.Module):
    """`chain`, then the next block's gate on its output (or nothing, when `chain` ends in the head)."""

    def __init__(self, chain: BlockChain, gate: ConditionalGate | None) -> None:
        super().__init__()
        self.chain = chain
        self.gate = gate

    def forward(self, x: Tensor, scale: Tensor):
        x = self.chain(x)
        if self.gate is None:
            return x
        return x, self.gate(x, scale)


def split(model: URNet, options: SplitOptions) -> Split:
    backbone, gates, count = model.backbone, model.gates, model.num_blocks
    image = torch.zeros(1, backbone.in_channels, options.resolution, options.resolution)
    scale = torch.ones(1)
    features = block_inputs(backbone, image)
    full = "1" * count

    def gated(name: str, chain: BlockChain, gate: ConditionalGate | None, example: Tensor, inputs: str) -> ExportGraph:
        module = GatedStep(chain, gate).eval()
        outputs = ("logits",) if gate is None else ("next_features", "gate")
        return ExportGraph(name, module, (example, scale), (inputs, "scale"), outputs, count_macs(module, example, scale))

    graphs = [gated("stem", BlockChain(backbone, full, 0, -1, stem=True, head=False), gates[0], image, "image")]
    steps = []
    for k in range(count):
        last = k == count - 1
        gate = None if last else gates[k + 1]
        for keep, name in (("1", block_graph(k)), ("0", skip_graph(k))):
            chain = BlockChain(backbone, keep * count, k, k, stem=False, head=last)
            graphs.append(gated(name, chain, gate, features[k], "features"))
        steps.append(BlockStep(block_graph(k), skip_graph(k)))
    reference = BlockChain(backbone, full, 0, count - 1, stem=True, head=True).eval()
    graphs.append(ExportGraph("full", reference, (image,), ("image",), ("logits",), count_macs(reference, image)))

    per_block = [graphs[0], *(graphs[1 + 2 * k] for k in range(count))]  # the stem and every block's run graph
    network = ConditionalNetwork(backbone, gates, IfChain("stem", tuple((s.run, s.skip) for s in steps))).eval()
    conditional = ExportGraph(  # its MACs: every block run, gates included, as the all-open path's calls
        CONDITIONAL_GRAPH, network, (image, scale, torch.ones(1, count)), ("image", "scale", "force"), ("logits", "gates"),
        sum(g.macs for g in per_block),
    )
    control_flow = choose_control_flow(options, conditional, graphs[:-1], [g.name for g in per_block])
    if control_flow == "graph":
        graphs.append(conditional)
    dispatch = GatedDispatch(stem="stem", blocks=tuple(steps), reference="full", control_flow=control_flow,
                             conditional=conditional.name if control_flow == "graph" else None)
    return Split(tuple(graphs), dispatch, lambda x, s: model.infer(x, s), scales=SCALES)


def choose_control_flow(
    options: SplitOptions, conditional: ExportGraph, block_graphs: list[ExportGraph], per_block: list[str]
) -> str:
    """"graph" or "calls", as asked; `auto`: "graph" where the target runs conditionals and one conditional call
    beats the stem and every block's call at batch 1, timed on this host. "graph" where the target cannot run it
    is refused by name."""
    asked = options.family.control_flow if options.family is not None else "auto"
    why_not = NO_CONDITIONALS.get(options.target)
    if options.precision == "int8":
        why_not = "int8 graphs are calibrated one per block on the inputs routed to them; a conditional graph is not"
    if asked == "graph" and why_not:
        raise ValueError(f"--control-flow graph on {options.target} at {options.precision}: {why_not}; "
                         "use --control-flow calls (or auto)")
    if asked != "auto":
        return asked
    if why_not or options.target is None:
        return "calls"
    # TensorRT is not installed on the export host: its ONNX graphs are timed through onnxruntime, which verifies them.
    timings = time_on_host([*block_graphs, conditional], {"graph": [conditional.name], "calls": per_block},
                           rounds=TIMING_ROUNDS, max_batch=TIMED_MAX_BATCH)
    return "graph" if timings["graph"] < timings["calls"] else "calls"
