"""The demo's recipe trains an input-adaptive DRNet that makes the demo's claims, and trains it the same way twice.

The demo (scripts/demo.py) prints these claims in words; this test is what
keeps them true, so that a change to DRNet's training that collapses the
predictor onto one resolution fails here, not in front of a new user.
"""

from __future__ import annotations

import pytest
import torch

from trainer.checkpoint import load_checkpoint
from trainer.families.drnet import claims
from trainer.recipes import get_recipe
from trainer.train import train

DEMO_RECIPE = "drnet-digits"


@pytest.fixture(scope="module")
def demo_metrics(tmp_path_factory) -> dict:
    """The demo's training, unshortened: the recipe's own epochs on every digits image (about a minute)."""
    out = tmp_path_factory.mktemp("demo") / DEMO_RECIPE
    train(get_recipe(DEMO_RECIPE), out)
    return load_checkpoint(out)[1]["metrics"]


@pytest.mark.parametrize("claim", range(3), ids=["beats-random", "above-static-frontier", "two-resolutions-used"])
def test_the_demo_recipe_makes_each_claim(demo_metrics, claim):
    made = claims(demo_metrics)[claim]
    assert made.holds, f"{made.statement}: no ({made.by}); model {demo_metrics['model']}"


def test_a_claim_that_fails_says_so():
    metrics = {
        "model": {"accuracy": 0.90, "histogram": {"res32": 0, "res24": 0, "res16": 100}},
        "baselines": {"random resolution, equal MACs": {"accuracy": 0.92},
                      "frontier of the static models, equal MACs": {"accuracy": 0.93, "mixes": ["res24", "res16"]}},
    }
    made = claims(metrics)
    assert [c.holds for c in made] == [False, False, False]
    assert made[0].by == "-2.0 pp" and "res24 and res16" in made[1].by and made[2].by == "res16 100%"


def test_the_demo_recipe_trains_the_same_weights_twice(tmp_path):
    """Seeded data, fixed threads and no timing: two runs of a shortened demo recipe agree to the bit."""
    recipe = get_recipe(DEMO_RECIPE).with_epochs(2)
    weights = []
    for run in ("first", "second"):
        train(recipe, tmp_path / run, subset=256)
        weights.append(load_checkpoint(tmp_path / run)[0].state_dict())
    assert weights[0].keys() == weights[1].keys()
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name
