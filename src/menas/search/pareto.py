"""Pareto fronts: NSGA-II's non-dominated sorting and crowding distance (Deb, Pratap, Agarwal and Meyarivan, "A
fast and elitist multiobjective genetic algorithm: NSGA-II", IEEE TEC 2002), the one definition of a front.

A point is a tuple of objective values, each maximised or minimised (`MAX`, `MIN`: its *sense*). Point a
*dominates* b when a is at least as good in every objective and strictly better in one. `fronts` sorts points into
fronts: front 0 is the points nothing dominates, front k the points dominated only by points of fronts < k.
`crowding_distances` measures, within one front, how far each point is from its neighbours (boundary points
infinitely far), so that selection keeps a front spread out. NSGA-II's order (`nsga2_keys`) is: lower front, then
larger crowding distance, then the smaller tie-break key.

Everything is deterministic and independent of the order the points are given in: fronts are listed by key, and
ties in an objective are broken by key (for trials: the trial_id, as `menas.search.ranking` breaks ties), never by
position. Points with equal objectives never dominate each other, so they share a front; `pareto_front` (what a
user is shown and exports) keeps only the earliest of them, and finds the first front alone without sorting the
rest.

For trials (`strategy.objective: pareto`) the objectives are the final search-val score, maximised, and by default
the final MACs, minimised (`trial_point`, `TRIAL_SENSES`); `strategy.pareto` may name params or the predicted
latency instead or beside (`OBJECTIVES`): `trial_front` is the run's result, `nsga2_sorted` and `nsga2_ranks` are
what MENAS' parent pool and regularized evolution's tournaments use. No torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from menas.errors import check
from menas.search.ranking import Ranked

MAX = "max"
MIN = "min"
#: The senses an objective may have.
SENSES = (MAX, MIN)
#: A trial's objectives under `strategy.objective: pareto` by default: final search-val score (up), final MACs
#: (down); `strategy.pareto` may name others (`OBJECTIVES`).
TRIAL_SENSES = (MAX, MIN)
DEFAULT_OBJECTIVES = ("accuracy", "macs")
#: The objectives a front may trade (`strategy.pareto`), each with its sense and the trial attribute it reads.
OBJECTIVES: dict[str, tuple[str, str]] = {
    # what selection ranks by (`TrialRecord.fitness`): search-val top-1, or the training-speed estimate under
    # `fidelity.score: tse`
    "accuracy": (MAX, "fitness"),
    "macs": (MIN, "final_macs"),
    "params": (MIN, "final_params"),
    # the final network's predicted latency (a latency table's, `budget.latency_table`; None without one)
    "latency": (MIN, "final_latency_ms"),
}


def config_objectives(config: dict[str, Any]) -> tuple[str, ...]:
    """The Pareto objectives of a run from its config dict as stored (`strategy.pareto`, else the default)."""
    return tuple((config.get("strategy") or {}).get("pareto", DEFAULT_OBJECTIVES))


def check_objectives(objectives: Sequence[str], where: str = "strategy.pareto") -> tuple[str, ...]:
    """`objectives` as a tuple: accuracy first, then one or more distinct costs of `OBJECTIVES`."""
    names = tuple(objectives) if isinstance(objectives, list | tuple) else ()
    costs = [name for name in OBJECTIVES if name != "accuracy"]
    check(
        len(names) >= 2 and names[0] == "accuracy" and len(set(names)) == len(names) and set(names[1:]) <= set(costs),
        where,
        list(objectives) if isinstance(objectives, list | tuple) else objectives,
        f"[accuracy, then one or more of {', '.join(costs)}], e.g. [accuracy, macs]",
    )
    return names


Point = Sequence[float]
T = TypeVar("T", bound=Ranked)


# --------------------------------------------------------------------------------------------- points


def _check(points: Sequence[Point], senses: Sequence[str], keys: Sequence[int] | None) -> list[int]:
    """Validates the arguments shared by the functions below; returns the tie-break keys (default: positions)."""
    check(len(senses) >= 1 and all(s in SENSES for s in senses), "senses", tuple(senses), "a sequence of max, min")
    for i, point in enumerate(points):
        check(len(point) == len(senses), f"points[{i}]", tuple(point), f"{len(senses)} objective values")
        check(all(math.isfinite(v) for v in point), f"points[{i}]", tuple(point), "finite numbers")
    if keys is None:
        return list(range(len(points)))
    check(len(keys) == len(points), "keys", len(keys), f"one per point ({len(points)})")
    check(len(set(keys)) == len(keys), "keys", tuple(keys), "distinct tie-break keys")
    return list(keys)


def _oriented(points: Sequence[Point], senses: Sequence[str]) -> list[tuple[float, ...]]:
    """The points with every objective turned into one to minimise (maximised ones negated)."""
    return [tuple(-v if s == MAX else v for v, s in zip(p, senses, strict=True)) for p in points]


def dominates(a: Point, b: Point, senses: Sequence[str]) -> bool:
    """Whether `a` is at least as good as `b` in every objective and strictly better in one."""
    _check([a, b], senses, None)
    x, y = _oriented([a, b], senses)
    return _dominates(x, y)


def _dominates(x: tuple[float, ...], y: tuple[float, ...]) -> bool:
    """Dominance of oriented points (every objective minimised)."""
    return all(u <= v for u, v in zip(x, y, strict=True)) and x != y


def fronts(points: Sequence[Point], senses: Sequence[str], keys: Sequence[int] | None = None) -> list[list[int]]:
    """The points' indices by front, each front in key order: NSGA-II's fast non-dominated sort (O(M N^2)).

    Args:
        points: objective values, one tuple per point.
        senses: `MAX` or `MIN` per objective.
        keys: distinct tie-break keys (trial ids), one per point (None: the positions); they order each front.
    """
    keys = _check(points, senses, keys)
    oriented = _oriented(points, senses)
    n = len(points)
    beaten_by = [0] * n  # how many points dominate point i
    beats: list[list[int]] = [[] for _ in range(n)]  # the points i dominates
    for i in range(n):
        for j in range(i + 1, n):
            if _dominates(oriented[i], oriented[j]):
                beats[i].append(j)
                beaten_by[j] += 1
            elif _dominates(oriented[j], oriented[i]):
                beats[j].append(i)
                beaten_by[i] += 1
    result: list[list[int]] = []
    current = [i for i in range(n) if beaten_by[i] == 0]
    while current:  # bounded: every point joins exactly one front
        result.append(sorted(current, key=lambda i: keys[i]))
        following = []
        for i in current:
            for j in beats[i]:
                beaten_by[j] -= 1
                if beaten_by[j] == 0:
                    following.append(j)
        current = following
    return result


def crowding_distances(
    points: Sequence[Point], front: Sequence[int], keys: Sequence[int] | None = None
) -> dict[int, float]:
    """NSGA-II's crowding distance of each index of `front` (the points of one front): per objective, the
    points sorted by value (ties by key), the two ends infinite, each other point adding the gap between its
    neighbours divided by the objective's range over the front (an objective equal over the front adds nothing).
    The sense of an objective does not matter: distances are absolute."""
    if not front:
        return {}
    keys = _check(points, [MAX] * len(points[0]), keys)
    check(all(0 <= i < len(points) for i in front), "front", tuple(front), f"indices 0..{len(points) - 1}")
    distance = dict.fromkeys(front, 0.0)
    for m in range(len(points[0])):
        ordered = sorted(front, key=lambda i: (points[i][m], keys[i]))
        low, high = points[ordered[0]][m], points[ordered[-1]][m]
        distance[ordered[0]] = distance[ordered[-1]] = math.inf
        if high == low:
            continue
        for before, i, after in zip(ordered, ordered[1:-1], ordered[2:], strict=False):
            distance[i] += (points[after][m] - points[before][m]) / (high - low)
    return distance


def nsga2_keys(
    points: Sequence[Point], senses: Sequence[str], keys: Sequence[int] | None = None
) -> list[tuple[int, float, int]]:
    """Per point, its NSGA-II sort key (front, -crowding distance, key): sorting by it gives the lower front
    first, within a front the larger crowding distance, then the smaller key."""
    keys = _check(points, senses, keys)
    out: list[tuple[int, float, int]] = [(0, 0.0, k) for k in keys]
    for rank, front in enumerate(fronts(points, senses, keys)):
        for i, distance in crowding_distances(points, front, keys).items():
            out[i] = (rank, -distance, keys[i])
    return out


def pareto_front(points: Sequence[Point], senses: Sequence[str], keys: Sequence[int] | None = None) -> list[int]:
    """The indices of the first front in key order, of points with equal objectives only the one with the
    smallest key: the distinct trade-offs a user chooses from.

    Only the first front is needed here, so it is found in O(N F) for a front of F points instead of the full
    sort's O(N^2) (a store of thousands of trials): in lexicographic order of the oriented objectives every point
    comes after all points that dominate it, so a point is on the first front exactly when none of the front
    points kept before it dominates or equals it.
    """
    keys = _check(points, senses, keys)
    oriented = _oriented(points, senses)
    kept: list[int] = []
    for i in sorted(range(len(points)), key=lambda i: (oriented[i], keys[i])):
        if not any(oriented[j] == oriented[i] or _dominates(oriented[j], oriented[i]) for j in kept):
            kept.append(i)
    return sorted(kept, key=lambda i: keys[i])


# --------------------------------------------------------------------------------------------- trials


def trial_point(trial: Ranked, objectives: Sequence[str] = DEFAULT_OBJECTIVES) -> tuple[float, ...]:
    """A finished trial's objective values (default: final search-val score, final MACs), under
    `trial_senses(objectives)`."""
    values = tuple(getattr(trial, OBJECTIVES[name][1]) for name in objectives)
    assert None not in values, f"trial {trial.trial_id} is unfinished"
    return tuple(float(v) for v in values)


def trial_senses(objectives: Sequence[str] = DEFAULT_OBJECTIVES) -> tuple[str, ...]:
    """The sense of each objective (`OBJECTIVES`)."""
    return tuple(OBJECTIVES[name][0] for name in objectives)


def _finished(trials: Iterable[T], objectives: Sequence[str] = DEFAULT_OBJECTIVES) -> list[T]:
    """The trials with every objective value, in trial_id order."""
    names = [OBJECTIVES[name][1] for name in objectives]
    usable = (t for t in trials if all(getattr(t, n, None) is not None for n in names))
    return sorted(usable, key=lambda t: t.trial_id)


def trial_front(trials: Iterable[T], objectives: Sequence[str] = DEFAULT_OBJECTIVES) -> list[T]:
    """The finished trials on the first Pareto front of the objectives (default: final score up, final MACs
    down), by rising first cost; of trials equal in all, the earliest. Trials without a value are left out."""
    usable = _finished(trials, objectives)
    points = [trial_point(t, objectives) for t in usable]
    front = pareto_front(points, trial_senses(objectives), [t.trial_id for t in usable])
    cost = OBJECTIVES[objectives[1]][1]
    return sorted((usable[i] for i in front), key=lambda t: (getattr(t, cost), t.trial_id))


def nsga2_ranks(
    trials: Iterable[T], objectives: Sequence[str] = DEFAULT_OBJECTIVES
) -> dict[int, tuple[int, float, int]]:
    """trial_id -> NSGA-II sort key (front, -crowding distance, trial_id) of finished trials, computed over all
    of them (`nsga2_keys` on `trial_point`)."""
    usable = _finished(trials, objectives)
    ids = [t.trial_id for t in usable]
    points = [trial_point(t, objectives) for t in usable]
    return dict(zip(ids, nsga2_keys(points, trial_senses(objectives), ids), strict=True))


def nsga2_sorted(trials: Iterable[T], objectives: Sequence[str] = DEFAULT_OBJECTIVES) -> list[T]:
    """Finished trials in NSGA-II order: front, then larger crowding distance, then trial_id."""
    usable = _finished(trials, objectives)
    ranks = nsga2_ranks(usable, objectives)
    return sorted(usable, key=lambda t: ranks[t.trial_id])


__all__ = [
    "DEFAULT_OBJECTIVES",
    "MAX",
    "MIN",
    "OBJECTIVES",
    "SENSES",
    "TRIAL_SENSES",
    "check_objectives",
    "crowding_distances",
    "dominates",
    "fronts",
    "nsga2_keys",
    "nsga2_ranks",
    "nsga2_sorted",
    "pareto_front",
    "trial_front",
    "trial_point",
    "trial_senses",
]
