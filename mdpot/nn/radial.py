"""Radial basis and cutoff envelope: the only functions of |r_ij| in every mdpot architecture."""
from __future__ import annotations

import math

from typing import Tuple

import torch
from torch import nn


class BesselBasis(nn.Module):
    r"""Sine-Bessel radial basis :math:`b_n(r) = \sqrt{2/r_c}\,\sin(n\pi r/r_c)/r`.

    Parameters
    ----------
    r_max : float
        Cutoff radius, Å.
    num_basis : int
        Number of basis functions ``n = 1 .. num_basis``.
    trainable : bool
        Learn the frequencies (initialised at ``n*pi/r_max``).

    Shapes: ``r [E]`` (Å) -> ``[E, num_basis]``.

    Example
    -------
    >>> basis = BesselBasis(5.0, 8)
    >>> basis(torch.tensor([1.0, 2.5])).shape
    torch.Size([2, 8])
    """

    def __init__(self, r_max: float, num_basis: int = 8, trainable: bool = True) -> None:
        super().__init__()
        if r_max <= 0:
            raise ValueError(f"r_max must be positive, got {r_max}")
        if num_basis < 1:
            raise ValueError(f"num_basis must be >= 1, got {num_basis}")
        freqs = torch.arange(1, num_basis + 1, dtype=torch.get_default_dtype()) * math.pi / r_max
        if trainable:
            self.freqs = nn.Parameter(freqs)
        else:
            self.register_buffer("freqs", freqs)
        self.prefactor = math.sqrt(2.0 / r_max)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        r = r.unsqueeze(-1)
        return self.prefactor * torch.sin(self.freqs * r) / r

    def value_and_derivative(self, r: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The basis ``[E, num_basis]`` and its derivative with respect to ``r`` (1/Å), same shape."""
        r = r.unsqueeze(-1)
        arg = self.freqs * r
        sin = torch.sin(arg)
        value = self.prefactor * sin / r
        return value, (self.prefactor * self.freqs * torch.cos(arg) - value) / r


class PolynomialCutoff(nn.Module):
    r"""Smooth envelope :math:`u(r)` that is 1 at r=0 and reaches 0 at ``r_max`` with ``p`` continuous
    derivatives vanishing there, so energies and forces go smoothly to zero at the cutoff.

    ``u(x) = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^{p+1} - p(p+1)/2 x^{p+2}`` for ``x = r/r_max < 1``, else 0.

    Shapes: ``r [E]`` (Å) -> ``[E]``.
    """

    def __init__(self, r_max: float, p: int = 6) -> None:
        super().__init__()
        if p < 2:
            raise ValueError(f"polynomial cutoff power p must be >= 2, got {p}")
        self.inv_r_max = 1.0 / r_max
        self.p = float(p)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        p = self.p
        x = r * self.inv_r_max
        xp = torch.pow(x, p)
        u = 1.0 - 0.5 * (p + 1.0) * (p + 2.0) * xp + p * (p + 2.0) * xp * x - 0.5 * p * (p + 1.0) * xp * x * x
        return u * (x < 1.0).to(u.dtype)

    def value_and_derivative(self, r: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The envelope ``[E]`` and its derivative with respect to ``r`` (1/Å), ``[E]``."""
        p = self.p
        x = r * self.inv_r_max
        # du/dx = -p (p+1) (p+2) / 2 x^(p-1) (1 - x)^2
        du = (-0.5 * p * (p + 1.0) * (p + 2.0) * self.inv_r_max) * torch.pow(x, p - 1.0) * (1.0 - x) ** 2
        return self.forward(r), du * (x < 1.0).to(du.dtype)
