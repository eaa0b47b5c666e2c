"""Errors of a deployed model against labelled structures: ``mdpot validate model.pt data.xyz``.

Energies per atom in meV/atom, force components in meV/Å (overall and per element of the atom), stress
components in GPa (structures with a stress label and a 3-D periodic cell only). MAE and RMSE each.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
from ase.units import GPa

PathLike = Union[str, os.PathLike]


class ThresholdExceeded(RuntimeError):
    """A ``--max-*`` acceptance threshold of ``mdpot validate`` was exceeded."""


@dataclass(frozen=True)
class ErrorStats:
    """MAE and RMSE of a set of errors, in ``unit``; ``count`` values entered them."""

    mae: float
    rmse: float
    count: int
    unit: str

    @classmethod
    def of(cls, err: np.ndarray, unit: str, factor: float = 1.0) -> "ErrorStats":
        err = np.asarray(err, dtype=np.float64).ravel() * factor
        if err.size == 0:
            return cls(math.nan, math.nan, 0, unit)
        return cls(float(np.abs(err).mean()), float(np.sqrt(np.square(err).mean())), int(err.size), unit)


@dataclass
class ValidationReport:
    """The numbers ``mdpot validate`` prints, plus the reference/predicted values behind them.

    Arrays: ``energy_ref``/``energy_pred`` ``[S]`` eV/atom; ``forces_ref``/``forces_pred`` ``[N, 3]`` eV/Å;
    ``symbols [N]``; ``stress_ref``/``stress_pred`` ``[M, 6]`` eV/Å³ (Voigt, ASE sign).
    """

    model: str
    data: str
    num_structures: int
    num_atoms: int
    energy: ErrorStats
    forces: ErrorStats
    forces_per_element: Dict[str, ErrorStats]
    stress: Optional[ErrorStats]
    energy_ref: np.ndarray = field(repr=False)
    energy_pred: np.ndarray = field(repr=False)
    forces_ref: np.ndarray = field(repr=False)
    forces_pred: np.ndarray = field(repr=False)
    symbols: List[str] = field(repr=False)
    stress_ref: np.ndarray = field(repr=False)
    stress_pred: np.ndarray = field(repr=False)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready numbers (units in the key names; stress keys are null without stress labels)."""
        s = self.stress
        return {
            "model": self.model,
            "data": self.data,
            "num_structures": self.num_structures,
            "num_atoms": self.num_atoms,
            "num_stress_labels": 0 if s is None else s.count // 6,
            "energy_mae_meV_atom": self.energy.mae,
            "energy_rmse_meV_atom": self.energy.rmse,
            "forces_mae_meV_A": self.forces.mae,
            "forces_rmse_meV_A": self.forces.rmse,
            "forces_per_element": {el: {"mae_meV_A": st.mae, "rmse_meV_A": st.rmse, "num_atoms": st.count // 3}
                                   for el, st in self.forces_per_element.items()},
            "stress_mae_GPa": None if s is None else s.mae,
            "stress_rmse_GPa": None if s is None else s.rmse,
        }

    def table(self) -> str:
        """A readable table of every number."""
        n_stress = 0 if self.stress is None else self.stress.count // 6
        lines = [f"model {self.model}", f"data  {self.data}: {self.num_structures} structures, {self.num_atoms} atoms, "
                 f"{n_stress} with stress", "",
                 f"{'quantity':<30}{'MAE':>12}{'RMSE':>12}  unit"]
        rows = [("energy per atom", self.energy), ("forces (components)", self.forces)]
        rows += [(f"  forces on {el} ({st.count // 3} atoms)", st) for el, st in self.forces_per_element.items()]
        if self.stress is not None:
            rows.append(("stress (components)", self.stress))
        for name, st in rows:
            lines.append(f"{name:<30}{st.mae:>12.4g}{st.rmse:>12.4g}  {st.unit}")
        return "\n".join(lines)

    def plot(self, path: PathLike) -> None:
        """Parity plots (energy per atom, force components, stress components if present) as a PNG."""
        from .plots import plot_parity

        panels = [("energy per atom", self.energy_ref, self.energy_pred, "eV/atom"),
                  ("force component", self.forces_ref, self.forces_pred, "eV/Å")]
        if self.stress is not None:
            panels.append(("stress component", self.stress_ref * (1.0 / GPa), self.stress_pred * (1.0 / GPa), "GPa"))
        plot_parity(panels, path, title=f"{Path(self.model).name} on {Path(self.data).name}")

    def check(self, max_force_mae: Optional[float] = None, max_energy_mae: Optional[float] = None) -> None:
        """Raise :class:`ThresholdExceeded` naming every exceeded threshold (meV/Å, meV/atom)."""
        failures = []
        if max_force_mae is not None and not self.forces.mae <= max_force_mae:
            failures.append(f"force MAE {self.forces.mae:.4g} meV/Å > --max-force-mae {max_force_mae:g}")
        if max_energy_mae is not None and not self.energy.mae <= max_energy_mae:
            failures.append(f"energy MAE {self.energy.mae:.4g} meV/atom > --max-energy-mae {max_energy_mae:g}")
        if failures:
            raise ThresholdExceeded("validation failed: " + "; ".join(failures))


def _is_mdpot_checkpoint(path: PathLike) -> bool:
    from ..interop.nequip import MDPOT_CHECKPOINT, detect_source_kind

    try:
        return detect_source_kind(path) == MDPOT_CHECKPOINT
    except (OSError, ValueError):  # load_model reports missing and unknown files
        return False


def validate(model, data: PathLike, energy_key: str = "energy", forces_key: str = "forces",
             stress_key: Optional[str] = "stress", batch_size: int = 8) -> ValidationReport:
    """Evaluate ``model`` on every structure of ``data``: a deployed file, a :class:`mdpot.deploy.LoadedModel`
    or an mdpot training checkpoint (told apart by content, not by name; evaluated eagerly in float64).

    Raises ``FileNotFoundError``/``ValueError`` naming the file and structure for unreadable files, missing
    energy/forces labels and elements the model does not know.

    Example
    -------
    >>> report = validate("cu.pt", "cu_test.xyz")
    >>> print(report.table())
    """
    from ..data import collate, evaluate, load_labelled, to_samples
    from ..deploy import LoadedModel, load_model

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch size must be a positive integer, got {batch_size!r}")
    if isinstance(model, LoadedModel):
        loaded = model
    elif _is_mdpot_checkpoint(model):  # a training checkpoint: evaluate it eagerly in float64
        from ..deploy import eager_model
        from ..models import load_checkpoint

        loaded = eager_model(load_checkpoint(model)[0], "float64", path=model)
    else:
        loaded = load_model(model)
    items = load_labelled(data, energy_key=energy_key, forces_key=forces_key, stress_key=stress_key)
    samples = to_samples(items, loaded.r_max, loaded.elements)
    e_ref, e_pred, f_ref, f_pred, s_ref, s_pred = [], [], [], [], [], []
    for start in range(0, len(samples), batch_size):
        batch = collate(samples[start:start + batch_size])
        with_stress = bool(batch.stress_mask.any())
        pred = evaluate(loaded, batch, stress=with_stress)
        e_ref.append((batch.energy / batch.num_atoms).numpy())
        e_pred.append((pred.energy.detach() / batch.num_atoms).numpy())
        f_ref.append(batch.forces.numpy())
        f_pred.append(pred.forces.detach().numpy())
        if with_stress:
            s_ref.append(batch.stress[batch.stress_mask].numpy())
            s_pred.append(pred.stress.detach()[batch.stress_mask].numpy())
    e_ref, e_pred = np.concatenate(e_ref), np.concatenate(e_pred)
    f_ref, f_pred = np.concatenate(f_ref), np.concatenate(f_pred)
    s_ref = np.concatenate(s_ref) if s_ref else np.zeros((0, 6))
    s_pred = np.concatenate(s_pred) if s_pred else np.zeros((0, 6))
    symbols = [sym for it in items for sym in it.atoms.get_chemical_symbols()]
    sym_arr = np.array(symbols)
    per_element = {el: ErrorStats.of(f_pred[sym_arr == el] - f_ref[sym_arr == el], "meV/Å", 1e3)
                   for el in loaded.elements if (sym_arr == el).any()}
    return ValidationReport(
        model=str(loaded.path) if loaded.path is not None else "<in memory>",
        data=str(data),
        num_structures=len(samples),
        num_atoms=len(symbols),
        energy=ErrorStats.of(e_pred - e_ref, "meV/atom", 1e3),
        forces=ErrorStats.of(f_pred - f_ref, "meV/Å", 1e3),
        forces_per_element=per_element,
        stress=ErrorStats.of(s_pred - s_ref, "GPa", 1.0 / GPa) if len(s_ref) else None,
        energy_ref=e_ref, energy_pred=e_pred, forces_ref=f_ref, forces_pred=f_pred, symbols=symbols,
        stress_ref=s_ref, stress_pred=s_pred,
    )


def write_json(report: ValidationReport, path: PathLike) -> None:
    """Write :meth:`ValidationReport.to_dict` as indented UTF-8 JSON to ``path``; the model and data files are
    recorded relative to the working directory, or by name when outside it (never as absolute paths)."""
    from .._files import atomic_write_text, portable_path

    d = report.to_dict()
    d.update({key: portable_path(d[key]) for key in ("model", "data") if d[key] != "<in memory>"})
    atomic_write_text(path, json.dumps(d, indent=2, ensure_ascii=False) + "\n")


__all__ = ["ErrorStats", "ThresholdExceeded", "ValidationReport", "validate", "write_json"]
