"""``mdpot select``: pick the frames of a trajectory where a committee disagrees most, for new reference labels.

Frames are ranked by the committee's maximum force deviation (``max_force_std``, eV/Å: over the atoms of
``sqrt(mean_k |F_k,i - F̄_i|²)``, :class:`mdpot.MDPotCalculator`), highest first. Going down that ranking, a frame
is a near-duplicate, and skipped, when a frame already picked has the same atoms (same count and the same element
in each position) and their RMS minimum-image displacement is below ``min_distance`` Å:
``sqrt(mean_i |mic(r_i - r'_i)|²)``, with the minimum-image convention of the candidate's cell and periodicity. The
first ``top`` frames left are written, in ranking order, as extxyz without any energy or forces (ready for a
reference calculator), each with ``info`` ``committee_max_force_std`` (eV/Å), ``committee_energy_std`` (eV),
``source_frame`` (its index in TRAJ) and ``selection_rank`` (0 = most uncertain), and the per-atom array
``committee_forces_std`` (eV/Å).

Example
-------
``mdpot select md.extxyz --model committee.pt --top 20 --min-distance 0.1 -o picked.extxyz``
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence

import numpy as np
from ase import Atoms


@dataclass(frozen=True)
class Picked:
    """One selected frame: its index in the trajectory, its deviations and the frame as written."""

    frame: int
    max_force_std: float
    energy_std: float
    atoms: Atoms


def rms_displacement(a: Atoms, b: Atoms) -> float:
    """RMS minimum-image displacement (Å) between two frames of the same atoms, in ``a``'s cell and periodicity."""
    from ase.geometry import find_mic

    delta = a.positions - b.positions
    if a.pbc.any():
        delta, _ = find_mic(delta, a.cell, a.pbc)
    return float(np.sqrt((delta ** 2).sum(axis=1).mean())) if len(a) else 0.0


def same_atoms(a: Atoms, b: Atoms) -> bool:
    return len(a) == len(b) and bool(np.array_equal(a.numbers, b.numbers))


def map_types(frames: Sequence[Atoms], elements: Sequence[str]) -> None:
    """Give every atom the element of its LAMMPS type, in place: ASE reads a dump without an element column with
    atomic number = type, so type ``k`` (1-based) becomes ``elements[k - 1]``."""
    from ase.data import atomic_numbers

    for name in elements:
        if name not in atomic_numbers:
            raise ValueError(f"--elements: unknown element {name!r}")
    numbers = np.array([atomic_numbers[name] for name in elements])
    for k, atoms in enumerate(frames):
        types = atoms.numbers
        if len(types) and (types.min() < 1 or types.max() > len(elements)):
            bad = int(types.max() if types.max() > len(elements) else types.min())
            raise ValueError(f"frame {k} has atom type {bad} but --elements names {len(elements)} type(s) "
                             f"({' '.join(elements)})")
        atoms.numbers = numbers[types - 1]


def read_frames(path: str, format: Optional[str], elements: Optional[Sequence[str]], what: str) -> List[Atoms]:
    """Every frame of ``path`` (any ``ase.io`` format; ``format`` None: ASE guesses), with ``elements`` given to
    LAMMPS atom types (:func:`map_types`): what ``mdpot select`` and ``mdpot label`` read. ``what`` names the content
    in messages."""
    from .data.labelled import read_structures

    frames = read_structures(path, format=format, what=what)
    if elements:
        map_types(frames, elements)
    return frames


def ase_format(text: str) -> str:
    """argparse type of ``--format``: an ``ase.io`` format name."""
    from ase.io.formats import ioformats

    if text not in ioformats:
        raise argparse.ArgumentTypeError(f"unknown ase.io format {text!r} (e.g. extxyz, lammps-dump-text, traj)")
    return text


def add_frame_arguments(p, name: str) -> None:
    """``--format`` and ``--elements`` of a command reading frames from the file ``name`` (a LAMMPS dump too)."""
    p.add_argument("--format", type=ase_format, default=None,
                   help=f"ase.io format of {name} when its name and content do not say (e.g. lammps-dump-text)")
    p.add_argument("--elements", nargs="+", metavar="ELEMENT",
                   help="element of each LAMMPS atom type, in type order (type 1 first), for a dump without an "
                        "element column (ASE reads type k as atomic number k)")


def select_frames(frames: Sequence[Atoms], calc: Any, top: int, min_distance: float = 0.0,
                  progress: Optional[Any] = None) -> List[Picked]:
    """The ``top`` frames of ``frames`` with the highest committee force deviation, near-duplicates (RMS
    minimum-image displacement below ``min_distance`` Å from a frame already picked with the same atoms) skipped.
    ``calc`` is an :class:`mdpot.MDPotCalculator` of a committee. ``progress(k, n)`` is called after each frame."""
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise ValueError(f"top must be a positive integer, got {top!r}")
    if not (np.isfinite(min_distance) and min_distance >= 0):
        raise ValueError(f"min_distance must be a non-negative distance in Å, got {min_distance!r}")
    if getattr(calc, "committee_size", 1) < 2:
        raise ValueError("selection needs a committee (a committee file, or two or more model files); "
                         "got a single model")
    scored = []
    for k, atoms in enumerate(frames):
        frame = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        frame.calc = calc
        frame.get_potential_energy()
        results = calc.results
        scored.append((k, results["max_force_std"], results["energy_std"], np.array(results["forces_std"]), frame))
        frame.calc = None
        if progress is not None:
            progress(k + 1, len(frames))
    scored.sort(key=lambda item: (-item[1], item[0]))
    picked: List[Picked] = []
    for k, max_std, e_std, forces_std, frame in scored:
        if len(picked) == top:
            break
        if any(same_atoms(frame, p.atoms) and rms_displacement(frame, p.atoms) < min_distance for p in picked):
            continue
        frame.info.update(committee_max_force_std=float(max_std), committee_energy_std=float(e_std),
                          source_frame=k, selection_rank=len(picked))
        frame.arrays["committee_forces_std"] = forces_std
        picked.append(Picked(k, float(max_std), float(e_std), frame))
    return picked


def run(args: argparse.Namespace) -> int:
    import ase.io

    from .calculator import MDPotCalculator

    out = Path(args.output)
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} exists; pass --force to overwrite it")
    models = args.model if len(args.model) > 1 else args.model[0]
    calc = MDPotCalculator(models)
    if calc.committee_size < 2:
        raise ValueError(f"{args.model[0]}: is a single model; mdpot select needs a committee file (mdpot deploy "
                         "A.ckpt B.ckpt ... -o committee.pt) or two or more model files")
    frames = read_frames(args.trajectory, args.format, args.elements, "trajectory frames")
    step = max(1, len(frames) // 10)

    def progress(k: int, n: int) -> None:
        if k % step == 0 or k == n:
            print(f"evaluated {k}/{n} frames", flush=True)

    picked = select_frames(frames, calc, args.top, args.min_distance, progress=progress)
    ase.io.write(out, [p.atoms for p in picked], format="extxyz")
    print(f"{'rank':>4} {'frame':>6} {'max_force_std/eV/Å':>19} {'energy_std/eV':>14}")
    for rank, p in enumerate(picked):
        print(f"{rank:>4} {p.frame:>6} {p.max_force_std:>19.4g} {p.energy_std:>14.4g}")
    skipped = min(len(frames), args.top) - len(picked)
    print(f"wrote {out}: {len(picked)} of {len(frames)} frames by committee force deviation "
          f"({calc.committee_size} members" + (f", near-duplicates within {args.min_distance:g} Å skipped" if
                                               args.min_distance > 0 else "") + ")"
          + (f"; only {len(picked)} distinct frames" if skipped > 0 else ""))
    return 0


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (np.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a distance >= 0 in Å, got {text!r}")
    return value


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``select``: ``mdpot select TRAJ --model M [M ...] --top K [--min-distance D] -o OUT.extxyz``."""
    from .cli import positive_int

    p = subparsers.add_parser(
        "select", help="pick the frames a committee disagrees on most, for new reference labels",
        description="Rank the frames of a trajectory (any file ase.io.read reads, a LAMMPS dump included) by the "
                    "committee's maximum force deviation max_i sqrt(mean_k |F_k,i - mean F_i|^2) (eV/Å), skip "
                    "near-duplicates (RMS minimum-image displacement below --min-distance from a frame already "
                    "picked with the same atoms) and write the top frames as extxyz without energies or forces, "
                    "with info committee_max_force_std, committee_energy_std, source_frame, selection_rank and the "
                    "per-atom array committee_forces_std.")
    p.add_argument("trajectory", help="trajectory file (extxyz, LAMMPS dump, ASE .traj, ...)")
    p.add_argument("--model", nargs="+", required=True,
                   help="a committee file (mdpot deploy A.ckpt B.ckpt ... -o committee.pt), or two or more model files "
                        "sharing elements, r_max and dtype")
    p.add_argument("--top", type=positive_int, required=True, help="how many frames to pick")
    p.add_argument("--min-distance", type=non_negative_float, default=0.0,
                   help="Å: a frame within this RMS minimum-image displacement of a picked frame with the same atoms "
                        "is a near-duplicate and skipped (default 0: none)")
    add_frame_arguments(p, "TRAJ")
    p.add_argument("-o", "--output", required=True, help="extxyz file to write")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(func=run)
    return p
