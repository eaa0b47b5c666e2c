"""Neighbour lists (vesin) and the conversion of ASE Atoms into model-contract inputs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import vesin
from ase import Atoms

from ..contract import OVERLAP_DISTANCE


@dataclass
class Graph:
    """Model-contract inputs for one structure (see ``docs/contract.md``), float64/int64 tensors."""

    pos: torch.Tensor
    atom_type: torch.Tensor
    edge_index: torch.Tensor
    edge_shift: torch.Tensor

    @property
    def num_atoms(self) -> int:
        return int(self.pos.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    def to(self, device: torch.device | str) -> "Graph":
        return Graph(self.pos.to(device), self.atom_type.to(device), self.edge_index.to(device), self.edge_shift.to(device))


class TypeMapper:
    """Maps chemical symbols / atomic numbers to model type indices; unknown elements raise ``ValueError``."""

    def __init__(self, elements: Sequence[str]) -> None:
        from ase.data import atomic_numbers

        self.elements = tuple(elements)
        self._lookup = np.full(119, -1, dtype=np.int64)
        for k, el in enumerate(self.elements):
            self._lookup[atomic_numbers[el]] = k

    def __call__(self, numbers: np.ndarray) -> np.ndarray:
        types = self._lookup[np.asarray(numbers, dtype=np.int64)]
        if (types < 0).any():
            from ase.data import chemical_symbols

            bad = sorted({chemical_symbols[z] for z in np.asarray(numbers)[types < 0]})
            raise ValueError(f"element(s) {bad} not in the model; the model knows {list(self.elements)}")
        return types


def _neighbor_box(atoms: Atoms, cutoff: float) -> np.ndarray:
    """A box vesin accepts: the cell, with any missing non-periodic vector replaced by one long enough that
    no image along it comes within ``cutoff``."""
    cell = np.array(atoms.cell.array, dtype=np.float64)
    pbc = atoms.pbc
    if pbc.all() or not pbc.any():
        return cell
    rank = np.linalg.matrix_rank(cell[pbc]) if pbc.any() else 0
    if rank < pbc.sum():
        raise ValueError(f"periodic cell vectors are degenerate: cell {cell.tolist()} with pbc {pbc.tolist()}")
    pos = atoms.positions
    span = float(np.ptp(pos, axis=0).max()) if len(pos) else 0.0
    length = 2.0 * (span + cutoff) + 1.0
    for k in np.flatnonzero(~pbc):
        if np.linalg.matrix_rank(np.vstack([cell[pbc], cell[k]])) == pbc.sum() + 1 and np.linalg.norm(cell[k]) > 0:
            continue
        # A direction independent of the periodic vectors (and of any fixed ones already set).
        others = np.vstack([cell[pbc]] + [cell[m][None] for m in np.flatnonzero(~pbc) if m < k])
        _, _, vt = np.linalg.svd(others)
        cell[k] = vt[-1] * length
    return cell


def atoms_to_graph(atoms: Atoms, cutoff: float, mapper: TypeMapper, check_overlap: bool = True) -> Graph:
    """Full directed neighbour list of ``atoms`` within ``cutoff`` (Å) as model-contract inputs.

    Works for full, partial and no periodicity, any cell shape, and cells smaller than the cutoff (several
    images of the same neighbour become separate edges). With ``check_overlap``, atoms closer than
    ``OVERLAP_DISTANCE`` raise ``ValueError`` naming them.
    """
    n = len(atoms)
    if n == 0:
        raise ValueError("the Atoms object has no atoms")
    types = mapper(atoms.numbers)
    pos = np.ascontiguousarray(atoms.positions, dtype=np.float64)
    if not np.isfinite(pos).all():
        bad = np.flatnonzero(~np.isfinite(pos).all(axis=1))
        raise ValueError(f"non-finite positions for atom indices {bad[:10].tolist()}")
    pbc = np.asarray(atoms.pbc, dtype=bool)
    box = _neighbor_box(atoms, cutoff)
    nl = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    i, j, shifts, dist = nl.compute(points=pos, box=box, periodic=pbc.tolist(), quantities="ijSd", copy=False)
    if check_overlap and len(dist):
        k = int(np.argmin(dist))
        if dist[k] < OVERLAP_DISTANCE:
            a, b = sorted((int(i[k]), int(j[k])))
            raise ValueError(f"atoms {a} and {b} overlap (distance {dist[k]:.3g} Å < {OVERLAP_DISTANCE} Å)")
    edge_index = torch.from_numpy(np.stack([np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)]))
    edge_shift = torch.from_numpy(np.asarray(shifts, dtype=np.float64) @ box)
    return Graph(torch.from_numpy(pos.copy()), torch.from_numpy(types), edge_index, edge_shift)
