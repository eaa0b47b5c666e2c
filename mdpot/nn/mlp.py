"""Scalar multilayer perceptrons used for embeddings, latent updates and readouts."""
from __future__ import annotations

from typing import Sequence, Tuple

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
        self.out_dim = dims[-1]
        self.max_width = max(dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def value_and_tangent(self, x: torch.Tensor, tx: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The network's value at ``x [n, in_dim]`` and its directional derivative along ``tx [n, in_dim]`` (forward
        mode: ``d net(x + s tx) / ds`` at ``s = 0``), both ``[n, out_dim]``. Evaluation only: call it without
        gradients. Rows go through in chunks of about 1 MB of activations, so every elementwise step reads values
        still in the cache; in each chunk one matrix product per hidden layer maps value and tangent together, and
        the last layer writes straight into the results."""
        n = x.shape[0]
        rows = max(256, 1048576 // (self.max_width * x.element_size()))  # 1 MB: a share of a core's L2
        value = x.new_empty((n, self.out_dim))
        tangent = x.new_empty((n, self.out_dim))
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            self._value_and_tangent(x[start:stop], tx[start:stop], value[start:stop], tangent[start:stop])
        return value, tangent

    def _value_and_tangent(self, x: torch.Tensor, tx: torch.Tensor, value: torch.Tensor, tangent: torch.Tensor) -> None:
        n = x.shape[0]
        last = len(self.net) - 1
        # value rows 0 .. n-1 and tangent rows n .. 2n-1 of one tensor: each layer is one matrix product
        both = torch.cat([x, tx], dim=0)
        for k, layer in enumerate(self.net):
            # hasattr, not isinstance: TorchScript resolves it per unrolled layer
            if hasattr(layer, "weight"):
                if k == last:
                    torch.mm(both[:n], layer.weight.t(), out=value)
                    torch.mm(both[n:], layer.weight.t(), out=tangent)
                    if layer.bias is not None:
                        value += layer.bias
                else:
                    both = torch.nn.functional.linear(both, layer.weight)
                    if layer.bias is not None:
                        both[:n] += layer.bias
            else:  # SiLU: v -> v s, t -> t s (1 + v (1 - s)) with s = sigmoid(v)
                # the tangent is SiLU's backward applied to t (one fused pass), taken before v is overwritten
                v = both[:n]
                both[n:] = torch.ops.aten.silu_backward(both[n:], v)
                torch.nn.functional.silu(v, inplace=True)
