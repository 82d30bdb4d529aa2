"""The command line: outputs, JSON, and one-line errors with exit code 2 for user mistakes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from menas.cli.main import main
from menas.space.cost import count_cost, parse_range
from menas.space.genome import MOBILENETV3_LARGE, Genome
from menas.space.spaces import PRESETS


def test_sample_prints_genome_then_cost(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sample", "--space", "mobilenet3-mt", "--macs", "150M:300M", "--params-max", "8M", "-n", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    for line in lines:
        text, macs, macs_unit, _params, params_unit = line.split()
        genome = Genome.from_str(text)
        assert PRESETS["mobilenet3-mt"].contains(genome)
        assert (macs_unit, params_unit) == ("MACs", "params")
        assert 150e6 <= count_cost(genome).macs <= 300e6
        assert parse_range(macs, "m")[1] == pytest.approx(count_cost(genome).macs, rel=0.01)


def test_sample_json_is_reproducible(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["sample", "--space", "mobilenet3-ws", "-n", "4", "--seed", "3", "--json", "--input-size", "32"]
    main(args)
    first = json.loads(capsys.readouterr().out)
    main(args)
    assert json.loads(capsys.readouterr().out) == first
    assert [count_cost(Genome.from_str(r["genome"]), 32).macs for r in first] == [r["macs"] for r in first]


def test_inspect_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "mobilenetv3_large_100"]) == 0
    out = capsys.readouterr().out
    assert "216,589,760 multiply-accumulates" in out and "5,483,032" in out
    assert "stages.4.2" in out and "in preset spaces: mobilenet3-mt" in out
    assert main(["inspect", MOBILENETV3_LARGE, "--json", "--num-classes", "10", "--in-chans", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["macs"], data["params"]) == count_cost(Genome.from_str(MOBILENETV3_LARGE), 224, 1, 10)
    assert sum(row["macs"] for row in data["layers"]) == data["macs"]


def test_space_show(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["space", "show", "mobilenet3-ws"]) == 0
    out = capsys.readouterr().out
    assert "search space mobilenet3-ws" in out and "3, 4, 6" in out and "reachable at 224 px" in out
    assert main(["space", "show", "mobilenet3-mt", "--yaml"]) == 0
    assert "expand_ratios" in capsys.readouterr().out


BAD_ARGS = [
    (["inspect", "not-a-genome"], "neither a genome string"),
    (["inspect", "stem_c16_hs|x|y"], "genome string"),
    (["sample", "--space", "nope"], "neither a preset"),
    (["sample", "--macs", "1K:2K"], "infeasible"),
    (["sample", "--macs", "12X"], "unknown size suffix"),
    (["sample", "--params-max", "abc"], "--params-max"),
    (["sample", "-n", "0"], "-n: got 0"),
    (["inspect", "mobilenetv3_large_100", "--input-size", "8"], "input_size: got 8"),
    (["space", "show", "missing.yaml"], "neither a preset"),
    (["frobnicate"], "invalid choice"),
]


@pytest.mark.parametrize(("args", "message"), BAD_ARGS)
def test_user_errors_exit_2_with_one_line(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        sys.exit(main(args))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    error_lines = [line for line in err.splitlines() if line.startswith("menas: error:")]
    assert len(error_lines) == 1 and message in error_lines[0]


def test_console_script_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "menas.cli", "sample", "-n", "1", "--space", "mobilenet3-ws"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert Genome.from_str(result.stdout.split()[0])


def test_progress_is_one_line_per_epoch_when_stderr_is_not_a_terminal(tmp_path, capsys) -> None:
    genome = "stem_c8_hs-ds_k3_c8_re|ir_k3_s2_m16_c16_re|head_c64_f128_hs"
    args = ["train", genome, "--data", "synthetic", "--input-size", "16", "--epochs", "2", "--threads", "1"]
    assert main([*args, "--out", str(tmp_path / "t")]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "epoch" in line]
    assert len(lines) == 2, lines  # a log shows every epoch as it ends, not one bar at the end
    assert lines[0].endswith("min left") and " 1/2, " in lines[0] and " 2/2, " in lines[1]
