"""``mdpot properties``: a deployed model's material properties against its reference potential.

``add_parser(subparsers)`` registers the subcommand; its ``func(args) -> int`` raises an exception with a
one-line message on failure (the main CLI prints ``mdpot: error: <message>`` and exits 1).
"""
from __future__ import annotations

import argparse
import sys


def cmd_properties(args: argparse.Namespace) -> int:
    from ..calculator import MDPotCalculator
    from .measure import crystal_for
    from .report import compare, reference_calculator, resolve_reference

    if args.num_threads is not None:
        import torch

        torch.set_num_threads(args.num_threads)
    calc = MDPotCalculator(args.model)
    elements = list(calc.model.metadata["elements"])
    reference = resolve_reference(args.reference, elements)
    if args.element is not None:
        if args.element not in elements:
            raise ValueError(f"--element {args.element}: not an element of the model ({' '.join(elements)})")
        element = args.element
    elif len(elements) == 1:
        element = elements[0]
    else:
        raise ValueError(f"the model has elements {' '.join(elements)}; choose the one to measure with --element")
    crystal_for(element)  # an unsupported crystal fails before any work
    log = None if args.no_progress else (lambda line: print(f"  {line}", file=sys.stderr, flush=True))
    comparison = compare(calc, reference_calculator(reference), element, float(calc.model.metadata["r_max"]),
                         reference, model_name=args.model, quick=args.quick, log=log)
    print(comparison.table())
    if args.json:
        comparison.write_json(args.json)
        print(f"wrote {args.json}")
    if args.plot:
        comparison.plot(args.plot)
        print(f"wrote {args.plot}")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``properties MODEL [--reference auto|emt|sw] [--quick] [--json F] [--plot PNG]``."""
    from ..cli import positive_int

    p = subparsers.add_parser(
        "properties", help="material properties of a deployed model against its reference potential",
        description="Measure a deployed model's material properties side by side with its reference potential "
                    "(EMT, or Stillinger-Weber through LAMMPS): lattice constant, cohesive energy, bulk modulus, C11, "
                    "C12, C44, relaxed vacancy formation energy, a relaxed surface energy, the dimer curve from "
                    "0.5 Å to r_max and, for Si, the liquid RDF from NVT MD. Each is measured at the calculator's own "
                    "lattice constant with ASE's tools. Measured on 2 shared cores with one torch thread: under a "
                    "minute for a Cu model (most of it the 108-atom vacancy relaxation), about 5 minutes for a Si "
                    "model (1550 MD steps of 216 liquid atoms); --quick measures only a, the cohesive energy, B "
                    "and the dimer curve, in seconds.")
    p.add_argument("model", help="deployed model (from `mdpot deploy`)")
    p.add_argument("--reference", default="auto", metavar="{auto,emt,sw}",
                   help="reference potential: emt (ASE's EMT), sw (Stillinger-Weber Si) or auto (default: EMT for "
                        "elements EMT covers, Stillinger-Weber for Si)")
    p.add_argument("--element", help="element to measure (default: the model's only element)")
    p.add_argument("--quick", action="store_true", help="only the lattice constant, cohesive energy, bulk modulus "
                                                         "and dimer curve")
    p.add_argument("--json", metavar="FILE", help="write the numbers and curves as JSON")
    p.add_argument("--plot", metavar="PNG", help="write the equation of state, dimer curve and RDF to this PNG")
    p.add_argument("--num-threads", type=positive_int, default=None,
                   help="torch CPU threads (default: torch's choice; on a busy machine 1 can be much faster)")
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=cmd_properties)
    return p
