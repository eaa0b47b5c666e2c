"""Irreps of the tensor features: which ``(l, p)`` a model carries, and where each sits in a component plane.

An architecture states its irreps as ordered lists of ``(l, p)`` pairs (``p = +1`` even, ``-1`` odd), one copy
of each: every channel carries the same irreps (see :mod:`mdpot.nn.equivariant`). The bookkeeping (dimensions,
offsets of each irrep in the concatenated ``D`` axis) is e3nn's :class:`e3nn.o3.Irreps`, used at construction
time only; the TorchScript forward sees plain integer lists.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

from e3nn import o3

#: One irrep as ``(l, p)``: order ``l >= 0``, parity ``p = +1`` (even) or ``-1`` (odd).
Irrep = Tuple[int, int]


def as_irreps(irreps: Sequence[Irrep]) -> o3.Irreps:
    """``irreps`` as an :class:`e3nn.o3.Irreps` with multiplicity 1 each, in the given order (not simplified).

    Example
    -------
    >>> as_irreps([(0, 1), (1, -1)])
    1x0e+1x1o
    """
    return o3.Irreps([(1, (l, p)) for l, p in irreps])


def offsets(irreps: Sequence[Irrep]) -> List[int]:
    """Start of every irrep of ``irreps`` along the concatenated component axis ``D``."""
    return [s.start for s in as_irreps(irreps).slices()]


def offsets_by_irrep(irreps: Sequence[Irrep]) -> Dict[Irrep, int]:
    """``{(l, p): start}`` along the component axis ``D`` (irreps appear at most once in mdpot features)."""
    o3_irreps = as_irreps(irreps)
    return {(mul_ir.ir.l, mul_ir.ir.p): s.start for mul_ir, s in zip(o3_irreps, o3_irreps.slices())}


def feature_irreps(l_max: int, parity: bool) -> List[Irrep]:
    """Irreps carried by tensor features.

    ``parity=False`` keeps the parity of the spherical harmonics, ``(-1)^l``; ``parity=True`` tracks both
    parities for every ``l`` (full O(3)), so pseudo-scalars and axial vectors are available too.

    Example
    -------
    >>> feature_irreps(1, parity=True)
    [(0, 1), (0, -1), (1, -1), (1, 1)]
    """
    if l_max < 0:
        raise ValueError(f"l_max must be >= 0, got {l_max}")
    if not parity:
        return [(l, (-1) ** l) for l in range(l_max + 1)]
    out: List[Irrep] = []
    for l in range(l_max + 1):
        out += [(l, (-1) ** l), (l, -((-1) ** l))]
    return out


def sh_irreps(l_max: int) -> List[Irrep]:
    """Irreps of the spherical harmonics ``Y_0 .. Y_lmax``: ``(l, (-1)^l)``."""
    return [(l, (-1) ** l) for l in range(l_max + 1)]
