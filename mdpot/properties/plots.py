"""The property comparison's plot (PNG, matplotlib's Agg backend)."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Union

import numpy as np

if TYPE_CHECKING:
    from .report import PropertyComparison

PathLike = Union[str, os.PathLike]


def plot_comparison(comparison: "PropertyComparison", path: PathLike) -> None:
    """Equation of state (eV/atom vs Å³/atom, each relative to its own minimum), dimer binding curve (eV vs Å)
    and, when measured, the liquid RDF; model and reference in each panel. Written to ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only: never open a window or need a display
    import matplotlib.pyplot as plt

    from .._files import atomic_write

    curves = {"model": comparison.model.curves, "reference": comparison.ref.curves}
    panels = ["eos", "dimer"] + (["rdf"] if "rdf_r" in curves["model"] and "rdf_r" in curves["reference"] else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 4.0), constrained_layout=True, squeeze=False)
    style = {"model": dict(color="C0", lw=1.6), "reference": dict(color="k", lw=1.0, ls="--")}
    for ax, panel in zip(axes[0], panels):
        for who, c in curves.items():
            label = comparison.model_name if who == "model" else comparison.reference
            if panel == "eos":
                e = np.asarray(c["eos_energy"])
                ax.plot(c["eos_volume"], 1e3 * (e - e.min()), marker="o", ms=3, label=label, **style[who])
                ax.set(xlabel="volume (Å³/atom)", ylabel="E - E_min (meV/atom)", title="equation of state")
            elif panel == "dimer":
                ax.plot(c["dimer_r"], c["dimer_energy"], label=label, **style[who])
                ax.axhline(0.0, color="0.7", lw=0.6)
                e = np.asarray(curves["reference"]["dimer_energy"])
                ax.set_ylim(1.2 * min(e.min(), np.min(c["dimer_energy"])), max(5.0, 0.1 * e.max()))
                ax.set(xlabel="r (Å)", ylabel="E(r) - 2 E_atom (eV)", title="dimer")
            else:
                ax.plot(c["rdf_r"], c["rdf_g"], label=label, **style[who])
                ax.set(xlabel="r (Å)", ylabel="g(r)", title="liquid RDF")
        ax.legend(fontsize=8)
    fig.suptitle(f"{comparison.element} ({comparison.structure}): {comparison.model_name} vs {comparison.reference}",
                 fontsize=10)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
