"""Parity plots of a validation (PNG, matplotlib's Agg backend)."""
from __future__ import annotations

import os
from typing import Optional, Sequence, Tuple, Union

import numpy as np

PathLike = Union[str, os.PathLike]


def plot_parity(panels: Sequence[Tuple[str, np.ndarray, np.ndarray, str]], path: PathLike,
                title: Optional[str] = None) -> None:
    """One parity panel per ``(name, reference [M], predicted [M], unit)``, with the y = x line and the MAE,
    written to ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only: never open a window or need a display
    import matplotlib.pyplot as plt

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
