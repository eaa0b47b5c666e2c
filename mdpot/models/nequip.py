"""NequIP: equivariant message passing on per-atom features.

Written from the published equations (Batzner et al., Nat. Commun. 13, 2453 (2022)). Every atom carries
equivariant features ``h_i`` (``num_features`` channels of every irrep up to ``l_max``). An interaction
block

1. mixes channels of ``h`` (a linear map per irrep),
2. convolves: ``m_i = sum_j R(r_ij) * (h_j (x) Y(r_ij)) / sqrt(avg_num_neighbors)``, one radial weight per
   coupling path and channel from an MLP on a Bessel basis times a smooth polynomial envelope,
3. mixes the paths into the output irreps plus one gate scalar per channel of every ``l > 0`` irrep and adds
   a species-dependent self-connection of ``h_i``,
4. applies a gated nonlinearity (SiLU on even scalars, tanh on odd scalars, sigmoid gates on ``l > 0``) and
   a residual update where the irreps match.

The per-atom energy is an MLP readout of the final even scalars, minus the same readout for the atom without
neighbours (so an isolated atom's energy is exactly its per-element reference), times a per-element scale;
the per-element shift is added in float64 by :class:`~mdpot.models.Potential`. After ``L`` blocks an atom's energy depends on
atoms up to ``L * r_max`` away; nothing farther has any influence.
"""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import torch
from torch import nn

from ..nn import (
    MLP,
    BesselBasis,
    ChannelMixing,
    ChannelwiseTensorProduct,
    Gate,
    Irrep,
    PolynomialCutoff,
    SpeciesLinear,
    SphericalHarmonics,
    feature_irreps,
    offsets_by_irrep,
    sh_irreps,
)
from .config import NequIPConfig


#: The radial input of a set of edges: ``(r [E], inverse, basis, d_basis, shared)``. Plain (``shared`` False):
#: ``inverse`` is empty, ``basis`` is ``[E, num_bessel]`` (differentiable) and ``d_basis`` empty. Shared: ``basis`` and
#: ``d_basis = d basis / dr`` are ``[Q, num_bessel]`` for the ``Q`` distinct lengths and ``inverse [E]`` maps every
#: edge to its length's row.
Radial = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, bool]


class InteractionBlock(nn.Module):
    """One NequIP interaction block (see the module docstring)."""

    def __init__(self, cfg: NequIPConfig, in_irreps: Sequence[Irrep], out_irreps: Sequence[Irrep]) -> None:
        super().__init__()
        u = cfg.num_features
        num_types = len(cfg.elements)
        y_irreps = sh_irreps(cfg.l_max)
        self.u = u
        # components per atom of the block's input, of its mixed input (what the convolution reads and the
        # exchange of docs/message_passing_exchange.md communicates) and of its output
        self.in_dim = sum(2 * l + 1 for l, _ in in_irreps)
        self.out_dim = sum(2 * l + 1 for l, _ in out_irreps)
        # only the input irreps some path reads are mixed and sent along edges (the last block needs few)
        used = sorted(set(ChannelwiseTensorProduct(in_irreps, y_irreps, out_irreps).path_in))
        tp_in = [in_irreps[a] for a in used]
        self.linear_in = ChannelMixing([(irrep, 1) for irrep in in_irreps], tp_in, u, u)
        self.x_dim = sum(2 * l + 1 for l, _ in tp_in)
        self.tp = ChannelwiseTensorProduct(tp_in, y_irreps, out_irreps, unit_scalar_y=True)
        self.n_paths = self.tp.num_paths
        # bias-free, so zero input (the envelope at r_max) gives zero weights, smoothly
        self.radial = MLP(cfg.num_bessel, self.n_paths * u, cfg.radial_mlp, bias_last=False, bias=False)
        # He-normal weights: torch's default init shrinks the signal about 3x per layer, leaving a fresh
        # model's messages (and forces) near zero
        for layer in self.radial.modules():
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, std=math.sqrt(2.0 / layer.in_features))
        gate_irreps = list(out_irreps) + [(0, 1)] * sum(1 for l, _ in out_irreps if l > 0)
        self.linear_out = ChannelMixing(self.tp.out_blocks, gate_irreps, u, u)
        self.self_connection = SpeciesLinear(in_irreps, gate_irreps, num_types, u, u)
        self.gate = Gate(out_irreps)
        self.msg_norm = 1.0 / math.sqrt(cfg.avg_num_neighbors)
        # residual over the input components that carry the output irreps (all of them, or none)
        in_offsets = offsets_by_irrep(in_irreps)
        residual: List[int] = []
        if all(irrep in in_offsets for irrep in out_irreps):
            for l, p in out_irreps:
                residual += list(range(in_offsets[(l, p)], in_offsets[(l, p)] + 2 * l + 1))
        self.has_residual = bool(residual)
        self.register_buffer("residual_index", torch.tensor(residual, dtype=torch.long), persistent=False)

    def forward(self, h: torch.Tensor, y: torch.Tensor, radial: Radial, edge_index: torch.Tensor,
                select: torch.Tensor) -> torch.Tensor:
        return self.convolve(h, self.linear_in(h), y, radial, edge_index, select)

    def convolve(self, h: torch.Tensor, x: torch.Tensor, y: torch.Tensor, radial: Radial,
                 edge_index: torch.Tensor, select: torch.Tensor) -> torch.Tensor:
        """The block for the centres whose features are ``h [in_dim, C, U]``, given the mixed input
        ``x = linear_in(features) [x_dim, N, U]`` of every atom an edge reads; ``edge_index[0]`` indexes the
        centres (``0 .. C-1``), ``edge_index[1]`` the rows of ``x``; ``radial`` as :meth:`NequIP._geometry` gives it;
        ``select [C]`` as in forward. Returns ``[out_dim, C, U]``. With ``x = linear_in(h)`` and ``C = N`` this is
        forward."""
        r, inverse, basis, d_basis, shared = radial
        if shared:
            # memoised: the radial MLP once per distinct length, with its derivative (forward mode)
            with torch.no_grad():
                w, dw_dr = self.radial.value_and_tangent(basis, d_basis)
            msg = self.tp.convolve_shared(x, y, r, w, dw_dr, inverse, edge_index[0], edge_index[1], h.shape[1])
        else:
            msg = self.tp.convolve(x, y, self.radial(basis), edge_index[0], edge_index[1], h.shape[1])
        return self._finish(self.linear_out(msg * self.msg_norm) + self.self_connection(h, select), h)

    def isolated(self, h: torch.Tensor, select: torch.Tensor) -> torch.Tensor:
        """The block on features ``h`` of atoms without neighbours (no message); same shapes as forward."""
        return self._finish(self.self_connection(h, select), h)

    def _finish(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        update = self.gate(x)
        if self.has_residual:
            update = update + h.index_select(0, self.residual_index)
        return update


class NequIP(nn.Module):
    """NequIP energy model: per-atom energies from edge vectors.

    Parameters
    ----------
    config : NequIPConfig

    Forward
    -------
    edge_vec : Tensor [E, 3], model dtype, Å
        ``r_ij = pos[j] - pos[i] + shift``.
    edge_index : Tensor [2, E], int64
        Centre ``i`` (receives the message) and neighbour ``j`` of each directed edge.
    atom_type : Tensor [N], int64
    n_local : int, optional
        Only the first ``n_local`` atoms' energies are wanted (default: all). The others are context, such as
        LAMMPS ghost atoms: an atom ``k`` hops from the wanted ones matters only through its features after
        the first ``L - k`` blocks, so block ``b`` convolves only over centres at most ``L - 1 - b`` hops
        away. The wanted energies are exact; the others are not computed.

    Returns the learned per-atom energy ``[N]`` in eV (scale applied, shift not); only the first
    ``n_local`` entries are meaningful.

    Example
    -------
    >>> model = NequIP(NequIPConfig(elements=("Cu",)))
    >>> vec = torch.tensor([[2.5, 0.0, 0.0], [-2.5, 0.0, 0.0]])
    >>> model(vec, torch.tensor([[0, 1], [1, 0]]), torch.tensor([0, 0])).shape
    torch.Size([2])
    """

    # a TorchScript constant: a file scripted without the memoised radial path needs no fused operators
    __constants__ = ["memo_radial"]

    def __init__(self, config: NequIPConfig) -> None:
        super().__init__()
        if not isinstance(config, NequIPConfig):
            raise TypeError(f"NequIP needs a NequIPConfig, got {type(config).__name__}")
        self.config = config
        self.num_types = len(config.elements)
        u = config.num_features
        self.u = u
        self.sh = SphericalHarmonics(config.l_max)
        self.basis = BesselBasis(config.r_max, config.num_bessel)
        self.cutoff = PolynomialCutoff(config.r_max, config.cutoff_p)
        self.embedding = nn.Parameter(torch.randn(self.num_types, u))
        hidden = feature_irreps(config.l_max, config.parity)
        blocks: List[InteractionBlock] = []
        in_irreps: List[Irrep] = [(0, 1)]
        for k in range(config.num_layers):
            # the readout needs only even scalars: the last block computes nothing else
            out_irreps = [(0, 1)] if k == config.num_layers - 1 else hidden
            blocks.append(InteractionBlock(config, in_irreps, out_irreps))
            in_irreps = out_irreps
        self.blocks = nn.ModuleList(blocks)
        self.readout = MLP(u, 1, config.readout_mlp, bias_last=True)
        self.register_buffer("energy_scale", torch.tensor(config.per_element_energy_scale, dtype=torch.get_default_dtype()))
        self.memo_radial = False

    def forward(self, edge_vec: torch.Tensor, edge_index: torch.Tensor, atom_type: torch.Tensor,
                n_local: int = -1) -> torch.Tensor:
        n_atoms = atom_type.shape[0]
        n_blocks = len(self.blocks)
        prune = 0 <= n_local < n_atoms
        # TorchScript workaround: a variable must be a Tensor on every path, so it starts as a dummy that is read
        # only when pruning
        centre_hop = edge_index[0]
        if prune:
            # hops from the wanted atoms, capped at n_blocks: relax along every edge n_blocks - 1 times
            hop = torch.full((n_atoms,), n_blocks, dtype=torch.long, device=atom_type.device)
            hop[:n_local] = 0
            for _ in range(n_blocks - 1):
                hop = hop.scatter_reduce(0, edge_index[1], hop.index_select(0, edge_index[0]) + 1, reduce="amin")
            centre_hop = hop.index_select(0, edge_index[0])
        radial, y = self._geometry(edge_vec)
        select = torch.arange(n_atoms, device=atom_type.device) * self.num_types + atom_type
        h = self.embedding.index_select(0, atom_type).unsqueeze(0)
        # The same atoms with every neighbour removed: subtracting their energy makes an isolated atom's
        # energy exactly its per-element reference (the shift). Same shapes as the real features, so an
        # atom that has no neighbours gets bit-identical values in both and exactly zero learned energy.
        h_iso = h
        b = 0
        for block in self.blocks:
            if prune:
                keep = (centre_hop <= n_blocks - 1 - b).nonzero().squeeze(1)
                h = block(h, y.index_select(1, keep), _radial_edges(radial, keep), edge_index.index_select(1, keep), select)
            else:
                h = block(h, y, radial, edge_index, select)
            h_iso = block.isolated(h_iso, select)
            b += 1
        atom_energy = (self.readout(h[0]) - self.readout(h_iso[0])).squeeze(-1)
        return self.energy_scale.index_select(0, atom_type) * atom_energy

    def _geometry(self, edge_vec: torch.Tensor) -> Tuple[Radial, torch.Tensor]:
        """The radial input of the edges (:data:`Radial`) and their spherical harmonics ``[(l_max+1)^2, E, 1]``."""
        r = torch.linalg.vector_norm(edge_vec, dim=1)
        y = self.sh(edge_vec).t().unsqueeze(-1)
        if self.memo_radial and not self.training:
            # every distinct length once (the two directions of a pair have the same length, bit for bit)
            lengths, inverse = torch.ops.mdpot.distinct(r.detach())
            b, db = self.basis.value_and_derivative(lengths)
            u, du = self.cutoff.value_and_derivative(lengths)
            basis = (b * u.unsqueeze(-1)).detach()
            d_basis = (db * u.unsqueeze(-1) + b * du.unsqueeze(-1)).detach()
            return (r, inverse, basis, d_basis, True), y
        # the envelope on the basis: with a bias-free radial MLP every path weight vanishes smoothly at r_max
        basis = self.basis(r) * self.cutoff(r).unsqueeze(-1)
        empty = r.new_zeros((0,), dtype=torch.long)
        return (r, empty, basis, basis.new_zeros((0, basis.shape[1])), False), y

    # ------------------------------------------------------------------------------------------------------
    # Block by block, for engines that exchange node features between ranks (docs/message_passing_exchange.md).
    # Per-atom tensors cross in rows: ``[atoms, D * U]``, atom-major, each row the atom's D component planes of
    # U channels. Block b reads the "state" of its centres (their features h_b) and the "mixed input"
    # x_b = linear_in_b(h_b) of every atom its edges reach; only x_b is exchanged.

    @torch.jit.export
    def mp_num_blocks(self) -> int:
        """Number of message-passing blocks ``L``."""
        return len(self.blocks)

    @torch.jit.export
    def mp_feature_widths(self) -> List[int]:
        """Values per atom of the mixed input ``x_b`` of every block ``b = 0 .. L-1``: what the exchange sends."""
        return [block.x_dim * self.u for block in self.blocks]

    @torch.jit.export
    def mp_state_widths(self) -> List[int]:
        """Values per atom of the state before every block and after the last: ``S_0 .. S_L``."""
        return [block.in_dim * self.u for block in self.blocks] + [self.u]

    @torch.jit.export
    def mp_embed(self, atom_type: torch.Tensor, n_centres: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """State ``[n_centres, S_0]`` of the first ``n_centres`` atoms and mixed input ``[N, W_0]`` of all ``N``
        atoms, from their types alone (no exchange is needed before block 0)."""
        h = self.embedding.index_select(0, atom_type).unsqueeze(0)
        x = h
        for k, block in enumerate(self.blocks):
            if k == 0:
                x = block.linear_in(h)
        return _rows(h.narrow(1, 0, n_centres)), _rows(x)

    @torch.jit.export
    def mp_block(self, b: int, state: torch.Tensor, x: torch.Tensor, edge_vec: torch.Tensor, edge_index: torch.Tensor,
                 centre_type: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Block ``b`` for ``C`` centres: ``state [C, S_b]``, ``x [N, W_b]`` of every atom the edges reach,
        ``edge_vec [E, 3]`` (model dtype, Å), ``edge_index [2, E]`` (centre ``0 .. C-1``, neighbour row of
        ``x``), ``centre_type [C]``. Returns the centres' state ``[C, S_{b+1}]`` and mixed input of the next
        block ``[C, W_{b+1}]`` (``[C, 0]`` after the last block)."""
        radial, y = self._geometry(edge_vec)
        return self._block(b, state, x, radial, y, edge_index, centre_type)

    @torch.jit.export
    def mp_geometry(self, edge_vec: torch.Tensor) -> List[torch.Tensor]:
        """What every block reads of the edges, ``[r, inverse, basis, d_basis, y]`` as :meth:`_geometry` gives it
        (``y`` last), for an engine that computes it once per step instead of once per block."""
        radial, y = self._geometry(edge_vec)
        return [radial[0], radial[1], radial[2], radial[3], y]

    @torch.jit.export
    def mp_block_geometry(self, b: int, state: torch.Tensor, x: torch.Tensor, geometry: List[torch.Tensor],
                          edge_index: torch.Tensor, centre_type: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """:meth:`mp_block` reading the edges' :meth:`mp_geometry` instead of their vectors (same numbers)."""
        # _geometry's condition, written out: on the constant memo_radial TorchScript prunes the branch it cannot take
        radial = (geometry[0], geometry[1], geometry[2], geometry[3], self.memo_radial and not self.training)
        return self._block(b, state, x, radial, geometry[4], edge_index, centre_type)

    def _block(self, b: int, state: torch.Tensor, x: torch.Tensor, radial: Radial, y: torch.Tensor,
               edge_index: torch.Tensor, centre_type: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        n_centres = centre_type.shape[0]
        select = torch.arange(n_centres, device=centre_type.device) * self.num_types + centre_type
        h_next = state
        for k, block in enumerate(self.blocks):
            if k == b:
                h = _planes(state, block.in_dim, self.u)
                h_next = block.convolve(h, _planes(x, block.x_dim, self.u), y, radial, edge_index, select)
        x_next = h_next.new_zeros((0, n_centres, self.u))
        for k, block in enumerate(self.blocks):
            if k == b + 1:
                x_next = block.linear_in(h_next)
        return _rows(h_next), _rows(x_next)

    @torch.jit.export
    def mp_readout(self, state: torch.Tensor, atom_type: torch.Tensor) -> torch.Tensor:
        """Learned per-atom energy ``[n]`` (eV, scale applied, shift not) from the state after the last block;
        the same as forward's for these atoms."""
        n = atom_type.shape[0]
        select = torch.arange(n, device=atom_type.device) * self.num_types + atom_type
        # the same atoms without neighbours, from their types alone: as in forward, so that an atom with no
        # neighbours gets exactly zero learned energy
        with torch.no_grad():
            h_iso = self.embedding.index_select(0, atom_type).unsqueeze(0)
            for block in self.blocks:
                h_iso = block.isolated(h_iso, select)
        h = state.reshape(n, 1, self.u).permute(1, 0, 2)
        atom_energy = (self.readout(h[0]) - self.readout(h_iso[0])).squeeze(-1)
        return self.energy_scale.index_select(0, atom_type) * atom_energy


def _radial_edges(radial: Radial, keep: torch.Tensor) -> Radial:
    """``radial`` for the edges ``keep`` only."""
    r, inverse, basis, d_basis, shared = radial
    if shared:
        return r.index_select(0, keep), inverse.index_select(0, keep), basis, d_basis, True
    return r.index_select(0, keep), inverse, basis.index_select(0, keep), d_basis, False


def _rows(t: torch.Tensor) -> torch.Tensor:
    """Component planes ``[D, N, U]`` -> rows ``[N, D * U]`` (contiguous)."""
    return t.permute(1, 0, 2).reshape(t.shape[1], t.shape[0] * t.shape[2])


def _planes(rows: torch.Tensor, dim: int, u: int) -> torch.Tensor:
    """Rows ``[N, dim * u]`` -> component planes ``[dim, N, u]`` (a view of contiguous rows)."""
    return rows.reshape(rows.shape[0], dim, u).permute(1, 0, 2)
