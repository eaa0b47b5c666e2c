#!/usr/bin/env python
"""Material properties of the shipped example models against their references (``mdpot properties``, full set).

For each model: lattice constant, cohesive energy, bulk modulus, C11, C12, C44, relaxed vacancy and surface
energies, the dimer curve and, for Si, the liquid RDF, each next to EMT (Cu) or Stillinger-Weber (Si). Writes,
next to each model, ``properties.json`` and ``properties.png`` (unless ``--out`` names another folder), and prints
one Markdown table of all models for the README: model value, reference value and the relative difference.

    python scripts/bench_properties.py                          # every model in examples/models/*/model.pt
    python scripts/bench_properties.py --models allegro-cu-emt --quick --out runs/properties
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "examples" / "models"


def cell(row: dict, key: str, fmt: str) -> str:
    """``model / reference (±x.x %)`` of one property; yes/no for booleans; blank when not measured."""
    p = row.get(key)
    if p is None:
        return ""
    if isinstance(p["model"], bool):
        yes = {True: "yes", False: "no"}
        return f"{yes[p['model']]} / {yes[p['reference']]}"
    rel = p["relative_percent"]
    rel_text = "" if rel is None else f" ({rel:+.1f} %)"
    return f"{p['model']:{fmt}} / {p['reference']:{fmt}}{rel_text}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="model folders under examples/models (default: all)")
    parser.add_argument("--out", type=Path, help="folder for NAME.json and NAME.png (default: next to each model)")
    parser.add_argument("--quick", action="store_true", help="only a, E_coh, B and the dimer curve")
    parser.add_argument("--num-threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)

    import torch

    from mdpot import MDPotCalculator
    from mdpot.properties import PROPERTIES, compare, reference_calculator, resolve_reference

    torch.set_num_threads(args.num_threads)
    names = args.models or sorted(p.name for p in MODELS.iterdir() if (p / "model.pt").is_file())
    reports = {}
    for name in names:
        path = MODELS / name / "model.pt"
        calc = MDPotCalculator(path)
        meta = calc.model.metadata
        element = list(meta["elements"])[0]
        reference = resolve_reference("auto", list(meta["elements"]))
        t0 = time.perf_counter()
        comparison = compare(calc, reference_calculator(reference), element, float(meta["r_max"]), reference,
                             model_name=name, quick=args.quick,
                             log=lambda line, n=name: print(f"  {n}: {line}", file=sys.stderr, flush=True))
        print(comparison.table(), "\n", file=sys.stderr)
        folder = args.out or (MODELS / name)
        stem = f"{name}_properties" if args.out else "properties"
        comparison.write_json(folder / f"{stem}.json")
        comparison.plot(folder / f"{stem}.png")
        reports[name] = comparison.to_dict()["properties"]
        print(f"  {name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    print("| property | unit | " + " | ".join(f"{n} (model / reference)" for n in names) + " |")
    print("|---|---|" + "---|" * len(names))
    for key, label, unit, fmt in PROPERTIES:
        if any(key in reports[n] for n in names):
            print(f"| {label} | {unit} | " + " | ".join(cell(reports[n], key, fmt or "") for n in names) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
