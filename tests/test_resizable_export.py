"""Resizable bundles end to end: lookup table, exported configurations, budget dispatch and the ResizeLearner."""

from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import copy_tree, read_json, write_json

import exporter
import runtime
from exporter import UnsplittableModel
from runtime import BundleError
from runtime.format.devices import get_device
from runtime.format.lookup_table import LOOKUP_TABLE_FILE, read_table, write_table
from runtime.serving.costs import BudgetError
from runtime.format.manifest import MANIFEST_FILE
from runtime.profile.compare import Measured
from trainer.checkpoint import load_checkpoint, read_config
from trainer.families.resizable import configuration_name
from trainer.recipes import get_recipe
from trainer.resizable_nas import main as resizable_main
from trainer.resizable_nas import frontier, merge_profile, query, table_from_checkpoint
from trainer.train import train

TOLERANCE = 1e-4
KEY = "host-cpu/onnxruntime"
PARITY_SAMPLES = 16  # per path: the all-configurations bundle checks 27 paths and the reference


@pytest.fixture(scope="session")
def resizable_checkpoint(tmp_path_factory) -> Path:
    """resizable-digits for 3 epochs (2 of fair sampling, 1 of ResizeLearner), with its lookup table beside it."""
    out = tmp_path_factory.mktemp("resizable") / "resizable-digits"
    train(get_recipe("resizable-digits").with_epochs(3), out)
    write_table(out / LOOKUP_TABLE_FILE, table_from_checkpoint(out))
    return out


@pytest.fixture(scope="module")
def model(resizable_checkpoint):
    """The trained model; read-only."""
    return load_checkpoint(resizable_checkpoint)[0]


@pytest.fixture(scope="module")
def table(resizable_checkpoint):
    return read_table(resizable_checkpoint / LOOKUP_TABLE_FILE)


@pytest.fixture(scope="module")
def x(digits_test) -> np.ndarray:
    """64 normalized digits test images, as the runtime takes them."""
    _, _, normalized = digits_test
    return normalized[:64].numpy().astype(np.float32)


@pytest.fixture(scope="module")
def all_configurations(resizable_checkpoint, tmp_path_factory):
    """ONNX bundle of every configuration, no selector: Resizable-NAS's bundle, answered by table picks."""
    out = tmp_path_factory.mktemp("resizable-bundles") / "all-onnx"
    return exporter.export(
        resizable_checkpoint, "onnx", out, configurations="all", selector=False, samples=PARITY_SAMPLES
    )


@pytest.fixture(scope="module")
def with_learner(resizable_checkpoint, tmp_path_factory):
    """ExecuTorch bundle of the frontier (and the full configuration), the ResizeLearner choosing per image.

    Lowering its graphs to XNNPACK takes about a minute: the tests using it are slow.
    """
    out = tmp_path_factory.mktemp("resizable-bundles") / "learner-et"
    return exporter.export(resizable_checkpoint, "executorch", out, selector=True)


def position(model, name: str) -> int:
    return [configuration_name(c) for c in model.configurations].index(name)


def subnetwork_logits(model, name: str, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.subnetwork(model.configurations[position(model, name)])(torch.from_numpy(x)).numpy()


# --- the lookup table ----------------------------------------------------------------------------


def test_table_lists_every_configuration_with_the_model_costs(model, table):
    assert [e.name for e in table.configurations] == [configuration_name(c) for c in model.configurations]
    assert [e.macs for e in table.configurations] == model.macs
    assert table.learner_macs == model.learner_macs
    assert all(0 < e.accuracy <= 1 for e in table.configurations)
    assert len({e.accuracy for e in table.configurations}) > 1, "the configurations should not all score alike"


# --- every configuration, no selector ------------------------------------------------------------


def test_every_configuration_is_a_path_that_reproduces_its_subnetwork(all_configurations, model, table, x):
    parity = all_configurations.parity
    assert parity is not None and parity.path_mismatches == 0 and parity.max_abs_diff <= TOLERANCE
    manifest = all_configurations.manifest
    dispatch = manifest.dispatch
    assert manifest.family == "resizable" and dispatch.rule == "budget" and dispatch.selector is None
    assert [p.name for p in dispatch.paths] == [e.name for e in table.configurations]
    assert dispatch.reference == configuration_name(model.full_configuration)
    session = runtime.load(all_configurations.bundle)
    few = x[:16]
    for path, entry, macs in zip(dispatch.paths, table.configurations, model.macs):
        assert path.accuracy == entry.accuracy and path.factors == entry.factors
        result = session.run(few, path=path.name)
        assert result.paths == [path.name] * len(few)
        assert result.macs.tolist() == [macs] * len(few)
        np.testing.assert_allclose(result.logits, subnetwork_logits(model, path.name, few), rtol=0, atol=TOLERANCE)


def test_a_macs_budget_runs_the_table_pick(all_configurations, model, table, x):
    session = runtime.load(all_configurations.bundle)
    macs = sorted(e.macs for e in table.configurations)
    budgets = [macs[0], macs[len(macs) // 2], macs[-1]]
    picks = [query(table, budget_macs=budget).name for budget in budgets]
    assert len(set(picks)) >= 2, f"the budgets {budgets} should pick different configurations, got {picks}"
    for budget, pick in zip(budgets, picks):
        result = session.run(x, budget_macs=budget)
        assert result.paths == [pick] * len(x), f"budget {budget}"
        assert (result.macs <= budget).all()
        np.testing.assert_allclose(result.logits, subnetwork_logits(model, pick, x), rtol=0, atol=TOLERANCE)
    cheapest = macs[0]
    with pytest.raises(BudgetError, match=f"costs {cheapest} MACs"):
        session.run(x, budget_macs=cheapest - 1)


def test_without_a_budget_every_image_runs_the_most_accurate_configuration(all_configurations, table, x):
    best = query(table).name
    assert runtime.load(all_configurations.bundle).run(x).paths == [best] * len(x)


def test_a_latency_budget_needs_latencies_measured_on_this_device(all_configurations, x):
    session = runtime.load(all_configurations.bundle, device=get_device("host-cpu"))
    with pytest.raises(ValueError, match=rf"no latency measured on '{KEY}'.*measured on: nothing"):
        session.run(x, budget_ms=5.0)


# --- latency budgets after profiling -------------------------------------------------------------


def fake_profile(manifest) -> Measured:
    """A runtime.profile measurement of the all-configurations bundle, latencies made up and unordered by MACs.

    The full configuration (path 0) is made the slowest, so that however training
    turned out it cannot be both the most accurate and the fastest, which would
    leave a one-point frontier and nothing for a budget to choose.
    """
    graphs = manifest.graphs
    count = len(manifest.dispatch.paths)
    rows = {p.name: (graphs[p.graph].macs, 1.0 + ((7 * i + count - 1) % count) / 10)
            for i, p in enumerate(manifest.dispatch.paths)}
    return Measured("fake-report.json", "fake-bundle", KEY, "resizable", 2.0, graphs[manifest.dispatch.reference].macs,
                    rows, dict.fromkeys(graphs, 1.0))


@pytest.fixture(scope="module")
def profiled(resizable_checkpoint, all_configurations, table, tmp_path_factory):
    """(merged table, its frontier re-exported without selector): every configuration has a host-cpu latency."""
    report = fake_profile(all_configurations.manifest)
    merged = merge_profile(table, report)
    directory = tmp_path_factory.mktemp("profiled")
    write_table(directory / LOOKUP_TABLE_FILE, merged)
    out = directory / "bundle"
    exporter.export(resizable_checkpoint, "onnx", out, selector=False, table=directory / LOOKUP_TABLE_FILE, verify=False)
    return merged, out


def exported(table, bundle: Path):
    """`table` restricted to the configurations `bundle` ships: what its budget rule chooses among."""
    names = {p.name for p in runtime.load(bundle).manifest.dispatch.paths}
    return dataclasses.replace(table, configurations=tuple(e for e in table.configurations if e.name in names))


def test_merged_latencies_reach_the_bundle(profiled, all_configurations, model):
    merged, bundle = profiled
    report = fake_profile(all_configurations.manifest)
    for entry in merged.configurations:
        assert entry.latency_ms == {KEY: report.rows[entry.name][1]}
    assert merged.source["profile " + KEY] == "fake-report.json"
    shipped = exported(merged, bundle)
    full = configuration_name(model.full_configuration)  # shipped always, as the static reference
    on_frontier = {e.name for e in frontier(merged)}
    assert [e.name for e in shipped.configurations] == [e.name for e in merged.configurations if e.name in on_frontier | {full}]
    paths = runtime.load(bundle).manifest.dispatch.paths
    assert {p.name: p.latency_ms for p in paths} == {e.name: dict(e.latency_ms) for e in shipped.configurations}


def test_a_latency_budget_runs_the_table_pick(profiled, model, x):
    merged, bundle = profiled
    shipped = exported(merged, bundle)
    session = runtime.load(bundle, device=get_device("host-cpu"))
    latencies = sorted(e.latency_ms[KEY] for e in shipped.configurations)
    budgets = [latencies[0], latencies[len(latencies) // 2], latencies[-1]]
    picks = [query(shipped, budget_ms=budget, key=KEY).name for budget in budgets]
    assert len(set(picks)) >= 2, f"the budgets {budgets} should pick different configurations, got {picks}"
    for budget, pick in zip(budgets, picks):
        result = session.run(x, budget_ms=budget)
        assert result.paths == [pick] * len(x), f"budget {budget} ms"
        np.testing.assert_allclose(result.logits, subnetwork_logits(model, pick, x), rtol=0, atol=TOLERANCE)
    with pytest.raises(BudgetError, match=re.escape(f"costs {latencies[0]:.3f} ms on {KEY}")):
        session.run(x, budget_ms=latencies[0] / 2)


# --- the ResizeLearner ---------------------------------------------------------------------------


@pytest.mark.slow
def test_the_learner_bundle_ships_the_frontier_and_the_full_configuration(with_learner, model, table):
    parity = with_learner.parity
    assert parity is not None and parity.path_mismatches == 0 and parity.max_abs_diff <= TOLERANCE
    dispatch = with_learner.manifest.dispatch
    assert dispatch.rule == "budget" and dispatch.selector == "learner"
    full = configuration_name(model.full_configuration)
    expected = {e.name for e in frontier(table)} | {full}
    assert [p.name for p in dispatch.paths] == [e.name for e in table.configurations if e.name in expected]
    assert len(dispatch.paths) < len(table.configurations), "the frontier should leave some configurations out"
    assert with_learner.manifest.graphs["learner"].macs == model.learner_macs


@pytest.mark.slow
def test_the_learner_bundle_chooses_as_the_model_does(with_learner, model, x):
    session = runtime.load(with_learner.bundle)
    names = [p.name for p in session.manifest.dispatch.paths]
    positions = [position(model, name) for name in names]
    result = session.run(x)
    expected = model.infer(torch.from_numpy(x), allowed=positions)
    assert result.paths == expected.paths
    assert result.macs.tolist() == expected.macs.tolist()
    np.testing.assert_allclose(result.logits, expected.logits.numpy(), rtol=0, atol=TOLERANCE)
    size = session.manifest.max_batch
    scores = np.concatenate([session.graphs["learner"]([x[i : i + size]])[0] for i in range(0, len(x), size)])
    with torch.no_grad():
        eager = model.learner_logits(torch.from_numpy(x))[:, positions].numpy()
    np.testing.assert_allclose(scores, eager, rtol=0, atol=TOLERANCE)


@pytest.fixture(scope="module")
def spread_learner(resizable_checkpoint, model, x, tmp_path_factory):
    """(model, ONNX bundle) whose ResizeLearner scores along random directions of its features, so that its
    choices spread over the paths.

    The briefly trained learner sends nearly every image to the cheapest
    configuration, where no budget binds; this one picks dear paths too. Its
    pooled features are positive and share a large mean, so the directions
    are made orthogonal to that mean: otherwise one configuration wins on every
    image, which one depending on the CPU that trained the model.
    """
    spread = copy.deepcopy(model)
    with torch.no_grad():
        learner = spread.learner
        hidden = learner.pool(learner.features[:-1](spread.backbone.stem(torch.from_numpy(x))))
        unit = hidden.mean(0) / hidden.mean(0).norm()
        scores = learner.features[-1].weight
        directions = torch.randn(scores.shape[:2], generator=torch.Generator().manual_seed(0))
        directions -= (directions @ unit)[:, None] * unit[None]
        scores.copy_(directions.view_as(scores))
    config = read_config(resizable_checkpoint)
    out = tmp_path_factory.mktemp("resizable-bundles") / "spread-onnx"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(exporter, "load_checkpoint", lambda _: (spread, config))
        report = exporter.export(resizable_checkpoint, "onnx", out, selector=True)
    return spread, report


def test_a_macs_budget_bounds_the_learner_choice(spread_learner, x):
    """Each image runs the path the learner scores best among those whose MACs, learner included, fit."""
    model, report = spread_learner
    assert report.parity is not None and report.parity.path_mismatches == 0
    session = runtime.load(report.bundle)
    names = [p.name for p in session.manifest.dispatch.paths]
    path_macs = session.manifest.dispatch.path_macs(session.manifest.graphs)
    assert min(path_macs.values()) == model.learner_macs + min(model.macs)
    with torch.no_grad():
        scores = model.learner_logits(torch.from_numpy(x))[:, [position(model, n) for n in names]].numpy()
    unbounded = session.run(x).paths
    assert len(set(unbounded)) >= 2, "the learner should spread the images over several paths"
    bound = 0
    for budget in sorted(set(path_macs.values())):
        admitted = [i for i, name in enumerate(names) if path_macs[name] <= budget]
        result = session.run(x, budget_macs=budget)
        assert result.paths == [names[admitted[row[admitted].argmax()]] for row in scores], f"budget {budget}"
        assert (result.macs <= budget).all(), f"budget {budget}"
        # A budget that admits one path skips the learner, and counts only what ran (docs/bundle.md).
        learner = model.learner_macs if len(admitted) == 1 else 0
        assert result.macs.tolist() == [path_macs[p] - learner for p in result.paths]
        bound += result.paths != unbounded
    assert bound >= 2, "the budgets should change some choices"
    with pytest.raises(BudgetError, match=f"costs {min(path_macs.values())} MACs"):
        session.run(x, budget_macs=min(path_macs.values()) - 1)


# --- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "damage, field",
    [
        pytest.param(
            lambda m: m["dispatch"]["paths"][0].update(accuracy=2.0),
            r"dispatch\.paths\[0\]\.accuracy: must lie in \[0, 1\], got 2\.0",
            id="accuracy-above-1",
        ),
        pytest.param(
            lambda m: m["dispatch"].pop("selector_latency_ms"),
            r"dispatch: missing field\(s\) \['selector_latency_ms'\]",
            id="missing-selector-latency",
        ),
        pytest.param(
            lambda m: m["dispatch"]["paths"][1].update(latency_ms={KEY: 0}),
            r"dispatch\.paths\[1\]\.latency_ms\['host-cpu/onnxruntime'\]: must be a positive number",
            id="zero-latency",
        ),
    ],
)
def test_a_damaged_manifest_is_refused_naming_file_and_field(all_configurations, tmp_path, damage, field):
    bundle = copy_tree(all_configurations.bundle, tmp_path / "bundle")
    manifest = read_json(bundle / MANIFEST_FILE)
    damage(manifest)
    write_json(bundle / MANIFEST_FILE, manifest)
    with pytest.raises(BundleError, match=re.escape(f"{bundle / MANIFEST_FILE}: ") + field):
        runtime.load(bundle)


def test_exporting_without_a_lookup_table_says_how_to_write_one(resizable_checkpoint, tmp_path):
    checkpoint = copy_tree(resizable_checkpoint, tmp_path / "checkpoint")
    (checkpoint / LOOKUP_TABLE_FILE).unlink()
    out = tmp_path / "bundle"
    with pytest.raises(UnsplittableModel, match=re.escape("python -m trainer.resizable_nas")):
        exporter.export(checkpoint, "onnx", out)
    assert not out.exists()


def test_cli_query_below_the_cheapest_exits_2_naming_its_cost(resizable_checkpoint, table, capsys):
    cheapest = min(e.macs for e in table.configurations)
    assert resizable_main([str(resizable_checkpoint), "--query", "--budget-macs", "1"]) == 2
    assert f"no operating point within 1 MACs: the cheapest, " in capsys.readouterr().err
    assert resizable_main([str(resizable_checkpoint), "--query", "--budget-macs", str(cheapest)]) == 0
    assert capsys.readouterr().out.startswith(f"{query(table, budget_macs=cheapest).name}: ")


def test_an_executorch_round_trip_matches_eager_on_named_configurations(resizable_checkpoint, model, x, tmp_path):
    """Two named configurations (the full one ships anyway) through XNNPACK: parity on every path, as exported."""
    report = exporter.export(
        resizable_checkpoint, "executorch", tmp_path / "two-et", configurations="rs050-075-050", selector=False,
        samples=PARITY_SAMPLES,
    )
    assert report.parity is not None and report.parity.path_mismatches == 0
    session = runtime.load(report.bundle)
    assert [p.name for p in session.manifest.dispatch.paths] == ["rs100-100-100", "rs050-075-050"]
    for name in ("rs100-100-100", "rs050-075-050"):
        result = session.run(x[:8], path=name)
        np.testing.assert_allclose(result.logits, subnetwork_logits(model, name, x[:8]), atol=TOLERANCE)


def test_finetuning_trains_the_chosen_configuration_alone(resizable_checkpoint, model, tmp_path):
    """RS-NAS: only the chosen configuration's accuracy is the point; the learner is dropped, weights move."""
    out = tmp_path / "finetuned"
    assert resizable_main([str(resizable_checkpoint), "--finetune", "rs075-075-075", "--epochs", "1", "--out", str(out)]) == 0
    tuned, config = load_checkpoint(out)
    assert config["model"]["options"]["target"] == [0.75, 0.75, 0.75]
    assert config["metrics"]["model"]["label"] == "rs075-075-075"
    assert not bool(tuned.learner_trained)
    before, after = model.backbone.blocks[0].conv1.weight, tuned.backbone.blocks[0].conv1.weight
    assert not torch.equal(before, after)


def test_a_budget_with_a_path_is_refused_as_on_every_rule(all_configurations, x):
    session = runtime.load(all_configurations.bundle)
    path = session.manifest.dispatch.paths[0].name
    with pytest.raises(ValueError, match=r"^pass either path= or a budget, not both$"):
        session.run(x, path=path, budget_macs=1e12)
