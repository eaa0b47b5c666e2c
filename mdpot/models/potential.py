"""The model contract: one forward that every engine (ASE, LAMMPS, tests) calls with the same meaning.

See ``docs/contract.md``. The energy model maps edge vectors to per-atom energies; this wrapper forms the
edge vectors in float64, runs the model in its own dtype and derives forces and virials from one autograd
pass over the edge vectors, then returns everything in float64.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn


def edge_derivatives(pos: torch.Tensor, vec64: torch.Tensor, grad: torch.Tensor, edge_index: torch.Tensor,
                     compute_atom_virial: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The contract's derivatives from ``grad = dE/dr_ij`` per edge (float64, ``[E, 3]``), ``r_ij = vec64``:
    forces ``[N, 3]`` (eV/Å, ``-dE/dpos``: ``+grad`` on the centre, ``-grad`` on the neighbour), virial ``[3, 3]``
    (eV, ``-sum_e r_e (x) grad_e``) and the per-atom virial ``[N, 3, 3]`` (each edge's term split half to ``i``,
    half to ``j``), or ``[0, 3, 3]`` when not asked for. Shared by every contract module (mdpot's own, wrapped)."""
    forces = torch.zeros_like(pos)
    forces = forces.index_add(0, edge_index[0], grad).index_add(0, edge_index[1], -grad)
    virial = -(vec64.t() @ grad)
    if compute_atom_virial:
        half = -0.5 * vec64.unsqueeze(2) * grad.unsqueeze(1)
        atom_virial = torch.zeros((pos.shape[0], 3, 3), dtype=torch.float64, device=pos.device)
        atom_virial = atom_virial.index_add(0, edge_index[0], half).index_add(0, edge_index[1], half)
    else:
        atom_virial = torch.zeros((0, 3, 3), dtype=torch.float64, device=pos.device)
    return forces, virial, atom_virial


class Potential(nn.Module):
    """Wraps an energy model (``Allegro``, ``NequIP``) into the mdpot model contract.

    Forward
    -------
    pos : Tensor [N, 3] float64, Å
    atom_type : Tensor [N] int64
    edge_index : Tensor [2, E] int64, directed edges (centre i, neighbour j)
    edge_shift : Tensor [E, 3] float64, Å; ``r_ij = pos[j] - pos[i] + edge_shift``
    n_local : int, only the first ``n_local`` atoms' energies count
    compute_atom_virial : bool

    Returns ``(atom_energy [n_local] eV, forces [N, 3] eV/Å, virial [3, 3] eV, atom_virial [N, 3, 3] eV or
    [0, 3, 3])``, all float64. ``virial = -sum_e r_e (x) dE/dr_e``; ASE stress is ``-virial / volume``.

    Example
    -------
    >>> from mdpot.models import Allegro, AllegroConfig
    >>> pot = Potential(Allegro(AllegroConfig(elements=("Cu",))))
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        # Per-element reference energies are added in float64: with DFT-sized shifts (eV to keV per atom) a
        # float32 sum would lose the small energy differences that forces and MD depend on.
        self.register_buffer("energy_shift", torch.tensor(model.config.per_element_energy_shift, dtype=torch.float64))
        # Training needs a differentiable force; MD and deployment do not (cheaper backward).
        self.create_graph = False

    def forward(self, pos: torch.Tensor, atom_type: torch.Tensor, edge_index: torch.Tensor, edge_shift: torch.Tensor,
                n_local: int, compute_atom_virial: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        dtype = self.model.energy_scale.dtype
        vec64 = pos.index_select(0, edge_index[1]) - pos.index_select(0, edge_index[0]) + edge_shift
        vec = vec64.to(dtype).detach().requires_grad_(True)
        atom_energy = self.model(vec, edge_index, atom_type, n_local)[:n_local]
        grad = torch.autograd.grad([atom_energy.sum()], [vec], create_graph=self.create_graph, allow_unused=True)[0]
        if grad is None:  # no edges reached a local atom
            grad = torch.zeros_like(vec)
        forces, virial, atom_virial = edge_derivatives(pos, vec64, grad.to(torch.float64), edge_index, compute_atom_virial)
        if not self.create_graph:
            atom_energy = atom_energy.detach()
        atom_energy = atom_energy.to(torch.float64) + self.energy_shift.index_select(0, atom_type[:n_local])
        return atom_energy, forces, virial, atom_virial
