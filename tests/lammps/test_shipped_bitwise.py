"""Models written by an earlier mdpot give bit-identical numbers across refactors: ASE calculator, and LAMMPS on 1 and
2 ranks. The models are the first shipped examples, as they were deployed then (format versions 1 and 2), kept in
``tests/data/legacy_models`` when the examples were retrained with isolated-atom references and ZBL repulsion.

The expected numbers in ``tests/data/shipped_bitwise.npz`` were written by the code before the design step
(issue 9) with ``MDPOT_WRITE_BITWISE=1 pytest tests/lammps/test_shipped_bitwise.py``. A change that is meant to
alter the numbers (a new model, a different summation order) rewrites that file in the same commit and says
why; anything else must leave every value equal, bit for bit. One torch thread everywhere, so that no
parallel reduction can reorder a sum.

Bit-identical holds on one kind of CPU: torch and its BLAS pick their kernels by CPU vendor and instruction set, so
another CPU rounds differently. ``shipped_bitwise.npz`` is from the machine of issue 9; a CPU whose numbers differ
gets its own ``shipped_bitwise_<vendor>-<torch CPU capability>.npz``, written by the code of a commit that passed
against the original file (``shipped_bitwise_AuthenticAMD-AVX512.npz``: by d3ad3ee, stop 23). On a CPU with no file
of its own the test compares with the original to 1e-12 relative, and says so.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

from lammps_helpers import block, read_block
from mdpot.lammps.run import write_data

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "shipped_bitwise.npz"
ROUNDING = 1e-12  # relative, against the original numbers on a CPU without its own file
LEGACY = REPO / "tests" / "data" / "legacy_models"
WRITE = os.environ.get("MDPOT_WRITE_BITWISE") == "1"
MODELS = ("allegro-cu-emt", "nequip-cu-emt", "allegro-si-sw")
KEYS = ("energy", "energies", "forces", "virial", "atom_virial")


def cpu_signature() -> str:
    """``<vendor>-<torch CPU capability>``, e.g. ``AuthenticAMD-AVX512``: what decides the kernels torch runs."""
    import torch

    vendor = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            vendor = next((line.split(":", 1)[1].strip() for line in f if line.startswith("vendor_id")), vendor)
    except OSError:
        pass
    return f"{vendor}-{torch.backends.cpu.get_cpu_capability()}"


def structure(name: str):
    if name.endswith("si-sw"):
        atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((2, 2, 2))
    else:
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((3, 3, 3))
    atoms.rattle(0.05, seed=7)
    atoms.set_cell(atoms.cell.array @ np.array([[1.0, 0.02, 0.0], [0.0, 1.0, 0.01], [0.0, 0.0, 1.0]]),
                   scale_atoms=True)
    return atoms


def ase_results(model: Path, atoms) -> dict:
    from mdpot import MDPotCalculator

    calc = MDPotCalculator(model)
    atoms = atoms.copy()
    calc.calculate(atoms, ["energy", "energies", "forces", "stress", "stresses"], ["positions"])
    return {key: np.asarray(calc.results[key], dtype=np.float64)
            for key in ("energy", "energies", "forces", "stress", "stresses")}


def lammps_results(model: Path, atoms, nprocs: int, workdir: Path, lammps) -> dict:
    element = atoms.get_chemical_symbols()[0]
    write_data(workdir / "system.data", atoms, [element])
    name = f"run{nprocs}"
    # The stored numbers are the ghost-shell path's; `message_passing exchange` (the default for a message-passing
    # model that has the block interface) is checked against the calculator at row 15 in test_message_passing.py.
    script = block(name, "system.data", "p p p", f"pair_coeff * * {model} {element}",
                   pair_style="mdpot threads 1 message_passing ghosts")
    (workdir / "in.lmp").write_text(script)
    lammps(workdir / "in.lmp", workdir, nprocs=nprocs)
    got = read_block(workdir, name)
    return {key: np.asarray(got[key], dtype=np.float64) for key in KEYS}


def test_shipped_models_are_bitwise_unchanged(plugin, lammps, tmp_path):
    results = {}
    for name in MODELS:
        model = LEGACY / f"{name}.pt"
        atoms = structure(name)
        for key, value in ase_results(model, atoms).items():
            results[f"{name}/ase/{key}"] = value
        for nprocs in (1, 2):
            workdir = tmp_path / f"{name}_{nprocs}"
            workdir.mkdir()
            for key, value in lammps_results(model, atoms, nprocs, workdir, lammps).items():
                results[f"{name}/lammps{nprocs}/{key}"] = value
    own = DATA.with_name(f"shipped_bitwise_{cpu_signature()}.npz")
    if WRITE:
        DATA.parent.mkdir(parents=True, exist_ok=True)
        np.savez(own, **results)
        pytest.skip(f"wrote {own}")
    if own.exists():
        expected = dict(np.load(own))
        assert sorted(expected) == sorted(results)
        differing = [f"{key} (max |Δ| {np.abs(results[key] - expected[key]).max():.3g})"
                     for key in sorted(expected) if not np.array_equal(results[key], expected[key])]
        assert not differing, f"not bit-identical to the stored numbers of {own.name}: " + ", ".join(differing)
        return
    expected = dict(np.load(DATA))
    assert sorted(expected) == sorted(results)
    differing = [f"{key} (max relative |Δ| {np.abs(results[key] - expected[key]).max() / scale:.3g})"
                 for key in sorted(expected)
                 for scale in [max(float(np.abs(expected[key]).max()), 1e-300)]
                 if np.abs(results[key] - expected[key]).max() > ROUNDING * scale]
    assert not differing, (f"no stored numbers for this CPU ({cpu_signature()}), and more than rounding ({ROUNDING:g} "
                           f"relative) from {DATA.name}: " + ", ".join(differing))
