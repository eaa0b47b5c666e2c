"""A tiny TorchScript model that satisfies docs/contract.md, for the LAMMPS pair-style paths the real
Allegro model cannot reach: a message-passing receptive field (2 r_max) and non-finite model output.

With ``num_layers=1`` the energy is strictly local (like Allegro): each atom gets a Morse-like pair term plus an EAM-like
embedding term ``-sqrt(rho_i)``, both with a smooth cosine cutoff at ``r_max``. The embedding term makes
it many-body, so forces on ghost atoms and per-atom virials are not plain pair sums. ``num_layers=2``
adds one message-passing step (receptive field 2 r_max, like a 2-layer NequIP). Forces and virial come
from autograd over the edge vectors, exactly as the contract defines them.

Run as a script to write a model file::

    python tests/lammps/make_pair_model.py out.pt [--r-max 4.5] [--elements Cu Au]
"""

from __future__ import annotations

import argparse
import json
import math
from typing import List, Tuple

import torch

from mdpot.contract import FORMAT_VERSION
from mdpot.deploy import weights_digest


class PairEAMToy(torch.nn.Module):
    """Morse pair + sqrt-embedding toy potential with per-element parameters (eV, Å)."""

    def __init__(self, n_elements: int, r_max: float = 4.5, num_layers: int = 1) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.refused_type = -1    # >= 0: a call with a local atom of this model type raises (error-path tests)
        gen = torch.Generator().manual_seed(1234)
        rand = lambda: torch.rand(n_elements, generator=gen, dtype=torch.float64)  # noqa: E731
        self.r_max = r_max
        self.register_buffer("depth", 0.3 + 0.2 * rand())  # eV
        self.register_buffer("alpha", 1.3 + 0.3 * rand())  # 1/Å
        self.register_buffer("r0", 2.5 + 0.1 * rand())  # Å
        self.register_buffer("density", 1.0 + 0.5 * rand())  # rho units per neighbour
        self.register_buffer("embed", 0.8 + 0.4 * rand())  # eV
        self.register_buffer("shift", -1.0 - rand())  # eV, isolated-atom energy

    def _energy(self, edge_vec: torch.Tensor, atom_type: torch.Tensor, edge_index: torch.Tensor,
                n_atoms: int) -> torch.Tensor:
        i, j = edge_index[0], edge_index[1]
        ti, tj = atom_type[i], atom_type[j]
        r = torch.linalg.norm(edge_vec, dim=1)
        fc = torch.where(r < self.r_max, 0.5 * (torch.cos(math.pi * r / self.r_max) + 1.0),
                         torch.zeros_like(r))
        depth = torch.sqrt(self.depth[ti] * self.depth[tj])
        alpha = 0.5 * (self.alpha[ti] + self.alpha[tj])
        r0 = 0.5 * (self.r0[ti] + self.r0[tj])
        x = torch.exp(-alpha * (r - r0))
        pair = 0.5 * depth * (x * x - 2.0 * x) * fc
        rho_e = self.density[tj] * torch.exp(-r) * fc * fc
        e = torch.zeros(n_atoms, dtype=edge_vec.dtype, device=edge_vec.device)
        rho = torch.zeros(n_atoms, dtype=edge_vec.dtype, device=edge_vec.device)
        e = e.index_add(0, i, pair)
        rho = rho.index_add(0, i, rho_e)
        embedding = torch.sqrt(rho + 1.0)
        e = e - self.embed[atom_type] * embedding + self.shift[atom_type]
        if self.num_layers > 1:
            # one message-passing step: atom i also feels its neighbours' embeddings, so its energy
            # depends on atoms up to 2 r_max away (receptive field 2 r_max)
            e = e.index_add(0, i, -0.1 * self.embed[ti] * fc * embedding[j])
        return e

    def forward(self, pos: torch.Tensor, atom_type: torch.Tensor, edge_index: torch.Tensor,
                edge_shift: torch.Tensor, n_local: int, compute_atom_virial: bool
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        n_atoms = pos.shape[0]
        if self.refused_type >= 0 and bool((atom_type[:n_local] == self.refused_type).any()):
            raise RuntimeError(f"toy model refuses atoms of type {self.refused_type}")
        i, j = edge_index[0], edge_index[1]
        edge_vec = (pos[j] - pos[i] + edge_shift).detach().requires_grad_(True)
        atom_energy = self._energy(edge_vec, atom_type, edge_index, n_atoms)[:n_local]
        grads = torch.autograd.grad([atom_energy.sum()], [edge_vec], allow_unused=True)
        g = grads[0]
        if g is None:
            g = torch.zeros_like(edge_vec)
        forces = torch.zeros_like(pos)
        forces = forces.index_add(0, i, g).index_add(0, j, -g)
        edge_virial = -edge_vec.detach().unsqueeze(2) * g.unsqueeze(1)
        virial = edge_virial.sum(0)
        if compute_atom_virial:
            atom_virial = torch.zeros(n_atoms, 3, 3, dtype=pos.dtype, device=pos.device)
            atom_virial = atom_virial.index_add(0, i, 0.5 * edge_virial)
            atom_virial = atom_virial.index_add(0, j, 0.5 * edge_virial)
        else:
            atom_virial = torch.zeros(0, 3, 3, dtype=pos.dtype, device=pos.device)
        return atom_energy.detach(), forces, virial, atom_virial


def metadata(elements: List[str], r_max: float, num_layers: int = 1) -> dict:
    """The contract's `_extra_files` for the toy model."""
    return {
        "mdpot_format_version": str(FORMAT_VERSION),
        "architecture": "allegro" if num_layers == 1 else "nequip",
        "elements": " ".join(elements),
        "r_max": repr(float(r_max)),
        "num_layers": str(num_layers),
        "receptive_field": repr(float(num_layers * r_max)),
        "model_dtype": "float64",
        "energy_units": "eV",
        "length_units": "Å",
        "torch_version": torch.__version__,
        "mdpot_version": "0.1.0",
        "provenance": json.dumps({"source": "tests/lammps/make_pair_model.py"}),
        "config": json.dumps({"model": "PairEAMToy", "r_max": r_max}),
        "weights_sha256": "",  # filled in by make_model
    }


def make_model(path: str, elements: List[str] = ("Cu", "Au"), r_max: float = 4.5,
               drop_keys: Tuple[str, ...] = (), override: dict | None = None,
               nan_element: int | None = None, num_layers: int = 1,
               refused_element: int | None = None) -> torch.jit.ScriptModule:
    """Script the toy model and save it with metadata; returns the scripted module.

    ``drop_keys``/``override`` tamper with the metadata; ``nan_element`` makes the energy of atoms of
    that model type NaN, ``refused_element`` makes a call with local atoms of that type raise (for error-path tests).
    """
    elements = list(elements)
    eager = PairEAMToy(len(elements), r_max, num_layers)
    if nan_element is not None:
        eager.shift[nan_element] = float("nan")
    if refused_element is not None:
        eager.refused_type = refused_element
    module = torch.jit.script(eager)
    meta = metadata(elements, r_max, num_layers)
    meta["weights_sha256"] = weights_digest(module)
    meta.update(override or {})
    for key in drop_keys:
        meta.pop(key)
    torch.jit.save(module, path, _extra_files=meta)
    return module


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--r-max", type=float, default=4.5)
    parser.add_argument("--elements", nargs="+", default=["Cu", "Au"])
    parser.add_argument("--num-layers", type=int, choices=(1, 2), default=1)
    args = parser.parse_args(argv)
    make_model(args.out, args.elements, args.r_max, num_layers=args.num_layers)


if __name__ == "__main__":
    main()
