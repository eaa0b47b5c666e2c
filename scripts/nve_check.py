#!/usr/bin/env python
"""Energy conservation of the shipped example models in LAMMPS (row 25 of docs/testing.md).

For each model: NVE at 1 fs for 1 ps (1000 steps) on >= 500 atoms, 2 MPI ranks, thermo every 10 fs.
Reports the drift of the total energy per atom per ps (slope of a least-squares line through E_tot(t)),
the largest |E_tot(t) - E_tot(0)| per atom, the temperature, and writes, next to each model,
``nve.png`` (total, potential and kinetic energy vs time) and ``nve.json``.

    python scripts/nve_check.py                        # every model in examples/models/*/model.pt
    python scripts/nve_check.py --models allegro-cu-emt --steps 200
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "examples" / "models"

#: lattice, size (conventional cells per side), mass, start temperature per element
SYSTEMS = {
    "Cu": ("fcc 3.61", 5, 63.546, 600.0),       # 500 atoms
    "Si": ("diamond 5.431", 4, 28.0855, 800.0),  # 512 atoms
}

INPUT = """\
units        metal
atom_style   atomic
boundary     p p p
lattice      {lattice}
region       box block 0 {size} 0 {size} 0 {size}
create_box   1 box
create_atoms 1 box
mass         1 {mass}
displace_atoms all random 0.03 0.03 0.03 4711
pair_style   mdpot
pair_coeff   * * {model} {element}
velocity     all create {temperature} 12345 mom yes rot yes dist gaussian
timestep     0.001
fix          md all nve
thermo_style custom step time temp pe ke etotal press
thermo_modify format float %.15g
thermo       {thermo}
run          {steps}
"""


def run_nve(model: Path, steps: int, ranks: int, workdir: Path) -> dict:
    from mdpot.deploy import load_model
    from mdpot.lammps.run import read_log, run_lammps

    loaded = load_model(model)
    (element,) = loaded.elements
    lattice, size, mass, temperature = SYSTEMS[element]
    t0 = time.perf_counter()
    run_lammps(INPUT.format(lattice=lattice, size=size, mass=mass, model=model.resolve(), element=element,
                            temperature=temperature, thermo=10, steps=steps), workdir, nprocs=ranks, timeout=3600)
    wall = time.perf_counter() - t0
    thermo = read_log(workdir / "log.lammps")[-1]
    t_ps = np.asarray(thermo["Time"])
    n_atoms = (8 if lattice.startswith("diamond") else 4) * size ** 3
    etot = np.asarray(thermo["TotEng"]) / n_atoms
    slope = float(np.polyfit(t_ps, etot, 1)[0])
    return {
        "model": str(model.relative_to(ROOT)) if model.is_relative_to(ROOT) else model.name,  # no machine path
        "architecture": loaded.metadata["architecture"], "dtype": loaded.metadata["model_dtype"],
        "element": element, "atoms": n_atoms, "steps": steps, "timestep_fs": 1.0, "ranks": ranks,
        "start_temperature_K": temperature, "mean_temperature_K": float(np.mean(thermo["Temp"][len(t_ps) // 5:])),
        "drift_eV_per_atom_per_ps": slope,
        "max_abs_deviation_eV_per_atom": float(np.max(np.abs(etot - etot[0]))),
        "wall_s": wall,
        "series": {"time_ps": t_ps.tolist(), "etotal": thermo["TotEng"].tolist(), "pe": thermo["PotEng"].tolist(),
                   "ke": thermo["KinEng"].tolist(), "temp": thermo["Temp"].tolist()},
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result["series"]
    t = np.asarray(s["time_ps"])
    n = result["atoms"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.5, 6), sharex=True)
    top.plot(t, (np.asarray(s["etotal"]) - s["etotal"][0]) / n * 1e3, color="k")
    top.set_ylabel("E_tot(t) - E_tot(0)  (meV/atom)")
    top.set_title(f"{result['model']}: NVE, {n} {result['element']} atoms, 1 fs, {result['ranks']} ranks\n"
                  f"drift {result['drift_eV_per_atom_per_ps']:+.2e} eV/atom/ps, "
                  f"max |dE| {result['max_abs_deviation_eV_per_atom']:.2e} eV/atom", fontsize=9)
    bottom.plot(t, (np.asarray(s["pe"]) - s["pe"][0]) / n, label="potential - initial")
    bottom.plot(t, (np.asarray(s["ke"]) - s["ke"][0]) / n, label="kinetic - initial")
    bottom.set_xlabel("time (ps)")
    bottom.set_ylabel("eV/atom")
    bottom.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", help="names under examples/models (default: all with a model.pt)")
    parser.add_argument("--steps", type=int, default=1000, help="NVE steps of 1 fs (default 1000 = 1 ps)")
    parser.add_argument("--ranks", type=int, default=2)
    args = parser.parse_args(argv)
    names = args.models or sorted(p.parent.name for p in MODELS.glob("*/model.pt"))
    if not names:
        print(f"no models under {MODELS}", file=sys.stderr)
        return 1
    from mdpot.lammps.plugin import build_plugin

    build_plugin()
    rows = []
    with tempfile.TemporaryDirectory(prefix="mdpot-nve-") as tmp:
        for name in names:
            model = MODELS / name / "model.pt"
            if not model.is_file():
                print(f"{model} not found", file=sys.stderr)
                return 1
            result = run_nve(model, args.steps, args.ranks, Path(tmp) / name)
            (MODELS / name / "nve.json").write_text(json.dumps(result, indent=1) + "\n")
            plot(result, MODELS / name / "nve.png")
            rows.append(result)
            print(f"{name}: {result['atoms']} atoms, {result['steps']} steps, <T> {result['mean_temperature_K']:.0f} K, "
                  f"drift {result['drift_eV_per_atom_per_ps']:+.2e} eV/atom/ps, max |dE| "
                  f"{result['max_abs_deviation_eV_per_atom']:.2e} eV/atom ({result['wall_s']:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
