"""µs/atom of one nequip model through nequip's NequIPCalculator and through MDPotCalculator on its wrapped
file (energy, forces, stress; neighbour lists included), interleaved A B A B, best of each, 1 thread.

    python scripts/nequip_bench.py SOURCE.nequip.pth WRAPPED.pt [rounds]
"""
from __future__ import annotations

import sys
import time

import torch


def main(source: str, wrapped: str, rounds: str = "5") -> int:
    from ase.calculators.calculator import all_changes
    from nequip.integrations.ase import NequIPCalculator

    from mdpot import MDPotCalculator
    from mdpot.testing import alloy

    torch.set_num_threads(1)
    calcs = {"nequip NequIPCalculator": NequIPCalculator.from_compiled_model(source, device="cpu", chemical_species_to_atom_type_map=True),
             "mdpot MDPotCalculator": MDPotCalculator(wrapped)}
    for reps in ((4, 4, 4), (8, 8, 8)):
        atoms = alloy(("Cu", "Au"), reps, a=3.7, skew=0.0, strain=0.0, rattle=0.05, seed=0)
        best = {k: float("inf") for k in calcs}
        for _ in range(int(rounds)):
            for name, calc in calcs.items():
                t = time.perf_counter()
                calc.calculate(atoms, ["energy", "forces", "stress"], all_changes)
                best[name] = min(best[name], time.perf_counter() - t)
        print(f"N={len(atoms)}: " + ", ".join(f"{k} {1e6 * v / len(atoms):.1f} µs/atom" for k, v in best.items()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
