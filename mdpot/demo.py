"""The README's main job: deploy the shipped, trained Allegro Cu model (with its self-check), run a short NVE MD
with the ASE calculator and then with LAMMPS (`pair_style mdpot`) on 2 MPI ranks."""
from __future__ import annotations

import time
from pathlib import Path


#: Files under ``examples/`` that ship in the wheel (``setup.py`` copies them to ``mdpot/_demo/``).
DEMO_FILES = ("in.nve", "models/allegro-cu-emt/model.ckpt")


def example_file(relative: str) -> Path:
    """A file the demo needs, by its path under ``examples/``: from the package data of an installed wheel
    (``mdpot/_demo/``, copied there at build time by ``setup.py``), else from a source checkout."""
    here = Path(__file__).resolve().parent
    for base in (here / "_demo", here.parent / "examples"):
        if (base / relative).is_file():
            return base / relative
    raise FileNotFoundError(f"example file {relative} not found in {here / '_demo'} (installed package) or "
                            f"{here.parent / 'examples'} (source checkout)")


def run_demo(workdir: Path, steps: int = 50, repeat: int = 4, dtype: str = "float64", seed: int = 0,
             lammps_steps: int = 200, lammps_size: int = 6, ranks: int = 2) -> dict:
    """Deploy the shipped Allegro Cu checkpoint into ``workdir`` in ``dtype``, run ``steps`` of NVE (1 fs) with
    ASE on an FCC Cu supercell of ``repeat**3`` cubic cells, then ``lammps_steps`` of NVE in LAMMPS on
    ``ranks`` MPI ranks (``examples/in.nve``, ``lammps_size**3`` cells). Prints energy drift and speed of
    both, returns them."""
    from ase import units
    from ase.md.verlet import VelocityVerlet

    from .calculator import MDPotCalculator
    from .deploy import deploy_checkpoint
    from .testing.structures import fcc, thermalize

    if steps < 1 or repeat < 1:
        raise ValueError(f"steps and repeat must be >= 1, got steps={steps} repeat={repeat}")
    checkpoint = example_file(DEMO_FILES[1])  # trained on EMT Cu; see examples/models/allegro-cu-emt
    workdir.mkdir(parents=True, exist_ok=True)
    model_path = workdir / f"cu_allegro_{dtype}.pt"
    t0 = time.perf_counter()
    deployed = deploy_checkpoint(checkpoint, model_path, dtype=dtype, overwrite=True)
    print(f"deployed the shipped Allegro Cu checkpoint ({DEMO_FILES[1]}) -> {model_path} "
          f"({deployed.num_parameters} parameters, {dtype}, self-check passed) in {time.perf_counter() - t0:.1f} s")

    atoms = fcc("Cu", (repeat,) * 3, rattle=0.02, seed=seed)
    thermalize(atoms, 300, seed=seed)
    atoms.calc = MDPotCalculator(deployed)
    n = len(atoms)
    e0 = atoms.get_total_energy()
    energies = [e0]
    dyn = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    dyn.attach(lambda: energies.append(atoms.get_total_energy()), interval=1)
    t0 = time.perf_counter()
    dyn.run(steps)
    elapsed = time.perf_counter() - t0
    drift = (energies[-1] - e0) / n
    spread = (max(energies) - min(energies)) / n
    result = {
        "atoms": n, "steps": steps, "dtype": dtype,
        "energy_drift_eV_per_atom": drift, "energy_spread_eV_per_atom": spread,
        "steps_per_s": steps / elapsed, "us_per_atom_step": elapsed / steps / n * 1e6,
    }
    print(f"ASE NVE: {n} Cu atoms, {steps} steps of 1 fs, T0 = 300 K")
    print(f"  total energy drift   {drift:+.3e} eV/atom (max spread {spread:.3e} eV/atom)")
    print(f"  speed                {result['steps_per_s']:.2f} steps/s, {result['us_per_atom_step']:.1f} µs/atom/step")
    if lammps_steps > 0:
        result["lammps"] = run_lammps_nve(model_path, workdir / "lammps", lammps_steps, lammps_size, ranks)
    return result


def run_lammps_nve(model_path: Path, workdir: Path, steps: int, size: int, ranks: int) -> dict:
    """``examples/in.nve`` on ``ranks`` MPI ranks; prints timesteps/s, µs/atom/step and energy drift."""
    from .lammps.plugin import build_plugin
    from .lammps.run import read_log, run_lammps

    build_plugin()
    script = example_file(DEMO_FILES[0])
    variables = {"model": model_path.resolve(), "size": size, "steps": steps, "thermo": max(1, steps // 10)}
    run = run_lammps(script, workdir, nprocs=ranks, variables=variables, timeout=1800)
    thermo = read_log(workdir / "log.lammps")[-1]
    n = 4 * size ** 3
    etot = thermo["TotEng"]
    loop = [line for line in run.output.splitlines() if line.startswith("Loop time")]
    seconds = float(loop[-1].split()[3])
    out = {"atoms": n, "steps": steps, "ranks": ranks, "energy_drift_eV_per_atom": (etot[-1] - etot[0]) / n,
           "steps_per_s": steps / seconds, "us_per_atom_step": seconds / steps / n * 1e6}
    print(f"LAMMPS NVE (mpirun -np {ranks} lmp -in examples/in.nve): {n} Cu atoms, {steps} steps of 1 fs, T0 = 600 K")
    print(f"  total energy drift   {out['energy_drift_eV_per_atom']:+.3e} eV/atom")
    print(f"  speed                {out['steps_per_s']:.2f} timesteps/s, {out['us_per_atom_step']:.1f} µs/atom/step")
    print(f"  log: {workdir / 'log.lammps'}")
    return out
