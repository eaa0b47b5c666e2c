"""Deterministic structure generators for tests, self-checks and benchmarks."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from ase import Atoms
from ase.build import bulk

# Lattice constants (Å) of a few elements, for generators that need a sensible density.
_FCC_A = {"Cu": 3.61, "Au": 4.08, "Ag": 4.09, "Al": 4.05, "Ni": 3.52, "Pt": 3.92, "Pd": 3.89}


def fcc(element: str = "Cu", repeat: Sequence[int] = (2, 2, 2), a: float | None = None,
        rattle: float = 0.0, seed: int = 0) -> Atoms:
    """Cubic FCC supercell of ``element`` (lattice constant ``a`` Å), optionally rattled by ``rattle`` Å."""
    atoms = bulk(element, "fcc", a=a or _FCC_A.get(element, 3.6), cubic=True).repeat(tuple(repeat))
    if rattle:
        atoms.rattle(rattle, seed=seed)
    return atoms


def alloy(elements: Sequence[str], repeat: Sequence[int] = (2, 2, 2), a: float = 3.8, skew: float = 0.15,
          strain: float = 0.03, rattle: float = 0.1, seed: int = 0) -> Atoms:
    """Rattled, sheared and strained FCC cell with randomly assigned ``elements`` (each appears at least once)."""
    rng = np.random.default_rng(seed)
    atoms = fcc("Cu", repeat, a=a)
    symbols = [elements[k % len(elements)] for k in range(len(atoms))]
    rng.shuffle(symbols)
    atoms.set_chemical_symbols(symbols)
    deform = np.eye(3) + strain * rng.uniform(-1, 1, (3, 3))
    deform[0, 1] += skew
    deform[1, 2] += 0.5 * skew
    atoms.set_cell(atoms.cell.array @ deform, scale_atoms=True)
    atoms.positions += rng.normal(0.0, rattle, atoms.positions.shape)
    return atoms


def molecule(elements: Sequence[str], n_atoms: int = 8, spacing: float = 2.4, seed: int = 0) -> Atoms:
    """Non-periodic cluster of ``n_atoms`` with nearest distances around ``spacing`` Å, no cell."""
    rng = np.random.default_rng(seed)
    grid = np.array([(i, j, k) for i in range(3) for j in range(3) for k in range(3)], dtype=float)
    pick = rng.choice(len(grid), size=min(n_atoms, len(grid)), replace=False)
    pos = grid[pick] * spacing + rng.normal(0.0, 0.1, (len(pick), 3))
    symbols = [elements[k % len(elements)] for k in range(len(pick))]
    return Atoms(symbols, positions=pos, pbc=False)


def slab(elements: Sequence[str], repeat: Sequence[int] = (2, 2, 2), a: float = 3.8, vacuum: float = 8.0,
         rattle: float = 0.05, seed: int = 0) -> Atoms:
    """FCC slab periodic in x and y with ``vacuum`` Å along z (pbc = True, True, False)."""
    atoms = alloy(elements, repeat, a=a, skew=0.0, strain=0.0, rattle=rattle, seed=seed)
    atoms.center(vacuum=vacuum / 2, axis=2)
    atoms.pbc = (True, True, False)
    return atoms


def sample_structure(elements: Sequence[str], r_max: float, seed: int = 0) -> Atoms:
    """A small periodic, skewed, rattled structure containing every element, with a cell smaller than
    ``2 * r_max`` so that several periodic images of the same neighbour occur. Used by deploy self-checks."""
    return alloy(elements, (2, 2, 2), a=min(3.8, 0.75 * r_max), seed=seed)


def thermalize(atoms: Atoms, temperature_K: float, seed: int = 0) -> Atoms:
    """Maxwell-Boltzmann momenta at ``temperature_K`` (seeded), total momentum removed; returns ``atoms``.

    Uses ASE's ``thermalize_momenta`` where it exists (it replaced ``MaxwellBoltzmannDistribution``, which now warns;
    both draw the same numbers from the same generator)."""
    from ase.md import velocitydistribution as vd

    draw = getattr(vd, "thermalize_momenta", None) or vd.MaxwellBoltzmannDistribution
    draw(atoms, temperature_K=temperature_K, rng=np.random.default_rng(seed))
    vd.Stationary(atoms)
    return atoms
