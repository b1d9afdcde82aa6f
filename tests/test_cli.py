import re

import numpy as np
import pytest

import ttscale as tts
from ttscale import cli


def test_demo_prints_simulation_beside_theory(capsys):
    assert cli.main(["demo", "--n", "10,30", "--k-max", "3", "--prompts", "2000", "--m", "400"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if re.match(r"^\s+\d+\s+\d+\s", line)]
    assert len(rows) == 6
    for n, k, mean, _pm, se, limit, cor in rows:
        # simulated error at m = 400 sits above the m → ∞ limit by O(1/m), never below it by > 4 s.e.
        assert float(mean) > float(limit) - 4 * float(se)
        assert float(limit) == pytest.approx(float(cor), rel=1e-3)  # Λ = I: Cor 3.5 is exact
        r = 11 / (int(n) + 11)
        assert float(limit) == pytest.approx(10 * r ** (2 * int(k)), rel=1e-3)


def test_cli_reports_bad_input_cleanly(capsys):
    assert cli.main(["demo", "--n", ",", "--k-max", "2"]) == 2
    assert "--n" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["no-such-command"])
