"""``mdpot data``: generate a labelled reference dataset (EMT Cu, EMT Cu-Au, Stillinger-Weber Si).

``add_parser(subparsers)`` adds the subcommand to the ``mdpot`` parser; :func:`run` returns the exit code and
raises on failure (the main CLI prints exceptions as one ``mdpot: error: ...`` line).

Example
-------
``mdpot data si-sw -o data -n 400 --seed 0`` writes ``data/si-sw_{train,val,test}.xyz``: 400 near-equilibrium
structures split 80/10/10, and in the training file also one isolated-atom frame per element and 32 short-range
frames (10 % of the 320 training structures; ``--short-range-share``, ``--no-short-range``).
"""
from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

from .reference import SHORT_RANGE_SHARE, SYSTEMS

#: Structures generated when ``-n`` is not given.
DEFAULT_SIZES = {"cu-emt": 500, "cuau-emt": 500, "si-sw": 400}


def run(args: argparse.Namespace) -> int:
    from .reference import generate_splits

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: is a file; -o names the folder the three split files go into")
    n = args.n_structures if args.n_structures is not None else DEFAULT_SIZES[args.system]
    t0 = time.perf_counter()
    share = 0.0 if args.no_short_range else args.short_range_share
    written = generate_splits(args.system, out, n, args.seed, progress=not args.no_progress,
                              overwrite=args.force, short_range_share=share, isolated_atoms=not args.no_short_range)
    print(f"{args.system}: {n} structures, seed {args.seed}, {time.perf_counter() - t0:.1f} s")
    for split, (path, structures) in written.items():
        kinds = Counter(a.info["kind"] for a in structures)
        n_atoms = sum(len(a) for a in structures)
        breakdown = ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items()))
        print(f"  {split:<5} {len(structures):>5} structures {n_atoms:>7} atoms  ({breakdown or 'empty'})  {path}")
    return 0


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1], got {text!r}")
    return value


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``data SYSTEM -o OUTDIR [-n N] [--seed S] [--no-progress] [--force]`` to ``subparsers``."""
    from ..cli import non_negative_int, positive_int

    p = subparsers.add_parser("data", help="generate a labelled reference dataset (train/val/test extxyz)",
                              description="Generate structures labelled with a classical potential and write "
                                          "SYSTEM_train.xyz, SYSTEM_val.xyz and SYSTEM_test.xyz (80/10/10 split of "
                                          "the near-equilibrium structures). The training file also gets one "
                                          "isolated-atom frame per element (the per-element reference energies) and "
                                          "short-range frames: dimers, trimers, compressed and hot bulk.")
    p.add_argument("system", choices=SYSTEMS, metavar="SYSTEM", help=f"one of {', '.join(SYSTEMS)}")
    p.add_argument("-o", "--output", required=True, help="folder for the three files (created if missing)")
    p.add_argument("-n", "--n-structures", type=positive_int, default=None,
                   help="structures in all splits together (default: "
                        + ", ".join(f"{k} {v}" for k, v in DEFAULT_SIZES.items()) + ")")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of structures, MD and split (default 0)")
    p.add_argument("--short-range-share", type=_share, default=SHORT_RANGE_SHARE, metavar="FRACTION",
                   help="short-range frames (dimers, trimers, compressed and hot bulk) added to the training file, per "
                        f"near-equilibrium training structure (default {SHORT_RANGE_SHARE:g}; 0: none)")
    p.add_argument("--no-short-range", action="store_true",
                   help="no isolated-atom and no short-range frames: the training file holds near-equilibrium "
                        "structures only")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=run)
    return p
