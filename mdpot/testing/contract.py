"""Running a model-contract module on ASE structures, for the checks of the test kit.

The kit sits below :mod:`mdpot.deploy` and :mod:`mdpot.calculator` (the deploy self-check and ``mdpot check`` call
it), so it drives the contract module directly: :func:`contract_outputs` on a :class:`~mdpot.data.Graph` (the raw
outputs, the global virial included, for the deploy self-check), and :class:`ContractCalculator`, a minimal ASE
calculator over a module whose energies and stress come from :func:`mdpot.data.evaluate`, so that finite
differences can use ASE's own helpers. :class:`mdpot.MDPotCalculator` is the full calculator (device, caching rules, per-atom stress).
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import BaseCalculator, Calculator, all_changes

from ..data import Batch, Graph, TypeMapper, atoms_to_graph, evaluate

#: Names of the contract's outputs, in the order the forward returns them.
CONTRACT_OUTPUTS = ("per-atom energy", "forces", "virial", "per-atom virial")


def contract_outputs(module: Any, graph: Graph, compute_atom_virial: bool = True) -> Tuple[torch.Tensor, ...]:
    """``module``'s contract outputs on ``graph`` (every atom local), detached: per-atom energy ``[N]`` eV, forces
    ``[N, 3]`` eV/Å, virial ``[3, 3]`` eV and per-atom virial ``[N, 3, 3]`` eV (``[0, 3, 3]`` without it)."""
    out = module(graph.pos, graph.atom_type, graph.edge_index, graph.edge_shift, graph.num_atoms, compute_atom_virial)
    return tuple(t.detach() for t in out)


class ContractCalculator(Calculator):
    """ASE calculator over a contract module: energy, free energy and per-atom energies (eV), forces (eV/Å),
    stress (eV/Å³, Voigt, ASE sign; 3-D cells only).

    Parameters
    ----------
    module : callable
        A model-contract module (TorchScript or eager ``Potential``) on the CPU.
    elements : sequence of str
        The model's elements in type order.
    r_max : float
        Neighbour cutoff, Å.

    Example
    -------
    >>> from mdpot.deploy import eager_model
    >>> model = eager_model(small_model("allegro"))
    >>> atoms.calc = ContractCalculator(model.module, model.elements, model.r_max)
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(self, module: Any, elements: Sequence[str], r_max: float) -> None:
        super().__init__()
        self.module = module
        self.r_max = float(r_max)
        self.mapper = TypeMapper(tuple(elements))

    def calculate(self, atoms: Optional[Atoms] = None, properties: Sequence[str] = ("energy",),
                  system_changes: List[str] = all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        graph = atoms_to_graph(self.atoms, self.r_max, self.mapper)
        with_stress = self.atoms.cell.rank == 3
        batch = Batch.from_graphs([graph], [self.atoms.get_volume()] if with_stress else None)
        pred = evaluate(self.module, batch, stress=with_stress)
        energy = float(pred.energy[0])
        self.results = {"energy": energy, "free_energy": energy, "energies": pred.atom_energy.detach().numpy(),
                        "forces": pred.forces.detach().numpy()}
        if with_stress:
            self.results["stress"] = pred.stress[0].detach().numpy()


def as_calculator(calc_or_model: Any) -> BaseCalculator:
    """An ASE calculator for ``calc_or_model``: an ASE calculator is returned as is; a loaded model (anything
    with ``module``, ``elements`` and ``r_max``, such as :class:`mdpot.deploy.LoadedModel`) is wrapped in a
    :class:`ContractCalculator`."""
    if isinstance(calc_or_model, BaseCalculator):
        return calc_or_model
    if all(hasattr(calc_or_model, a) for a in ("module", "elements", "r_max")):
        return ContractCalculator(calc_or_model.module, calc_or_model.elements, calc_or_model.r_max)
    raise TypeError(f"expected an ASE calculator or a loaded mdpot model, got {type(calc_or_model).__name__}")


def with_calculator(atoms: Atoms, calc: BaseCalculator) -> Atoms:
    """A copy of ``atoms`` with ``calc`` attached (the caller's structure is never moved)."""
    out = atoms.copy()
    out.calc = calc
    return out


def to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().to(torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)
