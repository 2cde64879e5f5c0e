"""One registry per axis: the docs' tables, the CLI and validation all read the same tables."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import REPO_ROOT

from runtime.backends import BACKENDS
from runtime.rules import RULES
from runtime.format.targets import TARGETS
from trainer.families import FAMILIES


def test_the_docs_tables_are_written_from_the_registries():
    check = subprocess.run(
        [sys.executable, "scripts/docs_tables.py", "--check"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_exporter_offers_exactly_the_registered_targets(capsys):
    from exporter.__main__ import main

    with pytest.raises(SystemExit):
        main(["--help"])
    usage = capsys.readouterr().out
    assert "{" + ",".join(sorted(TARGETS)) + "}" in usage


def test_every_target_names_real_backends_and_a_writer():
    import importlib

    for target in TARGETS.values():
        assert set(target.backends) <= set(BACKENDS), target
        assert target.verify_backend in (None, *target.backends), target
        assert callable(importlib.import_module(target.writer).write)


def test_every_family_names_a_split_and_every_rule_is_registered_once():
    import importlib

    for family in FAMILIES.values():
        assert callable(importlib.import_module(family.split).split)
    assert len({rule.section for rule in RULES.values()}) == len(RULES)
    assert all(rule.section.rule == name for name, rule in RULES.items())
