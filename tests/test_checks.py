"""The value checks shared by grids and training recipes (bench/checks.py).

Grids and recipes once had their own copies, and they drifted: the grid's
choice let ``true`` through where ``1`` was allowed (``True == 1`` in Python),
the recipe's did not. These tests pin the one meaning, directly and through
both entry points: :func:`bench.grid.expand_grid` and :func:`bench.train.recipe.resolve`.
"""
import math

import pytest

from bench import checks, grid
from bench.checks import auto, boolean, choice, integer, is_number, number, optional
from bench.errors import GridError
from bench.grid import expand_grid
from bench.train import recipe
from bench.train.recipe import resolve


def refusal(check, value) -> str:
    with pytest.raises(ValueError) as info:
        check(value)
    return str(info.value)


def grid_refusal(settings) -> str:
    raw = {"include": [{"preset": "resnet20", **settings}]}
    with pytest.raises(GridError) as info:
        expand_grid(raw, "g.yaml", cuda_available=False)
    return str(info.value)


# ------------------------------------------------------------------- choices
def test_a_bool_is_not_accepted_where_the_choices_are_integers():
    assert refusal(choice(1, 2, 4), True) == "expected one of 1, 2, 4, got True"
    assert refusal(choice(0, 1), False) == "expected one of 0, 1, got False"
    assert choice(1, 2, 4)(2) == 2


def test_an_integer_is_not_accepted_where_the_choices_are_bools():
    pretrained = choice(True, False, "if_available")
    assert refusal(pretrained, 1) == "expected one of true, false, if_available, got 1"
    assert refusal(pretrained, 0).endswith("got 0")
    assert pretrained(True) is True and pretrained(False) is False and pretrained("if_available") == "if_available"


def test_a_bool_is_not_accepted_where_the_choices_are_strings():
    assert refusal(choice("fp32", "bf16"), True) == "expected one of fp32, bf16, got True"


def test_grid_and_recipe_both_refuse_true_for_an_integer_choice():
    # Each module's `choice` is the shared one: no copy is left to drift.
    for module in (grid, recipe):
        assert module.choice is checks.choice
        assert refusal(module.choice(1, 2), True) == "expected one of 1, 2, got True"


def test_grid_and_recipe_keep_no_copies_of_the_shared_checks():
    for module in (grid, recipe):
        old = {"_int", "_number", "_bool", "_choice", "_optional", "_is_number", "_auto"} & set(vars(module))
        assert old == set(), module.__name__


def test_a_grid_refuses_1_and_0_for_pretrained_before_any_work():
    # The old grid accepted them (1 == True) and the weights loader refused them mid-run.
    assert "include[0].pretrained: expected one of true, false, if_available, got 1" in grid_refusal({"pretrained": 1})
    assert "include[0].pretrained: expected one of true, false, if_available, got 0" in grid_refusal({"pretrained": 0})


def test_a_grid_refuses_true_for_a_string_choice_naming_the_choices():
    assert "include[0].precision: expected one of fp32, bf16, fp16, got True" in grid_refusal({"precision": True})


def test_a_recipe_refuses_true_for_a_string_choice_naming_the_choices():
    with pytest.raises(ValueError, match="^dataset: expected one of cifar10, synthetic, got True$"):
        resolve({"dataset": True})


# ------------------------------------------------------------------ integers
@pytest.mark.parametrize("value", [True, False, 2.5, 2.0, "2", None])
def test_an_integer_check_refuses_bools_floats_and_strings(value):
    assert refusal(integer(0), value) == f"expected an integer >= 0, got {value!r}"


def test_an_integer_check_keeps_its_minimum():
    assert integer(1)(1) == 1
    assert refusal(integer(1), 0) == "expected an integer >= 1, got 0"


@pytest.mark.parametrize("settings, where", [
    ({"cardinality": True}, "include[0].cardinality: expected an integer >= 1, got True"),
    ({"cardinality": 2.0}, "include[0].cardinality: expected an integer >= 1, got 2.0"),
    ({"warmup": 2.5}, "include[0].warmup: expected an integer >= 0, got 2.5"),
    ({"batch_sizes": [1, True]}, "include[0].batch_sizes: expected a non-empty list of positive integers"),
    ({"repeats": True}, "include[0].repeats: expected auto or an integer >= 1, got True"),
    ({"bottleneck_width": 2.5}, "include[0].bottleneck_width: expected auto or an integer >= 1, got 2.5"),
])
def test_a_grid_refuses_non_integers_where_integers_belong(settings, where):
    assert where in grid_refusal(settings)


@pytest.mark.parametrize("key, value", [("seed", True), ("seed", 2.5), ("repeats", 2.0), ("batch_size", True)])
def test_a_recipe_refuses_non_integers_where_integers_belong(key, value):
    with pytest.raises(ValueError, match=f"^{key}: expected (auto or )?an integer >= "):
        resolve({key: value})


# ------------------------------------------------------------------- numbers
@pytest.mark.parametrize("value", [True, False, math.nan, math.inf, -math.inf, "1", None])
def test_a_number_check_refuses_bools_non_finite_values_and_strings(value):
    assert not is_number(value)
    assert refusal(number(0), value) == f"expected a number >= 0, got {value!r}"


def test_a_number_check_names_its_interval():
    assert refusal(number(0, low_open=True), 0) == "expected a number > 0, got 0"
    assert refusal(number(0, 1, high_open=True), 1) == "expected a number in [0, 1), got 1"
    assert refusal(number(0, 1, low_open=True), 0) == "expected a number in (0, 1], got 0"
    assert refusal(number(0.5, 1), 0.25) == "expected a number in [0.5, 1], got 0.25"


def test_a_number_check_returns_the_value_as_written():
    # An int stays an int: the grid hashes settings into cell ids, and 2 must not become 2.0.
    assert type(number(0)(2)) is int and number(0)(2.5) == 2.5


def test_a_grid_keeps_an_integer_number_as_written_and_a_recipe_makes_it_a_float():
    (cell,) = expand_grid({"include": [{"preset": "resnet20", "max_time_s": 3, "train": {"epochs": 2}}]},
                          cuda_available=False).cells
    assert type(cell.settings["max_time_s"]) is int
    assert type(cell.settings["train"]["epochs"]) is float and resolve({"epochs": 2}).epochs == 2.0


@pytest.mark.parametrize("settings, where", [
    ({"max_time_s": True}, "include[0].max_time_s: expected a number > 0, got True"),
    ({"max_time_s": math.inf}, "include[0].max_time_s: expected a number > 0, got inf"),
    ({"width_multiplier": 0}, "include[0].width_multiplier: expected a number > 0, got 0"),
    ({"train": {"epochs": True}}, "include[0].train: epochs: expected a number > 0, got True"),
])
def test_a_grid_refuses_bools_and_infinities_where_numbers_belong(settings, where):
    assert where in grid_refusal(settings)


def test_a_recipe_refuses_a_bool_where_a_number_belongs():
    with pytest.raises(ValueError, match=r"^momentum: expected a number in \[0, 1\), got True$"):
        resolve({"momentum": True})


# ------------------------------------------------------ bools, nulls and auto
@pytest.mark.parametrize("value", [1, 0, "yes", "true", None])
def test_a_bool_check_takes_only_true_or_false(value):
    assert refusal(boolean, value) == f"expected true or false, got {value!r}"


def test_a_grid_refuses_1_for_a_flag():
    assert "include[0].compile: expected true or false, got 1" in grid_refusal({"compile": 1})


def test_optional_passes_null_through_and_checks_anything_else():
    assert optional(integer(1))(None) is None
    assert refusal(optional(integer(1)), 0) == "expected an integer >= 1, got 0"


def test_auto_takes_the_string_auto_and_names_it_when_refusing():
    assert auto(integer(1))("auto") == "auto" and auto(integer(1))(3) == 3
    assert refusal(auto(integer(1)), "big") == "expected auto or an integer >= 1, got 'big'"
    assert refusal(auto(boolean), 1) == "expected auto or true or false, got 1"
