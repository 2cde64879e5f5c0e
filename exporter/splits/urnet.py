"""URNet's split: each block's run and skip graphs also emit the next gate's logit, so a gate costs no call.

The stem graph emits the first gate; the last block's graphs end in the head.
Every graph takes the user's scale S as a second input.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from exporter.graphs import ExportGraph, Split, SplitOptions
from exporter.splits.block_graphs import BlockChain, block_inputs
from runtime.rules.block_steps import BlockStep
from runtime.rules.gated import GatedDispatch
from trainer.families.urnet import ConditionalGate, URNet
from trainer.macs import count_macs


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
        for keep, prefix in (("1", "block"), ("0", "skip")):
            chain = BlockChain(backbone, keep * count, k, k, stem=False, head=last)
            graphs.append(gated(f"{prefix}{k}", chain, gate, features[k], "features"))
        steps.append(BlockStep(f"block{k}", f"skip{k}"))
    reference = BlockChain(backbone, full, 0, count - 1, stem=True, head=True).eval()
    graphs.append(ExportGraph("full", reference, (image,), ("image",), ("logits",), count_macs(reference, image)))

    dispatch = GatedDispatch(stem="stem", blocks=tuple(steps), reference="full")
    return Split(tuple(graphs), dispatch, lambda x, s: model.infer(x, s), scales=(0.4, 0.7, 1.0))
