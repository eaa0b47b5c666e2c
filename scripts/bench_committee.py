#!/usr/bin/env python
"""Committee cost in ASE: energy + forces of K copies (seeds 0 .. K-1) of the benchmark Allegro (``DEFAULT_MODEL``,
float32, fused kernels) on FCC Cu, as one committee file and as a list of K files, against one model.

The calls are interleaved (single, committee file, list, single, ...) and the best of ``--repeats`` is kept, so that
other load on the machine affects every variant alike. Prints one table; the numbers go into docs/contract.md
("Committee files", cost).

Example: ``python scripts/bench_committee.py --atoms 2048 --members 4 --repeats 5``
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atoms", type=int, default=2048, help="FCC Cu atoms (4 n^3; default 2048)")
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()

    import torch
    from ase.build import bulk

    from mdpot import MDPotCalculator
    from mdpot.deploy import deploy_committee, deploy_model
    from mdpot.models import DEFAULT_MODEL, build_model, make_config

    torch.set_num_threads(args.threads)
    config = make_config(DEFAULT_MODEL["architecture"], DEFAULT_MODEL["model"])
    models = [build_model(config, seed=k) for k in range(args.members)]
    n = round((args.atoms / 4) ** (1 / 3))
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((n, n, n))
    atoms.rattle(0.02, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        singles = [deploy_model(m, folder / f"m{k}.pt", dtype=args.dtype).path for k, m in enumerate(models)]
        committee = deploy_committee(models, folder / "committee.pt", dtype=args.dtype).path
        variants = {"one model": MDPotCalculator(singles[0]),
                    f"committee file (K={args.members})": MDPotCalculator(committee),
                    f"list of {args.members} files": MDPotCalculator(singles)}
        best = {name: float("inf") for name in variants}
        for repeat in range(args.repeats + 1):  # the first round warms up
            for name, calc in variants.items():
                calc.reset()
                a = atoms.copy()
                a.calc = calc
                t0 = time.perf_counter()
                a.get_forces()
                if repeat:
                    best[name] = min(best[name], time.perf_counter() - t0)
            print(f"round {repeat}/{args.repeats} done", flush=True)
    base = best["one model"]
    print(f"{len(atoms)} atoms, benchmark Allegro {args.dtype}, fused kernels, {args.threads} thread(s), "
          f"best of {args.repeats}")
    for name, seconds in best.items():
        print(f"{name:>28}: {seconds * 1e3:8.1f} ms  {seconds / base:5.2f}x one model")


if __name__ == "__main__":
    main()
