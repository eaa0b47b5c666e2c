"""``mdpot data``: generate a labelled reference dataset (EMT Cu, EMT Cu-Au, Stillinger-Weber Si).

``add_parser(subparsers)`` adds the subcommand to the ``mdpot`` parser; :func:`run` returns the exit code and
raises on failure (the main CLI prints exceptions as one ``mdpot: error: ...`` line).

Example
-------
``mdpot data si-sw -o data -n 400 --seed 0`` writes ``data/si-sw_{train,val,test}.xyz``.
"""
from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

from .reference import SYSTEMS

#: Structures generated when ``-n`` is not given.
DEFAULT_SIZES = {"cu-emt": 500, "cuau-emt": 500, "si-sw": 400}


def run(args: argparse.Namespace) -> int:
    from .reference import generate_splits

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: is a file; -o names the folder the three split files go into")
    n = args.n_structures if args.n_structures is not None else DEFAULT_SIZES[args.system]
    t0 = time.perf_counter()
    written = generate_splits(args.system, out, n, args.seed, progress=not args.no_progress,
                              overwrite=args.force)
    print(f"{args.system}: {n} structures, seed {args.seed}, {time.perf_counter() - t0:.1f} s")
    for split, (path, structures) in written.items():
        kinds = Counter(a.info["kind"] for a in structures)
        n_atoms = sum(len(a) for a in structures)
        breakdown = ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items()))
        print(f"  {split:<5} {len(structures):>5} structures {n_atoms:>7} atoms  ({breakdown or 'empty'})  {path}")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``data SYSTEM -o OUTDIR [-n N] [--seed S] [--no-progress] [--force]`` to ``subparsers``."""
    from ..cli import non_negative_int, positive_int

    p = subparsers.add_parser("data", help="generate a labelled reference dataset (train/val/test extxyz)",
                              description="Generate structures labelled with a classical potential and write "
                                          "SYSTEM_train.xyz, SYSTEM_val.xyz and SYSTEM_test.xyz (80/10/10 split).")
    p.add_argument("system", choices=SYSTEMS, metavar="SYSTEM", help=f"one of {', '.join(SYSTEMS)}")
    p.add_argument("-o", "--output", required=True, help="folder for the three files (created if missing)")
    p.add_argument("-n", "--n-structures", type=positive_int, default=None,
                   help="structures in all splits together (default: "
                        + ", ".join(f"{k} {v}" for k, v in DEFAULT_SIZES.items()) + ")")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of structures, MD and split (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=run)
    return p
