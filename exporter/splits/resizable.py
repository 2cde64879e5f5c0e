"""Resizable networks' split: one static graph per exported configuration, and the ResizeLearner as selector.

Each configuration's graph resizes its stages inside and carries its own
calibrated BN statistics; the convolutions are the same tensors in every
graph, so each target stores them once. Which configurations ship comes from
the lookup table: its accuracy-cost frontier (default), all of them, or named
ones. The full configuration always ships: it is the static baseline.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from exporter.graphs import ExportGraph, Split, SplitOptions, UnsplittableModel
from runtime.format.lookup_table import LOOKUP_TABLE_FILE, Entry, LookupTable, read_table
from runtime.rules.budget import BudgetDispatch, BudgetPath
from runtime.serving.costs import Budget, Option, admissible
from trainer.dynamic import DynamicOutput
from trainer.families.resizable import ResizableNetwork, ResizeLearner, configuration_name
from trainer.resizable_nas import frontier


@dataclass(frozen=True)
class ResizableExport:
    """Which configurations of the lookup table ship, and how they are chosen."""

    configurations: str = field(default="frontier", metadata={
        "help": "the lookup table's accuracy-cost frontier, all, or NAME,NAME,...", "metavar": "WHICH"})
    table: Path | None = field(default=None, metadata={
        "help": f"the lookup table (default: {LOOKUP_TABLE_FILE} beside the checkpoint)", "parse": Path})
    selector: bool = field(default=True, metadata={
        "help": "leave out the ResizeLearner: budgets pick from the table"})


EXPORT_OPTIONS = ResizableExport
EVERY_CANDIDATE = {"configurations": "all"}  # a device cost table times every configuration


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


def lookup_table(options: SplitOptions) -> LookupTable:
    """The table the options name, or the one beside the checkpoint; an error naming the command that writes it."""
    wanted: ResizableExport = options.family
    path = wanted.table or (options.checkpoint / LOOKUP_TABLE_FILE if options.checkpoint else None)
    if path is None or not Path(path).is_file():
        where = f" ({path} does not exist)" if path else ""
        raise UnsplittableModel(
            f"a Resizable network exports from its lookup table{where}: write it with "
            f"`python -m trainer.resizable_nas {options.checkpoint or 'CHECKPOINT'}`, or pass its path as table"
        )
    return read_table(path)


def _entries(model: ResizableNetwork, table: LookupTable, spec: str) -> list[Entry]:
    """The configurations `spec` names, in table order, with the full configuration: the static baseline."""
    _check_table(model, table)
    if spec == "frontier":
        chosen = frontier(table)
    elif spec == "all":
        chosen = list(table.configurations)
    else:
        try:
            chosen = [table.entry(name) for name in dict.fromkeys(spec.split(","))]
        except KeyError as error:
            raise ValueError(f"configurations: {error.args[0]}") from None
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
    table = lookup_table(options)
    entries = _entries(model, table, options.family.configurations)
    positions = [index[e.name] for e in entries]
    use_selector = options.family.selector and bool(model.learner_trained)
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
        dict(table.learner_latency_ms) if use_selector else {},
    )
    selector_macs = model.learner_macs if use_selector else 0

    def run_path(x: Tensor, name: str) -> DynamicOutput:
        position = index[name]
        logits = model.subnetwork(model.configurations[position])(x)
        return DynamicOutput(logits, [name] * len(x), torch.full((len(x),), selector_macs + model.macs[position]))

    table_pick = admissible([Option(e.name, e.macs, top1=e.accuracy) for e in entries], Budget())[0].name

    def reference_run(x: Tensor, _scale: float | None) -> DynamicOutput:
        if use_selector:
            return model.infer(x, allowed=positions)
        return run_path(x, table_pick)  # no budget

    return Split(tuple(graphs), dispatch, reference_run, path_reference=torch.no_grad()(run_path))
