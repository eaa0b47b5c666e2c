"""Benchmark the LAMMPS pair style `mdpot` with the benchmark Allegro or NequIP model.

Models (fresh weights, float32, Cu, r_max 5 Å): Allegro, l_max 1, 2 layers, 32 scalar / 16 tensor features
(the defaults of ``AllegroConfig(elements=("Cu",), r_max=5.0)``; ``--lmax``, ``--features``, ``--tensor-features``
for others); NequIP, ``--layers`` layers (default 3),
``--features`` features (default 32), l_max ``--lmax`` (default 1). System: FCC Cu (a = 3.61 Å), NVE at 300 K.

Reports, per size and rank count: timesteps/s, µs per atom-step, the pair-style share of the step; what the
model evaluated per step (from the pair style's end-of-run statistics): ghost atoms and edges per local atom
and the share of edges centred on ghosts (a message-passing model's redundant work); the pair-style overhead
against the bare compiled model on the same periodic graph without ghosts (Python, same thread count);
2-rank parallel efficiency; peak resident memory of rank 0, of the largest rank and summed over ranks, and per
atom. Writes docs/benchmarks/bench_lammps.{json,md} (Allegro) or bench_lammps_nequip.{json,md}.

    python scripts/bench_lammps.py                 # 10^3, 10^4, 10^5 atoms on 1 and 2 ranks (long)
    python scripts/bench_lammps.py --quick         # 10^3 and 4000 atoms, few steps
    python scripts/bench_lammps.py --sizes 1000 32000 --ranks 1 2 --tcmalloc
    python scripts/bench_lammps.py --arch nequip --layers 3 --sizes 4000 32000 --ranks 1 2 4 8 --steps 2
    python scripts/bench_lammps.py --arch nequip --sizes 4000 --message-passing exchange ghosts --tag _exchange
    python scripts/bench_lammps.py --arch nequip --lmax 2 --sizes 4000 8000 --ranks 2 --steps 1 \
        --message-passing exchange --max-edges 20000 --bare-max-atoms 0 --tag _exchange_lmax2
    python scripts/bench_lammps.py --sizes 4000 --ranks 2 --max-edges auto 400000 --repeats 2 --tag _max_edges
    python scripts/bench_lammps.py --sizes 4000 --ranks 2 --format torchscript aoti --repeats 3 --tag _aoti

``--format torchscript fused`` compares TorchScript files with the reference and the fused tensor-product kernels
(``mdpot deploy --kernels fused``, ``mdpot.ops``) the same way: ``fused`` is a TorchScript file calling
``torch.ops.mdpot.*``, which runs in every message-passing mode. The four variants side by side (issue 12's
target is twice the reference TorchScript):

    python scripts/bench_lammps.py --sizes 4000 --ranks 2 --format torchscript fused aoti aoti-fused --repeats 3 \
        --bare-max-atoms 0 --tag _aoti_fused
    python scripts/bench_lammps.py --lmax 2 --features 64 --tensor-features 32 --sizes 4000 --ranks 2 \
        --format torchscript fused aoti aoti-fused --aoti-threads serial --steps 5 --bare-max-atoms 0 \
        --tag _aoti_fused_lmax2     # the realistic Allegro: l_max 2, 64 scalar / 32 tensor features

Every variant's kernels are explicit: ``torchscript`` and ``aoti`` are the reference (pure torch) kernels,
``fused`` and ``aoti-fused`` mdpot's fused operators (``--kernels fused``), whatever ``mdpot deploy`` defaults to.

``--mpi-wait spin throttle`` runs every multi-rank case both ways, interleaved: with more ranks than cores (issue
11's pinned runs, ``taskset -c 0``) a rank that waits for a message polls on the core the rank it waits for
needs; ``throttle`` (MPICH's ``MPIR_CVAR_CH4_PROGRESS_THROTTLE=1``, ``mdpot.lammps.run.OVERSUBSCRIBED_ENV``) makes it
sleep instead. The default, ``auto``,
is what ``mdpot.lammps.run`` does: throttle only when oversubscribed. The table's ``MPI wait`` column says which.

    taskset -c 0 python scripts/bench_lammps.py --arch nequip --layers 3 --sizes 4000 --ranks 1 2 4 8 --steps 5 \
        --message-passing exchange --format fused --mpi-wait spin throttle --repeats 2 --tag _exchange_pinned_wait

``--max-edges auto 400000`` runs every case with each value (interleaved like formats); ``auto`` is the pair style's
default (a strictly local model on the CPU: cache-sized calls, 32 MB over the file's ``bytes_per_edge``; otherwise
``max_memory`` over it), and the value it chose is the table's ``max_edges``.

``--format torchscript aoti`` deploys the model in both formats (an AOTInductor package is compiled for this
machine, tens of seconds) and runs them interleaved: every repeat runs each case in each format back to back, and
the best time of each is kept; the ``vs TorchScript`` column is the best TorchScript time of the same size, ranks
and allocator (any message-passing mode) over the row's. A package has no block interface: where
``--message-passing exchange`` is asked for, it runs in ``ghosts``
(``--arch nequip --message-passing exchange --format torchscript aoti``: TorchScript with the exchange against
the package with the ghost shell).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"

INPUT = """\
units metal
atom_style atomic
boundary p p p
lattice fcc 3.61
region box block 0 {n} 0 {n} 0 {n}
create_box 1 box
create_atoms 1 box
mass 1 63.546
pair_style mdpot{pair_args}
pair_coeff * * {model} Cu
velocity all create 300.0 4928459 mom yes rot yes dist gaussian
timestep 0.001
fix md all nve
thermo {steps}
run {warmup}
run {steps}
info memory
"""

LOOP = re.compile(r"Loop time of (\S+) on (\d+) procs for (\d+) steps with (\d+) atoms")
PAIR = re.compile(r"^Pair\s+\|\s*(\S+)\s*\|\s*(\S+)\s*\|\s*(\S+)", re.M)
CPU_USE = re.compile(r"([\d.]+)% CPU use with")
RSS = re.compile(r"Maximum resident set size:\s*(\S+) Mbyte")
STATS = re.compile(r"^mdpot stats: (.*)$", re.M)


def cells_for(atoms: int) -> int:
    return max(2, round((atoms / 4) ** (1 / 3)))


def bench_config(arch: str, layers: int, features: int = 32, l_max: int = 1, tensor_features: int = 16):
    from mdpot.models import AllegroConfig, NequIPConfig

    if arch == "allegro":
        return AllegroConfig(elements=("Cu",), r_max=5.0, l_max=l_max, num_scalar_features=features,
                             num_tensor_features=tensor_features)
    # avg_num_neighbors as in FCC Cu at 5 Å (42): with 1.0, fresh weights blow features up into the range
    # where float32 gates underflow to denormals, which the CPU computes ~10x slower
    return NequIPConfig(elements=("Cu",), r_max=5.0, l_max=l_max, num_layers=layers, num_features=features,
                        avg_num_neighbors=42.0)


def describe(config) -> str:
    if config.architecture == "allegro":
        return (f"Allegro Cu, l_max {config.l_max}, {config.num_layers} layers, {config.num_scalar_features}/"
                f"{config.num_tensor_features} features, r_max {config.r_max:g} Å, float32")
    return (f"NequIP Cu, l_max {config.l_max}, {config.num_layers} layers, {config.num_features} features, "
            f"r_max {config.r_max:g} Å (receptive field {config.receptive_field:g} Å), float32")


#: ``--format`` variants -> (deploy format, kernels, label). "torchscript" (the reference kernels) is what every
#: other variant is measured against.
VARIANTS = {
    "torchscript": ("torchscript", "reference", "TorchScript, reference kernels"),
    "fused": ("torchscript", "fused", "TorchScript, fused kernels"),
    "aoti": ("aoti", "reference", "AOTI package, reference kernels"),
    "aoti-fused": ("aoti", "fused", "AOTI package, fused kernels"),
}


def deploy_bench_model(folder: Path, config, fmt: str = "torchscript", aoti_threads: str = "dynamic") -> Path:
    """The benchmark model deployed as variant ``fmt`` of ``VARIANTS`` (a package with ``aoti_threads`` loops:
    dynamic or serial)."""
    from mdpot.deploy import deploy_model
    from mdpot.models import build_model

    deploy_format, kernels, _ = VARIANTS[fmt]
    suffix = ".pt2" if deploy_format == "aoti" else ".pt"
    path = folder / f"bench_{config.architecture}_cu_f32_{fmt}{suffix}"
    deploy_model(build_model(config, seed=0), path, dtype="float32", overwrite=True, format=deploy_format,
                 kernels=kernels, **({"aoti_threads": aoti_threads} if deploy_format == "aoti" else {}))
    return path


def parse_stats(output: str) -> dict:
    """The pair style's last end-of-run statistics line (``mdpot stats: key=value ...``)."""
    found = STATS.findall(output)
    if not found:
        return {}
    def value(text: str):
        try:
            return float(text)
        except ValueError:
            return text  # mode=exchange|ghosts

    return {k: value(v) for k, v in (item.split("=") for item in found[-1].split())}


def mpi_wait_env(wait: str) -> dict:
    """MPICH's progress throttle for ``--mpi-wait``: forced on (mdpot.lammps.run's setting) or off, or (auto) as
    run_lammps decides."""
    from mdpot.lammps.run import OVERSUBSCRIBED_ENV

    if wait == "auto":
        return {}
    return dict(OVERSUBSCRIBED_ENV) if wait == "throttle" else {"MPIR_CVAR_CH4_PROGRESS_THROTTLE": "0"}


def mpi_wait_used(wait: str, ranks: int) -> str:
    """How waiting ranks waited (in run_lammps's environment for them): ``throttle`` (sleep after polling without
    progress) or ``spin`` (MPICH's default)."""
    from mdpot.lammps.run import run_environment

    value = run_environment(ranks, env=mpi_wait_env(wait)).get("MPIR_CVAR_CH4_PROGRESS_THROTTLE")
    return "throttle" if value not in (None, "", "0") and ranks > 1 else "spin"


def run_lammps_case(model: Path, n: int, ranks: int, steps: int, warmup: int, workdir: Path, tcmalloc: bool,
                    mode: str = "", max_edges: str | None = None, wait: str = "auto", threads: int = 1) -> dict:
    from mdpot.lammps.run import run_lammps

    env = {"LD_PRELOAD": TCMALLOC} if tcmalloc else {}
    env.update(mpi_wait_env(wait))
    pair_args = (f" message_passing {mode}" if mode else "") + (f" max_edges {max_edges}" if max_edges else "")
    run = run_lammps(INPUT.format(n=n, model=model, steps=steps, warmup=warmup, pair_args=pair_args), workdir, nprocs=ranks,
                     threads=threads, env=env, timeout=3600, log="log.lammps")
    loop = LOOP.findall(run.output)[-1]
    seconds, _, nsteps, natoms = float(loop[0]), int(loop[1]), int(loop[2]), int(loop[3])
    pair = float(PAIR.findall(run.output)[-1][1])  # average over ranks
    rss = RSS.findall(run.output)
    cpu_use = CPU_USE.findall(run.output)  # LAMMPS: CPU time / wall time of the loop, average over ranks
    cpu_share = float(cpu_use[-1]) / 100 if cpu_use else None
    evaluated = parse_stats(run.output)
    return {"max_edges_asked": max_edges or "default", "max_edges": evaluated.get("max_edges"),
            "format": evaluated.get("format", "torchscript"), "mode": evaluated.get("mode", mode or "–"), "atoms": natoms, "ranks": ranks,
            "threads": threads, "steps": nsteps, "seconds": seconds,
            "timesteps_per_s": nsteps / seconds, "us_per_atom_step": seconds / nsteps / natoms * 1e6,
            "cpu_share": cpu_share,
            "cpu_us_per_atom_step": seconds * cpu_share / nsteps / natoms * 1e6 if cpu_share else None,
            "pair_fraction": pair / seconds, "peak_rss_mb_rank0": float(rss[-1]) if rss else None,
            # every rank's peak, from the pair style's statistics line
            "peak_rss_mb_max_rank": evaluated.get("peak_rss_mb_max_rank"),
            "peak_rss_mb_all_ranks": evaluated.get("peak_rss_mb_all_ranks"),
            "allocator": "tcmalloc" if tcmalloc else "glibc", "mpi_wait": mpi_wait_used(wait, ranks),
            "evaluated": evaluated}


def bare_model_time(model: Path, n: int, repeats: int, threads: int = 1) -> dict:
    """The compiled model alone on the same structure's graph (neighbour list not timed)."""
    import torch

    from mdpot.data import TypeMapper, atoms_to_graph
    from mdpot._malloc import tune_malloc
    from mdpot.deploy import load_model
    from mdpot.testing import fcc

    torch.set_num_threads(threads)
    tune_malloc()  # as the calculator and the pair style do (loading a model no longer does it)
    torch._C._set_graph_executor_optimize(False)  # as the pair style runs it (jit_optimize no)
    loaded = load_model(model)
    atoms = fcc("Cu", (n, n, n), a=3.61, rattle=0.01)
    g = atoms_to_graph(atoms, loaded.r_max, TypeMapper(loaded.elements))
    args = (g.pos, g.atom_type, g.edge_index, g.edge_shift, g.num_atoms, False)
    for _ in range(3):
        loaded.module(*args)
    start = time.perf_counter()
    for _ in range(repeats):
        loaded.module(*args)
    seconds = (time.perf_counter() - start) / repeats
    return {"format": loaded.format, "atoms": len(atoms), "edges": g.num_edges, "seconds_per_eval": seconds,
            "us_per_atom": seconds / len(atoms) * 1e6}


def mb(value) -> str:
    return f"{value:.0f}" if value else "–"


def markdown(results: dict) -> str:
    asked = results.get("max_edges")
    asked = " ".join(map(str, asked)) if isinstance(asked, list) else asked
    max_edges = f" pair_style max_edges {asked}." if asked else ""
    lines = [f"# LAMMPS pair style benchmark ({results['when']})", "",
             f"Model: {results['model']}. Host: {results['host']}. Torch threads per rank: "
             f"{' and '.join(map(str, results.get('threads', [1])))}.{max_edges}"
             + (f" Usable cores: {results['usable_cores']} (overhead vs bare: wall × min(ranks × threads, cores) against "
                "the bare model's time on that many threads × those threads)." if results.get("usable_cores") else ""), ""]
    if results.get("command"):
        load = " → ".join(" ".join(f"{x:.2f}" for x in results[k]) for k in ("load_average_before", "load_average_after")
                          if results.get(k))
        lines += [f"Command: `{results['command']}`. Load average (1, 5, 15 min) before → after: {load}.", ""]
    lines += [
             "| format | message passing | max_edges (asked → used) | atoms | ranks | threads per rank | allocator | MPI wait | timesteps/s | µs/atom/step | vs reference TorchScript | "
             "CPU µs/atom/step (wall × CPU use) | "
             "pair share | ghost atoms / local | ghost-centred edges / local | edges on ghosts | bare model µs/atom | "
             "overhead vs bare | comm bytes / atom / step | comm share | peak RSS rank 0 (MB) | peak RSS largest rank (MB) | "
             "peak RSS all ranks (MB) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    bare = {(b.get("format", "torchscript"), b["atoms"], b.get("threads", 1)): b for b in results["bare_model"]}
    for r in results["lammps"]:
        fmt = r.get("format", "torchscript")
        threads = r.get("threads", 1)
        b = bare.get((fmt, r["atoms"], threads))
        base = [t["us_per_atom_step"] for t in results["lammps"] if t.get("format", "torchscript") == "torchscript"
                and (t["atoms"], t["ranks"], t.get("threads", 1), t["allocator"], t.get("mpi_wait")) ==
                (r["atoms"], r["ranks"], threads, r["allocator"], r.get("mpi_wait"))]
        ratio = f"{min(base) / r['us_per_atom_step']:.2f}x" if base else "–"
        cpu_us = f"{r['cpu_us_per_atom_step']:.1f}" if r.get("cpu_us_per_atom_step") else "–"
        # core-µs per atom-step: wall time × the cores the ranks ran on (all on one core when pinned with taskset)
        cores = min(r["ranks"] * threads, results.get("usable_cores") or r["ranks"] * threads)
        bare_cores = min(threads, results.get("usable_cores") or threads)
        overhead = f"{(r['us_per_atom_step'] * cores / (b['us_per_atom'] * bare_cores) - 1) * 100:+.1f}%" if b else "–"
        ev = r.get("evaluated") or {}
        bare_us = f"{b['us_per_atom']:.1f}" if b else "–"
        ghosts = (f"{ev['ghost_atoms_per_local']:.2f} | {ev['ghost_edges_per_local']:.1f} | "
                  f"{ev['ghost_edge_share'] * 100:.0f}%") if ev else "– | – | –"
        comm = "– | –"
        if ev.get("comm_bytes_per_atom") is not None:
            share = ev["comm_seconds_per_step"] / (r["seconds"] / r["steps"])
            comm = f"{ev['comm_bytes_per_atom']:.0f} | {share * 100:.1f}%"
        used = f"{r['max_edges']:.0f}" if isinstance(r.get("max_edges"), float) and r["max_edges"] else "–"
        label = VARIANTS[fmt][2] if fmt in VARIANTS else fmt
        lines.append(f"| {label} | {r.get('mode', '–')} | {r.get('max_edges_asked', 'default')} → {used} | {r['atoms']} | {r['ranks']} | {threads} | {r['allocator']} | "
                     f"{r.get('mpi_wait', '–')} | {r['timesteps_per_s']:.3g} | {r['us_per_atom_step']:.1f} | {ratio} | {cpu_us} | "
                     f"{r['pair_fraction'] * 100:.0f}% | "
                     f"{ghosts} | {bare_us} | {overhead} | {comm} | {mb(r['peak_rss_mb_rank0'])} | "
                     f"{mb(r.get('peak_rss_mb_max_rank'))} | {mb(r.get('peak_rss_mb_all_ranks'))} |")
    lines += ["", "Parallel efficiency (1 → 2 ranks): " + ", ".join(
        f"{e['atoms']} atoms {e.get('format') or ''} {e.get('mode', '')} {e.get('mpi_wait') or ''} {e['efficiency'] * 100:.0f}%" for e in results["parallel_efficiency"]) or "–"]
    if results.get("bytes_per_edge"):
        lines += ["", "bytes_per_edge recorded at deploy: " + ", ".join(
            f"{fmt} {v:.0f}" if v else f"{fmt} –" for fmt, v in results["bytes_per_edge"].items())]
    lines += ["", "Memory per atom (marginal, rank 0 RSS between the two largest 1-rank sizes): "
              + (f"{results['memory_per_atom_kb']:.2f} kB" if results.get("memory_per_atom_kb") else "–"), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", help="approximate atom counts (default 1000 10000 100000)")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, help="timed steps (default: 20, or 5 with --quick)")
    parser.add_argument("--quick", action="store_true", help="1000 and 4000 atoms, 5 steps")
    parser.add_argument("--tcmalloc", action="store_true", help=f"also run with LD_PRELOAD={TCMALLOC}")
    parser.add_argument("--bare-max-atoms", type=int, default=20000,
                        help="time the bare model in one call only up to this size (memory; default 20000)")
    parser.add_argument("--model", type=Path, help="deployed model (default: fresh benchmark model)")
    parser.add_argument("--arch", choices=("allegro", "nequip"), default="allegro", help="benchmark model (default allegro)")
    parser.add_argument("--layers", type=int, default=3, help="NequIP interaction blocks (default 3)")
    parser.add_argument("--features", type=int, default=32,
                        help="NequIP channels, Allegro scalar features (default 32; the ghost counts do not depend on "
                             "it, memory does)")
    parser.add_argument("--tensor-features", type=int, default=16, help="Allegro tensor features (default 16)")
    parser.add_argument("--lmax", type=int, default=1,
                        help="l_max of the features and spherical harmonics (default 1)")
    parser.add_argument("--max-edges", nargs="+",
                        help="pair_style mdpot max_edges values to run, interleaved (N or auto): edges per model call, "
                             "per block call in exchange mode "
                             "(default: the pair style's); bounds a rank's memory")
    parser.add_argument("--message-passing", nargs="+", choices=("exchange", "ghosts"), default=[""],
                        help="NequIP: pair style modes to run (default: the pair style's default)")
    parser.add_argument("--format", nargs="+", choices=tuple(VARIANTS), default=["torchscript"],
                        help="deployed variants to run, interleaved: torchscript and aoti with the reference kernels, "
                             "fused (TorchScript) and aoti-fused with the fused kernels (default torchscript)")
    parser.add_argument("--aoti-threads", choices=("dynamic", "serial"), default="dynamic",
                        help="packages: loops that follow the thread count (dynamic, default) or none (serial, "
                             "fastest at 1 thread per rank)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1],
                        help="torch threads per rank (the pair style's threads), interleaved; the bare model is timed "
                             "on each; more than one thread per rank runs only where ranks x threads fit the usable "
                             "cores (default 1)")
    parser.add_argument("--mpi-wait", nargs="+", choices=("auto", "spin", "throttle"), default=["auto"],
                        help="how waiting MPICH ranks wait, interleaved: spin (MPICH's polling), throttle (sleep "
                             "after polling without progress, mdpot.lammps.run.OVERSUBSCRIBED_ENV) or auto (throttle "
                             "when there are more ranks than usable cores, as mdpot.lammps.run does; default)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run every case this many times, formats interleaved; the best of each is kept")
    parser.add_argument("--tag", default="", help="suffix of the results files (bench_lammps_nequip<TAG>.json)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks", help="folder for the results")
    args = parser.parse_args(argv)
    if args.model is not None and len(args.format) > 1:
        parser.error("--model is one file of one format; leave it out to compare formats")
    if args.model is not None:
        if not args.model.is_file():
            parser.error(f"--model {args.model}: no such file")
        args.model = args.model.resolve()  # LAMMPS runs in a scratch folder: a relative path would not resolve there
    for value in args.max_edges or []:
        if value != "auto" and not (value.isdigit() and int(value) >= 1):
            parser.error(f"--max-edges takes positive integers or auto, got {value}")
    if any(t < 1 for t in args.threads):
        parser.error(f"--threads takes positive integers, got {args.threads}")
    if args.lmax < 0:
        parser.error(f"--lmax must be 0 or more, got {args.lmax}")
    if args.arch == "nequip" and args.tensor_features != 16:
        parser.error(f"--tensor-features applies to the Allegro benchmark model, got --tensor-features "
                     f"{args.tensor_features} with --arch nequip")
    config = bench_config(args.arch, args.layers, args.features, args.lmax, args.tensor_features)
    stem = ("bench_lammps" if args.arch == "allegro" else "bench_lammps_nequip") + args.tag
    sizes = args.sizes or ([1000, 4000] if args.quick else [1000, 10000, 100000])
    steps = args.steps or (5 if args.quick else 20)
    allocators = [False] + ([True] if args.tcmalloc and Path(TCMALLOC).exists() else [])

    from mdpot._files import sha256_file
    from mdpot.lammps.plugin import build_plugin
    from mdpot.lammps.run import usable_cores

    build_plugin()
    with tempfile.TemporaryDirectory(prefix="mdpot-bench-") as tmp:
        tmp = Path(tmp)
        models = {fmt: args.model or deploy_bench_model(tmp, config, fmt, args.aoti_threads) for fmt in args.format}
        results = {"when": time.strftime("%Y-%m-%d %H:%M"), "host": f"{platform.node()} {platform.processor()}",
                   # a given model by its name and content, never by this machine's path to it
                   "model": describe(config) if args.model is None else
                   f"{Path(args.model).name} (sha256 {sha256_file(args.model)[:16]})",
                   "steps": steps, "repeats": args.repeats, "formats": args.format, "max_edges": args.max_edges,
                   "aoti_threads": args.aoti_threads, "mpi_wait": args.mpi_wait, "threads": args.threads,
                   "command": "python scripts/bench_lammps.py " + " ".join(sys.argv[1:] if argv is None else argv),
                   "load_average_before": os.getloadavg(), "usable_cores": usable_cores(),
                   "lammps": [], "bare_model": [], "parallel_efficiency": []}
        from mdpot.deploy import load_model

        results["bytes_per_edge"] = {fmt: load_model(model).metadata.get("bytes_per_edge") for fmt, model in models.items()}
        print(f"bytes_per_edge (deploy's measurement): {results['bytes_per_edge']}", flush=True)
        for size in sizes:
            n = cells_for(size)
            best, best_bare = {}, {}
            # a package cannot exchange: asked for exchange, it runs in ghosts (once, if ghosts was asked for too)
            cases = list(dict.fromkeys((tc, "ghosts" if VARIANTS[fmt][0] == "aoti" and mode == "exchange" else mode, ranks, fmt, me,
                                        wait, threads)
                                       for tc in allocators for mode in args.message_passing
                                       for ranks in args.ranks for threads in args.threads for fmt in models
                                       for me in args.max_edges or [None]
                                       for wait in (args.mpi_wait if ranks > 1 else ["auto"])
                                       # threads beyond the cores only wait on each other (ranks may: issue 11's
                                       # pinned runs put every rank on one core)
                                       if threads == 1 or ranks * threads <= (usable_cores() or ranks * threads)))
            for repeat in range(args.repeats):
                # the yardstick is timed in every repeat too (best kept), so that it sees the same machine
                for fmt, model in models.items() if 4 * n ** 3 <= args.bare_max_atoms else ():
                    for threads in args.threads:
                        bare = {**bare_model_time(model, n, repeats=max(2, steps // 2), threads=threads),
                                "format": fmt, "threads": threads}
                        if (fmt, threads) not in best_bare or \
                                bare["us_per_atom"] < best_bare[fmt, threads]["us_per_atom"]:
                            best_bare[fmt, threads] = bare
                        print(f"  run {repeat + 1}/{args.repeats} bare model {fmt:>11} {bare['atoms']:>7} atoms "
                              f"{threads} thread(s): {bare['us_per_atom']:.1f} µs/atom", flush=True)
                for tc, mode, ranks, fmt, me, wait, threads in cases:
                    r = run_lammps_case(models[fmt], n, ranks, steps, warmup=max(2, steps // 5),
                                        workdir=tmp / f"n{n}_r{ranks}_t{threads}_{int(tc)}_{mode}_{fmt}_{me}_{wait}_{repeat}",
                                        tcmalloc=tc, mode=mode, max_edges=me, wait=wait, threads=threads)
                    r["format"] = fmt  # "fused": a TorchScript file the pair style reports as torchscript
                    key = (tc, mode, ranks, fmt, me, wait, threads)
                    if key not in best or r["us_per_atom_step"] < best[key]["us_per_atom_step"]:
                        best[key] = r
                    used = "" if r["max_edges"] is None else f" ({r['max_edges']:.0f})"
                    print(f"  run {repeat + 1}/{args.repeats} {fmt:>11} {r['mode']:>8} max_edges {me or 'default'}{used} "
                          f"MPI wait {r['mpi_wait']} "
                          f"{r['atoms']:>7} atoms "
                          f"{ranks} rank(s) × {threads} thread(s): {r['us_per_atom_step']:.1f} µs/atom/step, peak RSS largest rank "
                          f"{mb(r.get('peak_rss_mb_max_rank'))} MB", flush=True)
            for (fmt, threads), bare in best_bare.items():
                results["bare_model"].append(bare)
                print(f"bare model {fmt:>11} {bare['atoms']:>7} atoms {threads} thread(s): {bare['us_per_atom']:.1f} "
                      "µs/atom", flush=True)
            for key in cases:
                r = best[key]
                results["lammps"].append(r)
                ev = r["evaluated"]
                print(f"lammps {r['format']:>11} {r['mode']:>8} {r['atoms']:>7} atoms {r['ranks']} rank(s) × "
                      f"{r['threads']} thread(s) {r['allocator']:>8}: "
                      f"{r['timesteps_per_s']:.3g} steps/s, {r['us_per_atom_step']:.1f} µs/atom/step, "
                      f"pair {r['pair_fraction'] * 100:.0f}%, ghost atoms/local "
                      f"{ev.get('ghost_atoms_per_local', float('nan')):.2f}, edges on ghosts "
                      f"{ev.get('ghost_edge_share', float('nan')) * 100:.0f}%", flush=True)
        for r2 in results["lammps"]:
            r1 = next((r for r in results["lammps"] if r["ranks"] == 1 and r["atoms"] == r2["atoms"]
                       and r["allocator"] == r2["allocator"] and r["mode"] == r2["mode"]
                       and r.get("format") == r2.get("format") and r.get("threads") == r2.get("threads")
                       and r.get("max_edges_asked") == r2.get("max_edges_asked")), None)
            if r2["ranks"] == 2 and r1:
                results["parallel_efficiency"].append(
                    {"atoms": r2["atoms"], "allocator": r2["allocator"], "format": r2.get("format"),
                     "mode": r2["mode"], "mpi_wait": r2.get("mpi_wait"), "threads": r2.get("threads", 1), "efficiency": r1["seconds"] / r1["steps"] / (2 * r2["seconds"] / r2["steps"])})
        one = sorted((r for r in results["lammps"] if r["ranks"] == 1 and r["allocator"] == "glibc"
                      and r["peak_rss_mb_rank0"] and r["mode"] == results["lammps"][0]["mode"]
                      and r.get("format") == results["lammps"][0].get("format")
                      and r.get("threads", 1) == results["lammps"][0].get("threads", 1)),
                     key=lambda r: r["atoms"])
        if len(one) >= 2 and one[-1]["atoms"] > one[-2]["atoms"]:
            a, b = one[-2], one[-1]
            results["memory_per_atom_kb"] = (b["peak_rss_mb_rank0"] - a["peak_rss_mb_rank0"]) * 1024 / (b["atoms"] - a["atoms"])
    results["load_average_after"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(results))
    print(markdown(results))
    print(f"wrote {args.out / (stem + '.json')} and {args.out / (stem + '.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
