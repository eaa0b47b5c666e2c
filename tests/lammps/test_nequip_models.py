"""Models of the nequip package deployed by mdpot, in LAMMPS (rows 15, 16, 21 and 22 of docs/testing.md).

Small fresh-weight Allegro and NequIP models built and exported by nequip's own code, wrapped by ``mdpot deploy``,
run through ``pair_style mdpot`` on 1, 2 and 4 ranks and compared with ``MDPotCalculator`` on the positions LAMMPS
used: energy, per-atom energy, forces, global and per-atom virial. The systems: a skewed cell smaller than
2·r_max, a general triclinic cell, a slab, a molecule, three LAMMPS types with two mapped to Cu, and a NULL type
under ``hybrid/overlay``. The LAMMPS runs need no nequip: the wrapped files are plain TorchScript.
"""
from __future__ import annotations

import numpy as np
import pytest

from lammps_helpers import Reference, assert_results_close, atoms_from_frame, block, read_block, tol
from mdpot.lammps.run import write_data
from mdpot.testing import alloy, molecule, slab
from mdpot.testing.nequip import ELEMENTS, R_MAX

ZBL = "pair_coeff 1 1 zbl 29 29\npair_coeff 1 2 zbl 29 79\npair_coeff 2 2 zbl 79 79"
# 3 ranks dropped (CI time): 2 and 4 cover uneven splits of these small cells, and test_systems runs mdpot models on 3
CASES = [(arch, "float64", n) for arch in ("allegro", "nequip") for n in (1, 2, 4)] + \
        [(arch, "float32", n) for arch in ("allegro", "nequip") for n in (1, 2)]


def systems():
    """name -> (atoms, LAMMPS type elements, general triclinic data file)."""
    return {
        "small": (alloy(ELEMENTS, (2, 2, 2), a=0.75 * R_MAX, skew=0.15, rattle=0.1, seed=2), ELEMENTS, False),
        "triclinic": (alloy(ELEMENTS, (2, 2, 2), a=0.8 * R_MAX, seed=3), ELEMENTS, True),
        "slab": (slab(ELEMENTS, (2, 2, 2), a=3.0, seed=5), ELEMENTS, False),
        "molecule": (molecule(ELEMENTS, n_atoms=12, spacing=2.3, seed=4), ELEMENTS, False),
        "three_types": (alloy(ELEMENTS, (2, 2, 2), a=0.75 * R_MAX, seed=6), ("Cu", "Au", "Cu"), False),
    }


def retype_half_of_cu(path):
    """Move every other type-1 (Cu) atom of a LAMMPS data file to type 3, which is mapped to Cu too."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Atoms")) + 2
    seen = 0
    for i in range(start, len(lines)):
        parts = lines[i].split()
        if len(parts) < 5:
            break
        if parts[1] == "1":
            seen += 1
            if seen % 2:
                parts[1] = "3"
                lines[i] = " ".join(parts)
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("arch,dtype,nprocs", CASES)
def test_wrapped_nequip_model_in_lammps(plugin, nequip_wrapped, lammps, tmp_path, arch, dtype, nprocs):
    model = nequip_wrapped[arch, dtype]
    reference = Reference({dtype: model})
    cases = systems()
    script = []
    for name, (atoms, types, general) in cases.items():
        box = write_data(tmp_path / f"{name}.data", atoms, types, general_triclinic=general)
        if name == "three_types":
            retype_half_of_cu(tmp_path / f"{name}.data")
        script.append(block(name, f"{name}.data", box.boundary, f"pair_coeff * * {model} {' '.join(types)}"))
    write_data(tmp_path / "overlay.data", cases["small"][0], ELEMENTS)
    script.append(block("zbl", "overlay.data", "p p p", ZBL.replace("zbl ", ""), pair_style="zbl 2.0 3.0"))
    script.append(block("overlay_null", "overlay.data", "p p p", f"pair_coeff * * mdpot {model} Cu NULL\n" + ZBL,
                        pair_style="hybrid/overlay zbl 2.0 3.0 mdpot"))
    lammps("".join(script), tmp_path, nprocs=nprocs)

    for name, (_, types, _) in cases.items():
        got = read_block(tmp_path, name)
        if name == "three_types":
            assert set(got["frame"]["type"]) == {1, 2, 3}
        want = reference(atoms_from_frame(got["frame"], types), dtype)
        assert np.abs(want["forces"]).max() > 1e-2, f"{name}: forces vanish, the comparison would be vacuous"
        assert_results_close(got, want, tol("lammps", dtype), f"{arch} {dtype} np{nprocs} {name}")

    # NULL leaves Au to zbl: mdpot sees the Cu atoms alone
    overlay, zbl = read_block(tmp_path, "overlay_null"), read_block(tmp_path, "zbl")
    cu = overlay["frame"]["type"] == 1
    part = reference(atoms_from_frame(overlay["frame"], ELEMENTS)[cu], dtype)
    want = {"energy": zbl["energy"] + part["energy"], "virial": zbl["virial"] + part["virial"]}
    for key in ("energies", "forces", "atom_virial"):
        want[key] = zbl[key].copy()
        want[key][cu] += part[key]
    assert_results_close(overlay, want, tol("lammps", dtype), f"{arch} {dtype} np{nprocs} hybrid/overlay with NULL")
