"""`gated` (URNet): a gate before every block, steered by the user's compute scale S.

Every graph takes the features and S, one value per sample. The stem emits
the features and the first gate's logit; each block's `run` and `skip` graphs
emit the next features and the next gate's logit, so a gate costs no call of
its own, and the last block's graphs end in the head and emit logits. A gate
is open when its logit is > 0.

In a batch, block k runs `run` once over the samples whose gate is open and
`skip` once over the rest, and the two outputs are put back in input order.

With `control_flow` "graph" (version 7), the bundle also holds a conditional
graph: the whole network in one call, each block under an `If`, emitting the
logits and the gates it took. One call per image replaces one per block
(55 on a ResNet-110), so batches of one image take it. An `If` takes one
condition per call, so a batch whose samples disagree on a block would run
it for all of them: batches of several images keep the grouped per-block
calls (benchmarks/results/control_flow.md measures both).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from runtime.format.fields import FieldReader, Graph
from runtime.rules.batching import parse_path, path_strings, scatter
from runtime.rules.block_steps import BlockStep, block_roles, parse_steps, walk_every_block
from runtime.rules.rule import BlockWalk, Decision, GraphCall, OperatingPoint, Request, Rule

__all__ = ["SCALES", "GatedDispatch", "RULE"]

SCALES = (0.2, 0.4, 0.6, 0.8, 1.0)  # the S sweep of the paper's Table 1: the operating points users ask for
CONTROL_FLOWS = ("calls", "graph")  # a graph call per block, or one conditional graph for the whole network
FOLLOW_GATE = -1.0  # a conditional graph's `force` entry that leaves the block to its gate


@dataclass(frozen=True)
class GatedDispatch:
    rule: ClassVar[str] = "gated"
    stem: str  # (image, scale) to (features, first gate logit)
    blocks: tuple[BlockStep, ...]
    reference: str
    # Version 7, written only where not the default ("newer"): a "calls" section reads as it did before.
    control_flow: str = field(default="calls", metadata={"newer": True})  # one of CONTROL_FLOWS
    # "graph": (image, scale, force) to (logits, gates taken), one call per image
    conditional: str | None = field(default=None, metadata={"newer": True})

    def graph_roles(self) -> dict[str, str]:
        conditional = {self.conditional: "path"} if self.conditional else {}
        return {**block_roles(self.stem, self.blocks), **conditional, self.reference: "reference"}

    def operating_points(self, graphs: Mapping[str, Graph]) -> tuple[OperatingPoint, ...]:
        return tuple(OperatingPoint(f"S={s:g}", "scale", s) for s in SCALES)

    def full_path(self) -> str:
        return "1" * len(self.blocks)

    def block_walk(self) -> BlockWalk:
        return walk_every_block(self.stem, self.blocks, None)

    def macs(self, graphs: Mapping[str, Graph], path: str) -> int:
        steps = zip(self.blocks, path)
        return graphs[self.stem].macs + sum(graphs[step.run if c == "1" else step.skip].macs for step, c in steps)

    def worst_case(self, graphs: Mapping[str, Graph]) -> tuple[int, str]:
        per_block = sum(max(graphs[step.run].macs, graphs[step.skip].macs) for step in self.blocks)
        return graphs[self.stem].macs + per_block, "every block"

    def describe(self, graphs: Mapping[str, Graph]) -> str:
        every, none = (self.macs(graphs, c * len(self.blocks)) for c in "10")
        runs = (f"one conditional graph ({self.conditional}) per image, per-block graphs for batches"
                if self.control_flow == "graph" else "a graph call per block")
        return (
            f"  gated dispatch over {len(self.blocks)} blocks, {runs}: {none / 1e6:.3f} MMACs with every gate closed, "
            f"{every / 1e6:.3f} with every gate open (gates included); full model {graphs[self.reference].macs / 1e6:.3f}"
        )


def parse(r: FieldReader, data: dict, graphs: Mapping[str, Graph], classes: int) -> GatedDispatch:
    d = r.fields(data, "dispatch", {"rule", "stem", "blocks", "reference"}, frozenset({"control_flow", "conditional"}))
    steps = parse_steps(r, d["blocks"], graphs)
    if any(step.run is None or step.skip is None for step in steps):
        raise r.fail("dispatch.blocks", "a gated dispatch needs run and skip graphs for every block: they emit the gates")
    for k, step in enumerate(steps):
        for graph in (step.run, step.skip):
            if k + 1 == len(steps):
                r.logits(graph, classes)
            elif len(graphs[graph].outputs) != 2:
                raise r.fail(f"graphs[{graph!r}].outputs", "a gated block graph emits (features, next gate logit)")
    reference = r.graph(d["reference"], "dispatch.reference")
    r.logits(reference, classes)
    control_flow = r.choice(d.get("control_flow", "calls"), CONTROL_FLOWS, "dispatch.control_flow")
    conditional = _parse_conditional(r, d.get("conditional"), control_flow, graphs, classes, len(steps))
    return GatedDispatch(r.graph(d["stem"], "dispatch.stem"), steps, reference, control_flow, conditional)


def _parse_conditional(
    r: FieldReader, value: object, control_flow: str, graphs: Mapping[str, Graph], classes: int, count: int
) -> str | None:
    """The conditional graph's name: present exactly when control_flow is "graph", taking (image, scale, force)
    and emitting (logits, one gate per block)."""
    if control_flow == "calls":
        if value is not None:
            raise r.fail("dispatch.conditional", f"a \"calls\" dispatch has no conditional graph, got {value!r}")
        return None
    if value is None:
        raise r.fail("dispatch.conditional", 'a "graph" dispatch names its conditional graph')
    name = r.graph(value, "dispatch.conditional")
    graph = graphs[name]
    if [t.name for t in graph.inputs] != ["image", "scale", "force"] or graph.inputs[2].shape != (count,):
        raise r.fail(f"graphs[{name!r}].inputs", f"a conditional graph takes image, scale and force ({count} per image)")
    r.logits(name, classes)
    if len(graph.outputs) != 2 or graph.outputs[1].shape != (count,):
        raise r.fail(f"graphs[{name!r}].outputs", f"a conditional graph emits logits and the {count} gates it took")
    return name


def upgrade(r: FieldReader, data: dict) -> None:
    """Version 2 gave a gated section the policy rule's fields, all unused; version 3 drops them."""
    for field, unused in (("selector", None), ("head", None), ("segments", []), ("cached_paths", []), ("calibration", None)):
        value = data.pop(field, unused)
        if value != unused:
            raise r.fail(f"dispatch.{field}", f"a gated dispatch has none, got {value!r}")


class GatedDispatcher:
    def __init__(self, d: GatedDispatch, graphs: Mapping[str, Graph], classes: int) -> None:
        self.d = d
        self.stem_macs = graphs[self.d.stem].macs
        self.run_macs = np.array([graphs[step.run].macs for step in self.d.blocks], dtype=np.int64)
        self.skip_macs = np.array([graphs[step.skip].macs for step in self.d.blocks], dtype=np.int64)

    def __call__(self, call: GraphCall, batch: np.ndarray, request: Request) -> Decision:
        count = len(self.d.blocks)
        forced = None if request.path is None else parse_path(request.path, count)
        if self.d.conditional is not None and len(batch) == 1:
            force = np.full((1, count), FOLLOW_GATE, dtype=np.float32) if forced is None else forced[None].astype(np.float32)
            logits, gates = call(self.d.conditional, batch, request.scale, force)
            return self._decision(logits, gates > 0.5)
        return self._per_block(call, batch, request.scale, forced)

    def _decision(self, logits: np.ndarray, opened: np.ndarray) -> Decision:
        macs = self.stem_macs + np.where(opened, self.run_macs, self.skip_macs).sum(axis=1)
        return Decision(logits, path_strings(opened), macs)

    def _per_block(self, call: GraphCall, batch: np.ndarray, scale: np.ndarray, forced: np.ndarray | None) -> Decision:
        count = len(self.d.blocks)
        features, gate = call(self.d.stem, batch, scale)
        opened = np.empty((len(batch), count), dtype=bool)
        for k, step in enumerate(self.d.blocks):
            is_open = gate > 0 if forced is None else np.full(len(batch), forced[k])
            opened[:, k] = is_open
            running = np.count_nonzero(is_open)
            if running in (0, len(batch)):
                outputs = call(step.run if running else step.skip, features, scale)
            else:
                ran = call(step.run, features[is_open], scale[is_open])
                skipped = call(step.skip, features[~is_open], scale[~is_open])
                outputs = [scatter(is_open, a, b) for a, b in zip(ran, skipped)]
            if k + 1 < count:
                features, gate = outputs
        return self._decision(outputs[0], opened)


RULE = Rule(
    name="gated",
    summary="a gate before every block, steered by the compute scale S; each block graph also emits the next gate",
    section=GatedDispatch,
    parse=parse,
    dispatcher=GatedDispatcher,
    since=2,
    takes_scale=True,
    upgrade=upgrade,
)
