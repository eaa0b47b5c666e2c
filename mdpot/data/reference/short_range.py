"""Isolated atoms and short-range structures: what a training set needs beyond near-equilibrium bulk.

``mdpot data`` appends these to the training split only (the validation and test splits stay near-equilibrium,
so they keep measuring the accuracy users compare first):

- ``isolated``: one frame per element, one atom in the middle of a non-periodic cubic box of
  :data:`MOLECULE_BOX` Å; energy from the reference potential, forces zero, no stress. They give the trainer the
  per-element reference energies (``energy_shift: isolated``).
- short-range frames, :data:`SHORT_RANGE_SHARE` (10 %) of the near-equilibrium training structures by default,
  split over :data:`SHORT_RANGE_KINDS`:

  - ``dimer`` (30 %): two atoms, non-periodic, distances spread over 0.55-2.0 times the first-neighbour distance
    (Cu 1.40-5.1 Å, Si 1.29-4.7 Å);
  - ``trimer`` (30 %): three atoms, non-periodic, two arms of 0.6-1.6 first-neighbour distances at an angle of
    60-180°;
  - ``compressed`` (20 %): bulk cells scaled to 0.82-0.94 of the lattice constant (volume 55-83 %), displacements
    of 0.02-0.08 Å;
  - ``hot`` (20 %): bulk cells with Gaussian displacements of 0.12-0.25 Å per component (close contacts of very
    hot or shocked material).

  For Cu-Au each atom of a dimer or trimer is Cu or Au at random, and bulk cells are random alloys.

Non-periodic frames carry no stress label. Stillinger-Weber labels come from a periodic copy of the same box
(far wider than twice the 3.77 Å cutoff, so the energy is that of the isolated molecule). Everything draws from
the caller's ``numpy.random.Generator``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence

import numpy as np
from ase import Atoms

from ._common import Labeller, allocate, progress_bar, rattle, reference_frame, stratified

__all__ = ["MOLECULE_BOX", "SHORT_RANGE_KINDS", "SHORT_RANGE_SHARE", "ShortRangeRecipe", "isolated_atom_frames",
           "short_range_count", "short_range_frames"]

#: Short-range frames per near-equilibrium training structure (``mdpot data --short-range-share``).
SHORT_RANGE_SHARE = 0.10
SHORT_RANGE_KINDS: Dict[str, float] = {"dimer": 0.3, "trimer": 0.3, "compressed": 0.2, "hot": 0.2}
#: Edge (Å) of the cubic box of isolated atoms, dimers and trimers.
MOLECULE_BOX = 20.0
DIMER_RANGE = (0.55, 2.0)  # times the first-neighbour distance
TRIMER_ARM_RANGE = (0.6, 1.6)
TRIMER_ANGLE_DEG = (60.0, 180.0)
COMPRESSED_SCALE = (0.82, 0.94)
COMPRESSED_RATTLE = (0.02, 0.08)  # Å
HOT_RATTLE = (0.12, 0.25)  # Å

@dataclass(frozen=True)
class ShortRangeRecipe:
    """What the generator needs to know of a reference system.

    Parameters
    ----------
    system : str
        Dataset name stored in ``info["system"]``.
    elements : sequence of str
        Elements drawn for molecules (uniformly) and isolated atoms (one frame each).
    first_neighbour : float
        First-neighbour distance of the bulk (Å); dimer and trimer distances are multiples of it.
    bulk : callable
        ``bulk(rng) -> Atoms``: a periodic equilibrium cell (random alloy where the system has several elements).
    label : callable
        ``label(atoms) -> (energy, forces, stress or None)`` with the reference potential.
    """

    system: str
    elements: Sequence[str]
    first_neighbour: float
    bulk: Callable[[np.random.Generator], Atoms]
    label: Labeller


def short_range_count(n_train: int, share: float) -> int:
    """Short-range frames for ``n_train`` near-equilibrium training structures: ``round(share * n_train)``, at
    least one for a positive share."""
    if not (isinstance(share, (int, float)) and not isinstance(share, bool)) or not 0.0 <= share <= 1.0:
        raise ValueError(f"short-range share must be a number in [0, 1], got {share!r}")
    return max(1, int(round(share * n_train))) if share > 0 else 0


def _molecule(symbols: Sequence[str], positions: np.ndarray) -> Atoms:
    atoms = Atoms(list(symbols), positions=positions, cell=[MOLECULE_BOX] * 3, pbc=False)
    atoms.positions += 0.5 * MOLECULE_BOX - atoms.positions.mean(axis=0)
    return atoms


def _frame(recipe: ShortRangeRecipe, atoms: Atoms, kind: str) -> Atoms:
    return reference_frame(atoms, recipe.label, kind=kind, system=recipe.system)


def isolated_atom_frames(recipe: ShortRangeRecipe) -> List[Atoms]:
    """One ``isolated`` frame per element: one atom in a non-periodic box, the reference's energy, zero forces."""
    return [_frame(recipe, _molecule([el], np.zeros((1, 3))), "isolated") for el in recipe.elements]


def short_range_frames(recipe: ShortRangeRecipe, n: int, rng: np.random.Generator,
                       progress: bool = True) -> List[Atoms]:
    """``n`` short-range frames (``dimer``, ``trimer``, ``compressed``, ``hot``; shares in
    :data:`SHORT_RANGE_KINDS`), in that order."""
    counts = allocate(n, SHORT_RANGE_KINDS) if n > 0 else {k: 0 for k in SHORT_RANGE_KINDS}
    d = recipe.first_neighbour
    els = list(recipe.elements)
    out: List[Atoms] = []
    with progress_bar(n, f"{recipe.system} short-range", progress and n > 0) as bar:
        for r in stratified(rng, counts["dimer"], *DIMER_RANGE):
            symbols = [els[k] for k in rng.integers(len(els), size=2)]
            out.append(_frame(recipe, _molecule(symbols, np.array([[0.0, 0, 0], [r * d, 0, 0]])), "dimer"))
            bar.update()
        for theta in stratified(rng, counts["trimer"], *np.radians(TRIMER_ANGLE_DEG)):
            r1, r2 = rng.uniform(*TRIMER_ARM_RANGE, size=2) * d
            symbols = [els[k] for k in rng.integers(len(els), size=3)]
            pos = np.array([[0.0, 0, 0], [r1, 0, 0], [r2 * np.cos(theta), r2 * np.sin(theta), 0]])
            out.append(_frame(recipe, _molecule(symbols, pos), "trimer"))
            bar.update()
        for scale in stratified(rng, counts["compressed"], *COMPRESSED_SCALE):
            atoms = recipe.bulk(rng)
            atoms.set_cell(atoms.cell.array * scale, scale_atoms=True)
            rattle(atoms, rng, rng.uniform(*COMPRESSED_RATTLE))
            out.append(_frame(recipe, atoms, "compressed"))
            bar.update()
        for sigma in stratified(rng, counts["hot"], *HOT_RATTLE):
            atoms = recipe.bulk(rng)
            rattle(atoms, rng, sigma)
            out.append(_frame(recipe, atoms, "hot"))
            bar.update()
    return out
