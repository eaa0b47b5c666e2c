"""Short-range nuclear repulsion added to a learned energy: the ZBL universal screened Coulomb potential.

For a pair of atoms with nuclear charges ``Z_i``, ``Z_j`` at distance ``r`` (Å), in eV:

    E_ZBL(r) = k_e Z_i Z_j / r * phi(r / a),   a = 0.46850 Å / (Z_i^0.23 + Z_j^0.23)
    phi(x) = 0.18175 exp(-3.19980 x) + 0.50986 exp(-0.94229 x) + 0.28022 exp(-0.40290 x) + 0.02817 exp(-0.20162 x)

(Ziegler, Biersack and Littmark, *The Stopping and Range of Ions in Solids*, 1985; ``k_e = e^2 / 4 pi eps_0 =
14.399645 eV Å``, ``0.46850 Å = 0.8854 a_0``). The term is switched off between ``r_inner`` and ``r_outer``:

    E(r) = E_ZBL(r) * S(t),   t = clamp((r - r_inner) / (r_outer - r_inner), 0, 1),   S = 1 - 10 t^3 + 15 t^4 - 6 t^5

``S`` goes from 1 to 0 with zero first and second derivatives at both ends, so energy, forces and their derivatives
stay continuous (smooth NVE). Beyond ``r_outer`` the term is exactly zero; below ``r_inner`` it is the full ZBL.

Each directed edge ``i -> j`` gives half the pair energy to its centre ``i``; the edge ``j -> i`` gives the other
half to ``j``. An engine that hands the model every edge centred on its own atoms (the contract's neighbour list)
therefore counts every pair exactly once over all ranks, with ghosts, periodic images and any domain decomposition.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
from ase.data import atomic_numbers, covalent_radii
from torch import nn

__all__ = ["COULOMB_EV_A", "ZBL_LENGTH_A", "ZBL_SCREENING", "REPULSION_KINDS", "ZBLRepulsion", "default_radii",
           "zbl_pair_energy"]

#: ``e^2 / (4 pi eps_0)`` in eV Å.
COULOMB_EV_A = 14.399645
#: The universal screening length's numerator, ``0.8854 a_0`` in Å.
ZBL_LENGTH_A = 0.46850
#: ``(c_k, d_k)`` of the universal screening function ``phi(x) = sum_k c_k exp(-d_k x)``.
ZBL_SCREENING: Tuple[Tuple[float, float], ...] = ((0.18175, 3.19980), (0.50986, 0.94229), (0.28022, 0.40290),
                                                  (0.02817, 0.20162))
#: Short-range repulsion terms a model config may name (``model.repulsion``).
REPULSION_KINDS = ("zbl",)
#: Default switching radii of a pair, as fractions of the sum of the two elements' covalent radii (ASE's table):
#: ``r_outer = 0.5 (rc_i + rc_j)``, ``r_inner = 0.75 r_outer`` (Cu-Cu: 0.99 and 1.32 Å; Si-Si: 0.83 and 1.11 Å),
#: well inside the first-neighbour distance and below the closest pairs ``mdpot data`` puts in a training set.
DEFAULT_OUTER_FRACTION = 0.5
DEFAULT_INNER_FRACTION = 0.75


def default_radii(elements: Sequence[str], r_max: float
                  ) -> Tuple[Tuple[Tuple[float, ...], ...], Tuple[Tuple[float, ...], ...]]:
    """``(r_inner, r_outer)``: per-pair switching radii (Å, ``[T][T]`` nested tuples) from covalent radii, with
    ``r_outer`` at most ``r_max``."""
    rc = [float(covalent_radii[atomic_numbers[el]]) for el in elements]
    outer = tuple(tuple(min(DEFAULT_OUTER_FRACTION * (a + b), r_max) for b in rc) for a in rc)
    inner = tuple(tuple(DEFAULT_INNER_FRACTION * x for x in row) for row in outer)
    return inner, outer


def zbl_pair_energy(r: torch.Tensor, zi: torch.Tensor, zj: torch.Tensor, r_inner: torch.Tensor,
                    r_outer: torch.Tensor) -> torch.Tensor:
    """Switched ZBL energy (eV) of pairs at distances ``r`` (Å) with nuclear charges ``zi``, ``zj``; all tensors
    broadcast together. The reference formula, written plainly; :class:`ZBLRepulsion` evaluates the same numbers
    from per-type tables."""
    x = r * (zi ** 0.23 + zj ** 0.23) / ZBL_LENGTH_A
    phi = sum(c * torch.exp(-d * x) for c, d in ZBL_SCREENING)
    t = ((r - r_inner) / (r_outer - r_inner)).clamp(0.0, 1.0)
    s = (1.0 - t) ** 3 * (1.0 + 3.0 * t + 6.0 * t ** 2)
    return COULOMB_EV_A * zi * zj / r * phi * s


class ZBLRepulsion(nn.Module):
    """Per-atom ZBL energies from edge vectors (float64 throughout: the term reaches keV at 0.5 Å).

    Parameters
    ----------
    elements : sequence of str
        Model type order.
    r_inner, r_outer : nested sequences ``[T][T]`` of float
        Switching radii of each type pair, Å (symmetric, ``0 < r_inner < r_outer``).

    Forward: ``edge_vec [E, 3]`` float64 (Å, ``r_ij``), ``edge_index [2, E]`` (centre, neighbour),
    ``atom_type [N]`` (every atom an edge reaches), ``n_centres`` -> the first ``n_centres`` atoms' energies,
    ``[n_centres]`` float64 eV: half of each edge's pair energy on its centre.

    Example
    -------
    >>> rep = ZBLRepulsion(["Cu"], [[1.0]], [[1.3]])
    >>> vec = torch.tensor([[0.5, 0.0, 0.0], [-0.5, 0.0, 0.0]], dtype=torch.float64)
    >>> e = rep(vec, torch.tensor([[0, 1], [1, 0]]), torch.tensor([0, 0]), 2)
    >>> round(float(e.sum()), 1)
    1476.7
    """

    def __init__(self, elements: Sequence[str], r_inner: Sequence[Sequence[float]],
                 r_outer: Sequence[Sequence[float]]) -> None:
        super().__init__()
        z = torch.tensor([float(atomic_numbers[el]) for el in elements], dtype=torch.float64)
        n = len(z)
        f64 = dict(dtype=torch.float64)
        inner = torch.tensor(r_inner, **f64).reshape(n, n)
        outer = torch.tensor(r_outer, **f64).reshape(n, n)
        self.num_types = n
        # flattened [T*T] tables, indexed by centre_type * T + neighbour_type
        self.register_buffer("half_zz", (0.5 * COULOMB_EV_A * z[:, None] * z[None, :]).reshape(-1))
        self.register_buffer("inv_length", ((z[:, None] ** 0.23 + z[None, :] ** 0.23) / ZBL_LENGTH_A).reshape(-1))
        self.register_buffer("r_inner", inner.reshape(-1))
        self.register_buffer("inv_width", (1.0 / (outer - inner)).reshape(-1))
        self.register_buffer("screening", torch.tensor(ZBL_SCREENING, **f64))

    def forward(self, edge_vec: torch.Tensor, edge_index: torch.Tensor, atom_type: torch.Tensor,
                n_centres: int) -> torch.Tensor:
        pair = atom_type.index_select(0, edge_index[0]) * self.num_types + atom_type.index_select(0, edge_index[1])
        r = torch.linalg.vector_norm(edge_vec, dim=1)
        x = r * self.inv_length.index_select(0, pair)
        phi = (self.screening[:, 0] * torch.exp(-x.unsqueeze(1) * self.screening[:, 1])).sum(1)
        t = ((r - self.r_inner.index_select(0, pair)) * self.inv_width.index_select(0, pair)).clamp(0.0, 1.0)
        u = 1.0 - t
        s = u * u * u * (1.0 + 3.0 * t + 6.0 * t * t)  # = 1 - 10t^3 + 15t^4 - 6t^5, exactly 0 at t = 1
        e = self.half_zz.index_select(0, pair) * phi * s / r
        out = torch.zeros(atom_type.shape[0], dtype=torch.float64, device=edge_vec.device)
        return out.index_add(0, edge_index[0], e)[:n_centres]
