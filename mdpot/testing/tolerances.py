"""Tolerances of the test matrix (``docs/testing.md``, rows named below), in one place, per check and model dtype
(atol = rtol unless noted; how a tolerance scales with N or max|F| is decided in :mod:`mdpot.testing.asserts`)."""
from __future__ import annotations

from typing import Union

import torch

_TOL = {
    # check:                 (float64, float32)
    "deploy": (1e-12, 5e-5),                # row 1
    "equivariance": (1e-8, 1e-3),           # row 3
    "fd_forces": (1e-6, 5e-3),              # row 4; float32: relative to max|F|
    "fd_stress": (1e-6, 1e-2),              # row 5, relative
    "locality": (1e-12, 1e-6),              # row 6
    "separability": (1e-10, 1e-4),          # row 7
    "wrap": (1e-10, 1e-4),                  # row 8
    "momentum": (1e-10, 1e-4),              # row 9; float64 times N, float32 times sqrt(N)
    "batch": (1e-12, 5e-5),                 # row 11
    "calculator": (1e-12, 5e-5),            # row 12
    "lammps_inputs": (1e-12, 1e-6),         # row 14
    "lammps": (1e-10, 5e-5),                # row 15
    "lammps_ranks_energy": (1e-12, 5e-4),   # row 16, relative
    "lammps_ranks": (1e-10, 5e-4),          # row 16
    "lammps_newton": (1e-10, 5e-4),         # row 17
    "lammps_regression": (5e-13, 1e-6),     # row 18, relative (float32 calibrated: run-to-run identical)
    "lammps_replicate": (1e-10, 1e-5),      # row 20, relative
    "lammps_types": (1e-12, 5e-5),          # row 21
    "lammps_md": (1e-8, 1e-3),              # row 24
    "gpu": (1e-10, 5e-4),                   # row 26, GPU vs CPU
}


def dtype_name(dtype: Union[str, torch.dtype]) -> str:
    """``"float32"`` or ``"float64"`` for a dtype given as a name or a ``torch.dtype``; ``ValueError`` otherwise."""
    if isinstance(dtype, torch.dtype):
        dtype = str(dtype).replace("torch.", "")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    return dtype


def tolerance(check: str, dtype: Union[str, torch.dtype]) -> float:
    """Tolerance of ``check`` (a row of ``docs/testing.md``, by name) for a model of ``dtype``.

    Example
    -------
    >>> tolerance("deploy", "float32")
    5e-05
    """
    if check not in _TOL:
        raise ValueError(f"unknown check {check!r}; known: {sorted(_TOL)}")
    return _TOL[check][0 if dtype_name(dtype) == "float64" else 1]
