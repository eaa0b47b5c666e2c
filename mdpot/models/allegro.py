"""Allegro: a strictly local equivariant potential built from pair features.

Written from the published equations (Musaelian et al., Nat. Commun. 14, 579 (2023)). For every ordered pair
``(i, j)`` with ``r_ij < r_max`` the model keeps an invariant latent ``x_ij`` and equivariant features
``V_ij``. A layer couples ``V_ij`` with the environment of the centre atom,
``Gamma_i = sum_k w_ik Y(r_ik) / sqrt(avg_num_neighbors)`` (summed over ``k`` first: by bilinearity one
tensor product per pair covers every ``k``), feeds the invariant part of the product into the latent MLP and
mixes the rest into the next ``V_ij``. The pair energy ``E_ij`` is read out from the last latent. Nothing
beyond ``r_max`` of atom ``i`` enters ``E_ij``, so the model is strictly local.
"""
from __future__ import annotations

import math
from typing import List, Sequence

import torch
from torch import nn

from ..nn import (
    MLP,
    BesselBasis,
    ChannelMixing,
    ChannelwiseTensorProduct,
    Irrep,
    IrrepWeighting,
    PolynomialCutoff,
    SphericalHarmonics,
    feature_irreps,
    sh_irreps,
)
from .config import AllegroConfig


class AllegroLayer(nn.Module):
    """One Allegro layer: environment embedding, channel-wise tensor product, latent and tensor update."""

    def __init__(self, cfg: AllegroConfig, in_irreps: Sequence[Irrep], last: bool) -> None:
        super().__init__()
        u = cfg.num_tensor_features
        y_irreps = sh_irreps(cfg.l_max)
        out_irreps = [(0, 1)] if last else feature_irreps(cfg.l_max, cfg.parity)
        self.u = u
        self.n_y = len(y_irreps)
        self.env_weights = nn.Linear(cfg.num_scalar_features, u * self.n_y, bias=False)
        self.env_expand = IrrepWeighting(y_irreps)
        self.tp = ChannelwiseTensorProduct(in_irreps, y_irreps, out_irreps)
        (l0, p0), n_scalar_paths = self.tp.out_blocks[0]
        if (l0, p0) != (0, 1):
            raise ValueError("the tensor product must produce scalars for the latent update")
        self.n_scalars = u * n_scalar_paths
        self.latent = MLP(cfg.num_scalar_features + self.n_scalars, cfg.num_scalar_features, cfg.latent_mlp)
        self.mix = None if last else ChannelMixing(self.tp.out_blocks, out_irreps, u, u)
        self.split_sizes: List[int] = [] if last else self.mix.split_sizes
        self.env_norm = 1.0 / math.sqrt(cfg.avg_num_neighbors)

    def forward(self, x: torch.Tensor, v: torch.Tensor, y: torch.Tensor, cutoff: torch.Tensor,
                center: torch.Tensor, num_atoms: int):
        n_edges = x.shape[0]
        w = self.env_weights(x).view(n_edges, self.n_y, self.u).transpose(0, 1)
        env_edge = self.env_expand(w, y)
        env = torch.zeros((env_edge.shape[0], num_atoms, self.u), dtype=x.dtype, device=x.device)
        env = env.index_add_(1, center, env_edge) * self.env_norm
        t = self.tp.gather_product(v, env, center)
        if self.mix is None:
            blocks = [t]
        else:
            blocks = torch.split(t, self.split_sizes, dim=0)
        scalars = blocks[0].permute(1, 0, 2).reshape(n_edges, self.n_scalars)
        x_new = self.latent(torch.cat([x, scalars], dim=1)) * cutoff.unsqueeze(-1)
        x = (x + x_new) * (1.0 / math.sqrt(2.0))
        mix = self.mix
        if mix is not None:
            v = mix.forward_blocks(blocks)
        return x, v


class Allegro(nn.Module):
    """Allegro energy model: per-atom energies from edge vectors.

    Parameters
    ----------
    config : AllegroConfig

    Forward
    -------
    edge_vec : Tensor [E, 3], model dtype, Å
        ``r_ij = pos[j] - pos[i] + shift``.
    edge_index : Tensor [2, E], int64
        Centre ``i`` and neighbour ``j`` of each directed edge.
    atom_type : Tensor [N], int64
        Model type index per atom.
    n_local : int, optional
        Atoms whose energies are wanted come first; unused here (every edge's pair energy is local).

    Returns the learned per-atom energy ``[N]`` in eV, ``scale[type_i] * sum_j E_ij``; the per-element
    shift is added in float64 by :class:`~mdpot.models.Potential` so that large reference energies do not
    cost float32 models their precision.

    Example
    -------
    >>> model = Allegro(AllegroConfig(elements=("Cu",)))
    >>> vec = torch.tensor([[2.5, 0.0, 0.0], [-2.5, 0.0, 0.0]], dtype=torch.float64)
    >>> model(vec.float(), torch.tensor([[0, 1], [1, 0]]), torch.tensor([0, 0])).shape
    torch.Size([2])
    """

    def __init__(self, config: AllegroConfig) -> None:
        super().__init__()
        if not isinstance(config, AllegroConfig):
            raise TypeError(f"Allegro needs an AllegroConfig, got {type(config).__name__}")
        self.config = config
        self.r_max = float(config.r_max)
        self.num_types = len(config.elements)
        self.sh = SphericalHarmonics(config.l_max)
        self.basis = BesselBasis(config.r_max, config.num_bessel)
        self.cutoff = PolynomialCutoff(config.r_max, config.cutoff_p)
        s, u = config.num_scalar_features, config.num_tensor_features
        y_irreps = sh_irreps(config.l_max)
        self.n_y = len(y_irreps)
        self.u = u
        self.two_body = MLP(2 * self.num_types + config.num_bessel, s, config.two_body_mlp)
        self.init_weights = nn.Linear(s, u * self.n_y, bias=False)
        self.init_expand = IrrepWeighting(y_irreps)
        layers: List[AllegroLayer] = []
        in_irreps = y_irreps
        for k in range(config.num_layers):
            last = k == config.num_layers - 1
            layers.append(AllegroLayer(config, in_irreps, last))
            in_irreps = feature_irreps(config.l_max, config.parity)
        self.layers = nn.ModuleList(layers)
        self.readout = MLP(s, 1, config.readout_mlp, bias_last=False)
        self.register_buffer("energy_scale", torch.tensor(config.per_element_energy_scale, dtype=torch.get_default_dtype()))

    def forward(self, edge_vec: torch.Tensor, edge_index: torch.Tensor, atom_type: torch.Tensor,
                n_local: int = -1) -> torch.Tensor:
        # n_local is part of the energy-model interface for message passing; a pair energy needs nothing
        # beyond its own edge, so every edge handed in is used
        num_atoms = atom_type.shape[0]
        center = edge_index[0]
        r = torch.linalg.vector_norm(edge_vec, dim=1)
        cutoff = self.cutoff(r)
        y = self.sh(edge_vec).t()
        onehot = nn.functional.one_hot(atom_type, self.num_types).to(edge_vec.dtype)
        pair_embed = torch.cat([onehot.index_select(0, center), onehot.index_select(0, edge_index[1]), self.basis(r)], dim=1)
        x = self.two_body(pair_embed) * cutoff.unsqueeze(-1)
        n_edges = x.shape[0]
        v = self.init_expand(self.init_weights(x).view(n_edges, self.n_y, self.u).transpose(0, 1), y)
        for layer in self.layers:
            x, v = layer(x, v, y, cutoff, center, num_atoms)
        pair_energy = self.readout(x).squeeze(-1) * cutoff
        atom_energy = torch.zeros(num_atoms, dtype=edge_vec.dtype, device=edge_vec.device)
        atom_energy = atom_energy.index_add_(0, center, pair_energy)
        return self.energy_scale.index_select(0, atom_type) * atom_energy
