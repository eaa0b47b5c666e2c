#!/usr/bin/env python
"""Models of the nequip package through nequip's own ASE calculator and through mdpot (``mdpot deploy``).

The same nequip-built network (fresh weights, benchmark widths: Allegro l_max 1, 2 layers, 32 scalar / 16 tensor
features; NequIP l_max 1, 2 layers, 32 features; r_max 5 Å, float32) is timed on FCC Cu through
``nequip.integrations.ase.NequIPCalculator`` (its ``.nequip.pth``) and through ``MDPotCalculator`` (the file
``mdpot deploy`` wrote from it): energy + forces, neighbour lists included, both in one process with the same
threads and allocator state, interleaved A B A B, best of each. That difference is the framework's overhead
around the identical network. ``--lammps`` also runs ``scripts/bench_lammps.py`` on the wrapped Allegro and on
mdpot's own Allegro of the same widths (4000 atoms, 1 and 2 ranks).

Writes ``docs/benchmarks/nequip_interop.{json,md}``. Needs nequip==0.19.1 and nequip-allegro==0.8.3.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = {256: (4, 4, 4), 2048: (8, 8, 8), 8192: (16, 16, 8)}


def markdown(result: dict) -> str:
    """The results as a Markdown page."""
    lines = [f"# nequip models through nequip's calculator and through mdpot ({result['date']})", "",
             f"Fresh-weight nequip models of benchmark width, float32, FCC Cu, {result['threads']} torch threads, energy + "
             "forces with neighbour lists, best of the interleaved calls (`scripts/bench_nequip_interop.py`).", "",
             "| model | atoms | NequIPCalculator µs/atom | MDPotCalculator µs/atom | nequip / mdpot |", "|---|---|---|---|---|"]
    lines += [f"| {r['arch']} | {r['atoms']} | {r['nequip_us_per_atom']:.1f} | {r['mdpot_us_per_atom']:.1f} | "
              f"{r['ratio_nequip_over_mdpot']:.2f} |" for r in result["ase"]]
    if result["lammps"]:
        lines += ["", "LAMMPS, `pair_style mdpot`, 1 torch thread per rank (`scripts/bench_lammps.py --sizes 4000`):", "",
                  "| model | atoms | ranks | µs/atom/step |", "|---|---|---|---|"]
        for label, res in result["lammps"].items():
            lines += [f"| {label} | {r['atoms']} | {r['ranks']} | {r['us_per_atom_step']:.1f} |" for r in res["lammps"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=sorted(SIZES), choices=sorted(SIZES))
    ap.add_argument("--repeats", type=int, default=4, help="timed calls per calculator and size (best is kept)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--arch", nargs="+", default=["allegro", "nequip"], choices=["allegro", "nequip"])
    ap.add_argument("--lammps", action="store_true", help="also LAMMPS: wrapped vs mdpot's own Allegro")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "nequip_interop")
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    from ase.calculators.calculator import all_changes

    from mdpot import MDPotCalculator
    from mdpot.interop.nequip import deploy_nequip
    from mdpot.testing import fcc
    from mdpot.testing.nequip import build_nequip_file

    work = ROOT / "runs" / "bench_nequip"
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    rows, files = [], {}
    for arch in args.arch:
        source = build_nequip_file(work / f"{arch}.nequip.pth", arch, "float32", size="benchmark", r_max=5.0)
        wrapped = deploy_nequip(source, work / f"{arch}_wrapped.pt", overwrite=True).path
        files[arch] = (source, wrapped)
        from nequip.integrations.ase import NequIPCalculator

        calcs = {"nequip": NequIPCalculator.from_compiled_model(str(source), device="cpu",
                                                                 chemical_species_to_atom_type_map=True),
                 "mdpot": MDPotCalculator(wrapped)}
        for n in args.sizes:
            atoms = fcc("Cu", SIZES[n], rattle=0.05, seed=1)
            best = {k: float("inf") for k in calcs}
            energies = {}
            for k in range(args.repeats + 1):  # the first round warms up
                for name, calc in calcs.items():
                    atoms.positions += np.random.default_rng(k).normal(0, 1e-4, atoms.positions.shape)
                    t0 = time.perf_counter()
                    calc.calculate(atoms, ["energy", "forces"], all_changes)
                    dt = time.perf_counter() - t0
                    energies[name] = calc.results["energy"]
                    if k:
                        best[name] = min(best[name], dt)
            row = {"arch": arch, "atoms": len(atoms), "nequip_us_per_atom": 1e6 * best["nequip"] / len(atoms),
                   "mdpot_us_per_atom": 1e6 * best["mdpot"] / len(atoms)}
            row["ratio_nequip_over_mdpot"] = row["nequip_us_per_atom"] / row["mdpot_us_per_atom"]
            rows.append(row)
            print(f"{arch:8s} {len(atoms):6d} atoms: NequIPCalculator {row['nequip_us_per_atom']:7.1f} µs/atom, "
                  f"MDPotCalculator {row['mdpot_us_per_atom']:7.1f} µs/atom (× {row['ratio_nequip_over_mdpot']:.2f})",
                  flush=True)

    lammps = {}
    if args.lammps and "allegro" in files:
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        for label, extra in (("wrapped nequip Allegro", ["--model", str(files["allegro"][1])]),
                             ("mdpot Allegro", [])):
            out = work / ("lmp_wrapped" if extra else "lmp_mdpot")
            cmd = [sys.executable, str(ROOT / "scripts" / "bench_lammps.py"), "--sizes", "4000", "--ranks", "1", "2",
                   "--steps", "5", "--out", str(out)] + extra
            print("$ " + " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True, env=env)
            lammps[label] = json.loads((out / "bench_lammps.json").read_text())

    result = {"host": platform.node(), "threads": args.threads, "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d %H:%M"), "ase": rows, "lammps": lammps}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
