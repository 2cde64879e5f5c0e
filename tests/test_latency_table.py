"""The device's latency table: measured over every operating point, written and read back, refused when damaged."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pytest

import runtime
from runtime.format.devices import get_device
from runtime.format.latency_table import (
    GraphRow, Latency, LatencyTableError, PointRow, fit_latency, read_latency_table, write_latency_table,
)
from runtime.profile.ops import self_times
from runtime.profile.table import REMEASURES, _measure_quietly, measure_table
from runtime.rules.gated import SCALES
from runtime.profile.cli import main as profile_main
from runtime.profile.timing import measure

RUNS = dict(runs=5, warmup=1)


@pytest.fixture(scope="module")
def drnet_table(onnx_bundle, tmp_path_factory):
    path = tmp_path_factory.mktemp("table") / "table.json"
    assert profile_main(["table", "--bundle", str(onnx_bundle), "--device", "host-cpu", "--runs", "5", "--warmup", "1",
                         "--batches", "1", "4", "--out", str(path), "--plots", str(path.parent / "plots")]) == 0
    return path


def test_the_table_command_draws_its_points_and_fit(drnet_table):
    for name in ("points.png", "fit.png"):
        assert (drnet_table.parent / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_table_covers_every_graph_and_path_and_reads_back(drnet_table, onnx_bundle):
    table = read_latency_table(drnet_table)
    manifest = runtime.load(onnx_bundle).manifest
    assert set(table.graphs) == set(manifest.graphs)
    assert all(set(g.batches) == {1, 4} for g in table.graphs.values())
    assert [p.name for p in table.points] == [p.name for p in manifest.dispatch.paths]
    assert table.device == "host-cpu" and table.backend == "onnxruntime" and table.threads == 1
    assert "threads=1" in table.backend_detail
    assert table.command.startswith("python -m runtime.profile table")
    for point in table.points:  # DRNet: the predictor, then the chosen resolution's graph
        graph = next(p.graph for p in manifest.dispatch.paths if p.name == point.name)
        assert point.calls == {manifest.dispatch.selector: 1.0, graph: 1.0}
        summed = table.preprocess.median_ms + table.session_overhead_ms + table.dispatch_ms_per_call + sum(
            table.graphs[g].batches[1].median_ms * n for g, n in point.calls.items())
        assert point.predicted_ms == pytest.approx(summed)
    assert table.fit is not None and table.fit.points == len(table.graphs) + len(table.points)
    rewritten = drnet_table.with_name("again.json")
    write_latency_table(rewritten, table)
    assert read_latency_table(rewritten) == table


def test_urnet_points_are_the_s_sweep_and_feed_the_pipeline(block_bundles, digits_test):
    session = runtime.load(block_bundles["urnet", "onnx"], device=get_device("host-cpu"))
    images = digits_test[0]
    table = measure_table(session, get_device("host-cpu"), images=images[:8], **RUNS)
    assert [(p.kind, p.value) for p in table.points] == [("scale", s) for s in SCALES]
    blocks = [sum(n for g, n in p.calls.items() if "run" in g) for p in table.points]
    assert blocks == sorted(blocks), f"more blocks run as S grows: {blocks}"
    assert table.pipeline.images == 8 and 0 < table.pipeline.preprocess_share < 1


def test_each_timed_call_follows_a_call_of_its_own_in_a_new_order_every_round():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abcdef"}
    timings = measure(fns, runs=8, warmup=2)
    timed = calls[2 * len(fns):]  # after the warm-up rounds, one call each
    rounds = [timed[i : i + 2 * len(fns)] for i in range(0, len(timed), 2 * len(fns))]
    assert len(rounds) == 8
    for calls_of_round in rounds:
        pairs = [calls_of_round[i : i + 2] for i in range(0, len(calls_of_round), 2)]
        assert all(first == second for first, second in pairs), f"an untimed call of its own first: {pairs}"
        assert sorted(first for first, _ in pairs) == list("abcdef")
    assert len({tuple(r) for r in rounds}) > 1, "rounds shuffle the order, so no callable always follows the same one"
    assert {name: t.runs for name, t in timings.items()} == dict.fromkeys("abcdef", 8)


def test_a_noisy_row_is_measured_again_then_flagged():
    rng = np.random.default_rng(0)
    rows = _measure_quietly(
        {"steady": lambda: time.sleep(0.002), "noisy": lambda: time.sleep(float(rng.uniform(0.0002, 0.006)))},
        runs=41, warmup=1, threshold=0.2,  # uniform: MAD / median near 0.45
    )
    assert not rows["steady"].noisy and rows["steady"].remeasured == 0
    assert rows["noisy"].noisy and rows["noisy"].remeasured == REMEASURES


def test_the_fit_recovers_a_linear_device():
    """latency = 2 ms/GMAC + 0.05 ms per call + 0.1 ms, exactly: the fit finds it with R^2 1."""
    def latency(ms: float) -> Latency:
        return Latency(ms, ms, ms, 0.0, 5)

    graphs = {f"g{i}": GraphRow(f"g{i}", macs, {1: latency(2 * macs / 1e9 + 0.05 + 0.1)})
              for i, macs in enumerate((1e8, 3e8, 7e8))}
    points = [PointRow(f"p{calls}", "path", None, macs, {"g0": calls}, latency(2 * macs / 1e9 + 0.05 * calls + 0.1), 0.0)
              for macs, calls in ((2e8, 2), (5e8, 3), (9e8, 5))]
    fit = fit_latency(graphs, points)
    assert (fit.ms_per_gmac, fit.ms_per_call, fit.constant_ms) == pytest.approx((2.0, 0.05, 0.1))
    assert fit.r2 == pytest.approx(1.0) and fit.points == 6


@pytest.mark.parametrize("damage, field", [
    (lambda t: t.pop("static"), r"table: missing field\(s\) \['static'\]"),
    (lambda t: t.update(version=5), r"version: unknown version 5; this runtime reads 1 to 4"),
    (lambda t: t.update(version=3), r"table: unknown field\(s\) \['recipe'\]"),
    (lambda t: t.update(version=2) or t.pop("recipe"), r"table: unknown field\(s\) \['target'\]"),
    (lambda t: t.update(recipe=7), r"recipe: expected"),
    (lambda t: t.pop("dispatch_ms_per_call"), r"table: missing field\(s\) \['dispatch_ms_per_call'\]"),
    (lambda t: [t.update(version=1), t.pop("target"), t.pop("recipe")], r"table: unknown field\(s\) \['dispatch_ms_per_call'\]"),
    (lambda t: t.update(dispatch_ms_per_call=-0.1), "dispatch_ms_per_call: must be a non-negative number"),
    (lambda t: t["preprocess"].update(noisy="yes"), r"preprocess\.noisy: expected true or false"),
    (lambda t: t["preprocess"].update(p99_ms=-1.0), r"preprocess\.p99_ms: must be a non-negative number"),
    (lambda t: t["points"][0]["calls"].update(nowhere=1.0), r"points\[0\]\.calls: 'nowhere' is not one of"),
    (lambda t: next(iter(t["graphs"].values()))["batches"].pop("1"), r"batches: needs batch 1"),
])
def test_a_damaged_table_is_refused_naming_the_file_and_field(drnet_table, tmp_path, damage, field):
    data = json.loads(drnet_table.read_text())
    damage(data)
    path = tmp_path / "damaged.json"
    path.write_text(json.dumps(data))
    with pytest.raises(LatencyTableError, match=field) as error:
        read_latency_table(path)
    assert str(path) in str(error.value)


def test_a_version_1_table_reads_with_no_dispatch_cost_as_its_predictions_were_made(drnet_table, tmp_path):
    data = json.loads(drnet_table.read_text())
    data.pop("dispatch_ms_per_call")
    data.pop("target")
    data.pop("recipe")
    path = tmp_path / "version-1.json"
    path.write_text(json.dumps(data | {"version": 1}))
    assert read_latency_table(path) == dataclasses.replace(read_latency_table(drnet_table), dispatch_ms_per_call=0.0,
                                                           target=None, recipe=None)


def test_a_table_records_the_recipe_its_bundle_was_exported_from_and_a_version_3_one_reads_with_none(
        drnet_table, tmp_path):
    data = json.loads(drnet_table.read_text())
    assert data["recipe"] == "drnet-digits"
    data.pop("recipe")
    path = tmp_path / "version-3.json"
    path.write_text(json.dumps(data | {"version": 3}))
    assert read_latency_table(path) == dataclasses.replace(read_latency_table(drnet_table), recipe=None)


def test_the_dispatch_cost_per_call_is_what_urnets_calls_add_outside_the_graphs(block_bundles):
    """URNet on ExecuTorch makes a call per block (onnxruntime runs one image in its conditional graph): replayed,
    each costs the session some microseconds, and the table's predictions add them for every call beyond the first."""
    session = runtime.load(block_bundles["urnet", "executorch"], device=get_device("host-cpu"))
    graphs = dict(session.graphs)
    table = measure_table(session, get_device("host-cpu"), runs=30, warmup=3)
    assert session.graphs == graphs, "the replayed calls are put back"
    assert 0.0005 < table.dispatch_ms_per_call < 0.2, table.dispatch_ms_per_call
    for point in table.points:
        calls = sum(point.calls.values())
        assert calls > 1
        graphs = sum(table.graphs[g].batches[1].median_ms * n for g, n in point.calls.items())
        assert point.predicted_ms == pytest.approx(
            table.preprocess.median_ms + table.session_overhead_ms + table.dispatch_ms_per_call * (calls - 1) + graphs)


def test_a_point_prediction_error_is_relative_to_the_measurement():
    point = PointRow("p", "path", None, 1.0, {}, Latency(2.0, 2.0, 2.0, 0.0, 1), 2.2)
    assert point.error == pytest.approx(0.1)
    assert dataclasses.replace(point, predicted_ms=1.0).error == pytest.approx(-0.5)


def test_compare_lines_up_a_table_and_a_report_and_draws_them(drnet_table, onnx_bundle, tmp_path, capsys):
    report = tmp_path / "report.json"
    assert profile_main(["--bundle", str(onnx_bundle), "--device", "host-cpu", "--runs", "5", "--warmup", "1",
                         "--out", str(report)]) in (0, 1)  # 1: a budget failed, which compare does not care about
    capsys.readouterr()
    plot = tmp_path / "latency.png"
    assert profile_main(["compare", str(drnet_table), str(report), "--plot", str(plot)]) == 0
    printed = capsys.readouterr().out
    table = read_latency_table(drnet_table)
    for point in table.points:
        row = next(line for line in printed.splitlines() if line.startswith(point.name))
        assert row.count(" ms ") == 2, f"{point.name}: one cell per file: {row}"
    assert printed.count("host-cpu/onnxruntime") >= 2
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_refuses_a_file_that_is_no_measurement(tmp_path, capsys):
    stray = tmp_path / "manifest.json"
    stray.write_text(json.dumps({"format_version": 5}))
    assert profile_main(["compare", str(stray)]) == 2
    assert f"{stray}: neither a latency table (adaptive-edge-latency-table) nor a profile report: " \
           "report: missing field(s)" in capsys.readouterr().err


def test_the_op_breakdown_names_each_points_top_ops_and_providers(onnx_bundle, tmp_path, capsys):
    out = tmp_path / "ops.json"
    assert profile_main(["ops", "--bundle", str(onnx_bundle), "--device", "host-cpu", "--runs", "3", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    manifest = runtime.load(onnx_bundle).manifest
    assert list(report) == [p.name for p in manifest.dispatch.paths]
    for point, row in report.items():
        assert row["top_ops"][0]["op"] == "Conv", f"{point}: convolutions dominate a CNN"
        assert sum(o["share"] for o in row["top_ops"]) <= 1 + 1e-9
        assert row["providers"] == pytest.approx({"CPUExecutionProvider": 1.0})
    assert "Conv" in capsys.readouterr().out


def node(op: str, ts: float, dur: float) -> dict:
    return {"cat": "Node", "name": f"{op}_kernel_time", "ts": ts, "dur": dur,
            "args": {"op_name": op, "provider": "CPUExecutionProvider"}}


def test_a_control_flow_node_counts_its_own_time_and_its_branch_nodes_theirs():
    # A Relu, then an If (100 µs) whose branch runs a Conv (60) and a nested If (30) around an Add (25); then a Relu
    # that starts as the outer If ends.
    events = [node("Relu", 0, 5), node("If", 10, 100), node("Conv", 12, 60), node("If", 75, 30),
              node("Add", 77, 25), node("Relu", 110, 5), {"cat": "Session", "name": "model_run", "ts": 0, "dur": 120}]
    own = [(e["args"]["op_name"], us) for e, us in self_times(events)]
    assert own == [("Relu", 5), ("If", 10), ("Conv", 60), ("If", 5), ("Add", 25), ("Relu", 5)]


def test_a_profiling_onnxruntime_backend_writes_one_profile_per_graph(onnx_bundle, tmp_path):
    from runtime.backends.onnxruntime import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(1, ("CPUExecutionProvider",), profile_dir=tmp_path)
    session = runtime.Session(onnx_bundle, runtime.load(onnx_bundle).manifest, backend)
    session.run(np.zeros((1, 32, 32, 3), np.uint8))
    written = {Path(s.end_profiling()) for s in backend.sessions.values()}  # all within one second
    assert len(written) == len(session.manifest.graphs)
    for path in written:
        assert isinstance(json.loads(path.read_text()), list), f"{path}: one session's profile, valid JSON"


def test_the_executorch_op_breakdown_reads_etdump_per_method(et_bundle, tmp_path, recwarn):
    pytest.importorskip("executorch.devtools")
    out = tmp_path / "ops.json"
    assert profile_main(["ops", "--bundle", str(et_bundle), "--device", "host-cpu", "--runs", "3", "--out", str(out)]) == 0
    assert not [w for w in recwarn if "Output Buffer" in str(w.message)], "the Inspector's debug-buffer notice"
    report = json.loads(out.read_text())
    assert list(report) == [p.name for p in runtime.load(et_bundle, backend="executorch").manifest.dispatch.paths]
    for point, row in report.items():
        assert row["kernel_ms_per_image"] > 0 and sum(o["share"] for o in row["top_ops"]) <= 1 + 1e-9
        assert row["top_ops"][0]["op"].startswith("Convolution"), f"{point}: XNNPACK's convolutions dominate: {row}"
        assert not any(o["op"] in {"DELEGATE_CALL", "OPERATOR_CALL", "Method::execute"} for o in row["top_ops"]), row
        assert row["providers"]["XNNPACK"] > 0.5, f"{point}: the delegate ran most of the kernel time: {row}"


def test_a_tracing_executorch_backend_writes_one_etdump_per_method(et_bundle, tmp_path):
    from runtime.backends.executorch import ExecuTorchBackend

    manifest = runtime.load(et_bundle, backend="executorch").manifest
    backend = ExecuTorchBackend(1, etdump=True)
    runtime.Session(et_bundle, manifest, backend).run(np.zeros((1, 32, 32, 3), np.uint8))
    traces = backend.write_etdumps(tmp_path)
    # The Inspector lines up a trace's runs event by event: methods sharing a trace would be mixed up.
    assert sorted(t.name for t in traces) == sorted(f"{Path(g.artifact).stem}.{g.entry}.etdp" for g in manifest.graphs.values())
    assert all(t.stat().st_size > 0 for t in traces)


def test_the_op_breakdown_refuses_a_backend_the_bundle_does_not_run_on(et_bundle, capsys):
    assert profile_main(["ops", "--bundle", str(et_bundle), "--device", "host-cpu", "--backend", "onnxruntime"]) == 2
    assert "runs on ['executorch'], not 'onnxruntime'" in capsys.readouterr().err
