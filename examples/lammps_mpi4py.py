"""The LAMMPS Python module on several MPI ranks with mpi4py, running ``pair_style mdpot``.

    mpirun -np 2 python examples/lammps_mpi4py.py [--model MODEL.pt] [--size 3] [--steps 20] [--json out.json]

Every rank runs this script; ``lammps(comm=MPI.COMM_WORLD)`` makes them one LAMMPS run with a domain each
(use ``.venv/bin/mpirun``, the MPI that mpi4py and LAMMPS were installed with). The pair style is auto-loaded
(mdpot's ``lammps.plugins`` entry point, run when ``lammps`` is imported). The script builds a rattled FCC Cu
box, evaluates it (``run 0``), then runs NVE; rank 0 prints the potential energy and the energy drift.
``--json`` writes the initial positions, cell, energy and forces (gathered from all ranks, in atom-id order), so
they can be checked against ``MDPotCalculator`` on the same structure.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from mpi4py import MPI

from lammps import lammps

DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "allegro-cu-emt" / "model.pt"


def gather(lmp, name: str, natoms: int) -> np.ndarray:
    """A per-atom vector of all ranks, in atom-id order, on every rank."""
    return np.ctypeslib.as_array(lmp.gather_atoms(name, 1, 3), shape=(3 * natoms,)).reshape(natoms, 3).copy()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="deployed mdpot model that knows Cu")
    parser.add_argument("--size", type=int, default=3, help="box of n x n x n FCC cells (default 3: 108 atoms)")
    parser.add_argument("--steps", type=int, default=20, help="NVE steps of 1 fs after the evaluation")
    parser.add_argument("--json", type=Path, help="rank 0 writes the evaluated structure and results here")
    args = parser.parse_args(argv)

    comm = MPI.COMM_WORLD
    lmp = lammps(comm=comm, cmdargs=["-screen", "none", "-log", "none", "-nocite"])
    lmp.commands_string(f"""
        units        metal
        atom_style   atomic
        atom_modify  map array
        lattice      fcc 3.61
        region       box block 0 {args.size} 0 {args.size} 0 {args.size}
        create_box   1 box
        create_atoms 1 box
        mass         1 63.546
        displace_atoms all random 0.05 0.05 0.05 4321 units box
        pair_style   mdpot
        pair_coeff   * * {args.model.resolve()} Cu
        velocity     all create 300.0 1234 mom yes rot yes dist gaussian
        timestep     0.001
        fix          md all nve
        thermo_style custom step pe etotal
        run 0
    """)
    natoms = lmp.get_natoms()
    energy = lmp.get_thermo("pe")
    etot0 = lmp.get_thermo("etotal")
    positions, forces = gather(lmp, "x", natoms), gather(lmp, "f", natoms)
    cell = np.diag([lmp.extract_box()[1][k] - lmp.extract_box()[0][k] for k in range(3)])
    lmp.command(f"run {args.steps}")
    drift = (lmp.get_thermo("etotal") - etot0) / natoms
    if comm.rank == 0:
        print(f"{comm.size} ranks, {natoms} Cu atoms: potential energy {energy:.10f} eV; "
              f"total energy drift over {args.steps} steps {drift:+.2e} eV/atom")
        if args.json:
            args.json.write_text(json.dumps({"ranks": comm.size, "energy": energy, "cell": cell.tolist(),
                                             "positions": positions.tolist(), "forces": forces.tolist(),
                                             "drift_eV_per_atom": drift}))
    lmp.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
