"""The LAMMPS inputs of examples/ run (a few steps, a small cell, the test model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mdpot.lammps.run import read_log

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("name", ["in.nve", "in.nvt"])
def test_example_runs(plugin, lammps, models, tmp_path, name):
    lammps(EXAMPLES / name, tmp_path, nprocs=1,
           variables={"model": models["float32"], "size": 2, "steps": 5})
    table = read_log(tmp_path / "log.lammps")[-1]
    assert list(table["Step"]) == [0, 5]
    assert np.isfinite(table["PotEng"]).all() and np.isfinite(table["Press"]).all()


def test_committee_halt_example(plugin, lammps, committee_files, tmp_path):
    """examples/in.committee_halt stops at the first fix halt check above the threshold (here every 5 steps, thermo
    every 50: fix halt has the energy tallied on its own steps), and writes the deviations it checked."""
    from mdpot.lammps.run import read_dump

    run = lammps(EXAMPLES / "in.committee_halt", tmp_path, nprocs=2,
                 variables={"model": committee_files["ab"], "size": 2, "steps": 40, "every": 5, "thermo": 50,
                            "threshold": 1e-6})
    assert "Fix halt condition for fix-id stop met on step 5 with value" in run.output, run.output[-2000:]
    assert "stopped at step 5: max force deviation" in run.output
    lines = (tmp_path / "uncertainty.txt").read_text().splitlines()
    assert [line.split()[0] for line in lines[2:]] == ["0", "5"]
    frames = read_dump(tmp_path / "frames.dump")
    assert [f["step"] for f in frames] == [0, 5]
    assert float(lines[-1].split()[1]) == pytest.approx(max(frames[-1]["f_sigma"]), rel=1e-5)  # dump: 6 digits
