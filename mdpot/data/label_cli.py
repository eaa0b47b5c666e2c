"""``mdpot label``: reference labels for new structures, as ``mdpot data`` makes them, ready to train on.

The active-learning step after ``mdpot select`` (docs/active_learning.md): every frame of FILE gets the energy,
forces and stress of the reference potential of a ``mdpot data`` system, with ``mdpot data``'s own function and
conventions (:mod:`mdpot.data.reference.labels`), ``info["kind"]`` (``--kind``, default ``selected``),
``info["system"]``, and the selection's ``info`` kept for provenance. The output is extxyz; an existing file is
refused unless ``--append`` (add the frames at its end: a training file grows) or ``--force`` (overwrite it). Both
write to a temporary file first, so an interrupted run leaves the old file as it was.

``add_parser(subparsers)`` adds the subcommand to the ``mdpot`` parser; :func:`run` returns the exit code and raises
on failure (the main CLI prints exceptions as one ``mdpot: error: ...`` line).

Example
-------
``mdpot label picked.extxyz --reference cu-emt -o data/cu-emt_train.xyz --append``
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import List

import numpy as np
from ase import Atoms

from .reference.labels import REFERENCES


def _check_appendable(out: Path, system: str) -> int:
    """The number of frames in ``out``, an extxyz file that ``system``'s labels may join: refused when it is not
    extxyz or holds frames of a reference system with another potential (one file, one reference)."""
    from .labelled import read_structures

    try:
        frames = read_structures(out, format="extxyz", what="labelled structures")
    except ValueError as exc:
        raise ValueError(f"cannot append to {out}: {str(exc).removeprefix(f'{out}: ')}") from None
    want = REFERENCES[system]
    for k, atoms in enumerate(frames):
        have = REFERENCES.get(str(atoms.info.get("system")))
        if have is not None and have.potential != want.potential:
            raise ValueError(f"cannot append to {out}: its frame {k} is labelled by {have.system} ({have.potential}); "
                             f"--reference {system} labels with {want.potential}: one file, one reference potential")
    return len(frames)


def _write(frames: List[Atoms], out: Path, append: bool) -> None:
    import ase.io

    from .._files import atomic_write

    with atomic_write(out) as tmp:
        if append:
            shutil.copyfile(out, tmp)
            with open(tmp, "rb+") as fh:  # an extxyz file ends its last frame with a newline; add one if it does not
                fh.seek(0, 2)
                if fh.tell():
                    fh.seek(-1, 2)
                    if fh.read(1) != b"\n":
                        fh.write(b"\n")
        with open(tmp, "a" if append else "w") as fh:
            ase.io.write(fh, frames, format="extxyz")


def run(args: argparse.Namespace) -> int:
    from ..selection import read_frames
    from .reference.labels import check_structures, label_structures

    out = Path(args.output)
    if out.is_dir():
        raise ValueError(f"{out}: is a folder; -o names the extxyz file to write")
    append = args.append and out.exists()
    if out.exists() and not (args.append or args.force):
        raise FileExistsError(f"{out} exists; pass --append to add the labelled frames to it, or --force to "
                              "overwrite it")
    frames = read_frames(args.structures, args.format, args.elements, "structures")
    try:
        check_structures(args.reference, frames, args.structures)
    except ValueError as exc:
        if "does not label" in str(exc) and not args.elements and "type" in frames[0].arrays:
            raise ValueError(f"{exc} (a LAMMPS dump? --elements names the element of each atom type)") from None
        raise
    before = _check_appendable(out, args.reference) if append else 0
    ref = REFERENCES[args.reference]
    t0 = time.perf_counter()
    labelled = label_structures(args.reference, frames, kind=args.kind, progress=not args.no_progress,
                                source=args.structures)
    _write(labelled, out, append)
    n = len(labelled)
    print(f"labelled {n} frame{'s' if n != 1 else ''} of {args.structures} with {ref.potential} ({args.reference}, kind "
          f"{args.kind}) in {time.perf_counter() - t0:.1f} s")
    print(f"{'frame':>5} {'atoms':>6} {'energy/atom/eV':>15} {'max|F|/eV/Å':>12} {'stress':>6}")
    for k, atoms in enumerate(labelled):
        res = atoms.calc.results
        print(f"{k:>5} {len(atoms):>6} {res['energy'] / len(atoms):>15.6f} "
              f"{np.linalg.norm(res['forces'], axis=1).max():>12.4g} {'yes' if 'stress' in res else 'no':>6}")
    if append:
        print(f"appended them to {out}: {before + len(labelled)} frames now")
    else:
        print(f"wrote {out}")
    return 0


def _kind(text: str) -> str:
    if not text or text != text.strip() or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f"expected a name without spaces, got {text!r}")
    return text


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``label FILE --reference SYSTEM -o OUT [--kind KIND] [--append | --force] [--format FMT]
    [--elements E ...] [--no-progress]`` to ``subparsers``."""
    from ..selection import add_frame_arguments

    systems = ", ".join(f"{name} ({ref.potential}: {' '.join(ref.elements)})" for name, ref in REFERENCES.items())
    p = subparsers.add_parser(
        "label", help="label structures with a reference potential of `mdpot data` (after `mdpot select`)",
        description="Label every structure of FILE (any file ase.io reads: the extxyz `mdpot select` writes, a LAMMPS "
                    "dump with --elements) with the reference potential of a `mdpot data` system, as `mdpot data` "
                    "labels it: energy (eV), forces (eV/Å) and, for 3-D periodic cells, stress (eV/Å³), in extxyz. "
                    "Each frame gets info kind (--kind, for training.kind_weights) and system, and keeps its own "
                    "info (the selection's committee_max_force_std, source_frame, ...). An existing OUT is refused "
                    "unless --append (add the frames to it, e.g. the training file) or --force (overwrite it).")
    p.add_argument("structures", metavar="FILE", help="structures to label (extxyz from `mdpot select`, ...)")
    p.add_argument("--reference", required=True, choices=tuple(REFERENCES), metavar="SYSTEM",
                   help=f"the reference potential, named by its `mdpot data` system: {systems}")
    p.add_argument("-o", "--output", required=True, help="extxyz file to write (or append to, with --append)")
    p.add_argument("--kind", type=_kind, default="selected",
                   help="info kind of the labelled frames, what training.kind_weights weighs (default selected)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--append", action="store_true",
                       help="add the labelled frames at the end of OUT (created if missing); OUT must be extxyz and "
                            "labelled by the same potential")
    group.add_argument("--force", action="store_true", help="overwrite an existing OUT")
    add_frame_arguments(p, "FILE")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p
