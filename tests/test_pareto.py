"""`menas.search.pareto`: non-dominated sorting and crowding distance (NSGA-II) against hand-computed fronts and a
brute-force definition (hypothesis), the trial-level front of a store, and `menas status` showing it. No torch."""

from __future__ import annotations

import math
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from menas.cli.main import main
from menas.config import StrategyConfig
from menas.errors import UserError
from menas.search import pareto
from menas.search.pareto import MAX, MIN
from menas.search.record import TrialRecord
from menas.search.store import Store
from menas.search.strategies import TrialOutcome, TrialSpec

# ----------------------------------------------------------------------------------------- hand-computed

#: Points A..G as (score up, MACs down): A and G are equal; A beats C, B beats E; C and E trade; C and E beat F.
HAND = [(90, 10), (80, 5), (85, 12), (70, 3), (80, 8), (60, 20), (90, 10)]
HAND_SENSES = (MAX, MIN)


def test_importing_pareto_does_not_import_torch() -> None:
    code = "import sys, menas.search.pareto; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_hand_computed_fronts_crowding_and_order() -> None:
    assert pareto.fronts(HAND, HAND_SENSES) == [[0, 1, 3, 6], [2, 4], [5]]
    # front 0 by score: D 70, B 80, A 90, G 90 (A before G by key); by MACs: D 3, B 5, A 10, G 10. D and G are the
    # ends of both; B: (90 - 70) / 20 + (10 - 3) / 7 = 2; A: (90 - 80) / 20 + (10 - 5) / 7
    crowding = pareto.crowding_distances(HAND, [0, 1, 3, 6])
    assert crowding == {0: pytest.approx(0.5 + 5 / 7), 1: pytest.approx(2.0), 3: math.inf, 6: math.inf}
    assert pareto.crowding_distances(HAND, [2, 4]) == {2: math.inf, 4: math.inf}  # two points: both ends
    keys = pareto.nsga2_keys(HAND, HAND_SENSES)
    assert sorted(range(len(HAND)), key=keys.__getitem__) == [3, 6, 1, 0, 2, 4, 5]
    assert pareto.pareto_front(HAND, HAND_SENSES) == [0, 1, 3]  # G equals A: only the earlier is shown
    # the senses matter: minimising both, D (70, 3) and F (60, 20) are the ones nothing beats
    assert pareto.fronts(HAND, (MIN, MIN))[0] == [3, 5]
    assert pareto.dominates((90, 10), (85, 12), HAND_SENSES) and not pareto.dominates((90, 10), (90, 10), HAND_SENSES)
    assert pareto.fronts([], HAND_SENSES) == [] and pareto.pareto_front([], HAND_SENSES) == []


def test_keys_break_ties_instead_of_positions() -> None:
    keys = [70, 10, 20, 30, 40, 50, 60]  # A is now the latest of the equal pair A, G
    assert pareto.fronts(HAND, HAND_SENSES, keys)[0] == [1, 3, 6, 0]
    assert pareto.pareto_front(HAND, HAND_SENSES, keys) == [1, 3, 6]
    crowding = pareto.crowding_distances(HAND, [0, 1, 3, 6], keys)
    assert crowding[0] == math.inf and crowding[6] == pytest.approx(0.5 + 5 / 7)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: pareto.fronts([(1, 2)], ("up", MIN)), r"senses: got \('up', 'min'\), allowed: a sequence of max"),
        (lambda: pareto.fronts([(1, 2), (1,)], HAND_SENSES), r"points\[1\]: got \(1,\), allowed: 2 objective"),
        (lambda: pareto.fronts([(1, math.nan)], HAND_SENSES), r"points\[0\]: got \(1, nan\), allowed: finite"),
        (lambda: pareto.fronts([(1, 2), (3, 4)], HAND_SENSES, [5, 5]), "keys: got .*allowed: distinct"),
        (lambda: pareto.fronts([(1, 2)], HAND_SENSES, [1, 2]), r"keys: got 2, allowed: one per point \(1\)"),
        (lambda: pareto.crowding_distances([(1, 2)], [3]), r"front: got \(3,\), allowed: indices 0..0"),
    ],
)
def test_bad_arguments_are_named(call, match: str) -> None:
    with pytest.raises(UserError, match=match):
        call()


# ----------------------------------------------------------------------------------------- properties

#: Points with the senses of their objectives, as `point_sets` draws them.
Case = tuple[list[tuple[int, ...]], tuple[str, ...]]
SENSE_LISTS = st.lists(st.sampled_from(pareto.SENSES), min_size=1, max_size=3)


@st.composite
def point_sets(draw: st.DrawFn, max_size: int = 14) -> Case:
    """Small integer points (so ties and duplicates are common) and the senses of their objectives."""
    senses = tuple(draw(SENSE_LISTS))
    coordinate = st.integers(0, 5)
    points = draw(st.lists(st.tuples(*[coordinate] * len(senses)), max_size=max_size))
    return points, senses


def brute_fronts(points: list[tuple[int, ...]], senses: tuple[str, ...]) -> list[set[int]]:
    """The definition: front 0 is the points nothing dominates; remove them and repeat."""
    left, out = set(range(len(points))), []
    while left:
        front = {i for i in left if not any(pareto.dominates(points[j], points[i], senses) for j in left)}
        out.append(front)
        left -= front
    return out


@settings(max_examples=150, deadline=None)
@given(point_sets())
def test_fronts_partition_and_respect_dominance(case: Case) -> None:
    points, senses = case
    fronts = pareto.fronts(points, senses)
    flat = [i for front in fronts for i in front]
    assert sorted(flat) == list(range(len(points)))  # a partition: each point in exactly one front
    assert all(front and front == sorted(front) for front in fronts)  # no empty front; each in key order
    rank = {i: k for k, front in enumerate(fronts) for i in front}
    for i in range(len(points)):
        for j in range(len(points)):  # nothing in a front >= k dominates a point of front k
            if rank[j] >= rank[i]:
                assert not pareto.dominates(points[j], points[i], senses), (i, j)
        if rank[i] > 0:  # a point of front k > 0 is dominated by one of front k - 1
            assert any(pareto.dominates(points[j], points[i], senses) for j in fronts[rank[i] - 1]), i
    assert [set(front) for front in fronts] == brute_fronts(points, senses)


@settings(max_examples=150, deadline=None)
@given(point_sets())
def test_crowding_is_infinite_at_the_ends_and_otherwise_the_normalised_gaps(
    case: Case,
) -> None:
    points, senses = case
    for front in pareto.fronts(points, senses):
        crowding = pareto.crowding_distances(points, front)
        assert set(crowding) == set(front)
        expected = dict.fromkeys(front, 0.0)
        for m in range(len(senses)):  # the definition, written out again per objective
            ordered = sorted(front, key=lambda i: (points[i][m], i))
            assert crowding[ordered[0]] == crowding[ordered[-1]] == math.inf  # both ends of every objective
            span = points[ordered[-1]][m] - points[ordered[0]][m]
            for pos in range(1, len(ordered) - 1):
                gap = points[ordered[pos + 1]][m] - points[ordered[pos - 1]][m]
                expected[ordered[pos]] += gap / span if span else 0.0
            expected[ordered[0]] = expected[ordered[-1]] = math.inf
        assert crowding == pytest.approx(expected)
        if len(front) <= 2:
            assert all(d == math.inf for d in crowding.values())
        assert all(d >= 0 for d in crowding.values())


@settings(max_examples=100, deadline=None)
@given(point_sets(), st.randoms(use_true_random=False))
def test_the_order_does_not_depend_on_how_the_points_are_listed(case: Case, rnd: random.Random) -> None:
    """With trial ids as keys, shuffling the input changes nothing: fronts, crowding, order and the shown front."""
    points, senses = case
    ids = [100 + 7 * i for i in range(len(points))]
    perm = list(range(len(points)))
    rnd.shuffle(perm)
    shuffled, shuffled_ids = [points[p] for p in perm], [ids[p] for p in perm]

    def by_id(pts: list, keys: list[int]) -> tuple:
        nsga = dict(zip(keys, pareto.nsga2_keys(pts, senses, keys), strict=True))
        fronts = [[keys[i] for i in front] for front in pareto.fronts(pts, senses, keys)]
        shown = [keys[i] for i in pareto.pareto_front(pts, senses, keys)]
        return nsga, fronts, shown

    assert by_id(points, ids) == by_id(shuffled, shuffled_ids)


@settings(max_examples=100, deadline=None)
@given(point_sets())
def test_the_shown_front_is_the_first_front_without_repeats(case: Case) -> None:
    points, senses = case
    shown = pareto.pareto_front(points, senses)
    first = pareto.fronts(points, senses)[0] if points else []
    assert set(shown) <= set(first) and len({points[i] for i in shown}) == len(shown)
    for i in first:  # every first-front point is shown, or an earlier equal one is
        assert any(points[j] == points[i] and j <= i for j in shown)


# ----------------------------------------------------------------------------------------- trials and the store


def _outcome(trial_id: int, score: float | None, macs: int = 0) -> TrialOutcome:
    if score is None:
        return TrialOutcome(trial_id, f"g{trial_id}", "failed")
    return TrialOutcome(trial_id, f"g{trial_id}", "done", score, macs, 1)


def test_trial_front_and_nsga2_order_of_trials() -> None:
    trials = [_outcome(i, *p) for i, p in enumerate(HAND)] + [_outcome(7, None)]
    random.Random(0).shuffle(trials)  # arrival order does not matter
    assert [t.trial_id for t in pareto.trial_front(trials)] == [3, 1, 0]  # rising MACs; G (6) equals A (0)
    assert [t.trial_id for t in pareto.nsga2_sorted(trials)] == [3, 6, 1, 0, 2, 4, 5]  # the failed one left out
    assert pareto.nsga2_ranks(trials)[1] == (0, -2.0, 1)
    assert pareto.trial_front([]) == []


def test_a_front_may_trade_params_and_the_objectives_are_checked() -> None:
    """With `pareto: [accuracy, params]` a network cheap in parameters but not in MACs is on the front; with
    [accuracy, macs, params] a front of three objectives holds every network one of the two costs keeps."""
    trials = [TrialOutcome(0, "a", "done", 70.0, 100, 50), TrialOutcome(1, "b", "done", 60.0, 50, 80),
              TrialOutcome(2, "c", "done", 60.0, 200, 10)]  # fmt: skip
    assert [t.trial_id for t in pareto.trial_front(trials)] == [1, 0]
    assert [t.trial_id for t in pareto.trial_front(trials, ("accuracy", "params"))] == [2, 0]  # rising params
    assert [t.trial_id for t in pareto.trial_front(trials, ("accuracy", "macs", "params"))] == [1, 0, 2]
    assert [t.trial_id for t in pareto.nsga2_sorted(trials, ("accuracy", "params"))] == [0, 2, 1]  # b dominated
    for bad in (["macs", "accuracy"], ["accuracy"], ["accuracy", "speed"], ["accuracy", "macs", "macs"]):
        with pytest.raises(ValueError, match="strategy.pareto"):
            pareto.check_objectives(bad)
        with pytest.raises(UserError, match="strategy.pareto: got"):
            StrategyConfig(pareto=bad)


#: (final score, final predicted latency ms, final MACs in millions) of hand-made trials for a latency front: by
#: hand, B (1.0 ms, 60%) is the cheapest, E equals B (a later trial: left out), A (2.0 ms, 70%) beats C (3.0 ms,
#: 65%) in both, D (5.0 ms, 80%) is the most accurate; F has no latency (a trial of no table: never on the front).
LATENCY_HAND = [(70.0, 2.0, 9), (60.0, 1.0, 1), (65.0, 3.0, 1), (80.0, 5.0, 1), (60.0, 1.0, 1), (99.0, None, 1)]


def _latency_trial(trial_id: int, score: float, latency: float | None, macs: int) -> TrialRecord:
    return TrialRecord(trial_id=trial_id, genome=f"g{trial_id}", status="done", trained_score=score,
                       macs=macs * 1_000_000, params=10, latency_ms=latency)  # fmt: skip


def test_a_front_on_latency_matches_the_one_computed_by_hand() -> None:
    """`pareto: [accuracy, latency]` trades the predicted latency: the front is B, A, D by rising latency (MACs
    play no part: A has the most); NSGA-II orders the outcomes the strategy is told alike; [accuracy, macs,
    latency] keeps what either cost keeps."""
    trials = [_latency_trial(i, *t) for i, t in enumerate(LATENCY_HAND)]
    random.Random(1).shuffle(trials)
    assert [t.trial_id for t in pareto.trial_front(trials, ("accuracy", "latency"))] == [1, 0, 3]
    outcomes = [TrialOutcome.from_record(t) for t in trials]
    assert [o.final_latency_ms for o in sorted(outcomes, key=lambda o: o.trial_id)] == [2.0, 1.0, 3.0, 5.0, 1.0, None]
    assert [t.trial_id for t in pareto.trial_front(outcomes, ("accuracy", "latency"))] == [1, 0, 3]
    # fronts by hand: {A, B, D, E} then {C}; crowding on the first: B and D ends, A between, E equal to B
    assert [o.trial_id for o in pareto.nsga2_sorted(outcomes, ("accuracy", "latency"))][-1] == 2
    assert [t.trial_id for t in pareto.trial_front(trials, ("accuracy", "macs", "latency"))] == [1, 2, 3, 0]
    with pytest.raises(ValueError, match="TrialOutcome.latency_ms: got -1"):
        TrialOutcome(0, "g", "done", 1.0, 1, 1, latency_ms=-1)
    assert StrategyConfig(objective="pareto", pareto=["accuracy", "latency"]).pareto == ["accuracy", "latency"]


def _store(run: Path, objective: str) -> Path:
    """A run with the HAND trials recorded (trial 1 as a ticket), a failed one and a queued one."""
    config = {"space": "mobilenet3-mt", "strategy": {"name": "menas", "objective": objective}}
    with Store.create(run, config, seed=0) as store:
        store.add_trials([TrialSpec(i, f"genome-{i}", 0, "sample", (), True) for i in range(len(HAND) + 2)])
        for i, (score, macs) in enumerate(HAND):
            if i == 1:  # a ticket: the final network is the ticket's
                ticket = {"ticket": "ticket-1", "ticket_finetuned_score": score, "ticket_macs": macs * 1_000_000}
                store.finish_trial(i, trained_score=95.0, macs=50_000_000, params=9, ticket_params=4, **ticket)
            else:
                store.finish_trial(i, trained_score=float(score), macs=macs * 1_000_000, params=i + 1)
        store.fail_trial(len(HAND), "TrialFailed: non-finite loss")
    return run


def test_store_front_is_the_final_networks_first_front(tmp_path: Path) -> None:
    with Store.open(_store(tmp_path / "run", "pareto"), readonly=True) as store:
        front = store.front()
    assert [t.trial_id for t in front] == [3, 1, 0]
    assert [(t.final_score, t.final_macs) for t in front] == [(70.0, 3_000_000), (80.0, 5_000_000), (90.0, 10_000_000)]
    assert front[1].final_genome == "ticket-1"  # the ticket, not its 50M-MAC candidate


def test_status_prints_the_front(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pareto_run = _store(tmp_path / "pareto", "pareto")
    assert main(["status", str(pareto_run)]) == 0
    out = capsys.readouterr().out
    table = out.split("Pareto front (final top-1 vs MACs)")[1]
    rows = [[cell.strip() for cell in line.strip("│").split("│")] for line in table.splitlines() if line[:1] == "│"]
    assert rows == [["1", "3", "0", "70.00%", "3M", "4", "no"], ["2", "1", "0", "80.00%", "5M", "4", "yes"],
                    ["3", "0", "0", "90.00%", "10M", "1", "no"]], table  # fmt: skip
    assert "--front K --out DIR` exports member K" in out
    accuracy_run = _store(tmp_path / "accuracy", "accuracy")  # an accuracy run: one line
    assert main(["status", str(accuracy_run)]) == 0
    out = capsys.readouterr().out
    assert "Pareto front (top-1 vs MACs): 3 trials, from 3M MACs at 70.00% to 10M MACs at 90.00%" in out
    assert "Pareto front (final top-1 vs MACs)" not in out
