"""Recipes: named settings, and --epochs shared among phases."""

from __future__ import annotations

import pytest

from trainer.recipes import RECIPES, get_recipe


def test_recipes_are_registered_by_name():
    for name, recipe in RECIPES.items():
        assert recipe.name == name
        assert get_recipe(name) is recipe
        assert name.startswith(f"{recipe.family or 'resnet'}-{recipe.dataset}")  # resnet: a plain backbone


def test_unknown_recipe_is_named():
    with pytest.raises(ValueError, match="unknown recipe 'nosuch'.*drnet-digits"):
        get_recipe("nosuch")


@pytest.mark.parametrize("total", [2, 3, 5, 10, 11, 37])
def test_digits_epochs_add_up(total):
    phases = get_recipe("drnet-digits").with_epochs(total).phases
    assert sum(p.epochs for p in phases.values()) == total
    assert all(p.epochs >= 1 for p in phases.values())


def test_with_epochs_keeps_the_proportions_and_the_rest():
    recipe = get_recipe("drnet-cifar10")
    scaled = recipe.with_epochs(17)
    assert {n: p.epochs for n, p in scaled.phases.items()} == {"pretrain": 7, "finetune": 10}  # 70 : 100
    assert {n: p.lr for n, p in scaled.phases.items()} == {n: p.lr for n, p in recipe.phases.items()}
    assert {n: p.milestones for n, p in scaled.phases.items()} == {n: p.milestones for n, p in recipe.phases.items()}
    assert scaled.options == recipe.options and scaled.depth == recipe.depth
    assert sum(p.epochs for p in recipe.phases.values()) == 170, "the original recipe is unchanged"


def test_fewer_epochs_than_phases_is_refused():
    with pytest.raises(ValueError, match="at least 2"):
        get_recipe("drnet-digits").with_epochs(1)


def test_cifar10_epochs_add_up_for_a_short_run():
    phases = get_recipe("drnet-cifar10").with_epochs(2).phases
    assert sum(p.epochs for p in phases.values()) == 2


def test_the_digits_recipes_state_their_measured_time_on_two_cores():
    """`--epochs N` is not the training time: the recipe list says what a whole run takes, baselines included."""
    import re

    digits = [r for r in RECIPES.values() if r.dataset == "digits"]
    assert digits
    for recipe in digits:
        assert re.search(r"about [\d.]+ min on 2 cores", recipe.description), recipe.name
