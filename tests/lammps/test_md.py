"""Short MD in LAMMPS (docs/testing.md rows 18 and 24): run 0 / run 4 vs Python, restart and write_data
continuations identical to the uninterrupted run, per-atom energies summing to the total, and 10 NVE steps
against ASE's VelocityVerlet."""

from __future__ import annotations

import numpy as np
import pytest

from lammps_helpers import ELEMENTS, FTM2V_METAL, OBSERVE, assert_results_close, atoms_from_frame, lammps_results, tol
from mdpot.lammps.run import read_dump, read_log, write_data
from mdpot.testing import alloy, assert_allclose

PAIR = "pair_style mdpot\npair_coeff * * {model} Cu Au\n"
MD = "thermo 1\ntimestep 0.001\nfix nve all nve\ndump t all custom 1 {name}.traj id xu yu zu\n" \
     "dump_modify t format float %.17g sort id\n"

SCRIPT = ("log cont.log\nunits metal\natom_style atomic\nboundary p p p\nread_data md.data\n" + PAIR
          + OBSERVE.format(name="cont") + MD.format(name="cont")
          + "run 0\nrun 4\nwrite_restart md.restart\nwrite_data md_out.data nocoeff\nrun 6\n"
          # continue from the restart file
          + "clear\nlog restart.log\nread_restart md.restart\n" + PAIR + OBSERVE.format(name="restart")
          + MD.format(name="restart") + "run 6\n"
          # continue from the data file
          + "clear\nlog data.log\nunits metal\natom_style atomic\nboundary p p p\nread_data md_out.data\n"
          + "reset_timestep 4\n" + PAIR + OBSERVE.format(name="data") + MD.format(name="data") + "run 6\n")

STEPS = 10
CASES = [("float64", 1), ("float64", 2), ("float32", 1)]


def initial_state():
    from mdpot.testing.structures import thermalize

    atoms = alloy(ELEMENTS, (2, 2, 2), a=3.8, skew=0.0, strain=0.0, rattle=0.05, seed=7)
    return thermalize(atoms, 800, seed=0)


def md_results(workdir) -> dict:
    """{"cont" | "restart" | "data": {step: results, frame, pos}} of a run of SCRIPT in ``workdir``."""
    out = {}
    for name in ("cont", "restart", "data"):
        frames = {f["step"]: f for f in read_dump(workdir / f"{name}.dump")}
        traj = {f["step"]: f for f in read_dump(workdir / f"{name}.traj")}
        thermo = {}
        for table in read_log(workdir / f"{name}.log"):
            for k, step in enumerate(table["Step"]):
                thermo[int(step)] = {c: v[k:k + 1] for c, v in table.items()}
        out[name] = {step: dict(lammps_results(frames[step], thermo[step]), frame=frames[step],
                                pos=np.column_stack([traj[step]["xu"], traj[step]["yu"], traj[step]["zu"]]))
                     for step in frames}
    return out


@pytest.fixture(scope="module")
def md_runs(plugin, models, lammps, tmp_path_factory):
    cache = {}

    def get(dtype, nprocs):
        if (dtype, nprocs) not in cache:
            workdir = tmp_path_factory.mktemp(f"md_{dtype}_np{nprocs}")
            write_data(workdir / "md.data", initial_state(), ELEMENTS, velocities=True)
            lammps(SCRIPT.format(model=models[dtype]), workdir, nprocs=nprocs)
            cache[dtype, nprocs] = md_results(workdir)
        return cache[dtype, nprocs]

    return get


@pytest.mark.parametrize("dtype,nprocs", CASES)
@pytest.mark.parametrize("step", [0, 4])
def test_run0_and_run4_match_python(md_runs, reference, dtype, nprocs, step):
    """Row 18: energies, forces, stress at steps 0 and 4 vs the ASE calculator on the same positions."""
    res = md_runs(dtype, nprocs)["cont"][step]
    want = reference(atoms_from_frame(res["frame"], ELEMENTS), dtype)
    assert_results_close(res, want, tol("lammps", dtype), f"step {step}")


@pytest.mark.parametrize("dtype,nprocs", CASES)
def test_per_atom_energies_sum_to_total(md_runs, dtype, nprocs):
    for step, res in md_runs(dtype, nprocs)["cont"].items():
        assert_allclose(res["energies"].sum(), res["energy"], tol("lammps_regression", dtype), f"step {step}")


@pytest.mark.parametrize("dtype,nprocs", CASES)
@pytest.mark.parametrize("branch", ["restart", "data"])
def test_continuation_is_identical(md_runs, dtype, nprocs, branch):
    """Row 18: read_restart / read_data continuations reproduce steps 5-10 of the uninterrupted run."""
    runs = md_runs(dtype, nprocs)
    t = tol("lammps_regression", dtype)
    for step in range(5, STEPS + 1):
        got, want = runs[branch][step], runs["cont"][step]
        assert_results_close(got, want, t, f"{branch} step {step}", keys=("energy", "energies", "forces", "virial"))
        assert_allclose(got["pos"], want["pos"], t, f"{branch} step {step}: positions")


@pytest.mark.parametrize("dtype,nprocs", CASES)
def test_nve_matches_ase_velocity_verlet(md_runs, models, dtype, nprocs):
    """Row 24: 10 NVE steps of 1 fs, LAMMPS vs ASE VelocityVerlet, positions at every step."""
    from ase import units
    from ase.md.verlet import VelocityVerlet

    from mdpot import MDPotCalculator

    atoms = initial_state()
    velocities = atoms.get_velocities()
    # LAMMPS's metal-units force-to-acceleration constant is rounded; give ASE the same dynamics.
    atoms.set_masses(atoms.get_masses() * (units._e / units._amu * 1e-4) / FTM2V_METAL)
    atoms.set_velocities(velocities)
    atoms.calc = MDPotCalculator(models[dtype])
    lmp = md_runs(dtype, nprocs)["cont"]
    dyn = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    t = tol("lammps_md", dtype)
    moved = 0.0
    for step in range(1, STEPS + 1):
        dyn.run(1)
        assert_allclose(lmp[step]["pos"], atoms.positions, t, f"positions at step {step}")
        moved = max(moved, float(np.abs(atoms.positions - lmp[0]["pos"]).max()))
    assert moved > 1e-3, "atoms barely moved: the comparison would be vacuous"
