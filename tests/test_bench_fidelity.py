"""bench/bench_fidelity.py's paired comparison of two variants on hand-made run summaries: per seed and as a mean
with its 95% t-interval, only on the seeds both variants ran."""

from __future__ import annotations

import pytest

from scripts import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("bench/bench_fidelity.py", "bench_fidelity")


def _run(name: str, climb: float, last: float, images: float) -> dict:
    return {"run": name, "climb": climb, "rows": [{"best_top_rung": last - climb}, {"best_top_rung": last}],
            "compute_images": images}  # fmt: skip


def test_variants_are_paired_by_seed(bench) -> None:
    results = [_run("rungs-s5", 1.0, 60.0, 4e5), _run("rungs-s6", -1.0, 58.0, 4e5), _run("rungs-s7", 2.0, 61.0, 4e5),
               _run("rungs-top-s5", 3.0, 61.0, 3e5), _run("rungs-top-s6", 2.0, 60.0, 3e5)]  # fmt: skip
    lines = bench.paired(results, "rungs", "rungs-top")
    assert len(lines) == 3 and all("seeds [5, 6]" in line for line in lines)
    climb, last, compute = lines
    # climbs +2.00 and +3.00: mean +2.50, half-width t(1) 12.706 x stdev 0.7071 / sqrt(2) = 6.353
    assert climb.startswith("rungs-top - rungs, climb, seeds [5, 6]: +2.00, +3.00; mean +2.50, 95% CI [-3.85, +8.85]")
    assert "+1.00, +2.00; mean +1.50" in last and "-0.10, -0.10; mean -0.10" in compute
    assert bench.paired(results, "rungs", "demo") == []


def test_an_unfinished_run_is_shown_but_not_counted(bench, capsys: pytest.CaptureFixture[str]) -> None:
    done, cut = _run("rungs-s5", 1.0, 60.0, 4e5), {**_run("rungs-s6", 5.0, 70.0, 2e5), "finished": False}
    for res in (done, cut):
        res.update(noise_sigma=None, noise_pairs=0, trial_s=1.0)
        res["rows"] = [{**r, "best_rung0": 1.0, "median_rung0": 1.0} for r in res["rows"]]
    bench.print_tables([done, cut])
    out = capsys.readouterr().out
    assert (
        "| rungs-s6 (unfinished) |" in out and "rungs: top-rung best rose in 1 of 1 runs (last - first: +1.00)" in out
    )


def test_rescored_elites_fall_back_by_their_luck(bench, capsys: pytest.CaptureFixture[str]) -> None:
    from menas.search.fidelity import Rescored
    from menas.search.protocol import TrialOutcome

    elite = Rescored(TrialOutcome(3, "g3", "done", 60.0, 100, 1), [60.0, 56.0])
    plain = TrialOutcome(4, "g4", "done", 50.0, 100, 1)
    assert bench.rescored_pairs([plain, elite]) == [[60.0, 56.0]]
    runs = []
    for seed, pairs in ((5, [[60.0, 56.0]]), (6, [[62.0, 60.0], [58.0, 59.0]])):
        res = {**_run(f"rungs-rescore-s{seed}", 1.0, 60.0, 4e5), "noise_sigma": None, "noise_pairs": 0,
               "trial_s": 1.0, "rescored": pairs}  # fmt: skip
        res["rows"] = [{**r, "best_rung0": 1.0, "median_rung0": 1.0} for r in res["rows"]]
        runs.append(res)
    bench.print_tables(runs)
    out = capsys.readouterr().out  # -4, -2, +1: mean -1.67, half-width t(2) 4.303 x 2.5166 / sqrt(3) = 6.25
    assert "rungs-rescore: re-scored elites, second training minus first: mean -1.67 [-7.92, +4.59] over 3 " in out
    assert "lineages, 2 fell" in out
