"""New reference labels for given structures (``mdpot label``): the frames ``mdpot select`` picked, labelled by the
reference potential of one of :data:`~mdpot.data.reference.SYSTEMS` exactly as ``mdpot data`` labels that system.

Each frame goes through :func:`~mdpot.data.reference._common.reference_frame`, the function every frame of
``mdpot data`` comes from: a clean copy wrapped into its cell along its periodic directions, with the potential's
energy (eV), forces (eV/Å) and, for a 3-D periodic cell, stress (eV/Å³, ASE Voigt order and sign); no kinetic
part. ``info`` gets ``kind`` (default ``selected``, what ``training.kind_weights`` reads) and ``system`` (the system
name) and keeps the input frame's other keys (``mdpot select``'s ``committee_max_force_std``,
``committee_energy_std``, ``source_frame``, ``selection_rank``) except labels it may carry (:data:`LABEL_KEYS`);
the input's per-atom arrays are kept likewise (``committee_forces_std``), except velocities and labels.

Example
-------
>>> import ase.io
>>> from mdpot.data.reference.labels import label_structures
>>> frames = label_structures("cu-emt", ase.io.read("picked.extxyz", ":"))          # doctest: +SKIP
>>> frames[0].info["kind"], frames[0].get_potential_energy()                          # doctest: +SKIP
('selected', -0.93...)
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np
from ase import Atoms

from ._common import Labeller, progress_bar, reference_frame
from .emt import EMT_ELEMENTS

__all__ = ["LABEL_KEYS", "REFERENCES", "Reference", "check_structures", "label_structures", "labeller"]

#: ``info`` keys and per-atom arrays of an input frame that are labels (of another potential, or a model's), never
#: carried into the labelled frame; nor is ``kind`` or ``system``, which the labelled frame gets anew.
LABEL_KEYS = frozenset({"energy", "free_energy", "forces", "stress", "stresses", "energies", "virial", "dipole",
                        "charges", "magmoms", "kind", "system"})
#: Per-atom arrays of an ``Atoms`` that describe the structure itself or its motion, not kept either.
_OWN_ARRAYS = frozenset({"numbers", "positions", "momenta", "velocities", "masses", "tags", "initial_magmoms",
                         "initial_charges"})


@dataclass(frozen=True)
class Reference:
    """The reference potential of a system: its elements and the potential's name (for messages)."""

    system: str
    elements: Tuple[str, ...]
    potential: str


#: The systems ``mdpot data`` makes and ``mdpot label`` labels.
REFERENCES: Dict[str, Reference] = {
    "cu-emt": Reference("cu-emt", EMT_ELEMENTS["cu"], "EMT"),
    "cuau-emt": Reference("cuau-emt", EMT_ELEMENTS["cuau"], "EMT"),
    "si-sw": Reference("si-sw", ("Si",), "Stillinger-Weber"),
}


def _reference(system: str) -> Reference:
    if system not in REFERENCES:
        raise ValueError(f"unknown reference {system!r}; expected one of {', '.join(REFERENCES)}")
    return REFERENCES[system]


def check_structures(system: str, frames: Sequence[Atoms], source: str = "input") -> None:
    """Raise ``ValueError`` (one line naming the frame of ``source`` and what is wrong) unless the reference of
    ``system`` can label every frame: not empty, only the system's elements, a periodic direction only along a
    non-zero cell vector and, for Stillinger-Weber (run in LAMMPS's periodic boxes), fully periodic or not at all."""
    ref = _reference(system)
    for k, atoms in enumerate(frames):
        where = f"{source}: frame {k}"
        if len(atoms) == 0:
            raise ValueError(f"{where} has no atoms")
        others = sorted(set(atoms.get_chemical_symbols()) - set(ref.elements), key=atoms.get_chemical_symbols().index)
        if others:
            hint = "; cuau-emt labels Cu and Au" if system == "cu-emt" and set(others) == {"Au"} else ""
            raise ValueError(f"{where} has {others[0]}, which {system} ({ref.potential}) does not label (elements: "
                             f"{' '.join(ref.elements)}){hint}")
        lengths = atoms.cell.lengths()
        if np.any(atoms.pbc & (lengths == 0.0)):
            raise ValueError(f"{where} is periodic along a zero cell vector (pbc {atoms.pbc.tolist()}, cell lengths "
                             f"{lengths.round(6).tolist()} Å)")
        if atoms.pbc.all() and abs(atoms.cell.volume) < 1e-9:
            raise ValueError(f"{where} is periodic but its cell has zero volume")
        if ref.potential == "Stillinger-Weber" and atoms.pbc.any() and not atoms.pbc.all():
            raise ValueError(f"{where} is partly periodic (pbc {atoms.pbc.tolist()}); {system} labels fully periodic "
                             f"or non-periodic structures")
        if not np.all(np.isfinite(atoms.positions)):
            raise ValueError(f"{where} has non-finite positions")


@contextmanager
def labeller(system: str) -> Iterator[Labeller]:
    """The :data:`~mdpot.data.reference._common.Labeller` of ``system``'s reference potential, open for the
    ``with`` block (Stillinger-Weber holds an in-process LAMMPS, released at the end)."""
    ref = _reference(system)
    if ref.potential == "EMT":
        from .emt import emt_labels

        yield emt_labels
        return
    from ...lammps.embedded import StillingerWeberEngine
    from .stillinger_weber import sw_labeller

    engine = StillingerWeberEngine()
    try:
        yield sw_labeller(engine)
    finally:
        engine.close()


def label_structures(system: str, frames: Sequence[Atoms], kind: str = "selected", progress: bool = True,
                     source: str = "input") -> List[Atoms]:
    """``frames`` labelled by the reference potential of ``system`` (``cu-emt``, ``cuau-emt``, ``si-sw``), as
    ``mdpot data`` labels that system; see the module docstring for the ``info`` and arrays kept.

    Parameters
    ----------
    system : str
        One of :data:`REFERENCES`.
    frames : sequence of ase.Atoms
        Structures (any calculator, labels or velocities they carry are dropped).
    kind : str
        ``info["kind"]`` of every labelled frame (what ``training.kind_weights`` weighs).
    progress : bool
        Show a progress bar on stderr.
    source : str
        Names the input in error messages.

    Returns
    -------
    list of ase.Atoms
        With a ``SinglePointCalculator`` holding energy (eV), forces (eV/Å) and, for 3-D periodic cells, stress
        (eV/Å³).

    Raises
    ------
    ValueError
        Unknown ``system``, an empty ``kind``, or a frame the reference cannot label (:func:`check_structures`),
        before any frame is labelled.
    """
    if not isinstance(kind, str) or not kind.strip() or kind != kind.strip() or "\n" in kind:
        raise ValueError(f"kind must be a non-empty name without surrounding spaces, got {kind!r}")
    check_structures(system, frames, source)
    out: List[Atoms] = []
    with labeller(system) as label, progress_bar(len(frames), f"{system} labels", progress) as bar:
        for atoms in frames:
            kept = {k: v for k, v in atoms.info.items() if k not in LABEL_KEYS}
            frame = reference_frame(atoms, label, kind=kind, system=system, **kept)
            for name, values in atoms.arrays.items():
                if name not in _OWN_ARRAYS and name not in LABEL_KEYS:
                    frame.arrays[name] = np.array(values)
            out.append(frame)
            bar.update()
    return out
