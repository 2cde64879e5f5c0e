"""BlockDrop's split: the policy graph, then stem, per-block graphs and head, plus the calibration plan's fused graphs.

Every graph's MACs are counted on the graph itself, so a sample's MACs in the
runtime are the sum over the graphs it called.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from exporter.graphs import ExportGraph, Split, SplitOptions
from exporter.splits.block_graphs import BlockChain, BlockPlan, block_inputs, plan_blocks
from runtime.format.block_names import block_graph, skip_graph
from runtime.rules.block_steps import BlockStep
from runtime.rules.policy import CachedPath, PlanCalibration, PolicyDispatch, Segment
from trainer.dynamic import resize
from trainer.families.blockdrop import BlockDrop
from trainer.macs import count_macs


@dataclass(frozen=True)
class BlockDropExport:
    """How much of the calibration plan is compiled whole."""

    cache_paths: int = field(default=8, metadata={
        "help": "compile the K paths the policy takes most often on the calibration images as single graphs",
        "parse": int, "metavar": "K"})


EXPORT_OPTIONS = BlockDropExport
PLANS_ON_CALIBRATION = True  # fused segments, left-out blocks and cached paths come from the policy's choices


class KeepProbabilities(nn.Module):
    def __init__(self, model: BlockDrop) -> None:
        super().__init__()
        self.policy = model.policy
        self.size = model.options.policy_resolution

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.policy(resize(x, self.size)))


def _graph(name: str, module: nn.Module, example: Tensor, inputs: str, outputs: str) -> ExportGraph:
    module = module.eval()
    return ExportGraph(name, module, (example,), (inputs,), (outputs,), count_macs(module, example))


def split(model: BlockDrop, options: SplitOptions) -> Split:
    backbone = model.backbone
    count = model.num_blocks
    image = torch.zeros(1, backbone.in_channels, options.resolution, options.resolution)
    features = block_inputs(backbone, image)
    full = "1" * count
    calibration = options.calibration
    plan = plan_blocks(model.infer(calibration).blocks, options.family.cache_paths) if calibration is not None else None

    graphs = [
        ExportGraph("policy", KeepProbabilities(model).eval(), (image,), ("image",), ("keep",), model.policy_macs),
        _graph("stem", BlockChain(backbone, full, 0, -1, stem=True, head=False), image, "image", "features"),
        _graph("head", BlockChain(backbone, full, count, count - 1, stem=False, head=True), features[-1], "features", "logits"),
        _graph("full", BlockChain(backbone, full, 0, count - 1, stem=True, head=True), image, "image", "logits"),
    ]
    left_out = set(plan.left_out) if plan else set()
    steps = []
    for k, block in enumerate(backbone.blocks):
        run = skip = None
        if k not in left_out:
            run = block_graph(k)
            graphs.append(_graph(run, BlockChain(backbone, full, k, k, stem=False, head=False), features[k], "features", "next_features"))
        if block.downsample is not None:
            skip = skip_graph(k)
            graphs.append(_graph(skip, BlockChain(backbone, "0" * count, k, k, stem=False, head=False), features[k], "features", "next_features"))
        steps.append(BlockStep(run, skip))

    segments, cached = [], [CachedPath(full, "full", 0.0)]
    if plan:
        for first, last in plan.segments:
            name = f"blocks{first}to{last}"
            graphs.append(_graph(name, BlockChain(backbone, full, first, last, stem=False, head=False), features[first], "features", "next_features"))
            segments.append(Segment(name, first, last))
        cached = _cached_paths(backbone, plan, image, graphs)
    keep_out = torch.tensor([k in left_out for k in range(count)])

    def reference(x: Tensor, _scale: float | None):
        return model.run_policy(x, (model.keep_probabilities(x) >= 0.5) & ~keep_out.to(x.device))

    dispatch = PolicyDispatch(
        selector="policy", stem="stem", head="head", blocks=tuple(steps), segments=tuple(segments),
        cached_paths=tuple(cached),
        calibration=PlanCalibration(plan.images, plan.usage, plan.coverage) if plan else None,
        reference="full",
    )
    return Split(tuple(graphs), dispatch, reference)


def _cached_paths(backbone, plan: BlockPlan, image: Tensor, graphs: list[ExportGraph]) -> list[CachedPath]:
    """One whole-path graph per cached path; the all-blocks path reuses the reference graph."""
    full = "1" * len(backbone.blocks)
    cached = []
    for index, (path, frequency) in enumerate(plan.cached):
        name = "full" if path == full else f"path{index}"
        if name != "full":
            graphs.append(_graph(name, BlockChain(backbone, path, 0, len(path) - 1, stem=True, head=True), image, "image", "logits"))
        cached.append(CachedPath(path, name, frequency))
    if all(c.path != full for c in cached):
        cached.append(CachedPath(full, "full", 0.0))
    return cached
