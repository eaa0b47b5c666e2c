"""64-atom silicon structures labelled with LAMMPS's Stillinger-Weber potential (``si-sw``).

The labels and the MD come from :class:`mdpot.lammps.embedded.StillingerWeberEngine`, LAMMPS run in-process.
It is imported when a dataset is generated, not when this module loads, so ``mdpot.data`` does not pull in
the LAMMPS engine.
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Optional

import numpy as np
from ase import Atoms
from ase.build import bulk

from ._common import allocate, check_count, labelled, progress_bar, rattle, runs, strain, stratified
from .short_range import ShortRangeRecipe, isolated_atom_frames, short_range_frames

__all__ = ["sw_short_range", "sw_silicon_dataset"]

A_SI = 5.431  # Å, diamond

SI_KINDS: Dict[str, float] = {"rattled": 0.25, "strained": 0.20, "liquid": 0.30, "amorphous": 0.25}

SI_LIQUID_TEMPERATURE_K = (2500.0, 3500.0)
SI_AMORPHOUS_TEMPERATURE_K = (300.0, 1000.0)
SI_MELT_TEMPERATURE_K = 4000.0
SI_MD_TIMESTEP_PS = 0.001
SI_MD_DAMP_PS = 0.1
SI_MELT_STEPS = 1500
SI_EQUILIBRATION_STEPS = 1000
SI_QUENCH_STEPS = 4000
SI_SAMPLE_INTERVAL = 200


def _diamond(rng: np.random.Generator, scale: float) -> Atoms:
    atoms = bulk("Si", "diamond", a=A_SI, cubic=True).repeat((2, 2, 2))
    atoms.set_cell(atoms.cell.array * scale, scale_atoms=True)
    return atoms


def sw_silicon_dataset(n_structures: int, seed: int, progress: bool = True) -> List[Atoms]:
    """64-atom silicon structures labelled with LAMMPS's Stillinger-Weber potential (``Si.sw``).

    Kinds (``info["kind"]``), in order: ``rattled`` (25 %: 2x2x2 conventional diamond cells, a = 5.431 Å
    ±1.5 %, Gaussian displacements of 0.02-0.10 Å), ``strained`` (20 %: random symmetric strain up to ±4 % per
    component plus 0.01-0.05 Å displacements), ``liquid`` (30 %: Langevin MD melted at 4000 K, then held at
    2500-3500 K, snapshots 0.2 ps apart, density from diamond to ~10 % denser) and ``amorphous`` (25 %: the
    liquid quenched from 2500 K over 4 ps to 300-1000 K, then sampled every 0.2 ps). MD temperatures (K) are
    in ``info["temperature"]``. LAMMPS MD uses 1 fs steps and seeds drawn from ``seed``.

    Parameters
    ----------
    n_structures : int
        Number of structures (≥ 1).
    seed : int
        Seed of the one ``numpy.random.Generator`` all randomness comes from.
    progress : bool
        Show a progress bar on stderr.

    Returns
    -------
    list of ase.Atoms
        Energy (eV), forces (eV/Å) and stress (eV/Å³, ASE Voigt order and sign, no kinetic part).

    Raises
    ------
    ValueError
        ``n_structures < 1``.
    FileNotFoundError
        No ``Si.sw`` in the ``lammps`` package (:func:`mdpot.lammps.embedded.sw_potential_file`).
    """
    from ...lammps.embedded import StillingerWeberEngine

    check_count(n_structures)
    rng = np.random.default_rng(seed)
    counts = allocate(n_structures, SI_KINDS)
    liquid_runs, amorphous_runs = runs(counts["liquid"]), runs(counts["amorphous"])
    t_liquid = stratified(rng, len(liquid_runs), *SI_LIQUID_TEMPERATURE_K)
    t_amorphous = stratified(rng, len(amorphous_runs), *SI_AMORPHOUS_TEMPERATURE_K)
    engine = StillingerWeberEngine()

    def label(atoms: Atoms, kind: str, temperature: Optional[float] = None) -> Atoms:
        atoms = atoms.copy()
        atoms.wrap()
        return labelled(atoms, *engine.evaluate(atoms), kind=kind, system="si-sw", temperature=temperature)

    def md(kind: str, temperature: float, n_snap: int, stages) -> Iterator[Atoms]:
        # Liquid Si is ~10 % denser than diamond: sample densities in between.
        atoms = _diamond(rng, rng.uniform(0.965, 1.0))
        for pos in engine.md(atoms, rng, stages, temperature, n_snap, SI_SAMPLE_INTERVAL,
                             timestep_ps=SI_MD_TIMESTEP_PS, damp_ps=SI_MD_DAMP_PS):
            snap = atoms.copy()
            snap.positions = pos
            yield label(snap, kind, round(temperature, 3))

    out: List[Atoms] = []
    try:
        with progress_bar(n_structures, "si-sw", progress) as bar:
            for _ in range(counts["rattled"]):
                atoms = _diamond(rng, 1.0 + rng.uniform(-0.015, 0.015))
                rattle(atoms, rng, rng.uniform(0.02, 0.10))
                out.append(label(atoms, "rattled"))
                bar.update()
            for _ in range(counts["strained"]):
                atoms = _diamond(rng, 1.0)
                strain(atoms, rng)
                rattle(atoms, rng, rng.uniform(0.01, 0.05))
                out.append(label(atoms, "strained"))
                bar.update()
            for n_snap, t in zip(liquid_runs, t_liquid):
                melt = [(SI_MELT_TEMPERATURE_K, SI_MELT_TEMPERATURE_K, SI_MELT_STEPS),
                        (float(t), float(t), SI_EQUILIBRATION_STEPS)]
                for snap in md("liquid", float(t), n_snap, melt):
                    out.append(snap)
                    bar.update()
            for n_snap, t in zip(amorphous_runs, t_amorphous):
                quench = [(SI_MELT_TEMPERATURE_K, SI_MELT_TEMPERATURE_K, SI_MELT_STEPS),
                          (2500.0, 2500.0, SI_EQUILIBRATION_STEPS),
                          (2500.0, float(t), SI_QUENCH_STEPS),
                          (float(t), float(t), SI_EQUILIBRATION_STEPS)]
                for snap in md("amorphous", float(t), n_snap, quench):
                    out.append(snap)
                    bar.update()
    finally:
        engine.close()
    return out


def sw_short_range(n: int, rng: np.random.Generator, isolated: bool = True, progress: bool = True) -> List[Atoms]:
    """An isolated Si atom (if ``isolated``) and ``n`` short-range frames labelled with Stillinger-Weber; see
    :mod:`mdpot.data.reference.short_range`. Bulk frames are 64-atom diamond cells; non-periodic frames are
    labelled through a periodic copy of their box."""
    from ...lammps.embedded import StillingerWeberEngine

    engine = StillingerWeberEngine()

    def label(atoms: Atoms):
        periodic = atoms.pbc.all()
        box = atoms.copy()
        box.pbc = True
        energy, forces, stress = engine.evaluate(box)
        return energy, forces, stress if periodic else None

    recipe = ShortRangeRecipe(system="si-sw", elements=("Si",), first_neighbour=A_SI * np.sqrt(3.0) / 4,
                              bulk=lambda g: _diamond(g, 1.0), label=label)
    try:
        return (isolated_atom_frames(recipe) if isolated else []) + short_range_frames(recipe, n, rng, progress)
    finally:
        engine.close()
