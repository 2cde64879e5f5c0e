"""Resizable-NAS (Sec. 3.3): a lookup table of every configuration, queried within a budget, and finetuning.

    python -m trainer.resizable_nas CHECKPOINT [--profile REPORT_OR_TABLE.json ...]
    python -m trainer.resizable_nas CHECKPOINT --query --budget-ms 0.5 --latency-on host-cpu/onnxruntime
    python -m trainer.resizable_nas CHECKPOINT --finetune NAME --epochs 15 --out DIR

Accuracy after BN calibration and MACs come from the checkpoint's own test
evaluation. Latency comes from `python -m runtime.profile` reports or latency
tables, on any device, of a bundle exported with `--configurations all
--no-selector`; each merges in under its device/backend key, so a table gathers phones,
Jetsons and this machine side by side. The table (runtime/format/lookup_table.py,
docs/lookup_table.md) is written beside the checkpoint, where the exporter
finds it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from runtime.format.lookup_table import LOOKUP_TABLE_FILE, Entry, LookupTable, read_table, write_table
from runtime.profile.compare import Measured, read_measurement
from runtime.serving.costs import Budget, BudgetError, Option, admissible, require_latencies
from runtime.serving.costs import frontier as options_frontier
from trainer.checkpoint import load_checkpoint, read_config, save_checkpoint
from trainer.evaluate import evaluate_model
from trainer.families.resizable import configuration_name, fit, lookup_table
from trainer.loop import Phase
from trainer.train import training_loader

__all__ = ["query", "frontier", "table_from_checkpoint", "merge_profile", "finetune", "FINETUNE_EPOCHS"]

FINETUNE_EPOCHS = 15  # Sec. 3.3: "fine-tune 15 epochs is sufficient"


def _options(entries: list[Entry], key: str | None = None) -> list[Option]:
    return [Option(e.name, e.macs, e.latency_ms.get(key) if key else None, e.accuracy) for e in entries]


def frontier(table: LookupTable) -> list[Entry]:
    """Configurations no other beats on accuracy at no more cost, by MACs or by any latency measured.

    The union over cost measures, in table order: a bundle exported from it can
    answer a budget in MACs or in milliseconds on any measured device.
    """
    entries = list(table.configurations)
    kept = {o.name for o in options_frontier(_options(entries), lambda o: o.macs)}
    for key in table.latency_keys():
        kept |= {o.name for o in options_frontier(_options(entries, key), lambda o: o.ms)}
    return [e for e in entries if e.name in kept]


def query(
    table: LookupTable, *, budget_macs: float | None = None, budget_ms: float | None = None, key: str | None = None
) -> Entry:
    """The most accurate configuration within budget (Sec. 3.3); `key` names where `budget_ms` was measured.

    It picks from the frontier, as a bundle exported from it does, so that both
    agree even where accuracies tie. BudgetError names the cheapest when none fits.
    """
    if budget_ms is not None:
        require_latencies({e.name: e.latency_ms for e in table.configurations}, key,
                          "Profile the configurations there and merge the table or report (--profile).")
    entries = frontier(table)
    best = admissible(_options(entries, key if budget_ms is not None else None), Budget(budget_macs, budget_ms, key))[0]
    return table.entry(best.name)


def table_from_checkpoint(checkpoint: str | Path) -> LookupTable:
    """Accuracy (calibrated and not) and MACs of every configuration the checkpoint evaluated."""
    config = read_config(checkpoint)
    if config["family"] != "resizable":
        raise ValueError(f"{checkpoint}: a {config['family']} checkpoint has no spatial configurations")
    return lookup_table(config, checkpoint)


def merge_profile(table: LookupTable, measured: Measured) -> LookupTable:
    """`table` with the latencies of one measurement (a runtime.profile report or latency table) merged in under
    its device/backend.

    Configurations are timed from a bundle without selector, where a path's
    latency is the configuration's own. A bundle with the ResizeLearner gives
    the learner's latency (its graph's); its path times include the learner
    and are not taken.
    """
    key, source = measured.where, measured.source
    if measured.family != "resizable":
        raise ValueError(f"{source}: measures a {measured.family} bundle, not a Resizable one")
    if "learner" in measured.graphs:
        learner = {**table.learner_latency_ms, key: measured.graphs["learner"]}
        return dataclasses.replace(table, learner_latency_ms=learner, source={**table.source, f"learner {key}": source})
    found = {}
    for entry in table.configurations:
        if entry.name not in measured.rows:
            continue
        macs, ms = measured.rows[entry.name]
        if macs != entry.macs:
            raise ValueError(
                f"{source}: path {entry.name} costs {macs:.0f} MACs there, {entry.macs} in the table: "
                "the bundle belongs to another checkpoint"
            )
        found[entry.name] = ms
    if not found:
        raise ValueError(f"{source}: measures none of the table's configurations")
    entries = tuple(
        dataclasses.replace(e, latency_ms={**e.latency_ms, key: found[e.name]}) if e.name in found else e
        for e in table.configurations
    )
    return dataclasses.replace(table, configurations=entries, source={**table.source, f"profile {key}": source})


def finetune(
    checkpoint: str | Path, name: str, out: str | Path, *, epochs: int = FINETUNE_EPOCHS, lr: float = 0.01,
    device: str = "cpu", data_root: str | Path | None = None,
) -> dict:
    """RS-NAS (Sec. 3.3): the chosen configuration trained alone for `epochs`, recalibrated, saved to `out`.

    The ResizeLearner is dropped: it was trained to choose among the supernet's
    sub-networks, which finetuning one of them changes.
    """
    model, config = load_checkpoint(checkpoint)
    names = {configuration_name(c): c for c in model.configurations}
    if name not in names:
        raise ValueError(f"no configuration {name!r}; the checkpoint offers {sorted(names)}")
    model.options = dataclasses.replace(model.options, target=names[name])
    model.learner_trained.fill_(False)
    data_root = data_root or config.get("data_root")
    loader, _ = training_loader(config["data"]["dataset"], config["training"]["batch_size"], data_root=data_root)
    phases = {"supernet": Phase(0, lr), "target": Phase(epochs, lr), "learner": Phase(0, lr)}
    fit(model.to(device), loader, phases=phases, device=torch.device(device))
    config = json.loads(json.dumps(config))  # a deep copy
    config["model"]["options"]["target"] = list(names[name])
    config["training"]["finetune"] = {"from": str(checkpoint), "configuration": name, **dataclasses.asdict(phases["target"])}
    config["metrics"] = evaluate_model(model.eval(), config, data_root=data_root, device=torch.device(device))
    save_checkpoint(out, model.cpu(), {k: v for k, v in config.items() if k not in ("config_version", "extras", "weights_sha256")})
    return config


def _format(table: LookupTable) -> str:
    keys = table.latency_keys()
    front = {e.name for e in frontier(table)}
    lines = [f"{'configuration':14} {'MMACs':>8} {'top-1':>7} {'uncal.':>7}  " + "  ".join(f"{k:>24}" for k in keys)]
    for e in sorted(table.configurations, key=lambda e: -e.macs):
        cells = "  ".join(f"{e.latency_ms.get(k, float('nan')):21.3f} ms" for k in keys)
        mark = " *" if e.name in front else ""
        lines.append(f"{e.name:14} {e.macs / 1e6:8.3f} {e.accuracy:7.2%} {e.accuracy_uncalibrated:7.2%}  {cells}{mark}")
    return "\n".join(lines + ["(* on the accuracy-cost frontier; uncal.: top-1 with the BN statistics training left, "
                              "before each configuration's BN calibration, Table 5's ablation)"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.resizable_nas", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="output directory of `python -m trainer` for a resizable recipe")
    parser.add_argument("--profile", type=Path, action="append", default=[], metavar="FILE",
                        help="a runtime.profile report (--out) or latency table (table --out) of a bundle exported "
                        "with --configurations all --no-selector, to merge (repeatable)")
    parser.add_argument("--query", action="store_true", help="print the most accurate configuration within budget")
    parser.add_argument("--budget-macs", type=float, metavar="MACS", help="--query: MACs per image, at most")
    parser.add_argument("--budget-ms", type=float, metavar="MS",
                        help="--query: median ms per image at batch 1, at most, as measured on --latency-on")
    parser.add_argument("--latency-on", metavar="DEVICE/BACKEND",
                        help="where --budget-ms was measured, as the table keys it (e.g. host-cpu/onnxruntime)")
    parser.add_argument("--finetune", metavar="NAME", help="finetune this configuration alone into --out (RS-NAS)")
    parser.add_argument("--epochs", type=int, default=FINETUNE_EPOCHS,
                        help="--finetune: epochs (default: %(default)s, Sec. 3.3)")
    parser.add_argument("--lr", type=float, default=0.01, help="--finetune: learning rate (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="checkpoint directory for --finetune")
    parser.add_argument("--device", default="cpu", help="--finetune: cpu or cuda (default: %(default)s)")
    args = parser.parse_args(argv)
    path = args.checkpoint / LOOKUP_TABLE_FILE
    try:
        if args.finetune:
            if not args.out:
                parser.error("--finetune needs --out DIR")
            config = finetune(args.checkpoint, args.finetune, args.out, epochs=args.epochs, lr=args.lr, device=args.device)
            row = config["metrics"]["configurations"][args.finetune]
            print(f"finetuned {args.finetune} -> {args.out}: top-1 {row['accuracy']:.2%}")
            return 0
        if args.query:
            entry = query(read_table(path), budget_macs=args.budget_macs, budget_ms=args.budget_ms, key=args.latency_on)
            print(f"{entry.name}: {entry.macs / 1e6:.3f} MMACs, top-1 {entry.accuracy:.2%}, latency {dict(entry.latency_ms)}")
            return 0
        table = read_table(path) if path.is_file() and args.profile else table_from_checkpoint(args.checkpoint)
        for measurement in args.profile:
            table = merge_profile(table, read_measurement(measurement))
        write_table(path, table)
    except (BudgetError, FileNotFoundError, KeyError, ValueError) as error:
        print(f"trainer.resizable_nas: error: {error}", file=sys.stderr)
        return 2
    print(_format(table))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
