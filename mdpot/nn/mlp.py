"""Scalar multilayer perceptrons used for embeddings, latent updates and readouts."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """Dense network ``in -> hidden... -> out`` with SiLU between layers.

    Parameters
    ----------
    in_dim, out_dim : int
        Input and output widths.
    hidden : sequence of int
        Hidden widths (may be empty: one linear layer).
    bias_last : bool
        Bias on the last layer. Off where the output must vanish with its input (cutoff smoothness).
    bias : bool
        Biases on the hidden layers. Off (with ``bias_last`` off) the network maps 0 to 0.

    Shapes: ``[..., in_dim] -> [..., out_dim]``.

    Example
    -------
    >>> MLP(8, 4, hidden=(16,))(torch.zeros(3, 8)).shape
    torch.Size([3, 4])
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int] = (), bias_last: bool = True,
                 bias: bool = True) -> None:
        super().__init__()
        dims = [int(in_dim), *[int(h) for h in hidden], int(out_dim)]
        if any(d < 1 for d in dims):
            raise ValueError(f"MLP widths must be positive, got {dims}")
        layers: list[nn.Module] = []
        for k in range(len(dims) - 1):
            last = k == len(dims) - 2
            layers.append(nn.Linear(dims[k], dims[k + 1], bias=bias_last if last else bias))
            if not last:
                layers.append(nn.SiLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
