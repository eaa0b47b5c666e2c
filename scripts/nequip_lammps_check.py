"""Run wrapped nequip models (files written by ``mdpot.interop.nequip.deploy_nequip``) through ``pair_style
mdpot`` on 1 and 2 ranks and compare with ``MDPotCalculator`` on the positions LAMMPS used: energy, per-atom
energy, forces, virial and per-atom virial. Works in a Python without nequip (the files are plain TorchScript).

    PYTHONPATH=.:tests/lammps python scripts/nequip_lammps_check.py WORKDIR MODEL.pt [MODEL.pt ...]

Prints one line per (model, system, ranks) with the max errors, relative to each quantity's magnitude.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from lammps_helpers import Reference, block, read_block
from mdpot.deploy import load_model
from mdpot.lammps.run import atoms_from_frame, run_lammps, write_data
from mdpot.testing import alloy, molecule, slab

ELEMENTS = ("Cu", "Au")


def systems(r_max: float):
    return {
        "small": (alloy(ELEMENTS, (2, 2, 2), a=0.75 * r_max, skew=0.0, strain=0.0, rattle=0.1, seed=2), ELEMENTS, False),
        "triclinic": (alloy(ELEMENTS, (2, 2, 2), a=0.8 * r_max, seed=3), ELEMENTS, True),
        "slab": (slab(ELEMENTS, (2, 2, 2), a=3.0, seed=5), ELEMENTS, False),
        "molecule": (molecule(ELEMENTS, n_atoms=12, spacing=2.3, seed=4), ELEMENTS, False),
        # three LAMMPS types, two of them mapped to Cu
        "types_CuAuCu": (alloy(ELEMENTS, (2, 2, 2), a=0.75 * r_max, seed=6), ("Cu", "Au", "Cu"), False),
    }


def main(workdir: str, *models: str) -> int:
    worst = 0.0
    for model in models:
        meta = load_model(model).metadata
        ref = Reference({"m": Path(model)})
        for nprocs in (1, 2):
            wd = Path(workdir) / f"{Path(model).stem}_np{nprocs}"
            wd.mkdir(parents=True, exist_ok=True)
            script = []
            cases = systems(meta["r_max"])
            for name, (atoms, types, general) in cases.items():
                if name == "types_CuAuCu":  # put some Cu atoms on LAMMPS type 3
                    atoms = atoms.copy()
                box = write_data(wd / f"{name}.data", atoms, types, general_triclinic=general)
                if name == "types_CuAuCu":
                    text = (wd / f"{name}.data").read_text().splitlines()
                    start = next(i for i, ln in enumerate(text) if ln.startswith("Atoms")) + 2
                    k = 0
                    for i in range(start, len(text)):
                        parts = text[i].split()
                        if len(parts) < 5:
                            break
                        if parts[1] == "1":
                            k += 1
                            if k % 2:
                                parts[1] = "3"
                                text[i] = " ".join(parts)
                    (wd / f"{name}.data").write_text("\n".join(text) + "\n")
                script.append(block(name, f"{name}.data", box.boundary, f"pair_coeff * * {Path(model).resolve()} {' '.join(types)}"))
            run_lammps("".join(script), wd, nprocs=nprocs, timeout=600)
            for name, (atoms, types, _) in cases.items():
                got = read_block(wd, name)
                want = ref(atoms_from_frame(got["frame"], types), "m")
                errs = []
                for key in ("energy", "energies", "forces", "virial", "atom_virial"):
                    a, b = np.asarray(got[key], float), np.asarray(want[key], float)
                    rel = float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))
                    worst = max(worst, rel) if meta["model_dtype"] == "float64" else worst
                    errs.append(f"{key} {rel:.1e}")
                fmax = float(np.abs(want["forces"]).max())
                print(f"{Path(model).name} {meta['architecture']} {meta['model_dtype']} np{nprocs} {name:13s} "
                      f"N={len(got['forces'])} |F|max={fmax:.2f}: " + ", ".join(errs), flush=True)
    print(f"worst float64 relative error {worst:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
