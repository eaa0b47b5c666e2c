"""Shared helpers of the LAMMPS tests: tolerances, the ASE reference in LAMMPS conventions, result parsing
(dump frames as ``Atoms``, edge dumps, atoms per rank), LAMMPS Voigt order and the ``metal`` force unit."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Mapping, Sequence

import numpy as np

from mdpot.lammps.run import NKTV2P_METAL
from mdpot.voigt import ASE_ORDER, LAMMPS_ORDER, from_voigt, to_voigt

ELEMENTS = ("Cu", "Au")
DTYPES = ("float64", "float32")
TIMEOUT = 180.0  # s per LAMMPS process; 8 ranks on 2 cores take ~30 s

#: LAMMPS ``force->ftm2v`` for ``units metal``: acceleration (Å/ps^2) = F (eV/Å) / m (g/mol) * FTM2V_METAL.
#: ASE's exact constant differs in the 8th digit; match it through the masses when comparing trajectories.
FTM2V_METAL = 1.0 / 1.0364269e-4

#: Position in ASE's Voigt vector of each component of LAMMPS's (``[0, 1, 2, 5, 4, 3]``).
ASE_TO_LAMMPS_VOIGT = [ASE_ORDER.index(pair) for pair in LAMMPS_ORDER]


def voigt_to_matrix(v: np.ndarray) -> np.ndarray:
    """LAMMPS order ``xx yy zz xy xz yz`` (..., 6) -> symmetric (..., 3, 3)."""
    return from_voigt(v, LAMMPS_ORDER)


def matrix_to_voigt(m: np.ndarray) -> np.ndarray:
    """(..., 3, 3) -> LAMMPS order ``xx yy zz xy xz yz`` (symmetrised)."""
    return to_voigt(m, LAMMPS_ORDER)


def tol(check: str, dtype: str) -> float:
    """Tolerance (docs/testing.md) of ``check`` for a model of ``dtype``."""
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
        return {"energy": res["energy"], "energies": res["energies"], "forces": res["forces"],
                "virial": -res["stress"][ASE_TO_LAMMPS_VOIGT] * volume,
                "atom_virial": -res["stresses"][:, ASE_TO_LAMMPS_VOIGT] * volume}


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


def overlay_expected(zbl: dict, mdpot_part: dict, mask: np.ndarray) -> dict:
    """What ``pair_style hybrid/overlay zbl ... mdpot`` with ``NULL`` for some types should give: the ZBL run
    ``zbl`` everywhere plus ``mdpot_part`` (a reference on the atoms of ``mask`` alone) on those atoms."""
    want = {"energy": zbl["energy"] + mdpot_part["energy"], "virial": zbl["virial"] + mdpot_part["virial"]}
    for key in ("energies", "forces", "atom_virial"):
        want[key] = zbl[key].copy()
        want[key][mask] += mdpot_part[key]
    return want


def atoms_from_frame(frame: Mapping[str, object], type_elements: Sequence[str]):
    """ASE ``Atoms`` at the positions of a dump frame (columns ``type x y z``), with the LAMMPS box as cell
    (shifted to the origin) and its periodicity; atom ``k`` is the atom with the k-th smallest id."""
    from ase import Atoms

    symbols = [type_elements[t - 1] for t in frame["type"]]
    pos = np.column_stack([frame["x"], frame["y"], frame["z"]]) - np.asarray(frame["lo"])
    pbc = [b == "p" for b in str(frame["boundary"]).split()]
    return Atoms(symbols, positions=pos, cell=frame["cell"], pbc=pbc)


def read_edges(prefix: Path) -> Dict[str, np.ndarray]:
    """Edges written by ``pair_style mdpot ... dump_edges PREFIX`` on every rank (``PREFIX.<rank>``).

    Returns ``tags`` ((E, 2) int: atom ids of centre and neighbour), ``vec`` ((E, 3) float, Å:
    ``x_j - x_i`` as the model received it) and ``local`` ((E,) bool: the centre is a local atom of that
    rank; ghost centres appear for message-passing models only), concatenated over ranks.
    """
    prefix = Path(prefix)
    files = sorted(prefix.parent.glob(prefix.name + ".*"), key=lambda p: int(p.suffix[1:]))
    if not files:
        raise FileNotFoundError(f"no edge files {prefix}.<rank>")
    tags, vec, local = [], [], []
    for f in files:
        rows = [line for line in f.read_text().splitlines() if line and not line.startswith("#")]
        if rows:  # a rank without edges writes only its header
            data = np.loadtxt(rows, ndmin=2)
            tags.append(data[:, :2].astype(np.int64))
            vec.append(data[:, 2:5])
            local.append(data[:, 5] == 1)
    if not tags:
        return {"tags": np.zeros((0, 2), np.int64), "vec": np.zeros((0, 3)), "local": np.zeros(0, bool)}
    return {"tags": np.concatenate(tags), "vec": np.concatenate(vec), "local": np.concatenate(local)}


_NLOCAL = re.compile(r"^Nlocal:\s+(\S+) ave\s+(\S+) max\s+(\S+) min", re.M)


def nlocal_stats(output: str) -> List[tuple]:
    """``(ave, max, min)`` atoms per rank of each run in a LAMMPS output (for empty-rank checks)."""
    return [tuple(float(v) for v in m.groups()) for m in _NLOCAL.finditer(output)]


def check_alone_refuses_fused(plugin: str, fused, folder: Path) -> Path:
    """Copies the C++ check tool (``mdpot_model_check``) into ``folder``, away from ``libmdpot_ops.so``, asserts that
    it refuses the fused file ``fused`` in one line naming the library and the remedies, and returns the copy."""
    import shutil
    import subprocess

    from mdpot.lammps.plugin import CHECK_NAME

    alone = folder / CHECK_NAME
    shutil.copy2(Path(plugin).with_name(CHECK_NAME), alone)
    bad = subprocess.run([str(alone), "check", str(fused), "cpu"], capture_output=True, text=True, timeout=120)
    lines = (bad.stdout + bad.stderr).strip().splitlines()
    assert bad.returncode == 1 and len(lines) == 1, lines
    assert lines[0].startswith(f"REFUSED: '{fused}' calls mdpot's fused kernels (kernels fused), but "
                               f"{folder}/libmdpot_ops.so cannot be loaded ("), lines[0]
    assert lines[0].endswith("); rebuild the plugin with `python -m mdpot.lammps.plugin --force`, or deploy the "
                             "model with --kernels reference"), lines[0]
    return alone

