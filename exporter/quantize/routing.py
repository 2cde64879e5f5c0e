"""What each graph sees: the inputs the runtime's own dispatch routes to it, recorded on calibration images.

A DRNet resolution is calibrated on the images its predictor sends it, a
BlockDrop segment on the features of the images whose policy runs it, a URNet
block on the features that reach it at the scales users ask for. The fp32
bundle is run through `runtime.Session`, so the routing is exactly what the
device will do. A graph the routing leaves short (a path no calibration image
takes, the static reference) is filled by forcing every path, and the static
model, over the same images; then a block graph still short (a shortcut no
gate takes, a block, stem or head only cached paths run) gets the inputs that
reach it when every block runs, as do the block's other graphs and the
segments that start there. Both counts go into the manifest.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import runtime
from runtime.rules import BlockWalk
from runtime.rules.gated import SCALES
from runtime.session import GraphCalls, Session

__all__ = ["Routed", "MINIMUM_SAMPLES", "record_routed_inputs"]

MINIMUM_SAMPLES = 64  # a graph routed fewer samples than this is topped up by forcing paths
RECORDING_BACKEND = "onnxruntime"  # every family exports to ONNX, and onnxruntime runs wherever the exporter does


@dataclass(frozen=True)
class Routed:
    inputs: dict[str, list[tuple[np.ndarray, ...]]]  # graph -> batches of its inputs, in input order
    routed: dict[str, int]  # graph -> samples the dispatch sent it
    forced: dict[str, int]  # graph -> samples added by forcing paths


def record_routed_inputs(bundle: Path, images: np.ndarray, *, minimum: int = MINIMUM_SAMPLES) -> Routed:
    """Run `images` (normalized float32 NCHW) through the fp32 ONNX `bundle` and keep every graph call's inputs.

    URNet's images run at SCALES in turn, one S per image. Graphs short of
    `minimum` samples then get the inputs of every operating point, and of the
    static model unless a point already ran it, then, for a block family's
    stem, blocks and head, their inputs when every block runs; a graph that
    still sees none is an error naming it.
    """
    session = runtime.load(bundle, RECORDING_BACKEND)
    with _recording(session) as routed:
        scales = np.resize(np.asarray(SCALES, np.float32), len(images)) if session.takes_scale else None
        session.run(images, scale=scales)
    short = [name for name in session.graphs if _samples(routed[name]) < minimum]
    forced: dict[str, list] = {}
    if short:
        with _recording(session) as extra:
            for point in session.manifest.dispatch.operating_points(session.manifest.graphs):
                session.run(images, **point.options)
            if not extra[session.manifest.dispatch.reference]:
                session.run(images, static=True)
        forced = {name: extra[name] for name in short}
    still_short = [name for name in short if _samples(forced[name]) < minimum]
    walk = session.manifest.dispatch.block_walk()
    if still_short and walk is not None:
        walked = _every_block(session, walk, images)
        forced.update({name: forced[name] + walked[name] for name in still_short if name in walked})
    never = [name for name in session.graphs if not routed[name] and not forced.get(name)]
    if never:
        raise ValueError(f"graphs {never} received no input from {len(images)} calibration images, "
                         "even with every path forced; int8 needs inputs to calibrate each graph")
    return Routed(
        inputs={name: routed[name] + forced.get(name, []) for name in session.graphs},
        routed={name: _samples(routed[name]) for name in session.graphs},
        forced={name: _samples(batches) for name, batches in forced.items() if batches},
    )


def _every_block(session: Session, walk: BlockWalk, images: np.ndarray) -> dict[str, list[tuple[np.ndarray, ...]]]:
    """The inputs the stem, each block graph and the head would get if every block ran (docs/bundle.md, policy and
    gated rules): the images, the stem's features, then each block's output, with URNet's S = 1 beside them."""
    call = GraphCalls(session.graphs, session.manifest.max_batch, {}, session.bundle)
    extra = (np.ones(len(images), np.float32),) if len(session.manifest.graphs[walk.stem].inputs) > 1 else ()
    inputs: dict[str, list[tuple[np.ndarray, ...]]] = {walk.stem: [(images, *extra)]}
    features = call(walk.stem, images, *extra)[0]
    for starting, through in zip(walk.starts, walk.through):
        inputs.update({name: [(features, *extra)] for name in starting})
        if through is not None:
            features = call(through, features, *extra)[0]
    if walk.head is not None:
        inputs[walk.head] = [(features,)]
    return inputs


def _samples(batches: list[tuple[np.ndarray, ...]]) -> int:
    return sum(len(batch[0]) for batch in batches)


@contextlib.contextmanager
def _recording(session: Session) -> Iterator[dict[str, list[tuple[np.ndarray, ...]]]]:
    """Keep a copy of the inputs of every graph call the session makes while inside."""
    calls: dict[str, list[tuple[np.ndarray, ...]]] = defaultdict(list)
    def record(name: str, inputs, run) -> list[np.ndarray]:
        calls[name].append(tuple(np.array(x, copy=True) for x in inputs))
        return run(inputs)

    with session.hooked(record):
        yield calls
