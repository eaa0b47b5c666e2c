#!/usr/bin/env python
"""ASE-calculator benchmark: µs/atom for energy + forces of the benchmark Allegro (Cu, l_max 1, 2 layers,
32 scalar / 16 tensor features, r_max 5 Å, float32) or, with ``--arch nequip``, the benchmark NequIP (Cu,
l_max 1, 2 layers, 32 features, r_max 5 Å, avg_num_neighbors 42 as in FCC Cu, float32), or with ``--arch
allegro-l2`` the realistic Allegro (l_max 2, 64 / 32 features) on FCC Cu, and the
share of time spent outside the model (neighbour list + conversion; target <= 10 % at >= 1000 atoms): "model" is the
calculator's own model calls on the graph (its chunks included), everything else in ``get_forces`` is outside.

Prints a table and writes ``docs/benchmarks/bench_ase.json`` (and ``.md``). ``--allocator both`` runs each
size under glibc malloc and tcmalloc (Debian ``libtcmalloc-minimal4``) in fresh processes.

``--format torchscript fused aoti aoti-fused`` deploys the model as each variant once (the deploy time, an
AOTInductor compile for a package, is printed) and times them interleaved in one process (A B A B …, best of each),
with each variant's ratio to the reference TorchScript file (``torchscript``; to the first variant without it).
The kernels are explicit: ``torchscript`` and ``aoti`` use the reference (pure torch) tensor products, ``fused``
(TorchScript) and ``aoti-fused`` mdpot's fused operators, whatever ``mdpot deploy`` defaults to; ``aoti-serial`` is
the reference package compiled with ``--aoti-threads serial`` (no parallel loops, plain adds in its scatters: for
``--threads 1``), ``aoti-fused-serial`` the same with the fused kernels:

    python scripts/bench_ase.py --sizes 2048 8192 --allocator glibc --format torchscript fused aoti aoti-fused \
        --out docs/benchmarks/bench_ase_aoti_fused

``--calls auto memory`` also times each variant in the calls the calculator made before it sized them to the CPU's
caches (``max_memory`` 512 MB: one call at these sizes) and takes the reference TorchScript file in those calls as
the baseline (docs/benchmarks/cache_chunks.md). ``--calls auto in-turn`` times the calculator's overlapping
cache-sized calls against the same calls one after the other (``parallel_chunks=1``), the baseline then being the
reference TorchScript file in turn (docs/benchmarks/threads.md).
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
from mdpot.models import DEFAULT_MODEL  # noqa: E402  (the benchmark Allegro of the README)
TCMALLOC_CANDIDATES = ("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4", "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4")
SIZES = {256: (4, 4, 4), 2048: (8, 8, 8), 8192: (16, 16, 8)}


#: The benchmark models; NequIP matches the nequip package's model it is compared with (same widths);
#: "allegro-l2" is issue 12's realistic Allegro (l_max 2, 64 scalar / 32 tensor features, as scripts/bench_lammps.py
#: ``--lmax 2 --features 64 --tensor-features 32``).
MODELS = {
    "allegro": DEFAULT_MODEL,
    "allegro-l2": {"architecture": "allegro", "model": {"elements": ["Cu"], "r_max": 5.0, "l_max": 2,
                                                        "num_scalar_features": 64, "num_tensor_features": 32}},
    "nequip": {"architecture": "nequip", "model": {"elements": ["Cu"], "r_max": 5.0, "l_max": 1, "num_layers": 2,
                                                   "num_features": 32, "avg_num_neighbors": 42.0}},
}


#: ``--format`` variants -> (deploy format, kernels, label); "torchscript" is the baseline of the speed-ups.
VARIANTS = {
    "torchscript": ("torchscript", "reference", "TorchScript, reference kernels"),
    "fused": ("torchscript", "fused", "TorchScript, fused kernels"),
    "aoti": ("aoti", "reference", "AOTI package, reference kernels"),
    "aoti-fused": ("aoti", "fused", "AOTI package, fused kernels"),
    "aoti-serial": ("aoti", "reference", "AOTI package, reference kernels, serial loops"),
    "aoti-fused-serial": ("aoti", "fused", "AOTI package, fused kernels, serial loops"),
}


def model_path(arch: str, dtype: str, fmt: str) -> Path:
    deploy_format = VARIANTS[fmt][0]
    return ROOT / "runs" / "bench" / f"{arch}_cu_{dtype}_{fmt}{'.pt2' if deploy_format == 'aoti' else '.pt'}"


def deploy(arch: str, dtype: str, fmt: str, threads: int) -> float:
    """Deploy the benchmark model as variant ``fmt`` of ``VARIANTS``; returns the seconds it took (compile and
    self-check)."""
    import torch

    from mdpot.deploy import deploy_model
    from mdpot.models import build_model, make_config

    torch.set_num_threads(threads)
    cfg = make_config(MODELS[arch]["architecture"], MODELS[arch]["model"])
    path = model_path(arch, dtype, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    deploy_format, kernels, _ = VARIANTS[fmt]
    extra = {"aoti_threads": "serial"} if fmt.endswith("-serial") else {}
    deploy_model(build_model(cfg, seed=0), path, dtype=dtype, overwrite=True, format=deploy_format, kernels=kernels,
                 **extra)
    return time.perf_counter() - t0


def compute_floor(arch: str, dtype: str, threads: int) -> dict:
    """The matrix-multiplication floor of energy + forces: the model's matmul FLOPs per atom (forward and the
    force backward, counted by ``torch.utils.flop_counter`` on the eager model at 256 atoms of FCC Cu) over this
    machine's best large ``torch.mm`` rate with ``threads`` threads. Elementwise work is left out, so no
    implementation of this model can beat the floor on this machine."""
    import torch
    from ase.build import bulk
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class MatmulFlops(TorchDispatchMode):
        """Counts the FLOPs of every op torch's flop counter knows (matrix products, convolutions); unlike
        ``FlopCounterMode`` it installs no module hooks, which break an ``autograd.grad`` inside the model."""
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            count = flop_registry.get(func._overloadpacket)
            if count is not None:
                MatmulFlops.total += count(*args, **(kwargs or {}), out_val=out)
            return out

    from mdpot.data import TypeMapper, atoms_to_graph
    from mdpot.deploy.compile import eager_model
    from mdpot.models import build_model, make_config

    torch.set_num_threads(threads)
    cfg = make_config(MODELS[arch]["architecture"], MODELS[arch]["model"])
    pot = eager_model(build_model(cfg, seed=0), dtype).module
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(SIZES[256])
    g = atoms_to_graph(atoms, cfg.r_max, TypeMapper(tuple(cfg.elements)))
    with MatmulFlops():
        pot(g.pos, g.atom_type, g.edge_index, g.edge_shift, len(atoms), False)
    flops_per_atom = MatmulFlops.total / len(atoms)
    a = torch.randn(2048, 2048, dtype=getattr(torch, dtype))
    b = torch.randn(2048, 2048, dtype=getattr(torch, dtype))
    torch.mm(a, b)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    rate = 2 * 2048 ** 3 / best
    return {"matmul_flops_per_atom": flops_per_atom, "mm_gflops": rate / 1e9,
            "floor_us_per_atom": 1e6 * flops_per_atom / rate}


def measure(n_atoms: int, repeats: int, threads: int, dtype: str, arch: str = "allegro",
            formats=("torchscript",), calls=("auto",)) -> list:
    import numpy as np
    import torch

    from mdpot import MDPotCalculator
    from mdpot.calculator import DEFAULT_MAX_MEMORY
    from mdpot.testing import fcc

    torch.set_num_threads(threads)
    atoms = fcc("Cu", SIZES[n_atoms], rattle=0.05, seed=1)
    # calls "auto": the calculator's default (cache-sized calls on the CPU, overlapping for a TorchScript file);
    # "in-turn": the same calls one after the other (parallel_chunks=1); "memory": max_edges sized by the 512 MB
    # memory budget alone, the default before cache-sized calls (one call for these sizes)
    options = {"auto": {}, "in-turn": {"parallel_chunks": 1}, "memory": {"max_memory": DEFAULT_MAX_MEMORY}}
    calcs = {(fmt, c): MDPotCalculator(model_path(arch, dtype, fmt), **options[c]) for fmt in formats for c in calls}
    times = {key: ([], [], []) for key in calcs}
    for k in range(repeats + 2):  # two warm-up rounds
        atoms.positions += np.random.default_rng(k).normal(0, 1e-3, atoms.positions.shape)
        for key, calc in calcs.items():  # interleaved: every variant sees the same machine state
            t0 = time.perf_counter()
            g = calc.graph(atoms)
            t1 = time.perf_counter()
            # the model calls as the calculator makes them (its chunks, overlapping or not), without ASE: a bare
            # call on the whole graph would need every edge's intermediates at once (8.6 GB for the realistic
            # Allegro at 8 192 atoms)
            calc._evaluate(g, False)
            t2 = time.perf_counter()
            atoms.calc = calc
            atoms.get_forces()
            t3 = time.perf_counter()
            if k >= 2:
                for series, value in zip(times[key], (t1 - t0, t2 - t1, t3 - t2)):
                    series.append(value)
    rows = []
    for (fmt, c), calc in calcs.items():
        graph_times, model_times, total_times = times[(fmt, c)]
        best_total, best_model, best_graph = min(total_times), min(model_times), min(graph_times)
        rows.append({
            "format": fmt, "calls": c, "max_edges": calc.max_edges, "max_edges_reason": calc.max_edges_reason,
            "atoms": n_atoms, "edges": g.num_edges, "threads": threads, "dtype": dtype,
            "us_per_atom_total": best_total / n_atoms * 1e6,
            "us_per_atom_model": best_model / n_atoms * 1e6,
            "us_per_atom_graph": best_graph / n_atoms * 1e6,
            "share_outside_model": max(0.0, best_total - best_model) / best_total,
        })
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=sorted(SIZES), choices=sorted(SIZES))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--allocator", default="both", choices=("glibc", "tcmalloc", "both"))
    ap.add_argument("--arch", default="allegro", choices=sorted(MODELS))
    ap.add_argument("--format", nargs="+", default=["torchscript"], choices=tuple(VARIANTS), dest="formats",
                    help="deployed variants, timed interleaved in one process: torchscript and aoti with the reference "
                         "kernels, fused (TorchScript) and aoti-fused with the fused kernels (default torchscript)")
    ap.add_argument("--calls", nargs="+", choices=("auto", "in-turn", "memory"), default=["auto"],
                    help="how the calculator splits the graph: auto (its default: cache-sized calls on the CPU, as "
                         "many at once as torch has threads for a TorchScript file), in-turn (the same calls one "
                         "after the other on torch's threads, parallel_chunks=1, the default before overlapping "
                         "calls) and/or memory (max_edges from the 512 MB memory budget alone, the default before "
                         "cache-sized calls: one call at these sizes); each is timed interleaved with the others")
    ap.add_argument("--out", help="results stem (default docs/benchmarks/bench_ase, or bench_ase_nequip)")
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.worker, args.repeats, args.threads, args.dtype, args.arch, args.formats,
                                 args.calls)))
        return 0
    if args.out is None:
        args.out = str(ROOT / "docs" / "benchmarks" / ("bench_ase" if args.arch == "allegro" else f"bench_ase_{args.arch}"))
    compile_s = {}
    for fmt in args.formats:
        compile_s[fmt] = deploy(args.arch, args.dtype, fmt, args.threads)
        print(f"deployed {model_path(args.arch, args.dtype, fmt).name} ({fmt}) in {compile_s[fmt]:.1f} s", flush=True)
    floor = compute_floor(args.arch, args.dtype, args.threads)
    floor_line = (f"compute floor: {floor['matmul_flops_per_atom'] / 1e6:.2f} MFLOP of matrix work per atom (E + F) at "
                  f"{floor['mm_gflops']:.0f} GFLOP/s (best 2048x2048 torch.mm, {args.threads} threads) = "
                  f"{floor['floor_us_per_atom']:.1f} µs/atom")
    print(floor_line, flush=True)
    tcmalloc = next((p for p in TCMALLOC_CANDIDATES if os.path.exists(p)), None)
    allocators = ["glibc", "tcmalloc"] if args.allocator == "both" else [args.allocator]
    if "tcmalloc" in allocators and tcmalloc is None:
        print("tcmalloc not found (apt-get install libtcmalloc-minimal4); measuring glibc only", file=sys.stderr)
        allocators = ["glibc"]
    rows = []
    load_before = os.getloadavg()
    print(f"{'allocator':<9} {'format':<11} {'atoms':>6} {'edges':>8} {'µs/atom':>9} {'model':>9} {'nl+conv':>8} "
          f"{'outside':>8} {'speed-up':>8}")
    for alloc in allocators:
        for n in args.sizes:
            env = dict(os.environ)
            if alloc == "tcmalloc":
                env["LD_PRELOAD"] = tcmalloc
            cmd = [sys.executable, __file__, "--worker", str(n), "--repeats", str(args.repeats),
                   "--threads", str(args.threads), "--dtype", args.dtype, "--arch", args.arch,
                   "--format", *args.formats, "--calls", *args.calls]
            results = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True,
                                                text=True).stdout.splitlines()[-1])
            # the baseline: the reference TorchScript file, in the oldest default's calls that were timed
            base = next((r for c in ("memory", "in-turn", "auto") for r in results if r["format"] == "torchscript"
                         and r["calls"] == c), results[0])
            for res in results:
                res["allocator"] = alloc
                res["label"] = VARIANTS[res["format"]][2] + (
                    f", {res['calls']} calls (max_edges {res['max_edges']})" if len(args.calls) > 1 else "")
                # speed-up: the reference TorchScript time over this one's (calculator, energy + forces)
                res["speedup"] = base["us_per_atom_total"] / res["us_per_atom_total"]
                rows.append(res)
                variant = res["format"] + (f"/{res['calls']}" if len(args.calls) > 1 else "")
                print(f"{alloc:<9} {variant:<11} {n:>6} {res['edges']:>8} {res['us_per_atom_total']:>9.1f} "
                      f"{res['us_per_atom_model']:>9.1f} {res['us_per_atom_graph']:>8.1f} "
                      f"{100 * res['share_outside_model']:>7.1f}% {res['speedup']:>7.2f}x", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "time": time.strftime("%Y-%m-%d %H:%M")}
    meta["model"] = MODELS[args.arch]
    meta["deploy_seconds"] = compile_s
    meta["compute_floor"] = floor
    meta["command"] = "python scripts/bench_ase.py " + " ".join(argv if argv is not None else sys.argv[1:])
    meta["load_average_before"], meta["load_average_after"] = load_before, os.getloadavg()
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    base = "reference TorchScript" if "torchscript" in args.formats else args.formats[0]
    if len(args.calls) > 1 and "memory" in args.calls:
        base += " in memory-sized calls"
    elif len(args.calls) > 1 and "in-turn" in args.calls:
        base += " in cache-sized calls in turn"
    lines = ["| allocator | format | atoms | edges | µs/atom (E+F, calculator) | µs/atom model | outside model | "
             f"speed-up vs {base} |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['allocator']} | {r['label']} | {r['atoms']} | {r['edges']} | {r['us_per_atom_total']:.1f} | "
              f"{r['us_per_atom_model']:.1f} | {100 * r['share_outside_model']:.1f}% | {r['speedup']:.2f}x |" for r in rows]
    lines.append("")
    lines.append(floor_line[0].upper() + floor_line[1:] + ".")
    lines.append("")
    lines.append(f"Command: `{meta['command']}`; deploy (compile + self-check) seconds: "
                 + ", ".join(f"{k} {v:.1f}" for k, v in compile_s.items()) + ". Load average (1, 5, 15 min) before → "
                 f"after the timing: {' '.join(f'{x:.2f}' for x in load_before)} → "
                 f"{' '.join(f'{x:.2f}' for x in meta['load_average_after'])}.")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
