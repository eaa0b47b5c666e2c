"""Comparison helpers whose failure messages give the max error, the tolerance and the magnitude."""
from __future__ import annotations

from typing import Union

import numpy as np
import torch

ArrayLike = Union[np.ndarray, torch.Tensor, float]


def _np(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().to(torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def max_error(actual: ArrayLike, expected: ArrayLike) -> float:
    a, b = _np(actual), _np(expected)
    if a.shape != b.shape:
        raise AssertionError(f"shape mismatch: {a.shape} vs {b.shape}")
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def assert_allclose(actual: ArrayLike, expected: ArrayLike, tol: float, what: str, rtol: float | None = None) -> None:
    """``|actual - expected| <= tol + rtol * |expected|`` elementwise (``rtol`` defaults to ``tol``)."""
    a, b = _np(actual), _np(expected)
    if a.shape != b.shape:
        raise AssertionError(f"{what}: shape {a.shape} differs from expected {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise AssertionError(f"{what}: non-finite values")
    rtol = tol if rtol is None else rtol
    err = np.abs(a - b)
    bound = tol + rtol * np.abs(b)
    if (err > bound).any():
        k = int(np.argmax(err - bound))
        raise AssertionError(
            f"{what}: max |error| {err.max():.3e} exceeds tolerance {tol:.1e} (atol) + {rtol:.1e} (rtol); "
            f"worst at flat index {k}: {a.flat[k]:.12g} vs {b.flat[k]:.12g}; magnitude max |expected| "
            f"{np.abs(b).max() if b.size else 0.0:.3e}")
