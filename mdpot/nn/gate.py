"""Gated nonlinearity for equivariant features (Weiler et al., 3D Steerable CNNs, 2018)."""
from __future__ import annotations

from typing import List, Sequence

import torch
from torch import nn

from .irreps import Irrep


class Gate(nn.Module):
    """Gated nonlinearity on component-plane features.

    The input is laid out as ``irreps`` followed by one gate scalar per ``l > 0`` irrep (in order). Even
    scalars go through SiLU, odd scalars through tanh (an odd function keeps them odd), and every ``l > 0``
    irrep is multiplied by the sigmoid of its gate scalar, which keeps it equivariant.

    Shapes: ``[D_irreps + n_gates, N, U]`` -> ``[D_irreps, N, U]``.

    Example
    -------
    >>> gate = Gate([(0, 1), (1, -1)])
    >>> gate(torch.randn(1 + 3 + 1, 5, 4)).shape
    torch.Size([4, 5, 4])
    """

    def __init__(self, irreps: Sequence[Irrep]) -> None:
        super().__init__()
        self.dims: List[int] = [2 * l + 1 for l, _ in irreps]
        # kind: 0 even scalar (SiLU), 1 odd scalar (tanh keeps it odd), 2 gated by sigmoid of its gate scalar
        self.kinds: List[int] = [0 if l == 0 and p == 1 else 1 if l == 0 else 2 for l, p in irreps]
        self.num_gates = sum(1 for k in self.kinds if k == 2)
        self.split_sizes: List[int] = self.dims + [1] * self.num_gates

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = torch.split(x, self.split_sizes, dim=0)
        n_irreps = len(self.dims)
        outs: List[torch.Tensor] = []
        g = n_irreps
        for k in range(n_irreps):
            kind = self.kinds[k]
            if kind == 0:
                outs.append(nn.functional.silu(blocks[k]))
            elif kind == 1:
                outs.append(torch.tanh(blocks[k]))
            else:
                outs.append(blocks[k] * torch.sigmoid(blocks[g]))
                g += 1
        return torch.cat(outs, dim=0)
