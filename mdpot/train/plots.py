"""PNG plots with matplotlib's Agg backend: the learning curve of a run and parity plots of a validation."""
from __future__ import annotations

import math
import os
from typing import Mapping, Optional, Sequence, Tuple, Union

import numpy as np

PathLike = Union[str, os.PathLike]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _finite(values: Sequence[float]) -> np.ndarray:
    a = np.asarray(values, dtype=float)
    return np.where(np.isfinite(a) & (a > 0), a, np.nan)


def plot_learning_curve(history: Sequence[Mapping[str, float]], path: PathLike) -> None:
    """Loss and force MAE (meV/Å) of train and validation against epoch, log scale."""
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, key, label in ((axes[0], "loss", "loss (weighted MSE)"), (axes[1], "forces_mae_meV_A", "force MAE (meV/Å)")):
        for split, name in (("train", "train"), ("val", "validation")):
            values = _finite([row.get(f"{split}_{key}", math.nan) for row in history])
            ax.plot(epochs, values, marker="o" if len(epochs) < 30 else None, ms=3, label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        if np.isfinite(_finite([row.get(f"val_{key}", math.nan) for row in history])).any():
            ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.savefig(os.fspath(path), dpi=110)
    plt.close(fig)


def plot_parity(panels: Sequence[Tuple[str, np.ndarray, np.ndarray, str]], path: PathLike,
                title: Optional[str] = None) -> None:
    """One parity panel per ``(name, reference, predicted, unit)``, with the y = x line and the MAE."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), constrained_layout=True, squeeze=False)
    for ax, (name, ref, pred, unit) in zip(axes[0], panels):
        ref = np.asarray(ref, dtype=float).ravel()
        pred = np.asarray(pred, dtype=float).ravel()
        lo = float(min(ref.min(), pred.min()))
        hi = float(max(ref.max(), pred.max()))
        pad = 0.05 * (hi - lo or 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=0.8)
        ax.scatter(ref, pred, s=4 if ref.size > 500 else 10, alpha=0.5, edgecolors="none")
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_aspect("equal")
        ax.set_xlabel(f"reference {name} ({unit})")
        ax.set_ylabel(f"predicted {name} ({unit})")
        mae = float(np.abs(pred - ref).mean())
        ax.set_title(f"{name}: MAE {mae:.3g} {unit}")
        ax.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.savefig(os.fspath(path), dpi=110)
    plt.close(fig)
