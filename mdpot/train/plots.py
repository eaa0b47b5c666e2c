"""The learning curve of a training run (PNG, matplotlib's Agg backend)."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping, Sequence, Union

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
    from .._files import atomic_write

    try:
        with atomic_write(path) as tmp:  # an interrupted run leaves no half-written image
            fig.savefig(os.fspath(tmp), dpi=110, format=Path(path).suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
