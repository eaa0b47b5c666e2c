"""Batching: several structures as one disconnected graph, and per-structure results back out of it."""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch

from .neighbors import Graph


def batch_graphs(graphs: Sequence[Graph]) -> Tuple[Graph, torch.Tensor]:
    """Concatenate ``graphs`` (edge indices offset) into one graph; returns it and ``batch [N]``, the
    structure index of every atom."""
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


def evaluate_batch(module, graphs: Sequence[Graph]) -> List[dict]:
    """Evaluate a contract module on ``graphs`` in one call; per structure: energy (eV), energies [n] (eV),
    forces [n, 3] (eV/Å), virial [3, 3] (eV)."""
    graph, batch = batch_graphs(graphs)
    atom_energy, forces, _, atom_virial = module(graph.pos, graph.atom_type, graph.edge_index, graph.edge_shift,
                                                 graph.num_atoms, True)
    n = len(graphs)
    energy = torch.zeros(n, dtype=torch.float64, device=atom_energy.device).index_add(0, batch, atom_energy)
    virial = torch.zeros((n, 3, 3), dtype=torch.float64, device=atom_energy.device).index_add(0, batch, atom_virial)
    out = []
    for k in range(n):
        mask = batch == k
        out.append({"energy": energy[k], "energies": atom_energy[mask], "forces": forces[mask], "virial": virial[k]})
    return out
