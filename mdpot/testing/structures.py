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


def close_contacts(atoms: Atoms, distances: Sequence[float] = (0.8, 1.0, 1.2), seed: int = 0) -> Atoms:
    """A copy of ``atoms`` in which, for each of ``distances`` (Å), one atom is moved next to another at that
    distance: close pairs for a short-range repulsion. Each atom takes part in at most one such pair. The first
    pair straddles the cell's lower face along the first cell vector (the periodic boundary when that direction is
    periodic), the second the middle plane across it (the rank boundary of ``processors 2 * *``); the others point
    in random directions. Positions are wrapped into the cell along periodic directions.

    Example
    -------
    >>> atoms = close_contacts(alloy(("Cu", "Au"), (3, 3, 3)))
    >>> round(float(atoms.get_all_distances(mic=True)[atoms.get_all_distances(mic=True) > 0].min()), 2)
    0.8
    """
    rng = np.random.default_rng(seed)
    out = atoms.copy()
    frac = out.get_scaled_positions(wrap=True)[:, 0]
    axis = out.cell.array[0] / np.linalg.norm(out.cell.array[0])
    free = [int(k) for k in rng.permutation(len(out))]
    for k, d in enumerate(distances):
        if k == 0:    # the atom nearest the lower face, its partner beyond it
            anchor, sign = int(np.argmin(frac)), -1.0
        elif k == 1:  # the atom nearest the middle plane, its partner on the other side
            anchor = free[int(np.argmin(np.abs(frac[free] - 0.5)))]
            sign = -1.0 if frac[anchor] >= 0.5 else 1.0
        else:
            anchor, sign = free[0], 0.0
        free.remove(anchor)
        partner = free.pop(0)
        tilt = rng.normal(0.0, 1.0, 3)
        direction = sign * axis + (0.3 if sign else 1.0) * tilt / np.linalg.norm(tilt)
        out.positions[partner] = out.positions[anchor] + d * direction / np.linalg.norm(direction)
    out.wrap()
    return out


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
