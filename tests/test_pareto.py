"""The frontier function on hand-made points, where the answer can be read off by eye."""
import itertools
import math
import random

import pytest

from bench.analysis.pareto import MAXIMIZE, MINIMIZE, dominates, pareto_front


def test_cost_vs_gain_textbook_case():
    # (cost, gain): 0 cheap and weak, 1 dominated by 2 (costlier, weaker), 3 best and dearest.
    pts = [(1.0, 0.50), (3.0, 0.60), (2.0, 0.70), (5.0, 0.90), (4.0, 0.65)]
    assert pareto_front(pts, [MINIMIZE, MAXIMIZE]) == [0, 2, 3]


def test_senses_matter():
    pts = [(1, 1), (2, 2)]
    assert pareto_front(pts, ["min", "min"]) == [0]
    assert pareto_front(pts, ["max", "max"]) == [1]
    assert pareto_front(pts, ["min", "max"]) == [0, 1]
    assert pareto_front(pts, ["max", "min"]) == [0, 1]


def test_exact_duplicates_are_all_kept():
    pts = [(1.0, 0.9), (1.0, 0.9), (2.0, 0.5)]
    assert pareto_front(pts, ["min", "max"]) == [0, 1]


def test_duplicates_of_a_dominated_point_are_all_dropped():
    pts = [(2.0, 0.5), (2.0, 0.5), (1.0, 0.9)]
    assert pareto_front(pts, ["min", "max"]) == [2]


def test_tie_on_one_objective_is_broken_by_the_other():
    # Same cost: only the larger gain survives. Same gain: only the smaller cost.
    assert pareto_front([(1.0, 0.8), (1.0, 0.9)], ["min", "max"]) == [1]
    assert pareto_front([(3.0, 0.9), (2.0, 0.9)], ["min", "max"]) == [1]


def test_one_objective_keeps_every_best_point():
    assert pareto_front([(3,), (1,), (2,), (1,)], ["min"]) == [1, 3]


def test_three_objectives():
    # (latency min, memory min, accuracy max)
    pts = [
        (10, 100, 0.90),  # 0: on the frontier (best accuracy)
        (5, 200, 0.80),   # 1: on the frontier (fastest)
        (10, 100, 0.85),  # 2: dominated by 0
        (12, 50, 0.70),   # 3: on the frontier (least memory)
        (12, 60, 0.70),   # 4: dominated by 3
        (6, 150, 0.80),   # 5: frontier: beats 1 on memory, loses on latency
    ]
    assert pareto_front(pts, ["min", "min", "max"]) == [0, 1, 3, 5]


def test_empty_and_single():
    assert pareto_front([], ["min", "max"]) == []
    assert pareto_front([(1, 2)], ["min", "max"]) == [0]


def test_infinity_is_an_ordinary_value():
    assert pareto_front([(math.inf, 1.0), (1.0, 0.5)], ["min", "max"]) == [0, 1]
    assert pareto_front([(math.inf, 0.5), (1.0, 0.5)], ["min", "max"]) == [1]


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="NaN"):
        pareto_front([(1.0, float("nan"))], ["min", "max"])
    with pytest.raises(ValueError, match="'min' or 'max'"):
        pareto_front([(1.0, 2.0)], ["min", "up"])
    with pytest.raises(ValueError, match="2 value"):
        pareto_front([(1.0, 2.0, 3.0)], ["min", "max"])
    with pytest.raises(ValueError, match="at least one"):
        pareto_front([(1.0,)], [])


def test_dominates():
    assert dominates((1, 0.9), (2, 0.8), ["min", "max"])
    assert dominates((1, 0.9), (1, 0.8), ["min", "max"])
    assert not dominates((1, 0.9), (1, 0.9), ["min", "max"])  # equal: neither dominates
    assert not dominates((1, 0.7), (2, 0.8), ["min", "max"])  # a trade-off


def _brute_force(pts, senses):
    return [i for i, p in enumerate(pts) if not any(dominates(q, p, senses) for j, q in enumerate(pts) if j != i)]


def test_matches_brute_force_on_random_integer_grids():
    # Small integer ranges make ties and duplicates common, which is where bugs hide.
    rng = random.Random(0)
    for k, n in itertools.product((1, 2, 3), (0, 1, 5, 30)):
        senses = [rng.choice(["min", "max"]) for _ in range(k)]
        pts = [tuple(rng.randint(0, 4) for _ in range(k)) for _ in range(n)]
        front = pareto_front(pts, senses)
        assert front == _brute_force(pts, senses)
        # every dropped point is dominated by some frontier point (transitivity)
        for i in set(range(n)) - set(front):
            assert any(dominates(pts[j], pts[i], senses) for j in front)


@pytest.mark.slow
def test_matches_brute_force_exhaustively():
    rng = random.Random(1)
    for _ in range(300):
        k = rng.randint(1, 4)
        senses = [rng.choice(["min", "max"]) for _ in range(k)]
        pts = [tuple(rng.choice([rng.randint(0, 3), rng.random()]) for _ in range(k)) for _ in range(rng.randint(0, 60))]
        assert pareto_front(pts, senses) == _brute_force(pts, senses)
