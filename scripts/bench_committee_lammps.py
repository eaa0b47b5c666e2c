"""Committee cost in LAMMPS: ``pair_style mdpot`` with committee files of K copies (seeds 0 .. K-1) of the benchmark
Allegro (``DEFAULT_MODEL``, Cu, float32, fused kernels) against member 0 alone, FCC Cu, NVE.

One interleaved round per repeat runs: member 0's own file; the committees of K = 2 .. --members in the default
``committee mean`` (every member on every step); and the K = --members committee under ``committee first every N``
(member 0 drives the dynamics, all members on every N-th step). Each keeps its best time per step (the run's loop time
over its steps, after a ``run 0`` that warms up; the timed run's own setup is not in the loop time, so with --steps N
exactly one of its N steps evaluates every member). A straight line t(K) = a + b K through member 0 alone (K = 1) and
the mean-mode committees gives the work the members share (neighbour list, packing, communication), a / (a + b) of
one model's step. The load average before and after is recorded: run it on a quiet machine. Not a test: the issue's
target is K = 4 at <= 2.5x one model.

    python scripts/bench_committee_lammps.py --members 4 --cells 10 --ranks 2 --steps 10 --every 10 --repeats 2 \\
        --output docs/benchmarks/committee_lammps

writes committee_lammps.json and committee_lammps.md (--output without a suffix).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

INPUT = """\
units metal
atom_style atomic
lattice fcc 3.61
region box block 0 {n} 0 {n} 0 {n}
create_box 1 box
create_atoms 1 box
mass 1 63.546
pair_style mdpot device cpu threads 1 {keywords}
pair_coeff * * {model} Cu
velocity all create 300.0 4928459 mom yes rot yes dist gaussian
fix md all nve
{observe}
run 0
run {steps}
"""


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> List[float]:
    return [round(v, 2) for v in os.getloadavg()]


def fit_line(ks: List[int], ts: List[float]):
    """Least-squares t = a + b k: (a, b)."""
    n = len(ks)
    mk, mt = sum(ks) / n, sum(ts) / n
    b = sum((k - mk) * (t - mt) for k, t in zip(ks, ts)) / sum((k - mk) ** 2 for k in ks)
    return mt - b * mk, b


def markdown(result: Dict) -> str:
    a = result["args"]
    base = result["best"]["one model"]
    lines = [f"# Committee cost in LAMMPS ({result['date']})", "",
             f"`{result['command']}`", "",
             f"{result['atoms']} atoms of FCC Cu, NVE, {a['ranks']} MPI rank(s) x 1 torch thread, the benchmark Allegro "
             f"(float32, fused kernels), committees of copies with seeds 0 .. K-1; best of {a['repeats']} interleaved "
             f"rounds of {a['steps']} steps each. Host: {result['cpu']}, {result['cores']} cores; load average (1, 5, "
             f"15 min) {result['load_before']} before, {result['load_after']} after.", "",
             "| run | s/step (best) | x one model | all rounds (s/step) | steps evaluating every member |",
             "|---|---|---|---|---|"]
    for name, t in result["best"].items():
        rounds = ", ".join(f"{v:.3f}" for v in result["times"][name])
        lines.append(f"| {name} | {t:.3f} | {t / base:.2f}x | {rounds} | {result['committee_steps'].get(name, '–')} |")
    fit = result["fit"]
    lines += ["", f"Fit t(K) = a + b K over member 0 alone and the mean-mode committees: a = {fit['a']:.3f} s, "
              f"b = {fit['b']:.3f} s per member; shared fraction a / (a + b) = {fit['shared_fraction']:.1%} of one "
              f"model's step. `committee first every {a['every']}` costs {fit['first_ratio']:.2f}x one model; "
              f"((N - 1) t(1) + t(K)) / N from the measured t would give {fit['first_expected']:.2f}x.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=4, help="K of the committee run in first mode (and the largest "
                                                               "mean-mode committee)")
    parser.add_argument("--mean-sizes", default="2,3,4", help="committee sizes run in mean mode, comma separated "
                                                              "(empty: none; at least two for the fit)")
    parser.add_argument("--every", type=int, default=10, help="N of committee first every N")
    parser.add_argument("--cells", type=int, default=10, help="FCC cells per side (10: 4000 atoms)")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output", default="", help="write OUTPUT.json and OUTPUT.md (e.g. "
                                                     "docs/benchmarks/committee_lammps)")
    args = parser.parse_args()
    mean_sizes = [int(k) for k in args.mean_sizes.split(",") if k.strip()]
    if any(k < 2 for k in mean_sizes) or args.members < 2:
        parser.error(f"committee sizes must be >= 2, got --members {args.members} --mean-sizes {args.mean_sizes}")

    from mdpot.deploy import deploy_committee, deploy_model
    from mdpot.lammps.run import run_lammps
    from mdpot.models import DEFAULT_MODEL, build_model, make_config

    load_before = load_average()
    config = make_config(DEFAULT_MODEL["architecture"], DEFAULT_MODEL["model"])
    models = [build_model(config, seed=k) for k in range(max([args.members] + mean_sizes))]
    first = f"first every {args.every}, K = {args.members}"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print("deploying member 0 and the committees ...", flush=True)
        runs = {"one model": (deploy_model(models[0], folder / "single.pt", dtype="float32").path, "")}
        files = {}
        for k in sorted(set(mean_sizes + [args.members])):
            files[k] = deploy_committee(models[:k], folder / f"committee{k}.pt", dtype="float32").path
        for k in mean_sizes:
            runs[f"mean, K = {k}"] = (files[k], "")
        runs[first] = (files[args.members], f"committee first every {args.every}")
        times: Dict[str, List[float]] = {name: [] for name in runs}
        committee_steps: Dict[str, str] = {}
        for repeat in range(args.repeats):
            for name, (path, keywords) in runs.items():
                observe = ("compute dev all pair mdpot\nthermo_style custom step pe c_dev[1] c_dev[4]"
                           if path != runs["one model"][0] else "")
                script = INPUT.format(n=args.cells, model=path, steps=args.steps, observe=observe, keywords=keywords)
                workdir = folder / f"run{repeat}_{len(times[name])}_{re.sub(r'[^a-z0-9]+', '_', name)}"
                workdir.mkdir()
                out = run_lammps(script, workdir, nprocs=args.ranks, timeout=3600).output
                loop = float(re.findall(r"Loop time of (\S+) on", out)[-1])
                times[name].append(loop / args.steps)
                found = re.findall(r"mdpot stats: .* steps=(\d+) .*committee_steps=(\d+)", out)
                if found:  # the timed run's line: its setup step and its steps
                    committee_steps[name] = f"{found[-1][1]} of {found[-1][0]}"
                print(f"round {repeat + 1}/{args.repeats} {name}: {loop / args.steps:.3f} s/step", flush=True)
    best = {name: min(v) for name, v in times.items()}
    base = best["one model"]
    ks = [1] + mean_sizes
    a, b = fit_line(ks, [base] + [best[f"mean, K = {k}"] for k in mean_sizes]) if len(ks) >= 2 else (0.0, base)
    t_k = a + b * args.members
    fit = {"a": a, "b": b, "shared_fraction": a / (a + b), "first_ratio": best[first] / base,
           "first_expected": ((args.every - 1) * base + (best.get(f"mean, K = {args.members}", t_k))) / args.every / base}
    result = {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
              "command": "python " + " ".join([sys.argv[0]] + sys.argv[1:]), "args": vars(args),
              "atoms": 4 * args.cells ** 3, "cpu": cpu_name(), "cores": os.cpu_count(), "load_before": load_before,
              "load_after": load_average(), "times": times, "best": best, "committee_steps": committee_steps,
              "fit": fit}
    text = markdown(result)
    print(text)
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        out.with_suffix(".md").write_text(text)
        print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"benchmark took {time.time() - t0:.0f} s")
