"""Equivariant linear maps on component-plane features ``[D, N, U]`` (see :mod:`mdpot.nn.equivariant`).

Each map acts on channels only, with one matrix per irrep shared by its ``2l+1`` components, so it commutes
with rotations and reflections. Both build a per-output-irrep layout at construction time, held as flat
integer lists (one entry per output irrep) because TorchScript indexes those fastest.
"""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import torch
from torch import nn

from .irreps import Irrep, offsets_by_irrep


class ChannelMixing(nn.Module):
    """Equivariant linear map from tensor-product output blocks to feature irreps.

    For every output irrep, mixes all channels of all paths that produced it (``U_in * paths -> U_out``);
    the same matrix acts on every ``m`` component, so equivariance is kept. Irreps that no path produced
    are zero.

    Parameters
    ----------
    in_blocks : sequence of ((l, p), paths)
        The input's blocks in order: each irrep with the number of paths that produced it
        (:attr:`ChannelwiseTensorProduct.out_blocks`); plain features are ``[((l, p), 1), ...]``.
    out_irreps : sequence of (l, p)
    u_in, u_out : int
        Channels in and out.

    Shapes: ``t [D_tp, E, U_in]`` -> ``[D_out, E, U_out]``.

    Example
    -------
    >>> mix = ChannelMixing([((0, 1), 2), ((1, -1), 1)], [(0, 1), (1, -1)], u_in=4, u_out=3)
    >>> mix(torch.randn(2 * 1 + 3, 5, 4)).shape
    torch.Size([4, 5, 3])
    """

    def __init__(self, in_blocks: Sequence[Tuple[Irrep, int]], out_irreps: Sequence[Irrep], u_in: int, u_out: int) -> None:
        super().__init__()
        by_irrep = {irrep: (k, paths) for k, (irrep, paths) in enumerate(in_blocks)}
        self.split_sizes: List[int] = [paths * (2 * l + 1) for (l, _), paths in in_blocks]
        self.u_in, self.u_out = u_in, u_out
        # Per output irrep: the input block it mixes (-1: none, the output is zero), that block's number of
        # paths, the irrep's dimension 2l+1, and where its [paths * u_in, u_out] matrix starts in ``weight``.
        self.source: List[int] = []
        self.paths: List[int] = []
        self.dims: List[int] = []
        self.weight_start: List[int] = []
        w_size = 0
        for l, p in out_irreps:
            k, paths = by_irrep.get((l, p), (-1, 0))
            self.source.append(k)
            self.paths.append(paths)
            self.dims.append(2 * l + 1)
            self.weight_start.append(w_size)
            w_size += u_in * paths * u_out
        self.weight = nn.Parameter(torch.randn(w_size))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.forward_blocks(torch.split(t, self.split_sizes, dim=0))

    def forward_blocks(self, blocks: List[torch.Tensor]) -> torch.Tensor:
        """Mix blocks already split by ``split_sizes`` (lets a caller reuse one split for other work)."""
        n = blocks[0].shape[1]
        outs: List[torch.Tensor] = []
        for k in range(len(self.dims)):
            source, paths, dim, w0 = self.source[k], self.paths[k], self.dims[k], self.weight_start[k]
            if paths == 0:
                outs.append(torch.zeros(dim, n, self.u_out, dtype=blocks[0].dtype, device=blocks[0].device))
                continue
            # [paths*dim, E, U] -> [dim, E, paths*U]: one GEMM per irrep over (path, channel).
            tb = blocks[source].view(paths, dim, n, self.u_in).permute(1, 2, 0, 3).reshape(dim * n, paths * self.u_in)
            w = self.weight[w0:w0 + self.u_in * paths * self.u_out].view(paths * self.u_in, self.u_out)
            outs.append((tb @ (w * (1.0 / math.sqrt(float(self.u_in * paths))))).view(dim, n, self.u_out))
        return torch.cat(outs, dim=0)


class SpeciesLinear(nn.Module):
    """A channel mixing per irrep whose matrix depends on the atom's species (NequIP's self-connection).

    Parameters
    ----------
    in_irreps, out_irreps : sequence of (l, p)
        Output irreps absent from the input are zero.
    num_types : int
        Number of species (model types).
    u_in, u_out : int
        Channels in and out.

    Shapes: ``h [D_in, N, U_in]``, ``select [N]`` (``n * num_types + type_n``) -> ``[D_out, N, U_out]``.

    Example
    -------
    >>> lin = SpeciesLinear([(0, 1)], [(0, 1), (1, -1)], num_types=2, u_in=4, u_out=4)
    >>> lin(torch.randn(1, 3, 4), torch.arange(3) * 2).shape
    torch.Size([4, 3, 4])
    """

    def __init__(self, in_irreps: Sequence[Irrep], out_irreps: Sequence[Irrep], num_types: int, u_in: int, u_out: int) -> None:
        super().__init__()
        in_start = offsets_by_irrep(in_irreps)
        # Per output irrep: where it starts in the input (-1: absent, the output is zero), its dimension 2l+1,
        # and where its [num_types, u_in, u_out] matrices start in ``weight``.
        self.source_start: List[int] = []
        self.dims: List[int] = []
        self.weight_start: List[int] = []
        w_size = 0
        for l, p in out_irreps:
            self.source_start.append(in_start.get((l, p), -1))
            self.dims.append(2 * l + 1)
            self.weight_start.append(w_size)
            if (l, p) in in_start:
                w_size += num_types * u_in * u_out
        self.num_types, self.u_in, self.u_out = num_types, u_in, u_out
        self.weight = nn.Parameter(torch.randn(w_size))

    def forward(self, h: torch.Tensor, select: torch.Tensor) -> torch.Tensor:
        n = h.shape[1]
        outs: List[torch.Tensor] = []
        norm = 1.0 / math.sqrt(float(self.u_in))
        for k in range(len(self.dims)):
            start, dim, w0 = self.source_start[k], self.dims[k], self.weight_start[k]
            if start < 0:
                outs.append(torch.zeros(dim, n, self.u_out, dtype=h.dtype, device=h.device))
                continue
            w = self.weight[w0:w0 + self.num_types * self.u_in * self.u_out].view(self.num_types, self.u_in, self.u_out)
            w = w.permute(1, 0, 2).reshape(self.u_in, self.num_types * self.u_out) * norm
            # every species' matrix on every atom, then keep the atom's own: one GEMM, species are few
            y = (h[start:start + dim].reshape(dim * n, self.u_in) @ w).view(dim, n * self.num_types, self.u_out)
            outs.append(y.index_select(1, select))
        return torch.cat(outs, dim=0)
