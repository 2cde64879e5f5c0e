"""Resizable networks' split: one static graph per exported configuration, and the ResizeLearner as selector.

Each configuration's graph resizes its stages inside and carries its own
calibrated BN statistics; the convolutions are the same tensors in every
graph, so each target stores them once. Which configurations ship comes from
the lookup table: its accuracy-cost frontier (default), all of them, or named
ones. The full configuration always ships: it is the static baseline.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from exporter.graphs import ExportGraph, Split, SplitOptions, UnsplittableModel
from runtime.lookup_table import Entry, LookupTable, frontier, pick
from runtime.rules.budget import BudgetDispatch, BudgetPath
from trainer.dynamic import DynamicOutput
from trainer.families.resizable import ResizableNetwork, ResizeLearner, configuration_name


class LearnerSelector(nn.Module):
    """The stem and the ResizeLearner, scoring only the exported configurations, in path order."""

    def __init__(self, model: ResizableNetwork, positions: list[int]) -> None:
        super().__init__()
        self.stem = copy.deepcopy(model.backbone.stem)
        learner: ResizeLearner = copy.deepcopy(model.learner)
        last = learner.features[-1]
        kept = nn.Conv2d(last.in_channels, len(positions), kernel_size=1, bias=False)
        kept.weight.data.copy_(last.weight.data[positions])  # the rows of the exported configurations
        learner.features[-1] = kept
        self.learner = learner

    def forward(self, x: Tensor) -> Tensor:
        return self.learner(self.stem(x))


def _entries(model: ResizableNetwork, options: SplitOptions) -> list[Entry]:
    table = options.table
    if table is None:
        raise UnsplittableModel(
            "a Resizable network exports from its lookup table: write it with `python -m trainer.resizable CHECKPOINT`"
        )
    _check_table(model, table)
    spec = options.configurations
    if spec == "frontier":
        chosen = frontier(table)
    elif spec == "all":
        chosen = list(table.configurations)
    else:
        try:
            chosen = [table.entry(name) for name in dict.fromkeys(spec.split(","))]
        except KeyError as error:
            raise ValueError(f"--configurations: {error.args[0]}") from None
    full = table.entry(configuration_name(model.full_configuration))
    return [e for e in table.configurations if e in chosen or e == full]


def _check_table(model: ResizableNetwork, table: LookupTable) -> None:
    if tuple(table.factors) != model.factors:
        raise ValueError(f"the lookup table is for factors {list(table.factors)}, the model has {list(model.factors)}")
    names = {configuration_name(c): i for i, c in enumerate(model.configurations)}
    for entry in table.configurations:
        if entry.name not in names:
            raise ValueError(f"the lookup table lists {entry.name}, which the model does not offer")
        if entry.macs != model.macs[names[entry.name]]:
            raise ValueError(
                f"the lookup table gives {entry.name} {entry.macs} MACs, the model {model.macs[names[entry.name]]}: "
                "it belongs to another checkpoint"
            )


def split(model: ResizableNetwork, options: SplitOptions) -> Split:
    image = torch.zeros(1, model.backbone.in_channels, options.resolution, options.resolution)
    index = {configuration_name(c): i for i, c in enumerate(model.configurations)}
    entries = _entries(model, options)
    positions = [index[e.name] for e in entries]
    use_selector = options.selector and bool(model.learner_trained)
    graphs, paths = [], []
    if use_selector:
        graphs.append(ExportGraph(
            "learner", LearnerSelector(model, positions).eval(), (image,), ("image",), ("scores",), model.learner_macs
        ))
    for entry, position in zip(entries, positions):
        network = model.subnetwork(model.configurations[position])
        graphs.append(ExportGraph(entry.name, network, (image,), ("image",), ("logits",), model.macs[position]))
        paths.append(BudgetPath(entry.name, entry.name, entry.factors, entry.accuracy, dict(entry.latency_ms)))
    reference = configuration_name(model.full_configuration)  # always among the entries
    dispatch = BudgetDispatch(
        "learner" if use_selector else None, tuple(paths), reference,
        dict(options.table.learner_latency_ms) if use_selector else {},
    )
    selector_macs = model.learner_macs if use_selector else 0

    def run_path(x: Tensor, name: str) -> DynamicOutput:
        position = index[name]
        logits = model.subnetwork(model.configurations[position])(x)
        return DynamicOutput(logits, [name] * len(x), torch.full((len(x),), selector_macs + model.macs[position]))

    def reference_run(x: Tensor, _scale: float | None) -> DynamicOutput:
        if use_selector:
            return model.infer(x, allowed=positions)
        return run_path(x, entries[pick(entries, [e.macs for e in entries])[0]].name)  # the table pick, no budget

    return Split(tuple(graphs), dispatch, reference_run, path_reference=torch.no_grad()(run_path))
