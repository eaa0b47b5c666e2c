"""``mdpot validate``: the subparser the main CLI (``mdpot.cli``) adds to its own.

``add_parser(subparsers)`` registers the subcommand; its ``func(args) -> int`` raises an exception with a
one-line message on failure (the main CLI prints ``mdpot: error: <message>`` and exits 1), and
:class:`~mdpot.validate.ThresholdExceeded` when a ``--max-*`` threshold is exceeded.
"""
from __future__ import annotations

import argparse
import zipfile
from pathlib import Path


def cmd_validate(args: argparse.Namespace) -> int:
    from .report import validate, write_json

    stress_key = None if args.stress_key.lower() in ("none", "null", "") else args.stress_key
    try:
        report = validate(args.model, args.data, energy_key=args.energy_key, forces_key=args.forces_key,
                          stress_key=stress_key, batch_size=args.batch_size)
    except ValueError as exc:
        if _looks_swapped(args.model, args.data):
            raise ValueError(f"{str(exc).splitlines()[0]}; MODEL comes first, then DATA: were they swapped?") from None
        raise
    print(report.table())
    if args.json:
        write_json(report, args.json)
        print(f"wrote {args.json}")
    if args.plot:
        report.plot(args.plot)
        print(f"wrote {args.plot}")
    report.check(max_force_mae=args.max_force_mae, max_energy_mae=args.max_energy_mae)
    return 0


def _looks_swapped(model: str, data: str) -> bool:
    """``mdpot validate data.xyz model.pt``: the model argument is no zip archive but the data argument is."""
    model_p, data_p = Path(model), Path(data)
    return (model_p.is_file() and data_p.is_file() and not zipfile.is_zipfile(model_p)
            and zipfile.is_zipfile(data_p))


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``validate``: errors of a deployed model against labelled structures."""
    from ..cli import positive_int

    p = subparsers.add_parser("validate", help="errors of a deployed model against reference energies/forces/stress",
                              description="Evaluate a deployed model on labelled structures and report MAE/RMSE of "
                                          "energy per atom (meV/atom), forces (meV/Å, also per element) and stress (GPa).")
    p.add_argument("model", help="deployed model (from `mdpot deploy`) or an mdpot training checkpoint "
                                        "(told apart by content, not by name)")
    p.add_argument("data", help="labelled structures (extxyz or any ase.io format)")
    p.add_argument("--energy-key", default="energy", help="energy label (default energy; eV, total)")
    p.add_argument("--forces-key", default="forces", help="forces label (default forces; eV/Å)")
    p.add_argument("--stress-key", default="stress", help="stress label (default stress; eV/Å³; 'none' ignores stress)")
    p.add_argument("--plot", metavar="PNG", help="write parity plots to this PNG")
    p.add_argument("--json", metavar="FILE", help="write the numbers as JSON")
    p.add_argument("--max-force-mae", type=float, metavar="MEV_PER_A", help="fail (exit 1) if the force MAE exceeds this")
    p.add_argument("--max-energy-mae", type=float, metavar="MEV_PER_ATOM", help="fail (exit 1) if the energy MAE exceeds this")
    p.add_argument("--batch-size", type=positive_int, default=8, help="structures per model call (default 8)")
    p.set_defaults(func=cmd_validate)
    return p
