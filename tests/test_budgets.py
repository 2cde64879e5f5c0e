"""Budgets on every family: Session.run(budget_ms=..., budget_macs=...) runs only what fits.

Milliseconds come from the device's latency table of the bundle; MACs from the
manifest (URNet's, which depend on its gates, from the table too).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

import runtime
from runtime.serving.budgets import BudgetError, allowance
from runtime.format.devices import get_device
from runtime.format.latency_table import write_latency_table
from runtime.profile.table import measure_table

HOST = get_device("host-cpu")


def table_for(bundle, tmp_path_factory):
    session = runtime.load(bundle, device=HOST)
    path = tmp_path_factory.mktemp("tables") / "table.json"
    write_latency_table(path, measure_table(session, HOST, runs=3, warmup=1))
    return path


@pytest.fixture(scope="module")
def urnet(block_bundles, tmp_path_factory):
    bundle = block_bundles["urnet", "onnx"]
    table = table_for(bundle, tmp_path_factory)
    return runtime.load(bundle, device=HOST, table=table)


@pytest.fixture(scope="module")
def drnet(onnx_bundle, tmp_path_factory):
    return runtime.load(onnx_bundle, device=HOST, table=table_for(onnx_bundle, tmp_path_factory))


def most_accurate(session, scales):
    """The exporter's top-1 ranks the points; ties go to the larger S."""
    top1 = {p.value: p.top1 for p in session.manifest.accuracy.points}
    return max(scales, key=lambda s: (top1[s], s))


def test_urnet_runs_the_most_accurate_s_within_a_latency_budget(urnet, digits_test):
    images = digits_test[0][:16]
    points = {p.value: p.latency.median_ms for p in urnet.table.points}
    runs = {s: urnet.run(images, scale=s) for s in points}
    assert len({tuple(r.paths) for r in runs.values()}) > 1, "S changes which blocks run: a wrong S would show"
    for budget in sorted(points.values()):
        expected = most_accurate(urnet, [s for s, ms in points.items() if ms <= budget])
        result = urnet.run(images, budget_ms=budget)
        assert result.paths == runs[expected].paths
        np.testing.assert_array_equal(result.logits, runs[expected].logits)


def test_urnet_budget_in_macs_uses_the_measured_macs_of_each_s(urnet, digits_test):
    points = {p.value: p.macs for p in urnet.table.points}
    budget = sorted(points.values())[len(points) // 2]
    expected = most_accurate(urnet, [s for s, macs in points.items() if macs <= budget])
    images = digits_test[0][:16]
    np.testing.assert_array_equal(urnet.run(images, budget_macs=budget).logits, urnet.run(images, scale=expected).logits)


def test_the_exporter_measures_every_points_accuracy_and_budgets_rank_by_it(urnet, drnet, digits_test):
    for session in (urnet, drnet):
        accuracy = session.manifest.accuracy
        assert accuracy.images == len(digits_test[1]) and "onnxruntime" in accuracy.source
        for point in accuracy.points:
            options = {"scale": point.value} if point.kind == "scale" else {"path": point.name}
            logits = session.run(digits_test[0], **options).logits
            assert point.top1 == pytest.approx(np.mean(logits.argmax(1) == digits_test[1]))
    # A cheaper point that is more accurate beats a dearer one: S=0.4 made the best, the path res24 better than res32.
    scales = {p.value for p in urnet.manifest.accuracy.points}
    rigged = [dataclasses.replace(p, top1=0.99 if p.value == 0.4 else 0.5) for p in urnet.manifest.accuracy.points]
    manifest = dataclasses.replace(urnet.manifest, accuracy=dataclasses.replace(urnet.manifest.accuracy, points=rigged))
    assert allowance(manifest, urnet.table, budget_macs=1e12, budget_ms=None).scale == 0.4 < max(scales)
    macs = {p.name: p.macs for p in drnet.manifest.dispatch.operating_points(drnet.manifest.graphs)}
    cheap, middle, dear = sorted(macs, key=macs.get)
    rigged = [dataclasses.replace(p, top1={cheap: 0.9, middle: 0.95, dear: 0.93}[p.name]) for p in drnet.manifest.accuracy.points]
    manifest = dataclasses.replace(drnet.manifest, accuracy=dataclasses.replace(drnet.manifest.accuracy, points=rigged))
    assert allowance(manifest, drnet.table, budget_macs=1e12, budget_ms=None).paths == {cheap, middle}
    unranked = dataclasses.replace(drnet.manifest, accuracy=None)
    assert allowance(unranked, drnet.table, budget_macs=1e12, budget_ms=None).paths == set(macs), "nothing to rank by"


def test_a_budget_below_the_cheapest_point_names_its_cost(urnet, drnet, digits_test):
    cheapest = min(urnet.table.points, key=lambda p: p.latency.median_ms)
    message = f"the cheapest, {cheapest.name}, costs {cheapest.latency.median_ms:.3f} ms on host-cpu/onnxruntime"
    with pytest.raises(BudgetError, match=re.escape(message)):
        urnet.run(digits_test[0][:2], budget_ms=cheapest.latency.median_ms / 2)
    macs = {p.name: p.macs for p in drnet.manifest.dispatch.operating_points(drnet.manifest.graphs)}
    name = min(macs, key=macs.get)
    with pytest.raises(BudgetError, match=re.escape(f"the cheapest, {name}, costs {macs[name]} MACs")):
        drnet.run(digits_test[0][:2], budget_macs=macs[name] - 1)


def test_drnet_chooses_among_the_resolutions_within_the_budget(drnet, digits_test):
    images = digits_test[0]
    macs = {p.name: p.macs for p in drnet.manifest.dispatch.operating_points(drnet.manifest.graphs)}
    cheap, middle, dear = sorted(macs, key=macs.get)
    free = drnet.run(images)
    assert dear in free.paths, "without a budget the predictor sends some images to the dearest path"
    result = drnet.run(images, budget_macs=macs[middle])
    allowed = allowance(drnet.manifest, drnet.table, budget_macs=macs[middle], budget_ms=None).paths
    assert cheap in allowed and dear not in allowed, "the cheapest point is never beaten on cost"
    assert set(result.paths) <= allowed and (result.macs <= macs[middle]).all()
    kept = [i for i, p in enumerate(free.paths) if p in allowed]  # images the budget did not move keep their logits
    np.testing.assert_array_equal(result.logits[kept], free.logits[kept])
    latency = {p.name: p.latency.median_ms for p in drnet.table.points}
    budgeted = drnet.run(images, budget_ms=latency[cheap] * 1.0001)
    assert set(budgeted.paths) <= {name for name, ms in latency.items() if ms <= latency[cheap] * 1.0001}


def test_blockdrop_keeps_to_the_cached_paths_within_the_budget(block_bundles, digits_test):
    session = runtime.load(block_bundles["blockdrop", "onnx"], device=HOST)
    cached = {c.path for c in session.manifest.dispatch.cached_paths}
    macs = {p: m for p, m in {p.name: p.macs for p in session.manifest.dispatch.operating_points(session.manifest.graphs)}.items() if p in cached}
    budget = sorted(macs.values())[1]
    result = session.run(digits_test[0], budget_macs=budget)
    assert set(result.paths) <= {p for p, m in macs.items() if m <= budget}
    assert (result.macs <= budget).all()


def test_budgets_in_ms_need_the_device_table_and_say_how_to_make_it(block_bundles, onnx_bundle, digits_test):
    session = runtime.load(onnx_bundle, device=HOST)
    with pytest.raises(ValueError, match="python -m runtime.profile table --bundle"):
        session.run(digits_test[0][:2], budget_ms=1.0)
    urnet = runtime.load(block_bundles["urnet", "onnx"], device=HOST)
    with pytest.raises(ValueError, match="URNet's MACs at each S"):
        urnet.run(digits_test[0][:2], budget_macs=1e9)


def test_a_table_of_another_bundle_or_device_is_refused(urnet, onnx_bundle, block_bundles):
    table = urnet.table
    path = f"{table.bundle}.json"
    write_latency_table(path, table)
    with pytest.raises(ValueError, match="measured another bundle"):
        runtime.load(onnx_bundle, device=HOST, table=path)
    other = dataclasses.replace(HOST, name="other-cpu")
    with pytest.raises(ValueError, match="measured on host-cpu/onnxruntime, not on other-cpu/onnxruntime"):
        runtime.load(block_bundles["urnet", "onnx"], device=other, table=path)


def test_a_budget_does_not_mix_with_a_scale_or_a_path(urnet, drnet, digits_test):
    with pytest.raises(ValueError, match="the budget picks S"):
        urnet.run(digits_test[0][:2], scale=0.5, budget_ms=100.0)
    with pytest.raises(ValueError, match="either path= or a budget"):
        drnet.run(digits_test[0][:2], path=drnet.manifest.dispatch.paths[0].name, budget_macs=1e12)
