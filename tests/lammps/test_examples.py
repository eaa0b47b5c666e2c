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
