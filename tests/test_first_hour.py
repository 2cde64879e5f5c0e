"""Regression tests for what a new user meets in the first hour: silent runs, Ctrl-C, unfinished runs, default
calibration, the exporter's summary line, profile labels and help, one-line errors, device mismatches, short
reprs, URNet's scale sweep, Resizable's lookup table and latency hint, and --help texts.

Each test pins the fixed behaviour (wording, default, label, repr), so that it fails if the fix is reverted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
import types

import pytest
import torch
from helpers import copy_tree, read_json
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import exporter
import runtime
from exporter.__main__ import main as exporter_main
from runtime.format.devices import get_device
from runtime.format.fields import Graph, TensorSpec
from runtime.format.lookup_table import LOOKUP_TABLE_FILE
from runtime.format.manifest import read_manifest
from runtime.profile.cli import main as profile_main
from runtime.profile.compare import Measured, compare_table, labels
from runtime.profile.table import points_to_measure
from runtime.rules.budget import MEASURE_HINT, BudgetDispatch, BudgetDispatcher, BudgetPath
from runtime.rules.rule import Request
from trainer import loop
from trainer.__main__ import main as trainer_main
from trainer.checkpoint import read_config
from trainer.evaluate import main as evaluate_main
from trainer.resizable_nas import main as resizable_nas_main
from trainer.resume import PREVIOUS_STATE_FILE, STATE_FILE

HOST = "host-cpu/onnxruntime"


def one_line(text: str) -> str:
    """Help text with argparse's wrapping undone: every run of whitespace as one space."""
    return " ".join(text.split())


def help_of(main, argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 0
    return one_line(capsys.readouterr().out)


# --- 1. a piped or logged run is never silent long ----------------------------------------------


def test_heartbeat_prints_where_the_phase_is_every_heartbeat_s(monkeypatch, capsys):
    assert loop.HEARTBEAT_S == 30.0
    now = [1000.0]
    monkeypatch.setattr(loop, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    heartbeat = loop.Heartbeat("supernet 1/3", 50, enabled=True)

    def beat_at(seconds: float, step: int) -> str:
        now[0] = 1000.0 + seconds
        heartbeat.beat(step)
        return capsys.readouterr().out

    assert beat_at(loop.HEARTBEAT_S - 0.5, 3) == ""
    assert beat_at(loop.HEARTBEAT_S, 4) == "supernet 1/3: step 4/50\n"
    assert beat_at(loop.HEARTBEAT_S + 1, 5) == ""  # the clock restarts at each line
    assert beat_at(2 * loop.HEARTBEAT_S - 0.5, 6) == ""
    assert beat_at(2 * loop.HEARTBEAT_S, 7) == "supernet 1/3: step 7/50\n"


def test_heartbeat_is_quiet_where_a_progress_bar_shows(monkeypatch, capsys):
    now = [0.0]
    monkeypatch.setattr(loop, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    heartbeat = loop.Heartbeat("supernet 1/3", 50, enabled=False)
    now[0] = 10 * loop.HEARTBEAT_S
    heartbeat.beat(9)
    assert capsys.readouterr().out == ""


def test_a_piped_training_phase_beats(monkeypatch, capsys):
    """train_phase wires the heartbeat in: with output captured (no tty, so no tqdm bar) it prints its lines."""
    monkeypatch.setattr(loop, "HEARTBEAT_S", 0.0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    loader = DataLoader(TensorDataset(torch.randn(8, 3, 4, 4), torch.randint(0, 2, (8,))), batch_size=4)
    loop.train_phase(
        model, loader, lambda images, labels: (F.cross_entropy(model(images), labels), {}),
        phase=loop.Phase(epochs=1, lr=0.1), param_groups=[{"params": model.parameters()}],
        device=torch.device("cpu"), desc="tiny",
    )
    out = capsys.readouterr().out
    assert "tiny 1/1: step 1/2\n" in out and "tiny 1/1: step 2/2\n" in out


# --- 2. Ctrl-C in python -m trainer ------------------------------------------------------------


@pytest.mark.parametrize("saved", [None, STATE_FILE, PREVIOUS_STATE_FILE])
def test_ctrl_c_in_the_trainer_is_one_line_and_exit_130(saved, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"

    def interrupted(recipe, directory, **options):
        if saved:
            (directory / saved).write_bytes(b"a save")
        raise KeyboardInterrupt

    monkeypatch.setattr("trainer.__main__.train", interrupted)
    assert trainer_main(["--recipe", "drnet-digits", "--out", str(out), "--device", "cpu"]) == 130
    captured = capsys.readouterr()
    then = (f"its last save is kept: continue with `python -m trainer --resume {out}`" if saved
            else "nothing was saved yet (the first save closes the first epoch)")
    assert captured.err == f"\ntrainer: interrupted; {then}\n"
    assert "Traceback" not in captured.out + captured.err


# --- 3. an unfinished run -----------------------------------------------------------------------


@pytest.mark.parametrize("state", [STATE_FILE, PREVIOUS_STATE_FILE])
def test_an_unfinished_run_says_how_to_resume(state, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / state).write_bytes(b"a save")
    with pytest.raises(FileNotFoundError) as error:
        read_config(run)
    assert str(error.value) == (
        f"{run}: the run is unfinished (its training state is saved, its checkpoint not yet written): "
        f"resume it with `python -m trainer --resume {run}`"
    )


def test_a_directory_without_a_run_is_no_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint config"):
        read_config(tmp_path)


def test_exporting_an_unfinished_run_is_one_line_and_exit_2(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / STATE_FILE).write_bytes(b"a save")
    code = exporter_main(["--checkpoint", str(run), "--target", "onnx", "--out", str(tmp_path / "bundle")])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err == (
        f"exporter: error: {run}: the run is unfinished (its training state is saved, its checkpoint not yet "
        f"written): resume it with `python -m trainer --resume {run}`\n"
    )
    assert not (tmp_path / "bundle").exists()


# --- 4. BlockDrop's export plan is calibrated by default ---------------------------------------


def test_blockdrop_export_calibrates_its_plan_by_default(block_checkpoints, tmp_path):
    lines: list[str] = []
    report = exporter.export(block_checkpoints["blockdrop"], "onnx", tmp_path / "bundle", progress=lines.append,
                             accuracy_images=0, verify=False, cache_paths=2)  # fewer path graphs: faster
    assert "calibrating the export plan on digits train, first 512 images (--calibration to choose others)" in lines
    assert not any(line.startswith("WARNING") for line in lines), lines
    dispatch = report.manifest.dispatch
    assert dispatch.calibration is not None and dispatch.calibration.images == 512
    assert dispatch.calibration.coverage > 0
    assert sum(c.frequency for c in dispatch.cached_paths) == pytest.approx(dispatch.calibration.coverage)
    assert any(c.frequency > 0 for c in dispatch.cached_paths)
    on_disk = read_json(tmp_path / "bundle" / "manifest.json")["dispatch"]
    assert on_disk["calibration"]["images"] == 512


# --- 5. the exporter's `wrote` line -------------------------------------------------------------


def test_wrote_line_names_device_and_precision(checkpoint_dir, tmp_path, capsys):
    out = tmp_path / "bundle"
    code = exporter_main(["--checkpoint", str(checkpoint_dir), "--target", "onnx", "--out", str(out),
                          "--device", "host-cpu", "--no-verify", "--accuracy-images", "0"])
    assert code == 0
    wrote = capsys.readouterr().out.splitlines()[0]
    assert wrote.startswith(f"wrote {out}: drnet for onnx on host-cpu (--device), fp32 (--precision), 4 graphs, "
                            "batches of 1 to 32, ")
    assert wrote.endswith(" KiB")  # no TensorRT engines to speak of


def test_a_device_from_another_devices_file_reaches_the_export(checkpoint_dir, tmp_path, capsys):
    devices = tmp_path / "devices.yaml"
    devices.write_text("lab-board:\n  description: a board of ours\n  backends: [onnxruntime]\n  batch: {opt: 1, max: 4}\n"
                       "  budgets: {macs: 1000000000, latency_ms: 10}\n")
    out = tmp_path / "bundle"
    common = ["--checkpoint", str(checkpoint_dir), "--target", "onnx", "--device", "lab-board", "--no-verify",
              "--accuracy-images", "0"]
    assert exporter_main([*common, "--out", str(out)]) == 2
    assert "unknown device 'lab-board'" in capsys.readouterr().err
    assert exporter_main([*common, "--devices", str(devices), "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out}: drnet for onnx on lab-board (--device), fp32 (--precision), "
                                              "4 graphs, batches of 1 to 4, ")


@pytest.fixture(scope="module")
def tensorrt_export(checkpoint_dir, tmp_path_factory):
    """(bundle, stdout) of `python -m exporter` for TensorRT, its default device; the engines are not built here."""
    out = tmp_path_factory.mktemp("first-hour") / "drnet-tensorrt"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
        code = exporter_main(["--checkpoint", str(checkpoint_dir), "--target", "tensorrt", "--out", str(out),
                              "--no-verify", "--accuracy-images", "0"])
    assert code == 0
    return out, stdout.getvalue()


def test_wrote_line_says_tensorrt_engines_are_built_on_the_device(tensorrt_export):
    out, stdout = tensorrt_export
    wrote = stdout.splitlines()[0]
    assert wrote.startswith(f"wrote {out}: drnet for tensorrt on jetson-orin-nano (--device), fp16 (--precision), "
                            "4 graphs, batches of 1 to 32, ")
    assert wrote.endswith(" KiB; engines are built and cached on the device at first load")


# --- 6. compare labels sources by bundle where device/backend repeats ----------------------------


def measured(bundle: str, where: str) -> Measured:
    return Measured(f"{bundle}.json", bundle, where, "drnet", 1.0, 12e6, {"res32": (12e6, 1.0)}, {"full": 1.0})


def test_compare_labels_sources_by_bundle_where_device_and_backend_repeat():
    sources = [measured("bundles/drnet-onnx", HOST), measured("/elsewhere/drnet-onnx-int8", HOST),
               measured("bundles/drnet-et", "pixel-8/executorch")]
    assert labels(sources) == [f"drnet-onnx @ {HOST}", f"drnet-onnx-int8 @ {HOST}", "pixel-8/executorch"]
    table = compare_table(sources)
    assert f"drnet-onnx @ {HOST}: bundles/drnet-onnx.json (bundle bundles/drnet-onnx)" in table
    assert "  pixel-8/executorch: bundles/drnet-et.json (bundle bundles/drnet-et)" in table


def test_compare_labels_a_lone_source_by_device_and_backend():
    assert labels([measured("bundles/drnet-onnx", HOST)]) == [HOST]
    assert labels([measured("a/x", HOST), measured("b/y", "pixel-8/executorch")]) == [HOST, "pixel-8/executorch"]


# --- 7. runtime.profile's subcommands -----------------------------------------------------------


def test_profile_help_lists_the_subcommands(capsys):
    from runtime.profile.cli import SUBCOMMANDS

    text = help_of(profile_main, ["--help"], capsys)
    assert list(SUBCOMMANDS) == ["table", "ops", "compare", "costs"]
    epilog = "subcommands (each takes --help): " + "; ".join(f"{name}: {what}" for name, what in SUBCOMMANDS.items())
    assert one_line(epilog) in text
    assert "table: measure the device's latency table of a bundle" in text


def test_a_misspelled_profile_subcommand_names_the_choices(capsys):
    with pytest.raises(SystemExit) as exited:
        profile_main(["tabel", "--bundle", "b", "--device", "host-cpu"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert ("python -m runtime.profile: error: unknown subcommand 'tabel'; choose one of "
            "['compare', 'costs', 'ops', 'table'], or give --bundle and --device for a report") in err


# --- 8. python -m trainer.evaluate --------------------------------------------------------------


def test_evaluate_a_missing_checkpoint_is_one_line_and_exit_2(tmp_path, capsys):
    missing = tmp_path / "nothing"
    assert evaluate_main(["--checkpoint", str(missing), "--device", "cpu"]) == 2
    assert capsys.readouterr().err == (
        f"trainer.evaluate: error: {missing / 'config.json'}: no checkpoint config (expected the output directory "
        "of `python -m trainer`)\n"
    )


@pytest.mark.parametrize("damage", ["weights", "config"])
def test_evaluate_a_corrupt_checkpoint_is_one_line_and_exit_2(damage, checkpoint_dir, tmp_path, capsys):
    checkpoint = copy_tree(checkpoint_dir, tmp_path / "checkpoint")
    if damage == "weights":
        weights = checkpoint / "model.pt"
        weights.write_bytes(weights.read_bytes()[:100])
        expected = f"trainer.evaluate: error: {weights}: unreadable ("
    else:
        (checkpoint / "config.json").write_text("{ not json")
        expected = f"trainer.evaluate: error: {checkpoint / 'config.json'}: not valid JSON ("
    assert evaluate_main(["--checkpoint", str(checkpoint), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(expected) and err.count("\n") == 1, err
    assert not (checkpoint / "eval").exists()


def test_evaluate_out_json_writes_a_file(checkpoint_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert evaluate_main(["--checkpoint", str(checkpoint_dir), "--device", "cpu", "--out", str(out)]) == 0
    assert out.is_file()
    metrics = json.loads(out.read_text())
    assert {"images", "model", "baselines"} <= metrics.keys()
    assert f"wrote {out}\n" in capsys.readouterr().out
    assert not (checkpoint_dir / "eval").exists()


# --- 9. a bundle on a device of the wrong kind ---------------------------------------------------


def test_loading_on_a_device_that_cannot_run_the_bundle_names_the_mismatch(onnx_bundle):
    with pytest.raises(ValueError) as error:
        runtime.load(onnx_bundle, device=get_device("pixel-8"))
    message = str(error.value)
    assert message == ("device pixel-8 runs ['executorch'], not onnxruntime, the backend of this onnx bundle: "
                       "no backend of this onnx bundle runs there: use a device that runs onnxruntime")
    assert "thread" not in message


def test_loading_on_a_device_that_runs_another_backend_of_the_target_names_the_backend(tensorrt_export):
    bundle, _ = tensorrt_export
    with pytest.raises(ValueError) as error:
        runtime.load(bundle, "tensorrt", device=get_device("host-cpu"))
    message = str(error.value)
    assert message == ("device host-cpu runs ['onnxruntime', 'executorch'], not tensorrt, the backend of this "
                       "tensorrt bundle: pass backend='onnxruntime' (--backend onnxruntime)")
    assert "thread" not in message


# --- 10. short reprs ----------------------------------------------------------------------------


def test_session_repr_is_short_and_names_the_bundle(onnx_session, onnx_bundle):
    text = repr(onnx_session)
    assert len(text) < 300, text
    assert text.startswith(f"<Session drnet onnx bundle {str(onnx_bundle)!r}: onnxruntime ")
    assert text.endswith("; 4 graphs, argmax dispatch, operating points res32, res24, res16>")


def test_run_result_summary_and_repr(onnx_session, digits_test):
    images, _, _ = digits_test
    result = onnx_session.run(images[:40])
    summary = result.summary()
    assert summary.startswith("40 images; paths {")
    for path in set(result.paths):
        assert f"{path}: {result.paths.count(path)}" in summary
    assert f"; {result.macs.mean() / 1e6:.3f} MMACs/image; " in summary
    assert re.search(r"; \d+\.\d{3} ms$", summary), summary
    assert repr(result) == f"RunResult({summary})"
    assert len(repr(result)) < 300


# --- 11. URNet's scale sweep in the profiler ----------------------------------------------------


@pytest.fixture(scope="module")
def urnet_manifest(block_checkpoints, tmp_path_factory):
    out = tmp_path_factory.mktemp("first-hour") / "urnet-onnx"
    exporter.export(block_checkpoints["urnet"], "onnx", out, verify=False, accuracy_images=0)
    return read_manifest(out)


def test_profile_sweeps_urnet_scales_by_default_and_takes_scales(urnet_manifest, onnx_session):
    default = points_to_measure(urnet_manifest, None)
    assert [(p.name, p.kind, p.value) for p in default] == [
        ("S=0.2", "scale", 0.2), ("S=0.4", "scale", 0.4), ("S=0.6", "scale", 0.6), ("S=0.8", "scale", 0.8),
        ("S=1", "scale", 1.0),
    ]
    chosen = points_to_measure(urnet_manifest, [0.5])
    assert [(p.name, p.kind, p.value) for p in chosen] == [("S=0.5", "scale", 0.5)]
    with pytest.raises(ValueError, match="scales must be values of S in"):
        points_to_measure(urnet_manifest, [1.5])
    with pytest.raises(ValueError, match="a drnet bundle takes no compute scale; its points are its paths"):
        points_to_measure(onnx_session.manifest, [0.5])


def test_profile_help_documents_scales(capsys):
    text = help_of(profile_main, ["--help"], capsys)
    assert "--scales S [S ...] URNet bundles: the compute scales to measure (default: the S sweep 0.2 ... 1.0)" in text


# --- 12. a Resizable run writes its lookup table -------------------------------------------------


def test_resizable_training_writes_its_lookup_table(tmp_path):
    """Trained here (a tiny run, two configurations, ~20 s): the session's resizable checkpoint writes its table
    itself, so it cannot tell whether training did."""
    from trainer.recipes import get_recipe
    from trainer.train import train

    recipe = get_recipe("resizable-digits").with_epochs(2)
    options = dataclasses.replace(recipe.options, configurations=((1.0, 1.0, 1.0), (0.5, 0.5, 0.5)),
                                  calibration_images=64, learner_images=128)
    out = tmp_path / "resizable"
    train(dataclasses.replace(recipe, options=options), out, subset=64, test_subset=32)
    table = out / LOOKUP_TABLE_FILE
    assert table.is_file()
    written = read_json(table)
    assert sorted(c["name"] for c in written["configurations"]) == ["rs050-050-050", "rs100-100-100"]
    assert written["source"]["checkpoint"] == str(out)


# --- 13. budget_ms without merged latencies says how to add them --------------------------------


def budget_dispatcher(selector: bool, path_latency: dict[str, float]) -> BudgetDispatcher:
    spec = (TensorSpec("image", (3, 32, 32)),), (TensorSpec("logits", (10,)),)
    graphs = {name: Graph(name, f"{name}.onnx", None, *spec, macs) for name, macs in
              (("full", 1000), ("half", 250), ("learner", 10))}
    paths = (BudgetPath("rs100-100-100", "full", (1.0, 1.0, 1.0), 0.9, dict(path_latency)),
             BudgetPath("rs050-050-050", "half", (0.5, 0.5, 0.5), 0.8, dict(path_latency)))
    dispatch = BudgetDispatch("learner" if selector else None, paths, "full")
    return BudgetDispatcher(dispatch, graphs, 10)


def test_budget_ms_without_latencies_says_how_to_measure_them():
    assert "`python -m runtime.profile table`" in MEASURE_HINT
    assert "`python -m trainer.resizable_nas CHECKPOINT --profile TABLE.json`" in MEASURE_HINT
    assert "`--configurations all --no-selector`" in MEASURE_HINT
    with pytest.raises(ValueError) as error:
        budget_dispatcher(False, {}).admitted(Request(budget_ms=5.0, latency_key=HOST))
    assert str(error.value) == (f"no latency measured on {HOST!r} for ['rs100-100-100', 'rs050-050-050']; measured "
                                f"on: nothing. {MEASURE_HINT}")


def test_budget_ms_without_the_selectors_latency_says_how_to_measure_it():
    with pytest.raises(ValueError) as error:
        budget_dispatcher(True, {HOST: 1.0}).admitted(Request(budget_ms=5.0, latency_key=HOST))
    assert str(error.value) == (f"the selector's latency was not measured on {HOST!r} (measured on: nothing); "
                                f"budget it in MACs, or: {MEASURE_HINT}")


# --- 14. --help gaps closed ---------------------------------------------------------------------


def test_trainer_help_documents_device_seed_and_data_root(capsys):
    text = help_of(trainer_main, ["--help"], capsys)
    assert re.search(r"--device \{cpu,cuda\} where to train \(default: (cpu|cuda)\); on a CPU a recipe may fix its "
                     r"threads", text), text
    assert ("--seed SEED seeds the networks' initial weights and every random draw of training (default: 0)"
            in text)
    assert ("--data-root DATA_ROOT the dataset: CIFAR-10 as an ImageFolder tree or torchvision batches, or ImageNet "
            "as train/<wnid>/*.JPEG and val/<wnid>/*.JPEG; digits ship with scikit-learn and need none") in text


def test_profile_table_help_documents_runs_and_warmup(capsys):
    text = help_of(profile_main, ["table", "--help"], capsys)
    assert "--runs RUNS timed calls per row (default: 100)" in text
    assert "--warmup WARMUP untimed rounds first (default: 10)" in text


def test_resizable_nas_help_documents_its_options(capsys):
    text = help_of(resizable_nas_main, ["--help"], capsys)
    for documented in (
        "--budget-macs MACS --query: MACs per image, at most",
        "--budget-ms MS --query: median ms per image at batch 1, at most, as measured on --latency-on",
        "--latency-on DEVICE/BACKEND where --budget-ms was measured, as the table keys it (e.g. host-cpu/onnxruntime)",
        "--epochs EPOCHS --finetune: epochs (default: 15, Sec. 3.3)",
        "--lr LR --finetune: learning rate (default: 0.01)",
        "--device DEVICE --finetune: cpu or cuda (default: cpu)",
    ):
        assert documented in text, documented
