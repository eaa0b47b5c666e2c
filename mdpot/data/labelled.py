"""Labelled data: structures read with ase.io, their reference labels, and their graphs and batches.

The path of labelled data: file -> :func:`load_labelled` -> :class:`Labelled` -> :func:`to_samples` ->
:class:`Sample` (graph + label tensors) -> :func:`collate` -> :class:`~mdpot.data.Batch` ->
:func:`~mdpot.data.evaluate` -> :class:`~mdpot.data.Prediction`.

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

from ..voigt import to_voigt
from .batch import Batch, batch_graphs
from .neighbors import Graph, TypeMapper, atoms_to_graph

PathLike = Union[str, os.PathLike]


@dataclass
class Labelled:
    """One structure with its reference labels, as read from a file.

    Attributes
    ----------
    atoms : ase.Atoms
        ``n`` atoms.
    energy : float
        Total energy, eV.
    forces : ndarray [n, 3] float64
        eV/Å.
    stress : ndarray [6] float64 or None
        eV/Å³, ASE sign, Voigt ``xx yy zz yz xz xy``; ``None`` without a label or a 3-D periodic cell.
    where : str
        Names the structure in messages (``"train.xyz: structure 3"``).
    """

    atoms: Atoms
    energy: float
    forces: np.ndarray
    stress: Optional[np.ndarray]
    where: str


@dataclass
class Sample:
    """A labelled structure converted once into model-contract tensors (float64 / int64).

    Attributes
    ----------
    graph : Graph
        ``n`` atoms and their edges within the cutoff.
    energy : float
        Total energy, eV.
    forces : Tensor [n, 3] float64
        eV/Å.
    stress : Tensor [6] float64 or None
        eV/Å³, ASE sign, Voigt ``xx yy zz yz xz xy``.
    volume : float
        Cell volume in Å³ with a stress label, else 1 (keeps the stress division finite in a batch).
    where : str
        Names the structure in messages.
    weight : float
        Weight of the structure in the training loss (``training.kind_weights``), 1 by default.
    """

    graph: Graph
    energy: float
    forces: torch.Tensor
    stress: Optional[torch.Tensor]
    volume: float
    where: str
    weight: float = 1.0

    @property
    def num_atoms(self) -> int:
        return self.graph.num_atoms


def read_structures(path: PathLike, format: Optional[str] = None,
                    what: str = "labelled structures") -> List[Atoms]:
    """All structures of ``path`` (``ase.io.read(path, ":", format=format)``; ``format`` None: ASE guesses it from
    the name and content). ``what`` names the expected content in messages. Raises ``FileNotFoundError`` or
    ``ValueError``."""
    import ase.io

    from ase.io.formats import UnknownFileTypeError

    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{p}: is a folder; expected a file of {what} (extxyz or another ase.io format)")
    if not p.is_file():
        raise FileNotFoundError(f"data file not found: {p.resolve()}")
    try:
        frames = ase.io.read(str(p), index=":", format=format)
    except UnknownFileTypeError:
        raise ValueError(f"{p}: cannot read structures (ase.io cannot tell the format of this file; expected extxyz "
                         f"or another ase.io format)") from None
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
    """The reference labels of ``atoms``.

    Returns
    -------
    energy : float
        eV.
    forces : ndarray [n, 3] float64
        eV/Å.
    stress : ndarray [6] float64 or None
        eV/Å³, ASE sign, Voigt (a ``[3, 3]`` label is converted); ``None`` if ``stress_key`` is ``None``,
        the label is missing or the cell is not 3-D periodic.

    Energy and forces are required: a missing, misshapen or non-finite label raises ``ValueError`` that
    starts with ``where`` and lists the keys available.
    """
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
    """Every structure of ``path`` with its labels (see :func:`read_labels`); errors name the file and the
    structure index.

    Example
    -------
    >>> items = load_labelled("cu_train.xyz")
    >>> samples = to_samples(items, r_max=5.0, elements=("Cu",))
    >>> batch = collate(samples[:8])
    """
    frames = read_structures(path)
    out = []
    for k, atoms in enumerate(frames):
        where = f"{path}: structure {k}"
        energy, forces, stress = read_labels(atoms, where, energy_key, forces_key, stress_key)
        out.append(Labelled(atoms, energy, forces, stress, where))
    return out


def to_samples(items: Sequence[Labelled], r_max: float, elements: Sequence[str],
               weights: Optional[Sequence[float]] = None) -> List[Sample]:
    """Graphs (neighbours within ``r_max`` Å, types in the order of ``elements``) and label tensors for every
    item, computed once before training or validation; ``weights``: one loss weight per item (default 1). Errors
    name the structure."""
    mapper = TypeMapper(elements)
    if weights is not None and len(weights) != len(items):
        raise ValueError(f"got {len(weights)} weights for {len(items)} structures")
    out = []
    for k, item in enumerate(items):
        try:
            graph = atoms_to_graph(item.atoms, r_max, mapper)
        except ValueError as exc:
            raise ValueError(f"{item.where}: {exc}") from None
        volume = float(item.atoms.get_volume()) if item.stress is not None else 1.0
        stress = None if item.stress is None else torch.from_numpy(item.stress.copy())
        weight = 1.0 if weights is None else float(weights[k])
        out.append(Sample(graph, item.energy, torch.from_numpy(item.forces.copy()), stress, volume, item.where, weight))
    return out


def collate(samples: Sequence[Sample]) -> Batch:
    """One labelled :class:`~mdpot.data.Batch` of ``samples`` (edge indices offset, labels concatenated;
    ``stress`` zero and ``stress_mask`` false where a sample has no stress label; ``weight`` only when some
    sample's loss weight is not 1)."""
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
        weight=(None if all(s.weight == 1.0 for s in samples)
                else torch.tensor([s.weight for s in samples], dtype=torch.float64)),
    )


def infer_elements(items: Sequence[Labelled]) -> Tuple[str, ...]:
    """Elements present in ``items``, ordered by atomic number."""
    from ase.data import chemical_symbols

    numbers = sorted({int(z) for it in items for z in np.unique(it.atoms.numbers)})
    return tuple(chemical_symbols[z] for z in numbers)


def element_counts(items: Sequence[Labelled], elements: Sequence[str]) -> np.ndarray:
    """Atoms per element of each structure, ``[n_structures, n_elements]`` float64 in the order of
    ``elements``; unknown elements raise ``ValueError`` naming the structure."""
    mapper = TypeMapper(elements)
    counts = np.zeros((len(items), len(elements)))
    for k, it in enumerate(items):
        try:
            counts[k] = np.bincount(mapper(it.atoms.numbers), minlength=len(elements))
        except ValueError as exc:
            raise ValueError(f"{it.where}: {exc}") from None
    return counts


__all__ = ["Labelled", "Sample", "collate", "element_counts", "infer_elements", "load_labelled", "read_labels",
           "read_structures", "to_samples"]
