"""ASE calculator for deployed mdpot models."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, List, Optional, Sequence, Union

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from ._malloc import tune_malloc as _tune_malloc
from .data import Graph, TypeMapper, atoms_to_graph
from .voigt import to_voigt

if TYPE_CHECKING:  # the deploy package imports torch.jit machinery; load it only when a model is loaded
    from .deploy import LoadedModel


class MDPotCalculator(Calculator):
    """ASE calculator running a deployed mdpot model through the model contract.

    Parameters
    ----------
    model : str, path or ``mdpot.deploy.LoadedModel``
        A file written by ``mdpot deploy``, or an already loaded model. A loaded model is used as it is when it
        sits on ``device``; otherwise the calculator works on a copy, so the caller's model is never moved.
    device : str, optional
        ``"cpu"`` or ``"cuda"`` (``"cuda:N"``). Default: the loaded model's device, or ``"cpu"`` for a file.
    tune_malloc : bool
        Tune glibc malloc for this process (``mdpot._malloc``: keeps freed memory in the heap, so that every
        call does not page-fault its whole working set again; per-atom cost otherwise grows with system size).
        A process-wide setting, applied once; ``MDPOT_MALLOC_TUNING=0`` in the environment also disables it.

    Properties: ``energy``/``free_energy`` (eV), ``energies`` (eV per atom), ``forces`` (eV/Å), ``stress``
    (eV/Å³, Voigt ``xx yy zz yz xz xy``, ASE sign) and ``stresses`` (per atom, eV/Å³). Stress needs a 3-D
    cell; periodicity may be full, partial or absent, and the cell may be smaller than the cutoff.

    Example
    -------
    >>> from ase.build import bulk
    >>> atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    >>> atoms.calc = MDPotCalculator("cu.pt")
    >>> atoms.get_potential_energy()
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress", "stresses"]

    def __init__(self, model: Union[str, os.PathLike, "LoadedModel"], device: Optional[str] = None,
                 tune_malloc: bool = True, **kwargs) -> None:
        from .deploy import LoadedModel, load_model

        super().__init__(**kwargs)
        if isinstance(model, LoadedModel):
            self.model = model if device is None else model.to(device)
        elif isinstance(model, (str, os.PathLike)):
            self.model = load_model(model, device="cpu" if device is None else device)
        else:
            raise TypeError(f"model must be a path or LoadedModel, got {type(model).__name__}")
        if tune_malloc:
            _tune_malloc()
        self.device = self.model.device
        self.r_max = self.model.r_max
        self.mapper = TypeMapper(self.model.elements)

    def graph(self, atoms: Atoms) -> Graph:
        """Model-contract inputs for ``atoms`` (neighbour list within r_max)."""
        return atoms_to_graph(atoms, self.r_max, self.mapper)

    def calculate(self, atoms: Optional[Atoms] = None, properties: Sequence[str] = ("energy",),
                  system_changes: List[str] = all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        want_stress = "stress" in properties or "stresses" in properties
        if want_stress and atoms.cell.rank < 3:
            raise PropertyNotImplementedError(
                f"stress needs a 3-D cell; this cell has rank {atoms.cell.rank} (pbc={atoms.pbc.tolist()})")
        g = self.graph(atoms).to(self.device)
        atom_energy, forces, virial, atom_virial = self.model(
            g.pos, g.atom_type, g.edge_index, g.edge_shift, g.num_atoms, "stresses" in properties)
        atom_energy = atom_energy.detach().cpu().numpy()
        forces = forces.detach().cpu().numpy()
        _check_finite(atom_energy, forces)
        energy = float(atom_energy.sum())
        self.results = {"energy": energy, "free_energy": energy, "energies": atom_energy, "forces": forces}
        if atoms.cell.rank == 3:
            volume = atoms.get_volume()
            self.results["stress"] = to_voigt(-virial.detach().cpu().numpy() / volume)
            if "stresses" in properties:
                av = -atom_virial.detach().cpu().numpy() / volume
                self.results["stresses"] = to_voigt(av)


def _check_finite(atom_energy: np.ndarray, forces: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(atom_energy) | ~np.isfinite(forces).all(axis=1))
    if bad.size:
        raise ValueError(f"model returned non-finite energy or forces for atom indices {bad[:10].tolist()}")
