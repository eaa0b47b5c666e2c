"""What a training run derives from its data before the first step: the validation hold-out and the
statistics that initialise the model (per-element energy shift and scale, mean neighbour count).

These are choices of the training procedure, not facts of a dataset, so they live here; reading labelled
data, graphs and batches live in :mod:`mdpot.data`.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..data import Labelled, Sample, element_counts


def fit_energy_shift(items: Sequence[Labelled], elements: Sequence[str]) -> np.ndarray:
    """Per-element energies (eV) minimising ``sum_s (E_s - sum_el n_s,el * shift_el)^2`` over ``items``
    (the minimum-norm solution when compositions are linearly dependent)."""
    counts = element_counts(items, elements)
    energies = np.array([it.energy for it in items])
    shift, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    return shift


def isolated_atom_energies(items: Sequence[Labelled], samples: Sequence[Sample]) -> Dict[str, float]:
    """Energy (eV) per element of the isolated-atom frames among ``items``: one atom and no edge within the
    graphs' cutoff (``samples[k]`` is the graph of ``items[k]``).

    Raises
    ------
    ValueError
        Two isolated-atom frames of one element whose energies differ by more than 1e-6 eV.
    """
    found: Dict[str, Tuple[float, str]] = {}
    for item, sample in zip(items, samples):
        if sample.num_atoms != 1 or sample.graph.num_edges != 0:
            continue
        el = item.atoms.get_chemical_symbols()[0]
        if el in found and abs(found[el][0] - item.energy) > 1e-6:
            raise ValueError(f"isolated-atom frames of {el} disagree: {found[el][0]!r} eV ({found[el][1]}) and "
                             f"{item.energy!r} eV ({item.where})")
        found.setdefault(el, (float(item.energy), item.where))
    return {el: e for el, (e, _) in found.items()}


def force_rms(items: Sequence[Labelled], weights: Optional[Sequence[float]] = None) -> float:
    """Root mean square of all reference force components, eV/Å; with ``weights`` (one per item), a weighted
    RMS in which each item's components count with its weight (``training.kind_weights``)."""
    w = [1.0] * len(items) if weights is None else [float(x) for x in weights]
    sq = sum(wk * float(np.square(it.forces).sum()) for wk, it in zip(w, items))
    n = sum(wk * it.forces.size for wk, it in zip(w, items))
    return float(np.sqrt(sq / n)) if n > 0 else 0.0


def mean_neighbors(samples: Sequence[Sample]) -> float:
    """Mean number of neighbours per atom within the graphs' cutoff."""
    edges = sum(s.graph.num_edges for s in samples)
    atoms = sum(s.num_atoms for s in samples)
    return edges / atoms


def split_indices(n: int, fraction: float, seed: int) -> Tuple[List[int], List[int]]:
    """Deterministic ``(train, validation)`` index lists: a permutation drawn from ``seed``, ``fraction``
    of it (at least one structure) held out. Both lists are sorted."""
    if n < 2:
        raise ValueError(f"cannot hold out a validation set from {n} training structure(s); give data.validation")
    n_val = min(n - 1, max(1, int(round(fraction * n))))
    perm = np.random.default_rng(seed).permutation(n)
    return sorted(perm[n_val:].tolist()), sorted(perm[:n_val].tolist())


__all__ = ["fit_energy_shift", "force_rms", "isolated_atom_energies", "mean_neighbors", "split_indices"]
