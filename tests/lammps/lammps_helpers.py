"""Shared helpers of the LAMMPS tests: tolerances, the ASE reference in LAMMPS conventions, result parsing."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np

from mdpot.lammps.run import NKTV2P_METAL

ELEMENTS = ("Cu", "Au")
DTYPES = ("float64", "float32")
TIMEOUT = 180.0  # s per LAMMPS process; 8 ranks on 2 cores take ~30 s

def tol(check: str, dtype: str) -> float:
    """TEST_MATRIX tolerance of ``check`` for a model of ``dtype``."""
    from mdpot.testing import tolerance

    return tolerance(check, dtype)


class Reference:
    """ASE calculator results in LAMMPS conventions: energy (eV), energies (eV), forces (eV/Å), virial and
    atom_virial (eV, LAMMPS Voigt order xx yy zz xy xz yz)."""

    def __init__(self, models: Dict[str, Path]):
        from mdpot import MDPotCalculator

        self.calcs = {dtype: MDPotCalculator(path) for dtype, path in models.items()}

    def __call__(self, atoms, dtype: str) -> dict:
        from ase.calculators.calculator import all_changes

        calc = self.calcs[dtype]
        atoms = atoms.copy()
        calc.calculate(atoms, ["energy", "energies", "forces", "stress", "stresses"], all_changes)
        res = calc.results
        volume = atoms.get_volume()
        voigt_ase_to_lmp = [0, 1, 2, 5, 4, 3]  # ASE xx yy zz yz xz xy -> LAMMPS xx yy zz xy xz yz
        return {"energy": res["energy"], "energies": res["energies"], "forces": res["forces"],
                "virial": -res["stress"][voigt_ase_to_lmp] * volume,
                "atom_virial": -res["stresses"][:, voigt_ase_to_lmp] * volume}


def lammps_results(frame: dict, table: dict) -> dict:
    """Energy, per-atom energy, forces, virial and per-atom virial (eV, eV/Å) from a dump frame with columns
    ``fx fy fz c_pe c_st[1..6]`` and a thermo table with ``PotEng c_vir[1..6] Volume``."""
    out = {"energy": float(table["PotEng"][-1]),
           "energies": np.asarray(frame["c_pe"]),
           "forces": np.column_stack([frame["fx"], frame["fy"], frame["fz"]])}
    vol = float(table["Volume"][-1])
    out["virial"] = np.array([table[f"c_vir[{k}]"][-1] for k in range(1, 7)]) * vol / NKTV2P_METAL
    if "c_st[1]" in frame:
        out["atom_virial"] = -np.column_stack([frame[f"c_st[{k}]"] for k in range(1, 7)]) / NKTV2P_METAL
    return out


#: Commands that make every run report what lammps_results() reads.
OBSERVE = """\
compute pe all pe/atom
compute st all stress/atom NULL virial
compute vir all pressure NULL virial
thermo_style custom step pe c_vir[1] c_vir[2] c_vir[3] c_vir[4] c_vir[5] c_vir[6] vol
thermo_modify format float %.17g
dump d all custom 1 {name}.dump id type x y z fx fy fz c_pe c_st[1] c_st[2] c_st[3] c_st[4] c_st[5] c_st[6]
dump_modify d format float %.17g sort id
"""



BLOCK = """\
clear
log {name}.log
units metal
atom_style atomic
boundary {boundary}
{processors}
read_data {data}
{extra}
pair_style {pair_style}
{pair_coeff}
""" + OBSERVE + "run 0\n"


def block(name: str, data: str, boundary: str, pair_coeff: str, pair_style: str = "mdpot",
          processors: str | None = None, extra: str = "") -> str:
    """One self-contained LAMMPS job (after ``clear``) that reads ``data`` and writes ``name.dump`` and
    ``name.log`` with everything :func:`read_block` needs."""
    return BLOCK.format(name=name, data=data, boundary=boundary, pair_style=pair_style, pair_coeff=pair_coeff,
                        processors=f"processors {processors}" if processors else "", extra=extra)


def read_block(workdir: Path, name: str) -> dict:
    """Results of a :func:`block` run, plus its dump ``frame``."""
    from mdpot.lammps.run import read_dump, read_log

    frame = read_dump(Path(workdir) / f"{name}.dump")[-1]
    out = lammps_results(frame, read_log(Path(workdir) / f"{name}.log")[-1])
    out["frame"] = frame
    return out


def assert_results_close(got: dict, want: dict, tolerance: float, what: str,
                         keys=("energy", "energies", "forces", "virial", "atom_virial")) -> None:
    from mdpot.testing import assert_allclose

    for key in keys:
        assert_allclose(got[key], want[key], tolerance, f"{what}: {key}")
