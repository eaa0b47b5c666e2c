"""Run a contract module on a :class:`~mdpot.data.Batch` and reduce its outputs per structure.

This is the one place where per-atom energies and virials become per-structure energies, virials and
stresses; training, ``mdpot validate`` and the tests all go through :func:`evaluate`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..voigt import ASE_ORDER
from .batch import Batch

# ASE Voigt order xx yy zz yz xz xy as row/column indices of the 3x3 virial.
_VOIGT_ROW = tuple(a for a, _ in ASE_ORDER)
_VOIGT_COL = tuple(b for _, b in ASE_ORDER)


@dataclass
class Prediction:
    """What a model predicts for a batch of ``B`` structures with ``N`` atoms, float64.

    Attributes
    ----------
    energy : Tensor [B]
        Total energy per structure, eV.
    atom_energy : Tensor [N]
        Energy per atom, eV.
    forces : Tensor [N, 3]
        eV/Å.
    virial : Tensor [B, 3, 3] or None
        Virial per structure ``W = -sum_e r_e (x) dE/dr_e``, eV.
    atom_virial : Tensor [N, 3, 3] or None
        Per-atom virial, eV. Both virials are ``None`` unless a virial, the stress or the atom virial was
        asked for (they come from the same per-atom computation).
    stress : Tensor [B, 6] or None
        ``-W / volume`` in eV/Å³, ASE sign, Voigt ``xx yy zz yz xz xy``; ``None`` unless asked for.
    """

    energy: torch.Tensor
    atom_energy: torch.Tensor
    forces: torch.Tensor
    virial: Optional[torch.Tensor] = None
    atom_virial: Optional[torch.Tensor] = None
    stress: Optional[torch.Tensor] = None


def evaluate(module, batch: Batch, *, virial: bool = False, stress: bool = False,
             atom_virial: bool = False) -> Prediction:
    """Run ``module`` on ``batch`` and reduce per structure.

    Parameters
    ----------
    module : callable
        Anything with the model contract's forward (``docs/contract.md``): an eager
        :class:`mdpot.models.Potential`, a deployed TorchScript module or a :class:`mdpot.deploy.LoadedModel`.
        Called once, with every atom local.
    batch : Batch
        The structures; labels are not used.
    virial, stress, atom_virial : bool
        Also return the per-structure virial (eV), the stress (eV/Å³; needs ``batch.volume``) or the per-atom
        virial (eV). Any of them makes the module compute the per-atom virial, which is summed per structure.

    Returns
    -------
    Prediction
        Differentiable with respect to the weights when the module is (the trainer's ``Potential`` with
        ``create_graph``); detach for inference. Do not call under ``torch.no_grad()``: the module takes
        forces and virials from an autograd pass of its own.

    Example
    -------
    >>> frames = [bulk("Cu", cubic=True), bulk("Cu", cubic=True).repeat(2)]
    >>> pred = evaluate(load_model("cu.pt"), batch_structures(frames, 5.0, ("Cu",)), stress=True)
    >>> pred.energy  # [2] eV
    """
    if stress and batch.volume is None:
        raise ValueError("stress needs the cell volumes: build the batch with volumes (batch_structures or "
                         "Batch.from_graphs(graphs, volume))")
    with_virial = virial or stress or atom_virial
    g = batch.graph
    atom_energy, forces, _, atom_vir = module(g.pos, g.atom_type, g.edge_index, g.edge_shift, g.num_atoms, with_virial)
    n = batch.size
    energy = torch.zeros(n, dtype=atom_energy.dtype, device=atom_energy.device).index_add(0, batch.batch, atom_energy)
    if not with_virial:
        return Prediction(energy, atom_energy, forces)
    vir = torch.zeros((n, 3, 3), dtype=atom_vir.dtype, device=atom_vir.device).index_add(0, batch.batch, atom_vir)
    out_stress = -vir[:, _VOIGT_ROW, _VOIGT_COL] / batch.volume.unsqueeze(1) if stress else None
    return Prediction(energy, atom_energy, forces, vir, atom_vir, out_stress)
