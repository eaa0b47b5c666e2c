"""Equivariant building blocks on e3nn's real spherical harmonics and Wigner 3j symbols.

Tensor features are stored as component planes ``[D, E, U]``: ``D`` the concatenated ``2l+1`` components of an
ordered list of irreps ``(l, p)`` (``p = +1`` even, ``-1`` odd), ``E`` edges (or atoms), ``U`` channels. Every
channel carries the same irreps, which is what a channel-wise ("uuu") tensor product needs; keeping each
component a contiguous ``E x U`` plane makes every elementwise operation a long vectorised loop.
"""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import torch
from e3nn import o3
from torch import nn

from .irreps import Irrep, offsets


class SphericalHarmonics(nn.Module):
    """Real spherical harmonics of the unit edge direction, e3nn's basis, component normalisation.

    Shapes: ``vec [E, 3]`` (Å, any length > 0) -> ``[E, (l_max+1)^2]``.
    """

    def __init__(self, l_max: int) -> None:
        super().__init__()
        self.sh = o3.SphericalHarmonics(list(range(l_max + 1)), normalize=True, normalization="component")

    def forward(self, vec: torch.Tensor) -> torch.Tensor:
        return self.sh(vec)


class IrrepWeighting(nn.Module):
    """Per-channel weighting of spherical harmonics: ``w [n_irreps, E, U]``, ``y [D, E]`` -> ``[D, E, U]``."""

    def __init__(self, irreps: Sequence[Irrep]) -> None:
        super().__init__()
        index = [k for k, (l, _) in enumerate(irreps) for _ in range(2 * l + 1)]
        self.register_buffer("index", torch.tensor(index, dtype=torch.long), persistent=False)

    def forward(self, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return w.index_select(0, self.index) * y.unsqueeze(-1)


class ChannelwiseTensorProduct(nn.Module):
    """Channel-wise tensor product ``out[u] = x[u] (x) y[u]`` over all allowed coupling paths.

    Features are component planes ``[D, E, U]`` (component-major), so each nonzero Wigner 3j entry is one
    fused multiply-add over a contiguous ``E x U`` plane: no broadcasting over tiny dimensions and no
    ``[E, U, D1, D2]`` outer-product temporary.

    Each path ``(l1,p1) x (l2,p2) -> (l3, p1*p2)`` with ``|l1-l2| <= l3 <= l1+l2`` and ``(l3, p1*p2)`` in
    ``allowed_out`` has its own output block, weighted by the Wigner 3j symbol times ``sqrt(2 l3 + 1)``
    (unit-variance output for unit-variance component-normalised inputs). Blocks are grouped by output irrep
    in the order of ``allowed_out``, paths outer and components inner; ``out_blocks`` records
    ``(irrep, number of paths)``.

    Shapes: ``x [D1, E, U]``, ``y [D2, E, U]`` -> ``[D_out, E, U]``. ``unit_scalar_y`` declares that
    ``y``'s first component is identically 1 (spherical harmonics with component normalisation).

    ``fused`` (default False) makes :meth:`convolve` and :meth:`gather_product` call the fused C++ operators of
    :mod:`mdpot.ops` instead of this pure-torch reference: same results to rounding, first-order gradients only.
    Set it through :func:`mdpot.ops.set_kernels`, before scripting (TorchScript compiles only the branch taken).
    """

    # a TorchScript constant: scripting compiles only the branch it selects, so the reference needs no operators
    __constants__ = ["fused"]

    def __init__(self, irreps1: Sequence[Irrep], irreps2: Sequence[Irrep], allowed_out: Sequence[Irrep],
                 unit_scalar_y: bool = False) -> None:
        super().__init__()
        off1 = offsets(irreps1)
        off2 = offsets(irreps2)
        blocks: List[Tuple[Irrep, int]] = []
        terms: List[List[Tuple[int, int, float]]] = []
        comp_path: List[int] = []
        path_in: List[int] = []
        for l3, p3 in allowed_out:
            paths = 0
            for a, (l1, p1) in enumerate(irreps1):
                for b, (l2, p2) in enumerate(irreps2):
                    if p1 * p2 != p3 or not abs(l1 - l2) <= l3 <= l1 + l2:
                        continue
                    w3j = o3.wigner_3j(l1, l2, l3, dtype=torch.float64) * math.sqrt(2 * l3 + 1)
                    for k in range(2 * l3 + 1):
                        nz = [(off1[a] + i, off2[b] + j, float(w3j[i, j, k]))
                              for i in range(2 * l1 + 1) for j in range(2 * l2 + 1) if abs(float(w3j[i, j, k])) > 1e-12]
                        terms.append(nz)
                        comp_path.append(len(path_in))
                    path_in.append(a)
                    paths += 1
            if paths:
                blocks.append(((l3, p3), paths))
        if not blocks:
            raise ValueError(f"no coupling path from {list(irreps1)} x {list(irreps2)} to {list(allowed_out)}")
        self.out_blocks = blocks
        self.dim_out = len(terms)
        #: path index of every output component, and the ``irreps1`` index each path reads
        self.comp_path: List[int] = comp_path
        self.path_in: List[int] = path_in
        self.num_paths = len(path_in)
        # Flattened sparse coupling: output component k sums coeff * x[i] * y[j] over term_ptr[k]..term_ptr[k+1].
        self.term_i: List[int] = [i for t in terms for i, _, _ in t]
        self.term_j: List[int] = [j for t in terms for _, j, _ in t]
        self.term_c: List[float] = [c for t in terms for _, _, c in t]
        # y's component 0 is identically 1 (component-normalised Y_0 of spherical harmonics): its terms need
        # no multiply, and no gradient flows into a constant
        self.term_unit: List[bool] = [unit_scalar_y and j == 0 for j in self.term_j]
        self.unit_scalar_y = unit_scalar_y
        self.fused = False
        ptr = [0]
        for t in terms:
            ptr.append(ptr[-1] + len(t))
        self.term_ptr: List[int] = ptr

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        xs = x.unbind(0)
        ys = y.unbind(0)
        out: List[torch.Tensor] = []
        for k in range(self.dim_out):
            out.append(self._component(xs, ys, k))
        return torch.stack(out, dim=0)

    def _component(self, xs: List[torch.Tensor], ys: List[torch.Tensor], k: int) -> torch.Tensor:
        """Output component ``k``: its Wigner 3j terms accumulated in place on a fresh temporary (no backward
        needs the intermediate values)."""
        a, b = self.term_ptr[k], self.term_ptr[k + 1]
        if self.term_unit[a]:
            acc = torch.mul(xs[self.term_i[a]], self.term_c[a])
        else:
            acc = torch.mul(xs[self.term_i[a]], ys[self.term_j[a]]).mul_(self.term_c[a])
        for t in range(a + 1, b):
            if self.term_unit[t]:
                acc.add_(xs[self.term_i[t]], alpha=self.term_c[t])
            else:
                acc.addcmul_(xs[self.term_i[t]], ys[self.term_j[t]], value=self.term_c[t])
        return acc

    def scatter_weighted(self, xs: List[torch.Tensor], ys: List[torch.Tensor], ws: List[torch.Tensor],
                         index: torch.Tensor, num_targets: int) -> torch.Tensor:
        """The product with one weight per path and channel (a convolution's radial weights), summed over
        edges into their targets: ``out[:, index[e]] += w[path] * tp[:, e]``.

        Takes the operands as lists of component planes, ``xs`` ``D1 x [E, U]``, ``ys`` ``D2 x [E, U or 1]``,
        ``ws`` ``num_paths x [E, U]``, so a caller can gather each plane by itself (a row gather whose
        backward is a fast row scatter) and no edge-sized stack is ever built; ``index [E]``. Returns
        ``[D_out, num_targets, U]``. Each weighted component goes into the sum as soon as it exists.
        """
        out = torch.zeros((self.dim_out, num_targets, xs[0].shape[1]), dtype=xs[0].dtype, device=xs[0].device)
        for k in range(self.dim_out):
            out[k].index_add_(0, index, self._component(xs, ys, k) * ws[self.comp_path[k]])
        return out

    def convolve(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, centre: torch.Tensor,
                 neighbour: torch.Tensor, num_targets: int) -> torch.Tensor:
        """A convolution: ``out[:, centre[e]] += w[path] * tp(x[:, neighbour[e]], y[:, e])`` summed over edges.

        ``x [D1, N, U]`` per-atom features, ``y [D2, E, U or 1]``, ``w [E, num_paths * U]`` (path-major: path
        ``p``'s weights are columns ``p*U .. p*U+U-1``), ``centre``/``neighbour [E]`` int64 rows of the output
        and of ``x``. Returns ``[D_out, num_targets, U]``. The reference gathers each plane of ``x`` and calls
        :meth:`scatter_weighted`; fused, ``mdpot::tp_scatter`` gathers inside the kernel.
        """
        u = x.shape[2]
        if self.fused:
            wp = w.reshape(w.shape[0], self.num_paths, u).permute(1, 0, 2)
            return torch.ops.mdpot.tp_scatter(x, y, wp, centre, neighbour, num_targets, self.term_ptr, self.term_i,
                                              self.term_j, self.term_c, self.comp_path, self.unit_scalar_y)
        xs = [plane.index_select(0, neighbour) for plane in x.unbind(0)]
        ws = list(torch.split(w, u, dim=1))
        return self.scatter_weighted(xs, y.unbind(0), ws, centre, num_targets)

    def convolve_shared(self, x: torch.Tensor, y: torch.Tensor, r: torch.Tensor, w: torch.Tensor, dw: torch.Tensor,
                        row: torch.Tensor, centre: torch.Tensor, neighbour: torch.Tensor, num_targets: int) -> torch.Tensor:
        """:meth:`convolve` with weights that depend on the edge length only, evaluated once per distinct length:
        edge ``e`` takes row ``row[e]`` of the table ``w [Q, num_paths * U]``, and ``dw [Q, num_paths * U]`` is its
        derivative w.r.t. the length. Differentiable (first order) w.r.t. ``x``, ``y`` and the edge lengths
        ``r [E]`` (whose values are not read: ``w`` and ``dw`` hold them); the table itself takes no gradient (a
        deployed model's radial network). Fused, ``mdpot::tp_scatter_shared`` reads the table in place; the
        reference expands it to the edges, ``w[row] + (r - r.detach()) * dw[row]``."""
        u = x.shape[2]
        if self.fused:
            wp = w.reshape(w.shape[0], self.num_paths, u).permute(1, 0, 2)
            dwp = dw.reshape(dw.shape[0], self.num_paths, u).permute(1, 0, 2)
            return torch.ops.mdpot.tp_scatter_shared(x, y, r, wp, dwp, row, centre, neighbour, num_targets,
                                                     self.term_ptr, self.term_i, self.term_j, self.term_c,
                                                     self.comp_path, self.unit_scalar_y)
        # the second term is zero; its gradient w.r.t. r is dw at each edge's length
        w_edges = w.index_select(0, row) + (r - r.detach()).unsqueeze(1) * dw.index_select(0, row)
        return self.convolve(x, y, w_edges, centre, neighbour, num_targets)

    def gather_product(self, x: torch.Tensor, env: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
        """``self(x, env.index_select(1, centre))``: ``x [D1, E, U]`` with the per-centre ``env [D2, C, U]``
        taken at each edge's centre (``centre [E]`` int64). Fused, ``mdpot::tp_gather`` reads ``env`` in place."""
        if self.fused:
            return torch.ops.mdpot.tp_gather(x, env, centre, self.term_ptr, self.term_i, self.term_j, self.term_c)
        return self.forward(x, env.index_select(1, centre))
