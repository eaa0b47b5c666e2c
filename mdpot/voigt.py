"""Voigt vectors of symmetric 3x3 tensors (stress, virial) in the two orders mdpot meets.

ASE: ``xx yy zz yz xz xy``. LAMMPS: ``xx yy zz xy xz yz``. numpy only (no torch), so the LAMMPS helpers can
use it too.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

ASE_ORDER: Tuple[Tuple[int, int], ...] = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
LAMMPS_ORDER: Tuple[Tuple[int, int], ...] = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))


def to_voigt(m: np.ndarray, order: Sequence[Tuple[int, int]] = ASE_ORDER) -> np.ndarray:
    """``(..., 3, 3)`` -> ``(..., 6)`` in ``order``, symmetrising the off-diagonals."""
    m = np.asarray(m)
    s = 0.5 * (m + np.swapaxes(m, -1, -2))
    return np.stack([s[..., a, b] for a, b in order], axis=-1)


def from_voigt(v: np.ndarray, order: Sequence[Tuple[int, int]] = ASE_ORDER) -> np.ndarray:
    """``(..., 6)`` in ``order`` -> symmetric ``(..., 3, 3)``."""
    v = np.asarray(v)
    m = np.empty(v.shape[:-1] + (3, 3))
    for c, (a, b) in enumerate(order):
        m[..., a, b] = m[..., b, a] = v[..., c]
    return m
