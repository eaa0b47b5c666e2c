"""The README's main job: make the example model, deploy it with its self-check, and run a short NVE MD."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def run_demo(workdir: Path, steps: int = 50, repeat: int = 4, dtype: str = "float64", seed: int = 0) -> dict:
    """Deploy the example Allegro Cu model into ``workdir`` and run ``steps`` of NVE (1 fs) with ASE on an
    FCC Cu supercell of ``repeat**3`` cubic cells; prints energy drift and speed, returns them."""
    from ase import units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from ase.md.verlet import VelocityVerlet

    from .calculator import MDPotCalculator
    from .cli import DEFAULT_MODEL
    from .deploy import deploy_model
    from .models import build_model, make_config
    from .testing.structures import fcc

    if steps < 1 or repeat < 1:
        raise ValueError(f"steps and repeat must be >= 1, got steps={steps} repeat={repeat}")
    workdir.mkdir(parents=True, exist_ok=True)
    config = make_config(DEFAULT_MODEL["architecture"], DEFAULT_MODEL["model"])
    model_path = workdir / f"cu_allegro_{dtype}.pt"
    t0 = time.perf_counter()
    deployed = deploy_model(build_model(config, seed=seed), model_path, dtype=dtype,
                            provenance={"kind": "demo", "weights": "fresh", "seed": seed}, overwrite=True)
    print(f"deployed {model_path} ({deployed.num_parameters} parameters, {dtype}, self-check passed) "
          f"in {time.perf_counter() - t0:.1f} s")

    atoms = fcc("Cu", (repeat,) * 3, rattle=0.02, seed=seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(seed))
    Stationary(atoms)
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
    return result
