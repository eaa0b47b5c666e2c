"""Committee cost in LAMMPS: ``pair_style mdpot`` with a committee file of K copies (seeds 0 .. K-1) of the
benchmark Allegro (``DEFAULT_MODEL``, Cu, float32, fused kernels) against member 0 alone, FCC Cu, NVE.

Runs the two files interleaved, ``--repeats`` times, and keeps each one's best time per step (the run's loop time
over its steps, after a ``run 0`` that warms up). Not a test: the issue's target is K = 4 at <= 2.5x one model;
the members run in turn, so expect about K x.

    python scripts/bench_committee_lammps.py --members 4 --cells 10 --ranks 2 --steps 5 --repeats 3
"""
from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

INPUT = """\
units metal
atom_style atomic
lattice fcc 3.61
region box block 0 {n} 0 {n} 0 {n}
create_box 1 box
create_atoms 1 box
mass 1 63.546
pair_style mdpot device cpu threads 1
pair_coeff * * {model} Cu
velocity all create 300.0 4928459 mom yes rot yes dist gaussian
fix md all nve
{observe}
run 0
run {steps}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--cells", type=int, default=10, help="FCC cells per side (10: 4000 atoms)")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from mdpot.deploy import deploy_committee, deploy_model
    from mdpot.lammps.run import run_lammps
    from mdpot.models import DEFAULT_MODEL, build_model, make_config

    config = make_config(DEFAULT_MODEL["architecture"], DEFAULT_MODEL["model"])
    models = [build_model(config, seed=k) for k in range(args.members)]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = {"single": deploy_model(models[0], folder / "single.pt", dtype="float32").path,
                 "committee": deploy_committee(models, folder / "committee.pt", dtype="float32").path}
        best = {}
        for repeat in range(args.repeats):
            for name, path in files.items():
                observe = ("compute dev all pair mdpot\nthermo_style custom step pe c_dev[1] c_dev[4]"
                           if name == "committee" else "")
                script = INPUT.format(n=args.cells, model=path, steps=args.steps, observe=observe)
                (folder / f"{name}{repeat}").mkdir()
                out = run_lammps(script, folder / f"{name}{repeat}", nprocs=args.ranks, timeout=1800).output
                loop = float(re.findall(r"Loop time of (\S+) on", out)[-1])
                best[name] = min(best.get(name, loop), loop / args.steps)
                print(f"repeat {repeat} {name}: {loop / args.steps:.3f} s/step", flush=True)
    atoms = 4 * args.cells ** 3
    print(f"{atoms} atoms, {args.ranks} ranks x 1 thread, benchmark Allegro float32 fused, K = {args.members}: "
          f"committee {best['committee']:.3f} s/step, one model {best['single']:.3f} s/step, "
          f"ratio {best['committee'] / best['single']:.2f}x (best of {args.repeats})")


if __name__ == "__main__":
    main()
