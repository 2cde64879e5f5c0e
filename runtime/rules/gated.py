"""`gated` (URNet): a gate before every block, steered by the user's compute scale S.

Every graph takes the features and S, one value per sample. The stem emits
the features and the first gate's logit; each block's `run` and `skip` graphs
emit the next features and the next gate's logit, so a gate costs no call of
its own, and the last block's graphs end in the head and emit logits. A gate
is open when its logit is > 0.

In a batch, block k runs `run` once over the samples whose gate is open and
`skip` once over the rest, and the two outputs are put back in input order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from runtime.format.fields import FieldReader, Graph
from runtime.rules.batching import parse_path, path_strings, scatter
from runtime.rules.block_steps import BlockStep, block_roles, parse_steps, walk_every_block
from runtime.rules.rule import BlockWalk, Decision, GraphCall, OperatingPoint, Request, Rule

__all__ = ["SCALES", "GatedDispatch", "RULE"]

SCALES = (0.2, 0.4, 0.6, 0.8, 1.0)  # the S sweep of the paper's Table 1: the operating points users ask for


@dataclass(frozen=True)
class GatedDispatch:
    rule: ClassVar[str] = "gated"
    stem: str  # (image, scale) to (features, first gate logit)
    blocks: tuple[BlockStep, ...]
    reference: str

    def graph_roles(self) -> dict[str, str]:
        return {**block_roles(self.stem, self.blocks), self.reference: "reference"}

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
        return (
            f"  gated dispatch over {len(self.blocks)} blocks: {none / 1e6:.3f} MMACs with every gate closed, "
            f"{every / 1e6:.3f} with every gate open (gates included); full model {graphs[self.reference].macs / 1e6:.3f}"
        )


def parse(r: FieldReader, data: dict, graphs: Mapping[str, Graph], classes: int) -> GatedDispatch:
    d = r.fields(data, "dispatch", {"rule", "stem", "blocks", "reference"})
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
    return GatedDispatch(r.graph(d["stem"], "dispatch.stem"), steps, reference)


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
        scale, count = request.scale, len(self.d.blocks)
        forced = None if request.path is None else parse_path(request.path, count)
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
        macs = self.stem_macs + np.where(opened, self.run_macs, self.skip_macs).sum(axis=1)
        return Decision(outputs[0], path_strings(opened), macs)


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
