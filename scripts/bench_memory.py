#!/usr/bin/env python
"""Peak memory of the ASE calculator: peak resident set size (``ru_maxrss``) of a fresh process that loads the
benchmark model and evaluates FCC Cu once, per size, model dtype and set of properties.

The benchmark Allegro is the one of ``scripts/bench_ase.py`` (Cu, l_max 1, 2 layers, 32 scalar / 16 tensor
features, r_max 5 Å); ``--arch nequip`` takes the benchmark NequIP (l_max 1, 2 layers, 32 features), whose
calls are not chunked, to measure its bytes per edge (the calculator's up-front estimate is fitted to these).

Properties: ``ef`` = energy + forces + stress (one call; the virial always comes with the forces), ``stresses``
= the same plus per-atom stresses. ``--max-edges 0`` evaluates in one call (no chunks): at 100k atoms that
needs about 40 GB, so it is not in the default sizes.

Prints a table and writes ``docs/benchmarks/bench_memory.json`` and ``.md`` (``--out`` for another stem).

Example::

    python scripts/bench_memory.py                         # Allegro, float32 and float64, 2k / 16k / 100k atoms
    python scripts/bench_memory.py --arch nequip --sizes 4000 6912 --out runs/nequip_memory
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

MODEL_TEXT = {"allegro": "Cu, l_max 1, 2 layers, 32 scalar / 16 tensor features, r_max 5 Å",
              "nequip": "Cu, l_max 1, 2 layers, 32 features, r_max 5 Å"}
#: atoms -> cubic FCC repeats (4 atoms per cell)
SIZES = {2048: (8, 8, 8), 4000: (10, 10, 10), 6912: (12, 12, 12), 16384: (16, 16, 16), 100920: (29, 29, 30)}


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1]) / 1024
    return float("nan")


def measure(model_path: str, n_atoms: int, props: str, max_edges: int, threads: int) -> dict:
    import torch

    from mdpot import MDPotCalculator
    from mdpot.testing import fcc

    torch.set_num_threads(threads)
    kwargs = {} if max_edges < 0 else {"max_edges": max_edges or 2**62}
    calc = MDPotCalculator(model_path, **kwargs)
    atoms = fcc("Cu", SIZES[n_atoms], rattle=0.05, seed=1)
    atoms.calc = calc
    base = _rss_mb()
    t0 = time.perf_counter()
    if props == "stresses":
        atoms.get_stresses()
    else:
        atoms.get_forces()
        atoms.get_stress()
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    edges = calc.graph(atoms).num_edges
    return {"atoms": n_atoms, "edges": edges, "props": props, "max_edges": calc.max_edges if calc.strictly_local else None,
            "baseline_mb": base, "peak_mb": peak, "kb_per_atom": (peak - base) * 1024 / n_atoms,
            "bytes_per_edge": (peak - base) * 2**20 / edges, "seconds": seconds, "us_per_atom": seconds / n_atoms * 1e6}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="allegro", choices=("allegro", "nequip"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[2048, 16384, 100920], choices=sorted(SIZES))
    ap.add_argument("--dtypes", nargs="+", default=["float32", "float64"], choices=("float32", "float64"))
    ap.add_argument("--props", nargs="+", default=["ef", "stresses"], choices=("ef", "stresses"),
                    help="'stresses' is measured at the largest size only")
    ap.add_argument("--max-edges", type=int, default=-1, help="calculator max_edges (default: its default; 0: one call)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="results stem (default docs/benchmarks/bench_memory)")
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        path, n, props, max_edges = args.worker
        print(json.dumps(measure(path, int(n), props, int(max_edges), args.threads)))
        return 0

    from bench_ase import MODELS

    from mdpot.deploy import deploy_model
    from mdpot.models import build_model, make_config

    out = Path(args.out or ROOT / "docs" / "benchmarks" / "bench_memory")
    cfg = make_config(MODELS[args.arch]["architecture"], MODELS[args.arch]["model"])
    rows = []
    print(f"{'dtype':<8} {'atoms':>7} {'edges':>9} {'props':<9} {'base MB':>8} {'peak MB':>8} {'kB/atom':>8} "
          f"{'B/edge':>7} {'seconds':>8}", flush=True)
    for dtype in args.dtypes:
        path = ROOT / "runs" / "bench" / f"{args.arch}_cu_{dtype}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        deploy_model(build_model(cfg, seed=0), path, dtype=dtype, overwrite=True)
        for n in sorted(args.sizes):
            for props in args.props:
                if props == "stresses" and n != max(args.sizes):
                    continue
                cmd = [sys.executable, __file__, "--threads", str(args.threads), "--worker", str(path), str(n), props,
                       str(args.max_edges)]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    print(f"{dtype:<8} {n:>7} failed: {proc.stderr.strip().splitlines()[-1:]}", flush=True)
                    continue
                r = json.loads(proc.stdout.splitlines()[-1])
                r["dtype"] = dtype
                rows.append(r)
                print(f"{dtype:<8} {n:>7} {r['edges']:>9} {props:<9} {r['baseline_mb']:>8.0f} {r['peak_mb']:>8.0f} "
                      f"{r['kb_per_atom']:>8.2f} {r['bytes_per_edge']:>7.0f} {r['seconds']:>8.1f}", flush=True)
    command = "python scripts/bench_memory.py " + " ".join(argv if argv is not None else sys.argv[1:])
    meta = {"command": command.strip(), "model": MODELS[args.arch], "threads": args.threads,
            "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "time": time.strftime("%Y-%m-%d %H:%M")}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = [f"# ASE calculator memory ({meta['time']})", "",
             f"Command: `{meta['command']}`. Model: the benchmark {args.arch} ({MODEL_TEXT[args.arch]}). "
             f"Torch threads: {args.threads}. Peak RSS = `ru_maxrss` of a fresh process after one evaluation; "
             "baseline = RSS after loading the model and building the structure; per atom = (peak - baseline) / atoms.",
             "", "| dtype | atoms | edges | properties | max_edges | baseline MB | peak RSS MB | kB/atom | B/edge | seconds (first call) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['dtype']} | {r['atoms']} | {r['edges']} | {'E, F, stress' if r['props'] == 'ef' else 'E, F, stress, per-atom stress'} | "
              f"{r['max_edges'] if r['max_edges'] is not None else 'one call'} | {r['baseline_mb']:.0f} | {r['peak_mb']:.0f} | "
              f"{r['kb_per_atom']:.2f} | {r['bytes_per_edge']:.0f} | {r['seconds']:.1f} |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
