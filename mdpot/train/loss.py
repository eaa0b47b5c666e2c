"""The weighted MSE loss and the error metrics of predictions (:func:`mdpot.data.evaluate`) on a batch.

Loss: ``w_E * mean((dE / n_atoms)^2) + w_F * mean(dF_component^2) + w_S * mean(dS_component^2)`` with
energies in eV, forces in eV/Å and stresses in eV/Å³ (6 Voigt components, structures with a stress label
only). With per-structure weights (``training.kind_weights``) each squared error is multiplied by its structure's
weight (a structure's energy, its atoms' force components, its stress components) before the mean. Metrics: MAE
and RMSE of the energy per atom (meV/atom), force components (meV/Å) and stress components (GPa), unweighted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple

import torch
from ase.units import GPa

from ..data import Batch, Prediction

#: Metric names (with units) in the order they are reported.
METRICS = ("loss", "energy_mae_meV_atom", "energy_rmse_meV_atom", "forces_mae_meV_A", "forces_rmse_meV_A",
           "stress_mae_GPa", "stress_rmse_GPa")


@dataclass
class Errors:
    """Prediction minus reference: energy per atom ``[B]`` eV/atom, forces ``[N, 3]`` eV/Å, stress ``[M, 6]``
    eV/Å³ for the ``M`` structures with a stress label; ``weights``: the loss weight of each energy ``[B]``, force
    row ``[N]`` and stress row ``[M]``, or ``None`` when every weight is 1."""

    energy: torch.Tensor
    forces: torch.Tensor
    stress: torch.Tensor
    weights: Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None

    def terms(self):
        """``(name, errors, row weights or None)`` of the energy, forces and stress."""
        w = self.weights or (None, None, None)
        return (("energy", self.energy, w[0]), ("forces", self.forces, w[1]), ("stress", self.stress, w[2]))


def weighted_mse(tensor: torch.Tensor, weight: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean over the components of weight x squared error, each row's components taking its ``weight`` (the
    plain MSE when ``None``). The weights multiply, they are not renormalised per batch: a batch of low-weight
    structures adds little, whatever else is in it."""
    if weight is None:
        return tensor.square().mean()
    sq = tensor.square().reshape(tensor.shape[0], -1)
    return (weight.to(sq.dtype) * sq.sum(1)).sum() / sq.numel()


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
    weights = None
    if batch.weight is not None:
        w = batch.weight.to(e.device)
        weights = (w, w.index_select(0, batch.batch.to(e.device)), w[batch.stress_mask] if s.shape[0] else w[:0])
    return Errors(e, f, s, weights)


def loss_from_errors(err: Errors, weights: Mapping[str, float]) -> torch.Tensor:
    """Weighted MSE of one batch (terms without data or with weight 0 are left out)."""
    loss = err.energy.new_zeros(())
    for term, tensor, rows in err.terms():
        w = weights.get(term, 0.0)
        if w > 0 and tensor.numel():
            loss = loss + w * weighted_mse(tensor, rows)
    return loss


class MetricAccumulator:
    """Sums of absolute and squared errors over many batches, so epoch metrics are exact over all data
    (not averages of batch averages); the loss from weighted sums, as :func:`loss_from_errors` weighs."""

    def __init__(self) -> None:
        # per term: |error| sum, error^2 sum, components, weighted error^2 sum
        self._sums = {t: [0.0, 0.0, 0, 0.0] for t in ("energy", "forces", "stress")}

    def update(self, err: Errors) -> None:
        for term, tensor, rows in err.terms():
            t = tensor.detach()
            if t.numel():
                acc = self._sums[term]
                sq = t.square()
                acc[0] += float(t.abs().sum())
                acc[1] += float(sq.sum())
                acc[2] += t.numel()
                if rows is None:
                    acc[3] += float(sq.sum())
                else:
                    acc[3] += float((rows.detach().to(sq.dtype) * sq.reshape(sq.shape[0], -1).sum(1)).sum())

    def mse(self, term: str) -> Optional[float]:
        """The mean of weight x squared error of ``term`` (the loss's), or ``None`` without data."""
        _, _, n, wsq = self._sums[term]
        return wsq / n if n else None

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
            ab, sq, n = self._sums[term][:3]
            out[f"{name}_mae_{unit}"] = ab / n * factor if n else math.nan
            out[f"{name}_rmse_{unit}"] = math.sqrt(sq / n) * factor if n else math.nan
        return out
