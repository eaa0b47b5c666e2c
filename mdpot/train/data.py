"""Labelled datasets: structures read with ase.io, their reference labels, precomputed graphs and batches.

Labels are looked up by key in the calculator results that ase.io attaches (``energy``, ``forces``,
``stress`` of an extxyz file land there), then in ``atoms.info`` (energy, stress) / ``atoms.arrays``
(forces). Units: energy eV (total), forces eV/Å, stress eV/Å³ with ASE's sign, Voigt ``xx yy zz yz xz xy``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from ase import Atoms

from ..data import Graph, TypeMapper, atoms_to_graph, batch_graphs
from ..voigt import to_voigt

PathLike = Union[str, os.PathLike]


@dataclass
class Labelled:
    """One structure with its reference labels (eV, eV/Å, eV/Å³); ``where`` names it in messages."""

    atoms: Atoms
    energy: float
    forces: np.ndarray
    stress: Optional[np.ndarray]
    where: str


@dataclass
class Sample:
    """A labelled structure converted once into model-contract tensors (float64 / int64)."""

    graph: Graph
    energy: float
    forces: torch.Tensor
    stress: Optional[torch.Tensor]
    volume: float
    where: str

    @property
    def num_atoms(self) -> int:
        return self.graph.num_atoms


@dataclass
class Batch:
    """Several samples as one disconnected graph with their labels.

    ``batch [N]`` is the structure index of each atom; ``num_atoms [B]``; ``energy [B]`` eV;
    ``forces [N, 3]`` eV/Å; ``stress [B, 6]`` eV/Å³ (zeros where ``stress_mask`` is false);
    ``volume [B]`` Å³ (1 where there is no stress label, to keep the division finite).
    """

    graph: Graph
    batch: torch.Tensor
    num_atoms: torch.Tensor
    energy: torch.Tensor
    forces: torch.Tensor
    stress: torch.Tensor
    stress_mask: torch.Tensor
    volume: torch.Tensor

    @property
    def size(self) -> int:
        return int(self.energy.shape[0])


def read_structures(path: PathLike) -> List[Atoms]:
    """All structures of ``path`` (``ase.io.read(path, ":")``). Raises ``FileNotFoundError`` or ``ValueError``."""
    import ase.io

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"data file not found: {p.resolve()}")
    try:
        frames = ase.io.read(str(p), index=":")
    except Exception as exc:  # ase.io raises many types for malformed files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{p}: cannot read structures ({type(exc).__name__}: {first})") from None
    if isinstance(frames, Atoms):
        frames = [frames]
    if not frames:
        raise ValueError(f"{p}: contains no structures")
    return list(frames)


def _lookup(atoms: Atoms, key: str, per_atom: bool):
    results = getattr(atoms.calc, "results", None) or {}
    if key in results:
        return results[key]
    if per_atom and key in atoms.arrays:
        return atoms.arrays[key]
    if key in atoms.info:
        return atoms.info[key]
    if not per_atom and key in atoms.arrays:
        return atoms.arrays[key]
    return None


def read_labels(atoms: Atoms, where: str, energy_key: str = "energy", forces_key: str = "forces",
                stress_key: Optional[str] = "stress") -> Tuple[float, np.ndarray, Optional[np.ndarray]]:
    """``(energy eV, forces [n, 3] eV/Å, stress [6] eV/Å³ or None)`` of ``atoms``; energy and forces are
    required, a missing or inapplicable stress (no 3-D periodic cell) gives ``None``."""
    missing = f"(looked in the calculator results, info and arrays; available: {sorted(_available(atoms))})"
    e = _lookup(atoms, energy_key, per_atom=False)
    if e is None:
        raise ValueError(f"{where}: no energy label '{energy_key}' {missing}")
    try:
        energy = float(np.asarray(e, dtype=np.float64).reshape(()))
    except (TypeError, ValueError):
        raise ValueError(f"{where}: energy label '{energy_key}' is not a single number: {e!r}") from None
    f = _lookup(atoms, forces_key, per_atom=True)
    if f is None:
        raise ValueError(f"{where}: no forces label '{forces_key}' {missing}")
    forces = np.asarray(f, dtype=np.float64)
    if forces.shape != (len(atoms), 3):
        raise ValueError(f"{where}: forces label '{forces_key}' has shape {forces.shape}, expected ({len(atoms)}, 3)")
    if not (np.isfinite(energy) and np.isfinite(forces).all()):
        raise ValueError(f"{where}: non-finite energy or forces labels")
    stress = None
    if stress_key is not None:
        s = _lookup(atoms, stress_key, per_atom=False)
        if s is not None and atoms.pbc.all() and atoms.cell.rank == 3:
            s = np.asarray(s, dtype=np.float64)
            if s.shape in ((3, 3), (9,)):
                s = to_voigt(s.reshape(3, 3))
            if s.shape != (6,):
                raise ValueError(f"{where}: stress label '{stress_key}' has shape {s.shape}, expected (6,) Voigt or (3, 3)")
            if not np.isfinite(s).all():
                raise ValueError(f"{where}: non-finite stress label")
            stress = s
    return energy, forces, stress


def _available(atoms: Atoms) -> set:
    keys = set(getattr(atoms.calc, "results", None) or {}) | set(atoms.info)
    return keys | (set(atoms.arrays) - {"numbers", "positions"})


def load_labelled(path: PathLike, energy_key: str = "energy", forces_key: str = "forces",
                  stress_key: Optional[str] = "stress") -> List[Labelled]:
    """Read ``path`` and the labels of every structure; errors name the file and structure index."""
    frames = read_structures(path)
    out = []
    for k, atoms in enumerate(frames):
        where = f"{path}: structure {k}"
        energy, forces, stress = read_labels(atoms, where, energy_key, forces_key, stress_key)
        out.append(Labelled(atoms, energy, forces, stress, where))
    return out


def to_samples(items: Sequence[Labelled], r_max: float, elements: Sequence[str]) -> List[Sample]:
    """Neighbour lists (``r_max`` Å) and tensors for every item, computed once before training."""
    mapper = TypeMapper(elements)
    out = []
    for item in items:
        try:
            graph = atoms_to_graph(item.atoms, r_max, mapper)
        except ValueError as exc:
            raise ValueError(f"{item.where}: {exc}") from None
        volume = float(item.atoms.get_volume()) if item.stress is not None else 1.0
        stress = None if item.stress is None else torch.from_numpy(item.stress.copy())
        out.append(Sample(graph, item.energy, torch.from_numpy(item.forces.copy()), stress, volume, item.where))
    return out


def collate(samples: Sequence[Sample]) -> Batch:
    """One :class:`Batch` of ``samples`` (edge indices offset, labels concatenated)."""
    graph, batch = batch_graphs([s.graph for s in samples])
    stress = torch.zeros((len(samples), 6), dtype=torch.float64)
    mask = torch.zeros(len(samples), dtype=torch.bool)
    for k, s in enumerate(samples):
        if s.stress is not None:
            stress[k] = s.stress
            mask[k] = True
    return Batch(
        graph=graph,
        batch=batch,
        num_atoms=torch.tensor([s.num_atoms for s in samples], dtype=torch.float64),
        energy=torch.tensor([s.energy for s in samples], dtype=torch.float64),
        forces=torch.cat([s.forces for s in samples]),
        stress=stress,
        stress_mask=mask,
        volume=torch.tensor([s.volume for s in samples], dtype=torch.float64),
    )


def infer_elements(items: Sequence[Labelled]) -> Tuple[str, ...]:
    """Elements present in ``items``, ordered by atomic number."""
    from ase.data import chemical_symbols

    numbers = sorted({int(z) for it in items for z in np.unique(it.atoms.numbers)})
    return tuple(chemical_symbols[z] for z in numbers)


def element_counts(items: Sequence[Labelled], elements: Sequence[str]) -> np.ndarray:
    """``[n_structures, n_elements]`` atom counts per element (unknown elements raise ``ValueError``)."""
    mapper = TypeMapper(elements)
    counts = np.zeros((len(items), len(elements)))
    for k, it in enumerate(items):
        try:
            counts[k] = np.bincount(mapper(it.atoms.numbers), minlength=len(elements))
        except ValueError as exc:
            raise ValueError(f"{it.where}: {exc}") from None
    return counts


def fit_energy_shift(items: Sequence[Labelled], elements: Sequence[str]) -> np.ndarray:
    """Per-element energies (eV) minimising ``sum_s (E_s - sum_el n_s,el * shift_el)^2`` over ``items``
    (the minimum-norm solution when compositions are linearly dependent)."""
    counts = element_counts(items, elements)
    energies = np.array([it.energy for it in items])
    shift, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    return shift


def force_rms(items: Sequence[Labelled]) -> float:
    """Root mean square of all reference force components, eV/Å."""
    sq = sum(float(np.square(it.forces).sum()) for it in items)
    n = sum(it.forces.size for it in items)
    return float(np.sqrt(sq / n)) if n else 0.0


def mean_neighbors(samples: Sequence[Sample]) -> float:
    """Mean number of neighbours per atom within the graphs' cutoff."""
    edges = sum(s.graph.num_edges for s in samples)
    atoms = sum(s.num_atoms for s in samples)
    return edges / atoms


def split_indices(n: int, fraction: float, seed: int) -> Tuple[List[int], List[int]]:
    """Deterministic ``(train, validation)`` index lists: a permutation drawn from ``seed``, ``fraction``
    of it (at least one structure) held out. Both lists are sorted."""
    if n < 2:
        raise ValueError(f"cannot hold out a validation set from {n} training structure(s); give data.validation")
    n_val = min(n - 1, max(1, int(round(fraction * n))))
    perm = np.random.default_rng(seed).permutation(n)
    return sorted(perm[n_val:].tolist()), sorted(perm[:n_val].tolist())
