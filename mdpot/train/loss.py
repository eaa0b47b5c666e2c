"""The weighted MSE loss and the error metrics of predictions (:func:`mdpot.data.evaluate`) on a batch.

Loss: ``w_E * mean((dE / n_atoms)^2) + w_F * mean(dF_component^2) + w_S * mean(dS_component^2)`` with
energies in eV, forces in eV/Å and stresses in eV/Å³ (6 Voigt components, structures with a stress label
only). Metrics: MAE and RMSE of the energy per atom (meV/atom), force components (meV/Å) and stress
components (GPa).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Mapping, Optional

import torch
from ase.units import GPa

from ..data import Batch, Prediction

#: Metric names (with units) in the order they are reported.
METRICS = ("loss", "energy_mae_meV_atom", "energy_rmse_meV_atom", "forces_mae_meV_A", "forces_rmse_meV_A",
           "stress_mae_GPa", "stress_rmse_GPa")


@dataclass
class Errors:
    """Prediction minus reference: energy per atom ``[B]`` eV/atom, forces ``[N, 3]`` eV/Å, stress ``[M, 6]``
    eV/Å³ for the ``M`` structures with a stress label."""

    energy: torch.Tensor
    forces: torch.Tensor
    stress: torch.Tensor


def errors(pred: Prediction, batch: Batch) -> Errors:
    """Errors of ``pred`` against the labels of ``batch`` (stress only where ``batch.stress_mask``)."""
    if not batch.has_labels:
        raise ValueError("errors need a labelled batch (mdpot.data.collate of labelled samples)")
    e = (pred.energy - batch.energy) / batch.num_atoms
    f = pred.forces - batch.forces
    if pred.stress is None:
        s = pred.forces.new_zeros((0, 6))
    else:
        s = (pred.stress - batch.stress)[batch.stress_mask]
    return Errors(e, f, s)


def loss_from_errors(err: Errors, weights: Mapping[str, float]) -> torch.Tensor:
    """Weighted MSE of one batch (terms without data or with weight 0 are left out)."""
    loss = err.energy.new_zeros(())
    for term, tensor in (("energy", err.energy), ("forces", err.forces), ("stress", err.stress)):
        w = weights.get(term, 0.0)
        if w > 0 and tensor.numel():
            loss = loss + w * tensor.square().mean()
    return loss


class MetricAccumulator:
    """Sums of absolute and squared errors over many batches, so epoch metrics are exact over all data
    (not averages of batch averages)."""

    def __init__(self) -> None:
        self._sums = {t: [0.0, 0.0, 0] for t in ("energy", "forces", "stress")}

    def update(self, err: Errors) -> None:
        for term, tensor in (("energy", err.energy), ("forces", err.forces), ("stress", err.stress)):
            t = tensor.detach()
            if t.numel():
                acc = self._sums[term]
                acc[0] += float(t.abs().sum())
                acc[1] += float(t.square().sum())
                acc[2] += t.numel()

    def mse(self, term: str) -> Optional[float]:
        _, sq, n = self._sums[term]
        return sq / n if n else None

    def compute(self, weights: Mapping[str, float]) -> Dict[str, float]:
        """Loss (same weighting as :func:`loss_from_errors`) and MAE/RMSE in meV/atom, meV/Å and GPa;
        metrics without data are NaN."""
        out = {"loss": 0.0}
        for term in ("energy", "forces", "stress"):
            mse = self.mse(term)
            if mse is not None and weights.get(term, 0.0) > 0:
                out["loss"] += weights[term] * mse
        units = {"energy": ("energy", "meV_atom", 1e3), "forces": ("forces", "meV_A", 1e3),
                 "stress": ("stress", "GPa", 1.0 / GPa)}
        for term, (name, unit, factor) in units.items():
            ab, sq, n = self._sums[term]
            out[f"{name}_mae_{unit}"] = ab / n * factor if n else math.nan
            out[f"{name}_rmse_{unit}"] = math.sqrt(sq / n) * factor if n else math.nan
        return out
