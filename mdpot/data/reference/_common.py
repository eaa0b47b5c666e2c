"""What the reference generators share: counts per kind, stratified draws, rattling and straining, the
labelled copy of a structure (:func:`reference_frame`, which ``mdpot data`` and ``mdpot label`` both use), the
progress bar. No randomness of its own: every draw comes from the caller's ``numpy.random.Generator``."""
from __future__ import annotations

import os
import sys
from typing import Callable, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

PathLike = Union[str, os.PathLike]

#: ``label(atoms) -> (energy eV, forces eV/Å, stress eV/Å³ or None)``: a reference potential evaluated on a clean
#: structure (no calculator, constraints or velocities); stress None where the cell is not 3-D periodic.
Labeller = Callable[[Atoms], Tuple[float, np.ndarray, Optional[np.ndarray]]]

MAX_STRAIN = 0.04
SNAPSHOTS_PER_RUN = 5


def progress_bar(total: int, desc: str, enabled: bool):
    """A ``tqdm`` bar on stderr counting structures (disabled when ``enabled`` is false)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="struct", file=sys.stderr, disable=not enabled, dynamic_ncols=True)


def check_count(n_structures: int) -> None:
    if isinstance(n_structures, bool) or not isinstance(n_structures, (int, np.integer)) or n_structures < 1:
        raise ValueError(f"n_structures must be a positive integer, got {n_structures!r}")


def allocate(n: int, fractions: Mapping[str, float]) -> Dict[str, int]:
    """Split ``n`` into integer counts proportional to ``fractions`` (largest remainder, ties by order)."""
    names = list(fractions)
    share = np.array([fractions[k] for k in names], dtype=np.float64)
    exact = n * share / share.sum()
    counts = np.floor(exact).astype(int)
    order = sorted(range(len(names)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: n - int(counts.sum())]:
        counts[i] += 1
    return {k: int(c) for k, c in zip(names, counts)}


def stratified(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    """``n`` values spread over ``[low, high)``: one uniform draw per equal bin, in random order."""
    u = (rng.permutation(n) + rng.uniform(size=n)) / max(n, 1)
    return low + (high - low) * u


def runs(n_snapshots: int) -> List[int]:
    """Snapshots taken from each MD run: ``SNAPSHOTS_PER_RUN`` per run, the rest from a last shorter one."""
    full, rest = divmod(n_snapshots, SNAPSHOTS_PER_RUN)
    return [SNAPSHOTS_PER_RUN] * full + ([rest] if rest else [])


def rattle(atoms: Atoms, rng: np.random.Generator, sigma: float) -> None:
    """Add Gaussian displacements of standard deviation ``sigma`` (Å) to every coordinate, in place."""
    atoms.positions += rng.normal(0.0, sigma, size=(len(atoms), 3))


def strain(atoms: Atoms, rng: np.random.Generator, max_strain: float = MAX_STRAIN) -> None:
    """Apply a random symmetric strain, every component within ``±max_strain`` (shear included)."""
    eps = rng.uniform(-max_strain, max_strain, size=(3, 3))
    eps = 0.5 * (eps + eps.T)
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)


def labelled(atoms: Atoms, energy: float, forces: np.ndarray, stress: Optional[np.ndarray], /, **info) -> Atoms:
    """A clean copy of ``atoms`` (no velocities, no calculator state) carrying the labels and ``info``
    (``stress`` None: no stress label, as for non-periodic frames)."""
    out = Atoms(atoms.get_chemical_symbols(), positions=atoms.positions, cell=atoms.cell.array, pbc=atoms.pbc)
    out.info.update({k: v for k, v in info.items() if v is not None})
    labels = {"energy": float(energy), "forces": np.array(forces, dtype=np.float64)}
    if stress is not None:
        labels["stress"] = np.array(stress, dtype=np.float64)
    out.calc = SinglePointCalculator(out, **labels)
    return out


def reference_frame(atoms: Atoms, label: Labeller, /, **info) -> Atoms:
    """``atoms`` wrapped into its cell along its periodic directions and labelled by the reference potential
    ``label``: a clean copy (no velocities, constraints or calculator state) carrying the labels and ``info``.
    Every labelled frame of ``mdpot data`` and ``mdpot label`` comes from here."""
    frame = Atoms(atoms.get_chemical_symbols(), positions=atoms.positions, cell=atoms.cell.array, pbc=atoms.pbc)
    if frame.pbc.any():  # (wrapping round-trips through fractional coordinates: not for a molecule's positions)
        frame.wrap()
    return labelled(frame, *label(frame), **info)
