"""Batching: several structures as one disconnected graph, with optional reference labels.

A :class:`Batch` is what :func:`mdpot.data.evaluate` runs a model on. It is built from graphs alone
(:meth:`Batch.from_graphs`, :func:`batch_structures`) for inference, or from labelled samples
(:func:`mdpot.data.collate`) for training and validation.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from ase import Atoms

from .neighbors import Graph, TypeMapper, atoms_to_graph


def batch_graphs(graphs: Sequence[Graph]) -> Tuple[Graph, torch.Tensor]:
    """Concatenate ``graphs`` into one disconnected graph.

    Parameters
    ----------
    graphs : sequence of Graph
        ``B >= 1`` structures.

    Returns
    -------
    graph : Graph
        All atoms in order (``N`` in total), edge indices offset by the atoms before each structure.
    batch : Tensor [N] int64
        Structure index of every atom.
    """
    if not graphs:
        raise ValueError("batch_graphs needs at least one graph")
    offsets = torch.cumsum(torch.tensor([0] + [g.num_atoms for g in graphs[:-1]]), 0)
    graph = Graph(
        pos=torch.cat([g.pos for g in graphs]),
        atom_type=torch.cat([g.atom_type for g in graphs]),
        edge_index=torch.cat([g.edge_index + off for g, off in zip(graphs, offsets)], dim=1),
        edge_shift=torch.cat([g.edge_shift for g in graphs]),
    )
    batch = torch.cat([torch.full((g.num_atoms,), k, dtype=torch.long) for k, g in enumerate(graphs)])
    return graph, batch


@dataclass
class Batch:
    """``B`` structures (``N`` atoms in all) as one disconnected graph, with reference labels if known.

    Attributes
    ----------
    graph : Graph
        Model-contract inputs of all ``N`` atoms (every atom is local).
    batch : Tensor [N] int64
        Structure index of each atom; the atoms of a structure are contiguous.
    num_atoms : Tensor [B] float64
        Atoms per structure (float, as the divisor of per-atom energies).
    volume : Tensor [B] float64 or None
        Cell volume in Å³, the divisor of the stress. Structures whose stress is not wanted may hold any
        finite value (:func:`~mdpot.data.collate` uses 1 where there is no stress label, keeping the
        division and its gradient finite); ``None`` if unknown (then no stress can be evaluated).
    energy : Tensor [B] float64 or None
        Reference total energies, eV.
    forces : Tensor [N, 3] float64 or None
        Reference forces, eV/Å.
    stress : Tensor [B, 6] float64 or None
        Reference stress, eV/Å³, ASE sign, Voigt ``xx yy zz yz xz xy``; zeros where ``stress_mask`` is false.
    stress_mask : Tensor [B] bool or None
        Which structures have a stress label.
    weight : Tensor [B] float64 or None
        Loss weight of each structure (``training.kind_weights``); ``None``: all 1.

    Example
    -------
    >>> batch = batch_structures([fcc_cu, slab], r_max=5.0, elements=("Cu",))
    >>> pred = evaluate(model, batch, stress=True)
    """

    graph: Graph
    batch: torch.Tensor
    num_atoms: torch.Tensor
    volume: Optional[torch.Tensor] = None
    energy: Optional[torch.Tensor] = None
    forces: Optional[torch.Tensor] = None
    stress: Optional[torch.Tensor] = None
    stress_mask: Optional[torch.Tensor] = None
    weight: Optional[torch.Tensor] = None

    @classmethod
    def from_graphs(cls, graphs: Sequence[Graph], volume: Optional[Sequence[float]] = None) -> "Batch":
        """An unlabelled batch of ``graphs``; ``volume`` (Å³, one per graph) is needed only for stress."""
        graph, batch = batch_graphs(graphs)
        vol = None
        if volume is not None:
            if len(volume) != len(graphs):
                raise ValueError(f"got {len(volume)} volumes for {len(graphs)} graphs")
            vol = torch.tensor([float(v) for v in volume], dtype=torch.float64)
        return cls(graph, batch, torch.tensor([g.num_atoms for g in graphs], dtype=torch.float64), vol)

    @property
    def size(self) -> int:
        """Number of structures ``B``."""
        return int(self.num_atoms.shape[0])

    @property
    def has_labels(self) -> bool:
        """Whether reference energies and forces are attached."""
        return self.energy is not None and self.forces is not None

    def split(self, per_atom: torch.Tensor) -> List[torch.Tensor]:
        """Split a per-atom tensor ``[N, ...]`` (forces, atom energies) into one tensor per structure."""
        return list(torch.split(per_atom, [int(n) for n in self.num_atoms.tolist()]))

    def to(self, device: torch.device | str) -> "Batch":
        """A copy with every tensor on ``device``."""
        moved = {k: (None if v is None else v.to(device)) for k, v in vars(self).items() if k != "graph"}
        return replace(self, graph=self.graph.to(device), **moved)


def batch_structures(structures: Sequence[Atoms], r_max: float, elements: Sequence[str],
                     check_overlap: bool = True) -> Batch:
    """An unlabelled :class:`Batch` of ASE structures.

    Parameters
    ----------
    structures : sequence of ase.Atoms
        Any periodicity; ``B >= 1`` structures.
    r_max : float
        Neighbour cutoff, Å (the model's ``r_max``).
    elements : sequence of str
        The model's elements in type order; other elements raise ``ValueError``.
    check_overlap : bool
        Atoms closer than ``mdpot.contract.OVERLAP_DISTANCE`` raise ``ValueError``.

    Returns
    -------
    Batch
        ``volume`` is the cell volume (Å³) of 3-D periodic structures and NaN for the others, so their stress
        comes out NaN. Errors name the structure index.
    """
    mapper = TypeMapper(elements)
    graphs, volume = [], []
    for k, atoms in enumerate(structures):
        try:
            graphs.append(atoms_to_graph(atoms, r_max, mapper, check_overlap=check_overlap))
        except ValueError as exc:
            raise ValueError(f"structure {k}: {exc}") from None
        periodic = bool(np.all(atoms.pbc)) and atoms.cell.rank == 3
        volume.append(float(atoms.get_volume()) if periodic else float("nan"))
    return Batch.from_graphs(graphs, volume)
