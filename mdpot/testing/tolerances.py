"""Tolerances from TEST_MATRIX.md, in one place, per check and model dtype (atol = rtol unless noted)."""
from __future__ import annotations

from typing import Union

import torch

_TOL = {
    # check:                 (float64, float32)
    "deploy": (1e-12, 5e-5),
    "equivariance": (1e-8, 1e-3),
    "fd_forces": (1e-6, 5e-3),      # float32: relative to max|F|
    "fd_stress": (1e-6, 1e-2),      # relative
    "locality": (1e-12, 1e-6),
    "separability": (1e-10, 1e-4),
    "wrap": (1e-10, 1e-4),
    "momentum": (1e-10, 1e-4),      # float64 times N, float32 times sqrt(N)
    "batch": (1e-12, 5e-5),
    "calculator": (1e-12, 5e-5),
    "lammps_inputs": (1e-12, 1e-6),
    "lammps": (1e-10, 5e-5),
    "lammps_ranks_energy": (1e-12, 5e-4),   # row 16, relative
    "lammps_ranks": (1e-10, 5e-4),          # row 16
    "lammps_newton": (1e-10, 5e-4),         # row 17
    "lammps_regression": (5e-13, 1e-6),     # row 18, relative (float32 calibrated: run-to-run identical)
    "lammps_replicate": (1e-10, 1e-5),      # row 20, relative
    "lammps_types": (1e-12, 5e-5),          # row 21
    "lammps_md": (1e-8, 1e-3),              # row 24
}


def dtype_name(dtype: Union[str, torch.dtype]) -> str:
    if isinstance(dtype, torch.dtype):
        dtype = str(dtype).replace("torch.", "")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    return dtype


def tolerance(check: str, dtype: Union[str, torch.dtype]) -> float:
    """Tolerance of ``check`` (a TEST_MATRIX row name) for a model of ``dtype``."""
    if check not in _TOL:
        raise ValueError(f"unknown check {check!r}; known: {sorted(_TOL)}")
    return _TOL[check][0 if dtype_name(dtype) == "float64" else 1]
