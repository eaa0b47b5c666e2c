"""64-atom silicon structures labelled with LAMMPS's Stillinger-Weber potential (``si-sw``).

The labels and the MD come from :class:`mdpot.lammps.embedded.StillingerWeberEngine`, LAMMPS run in-process.
It is imported when a dataset is generated, not when this module loads, so ``mdpot.data`` does not pull in
the LAMMPS engine.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Iterator, List, Optional

import numpy as np
from ase import Atoms
from ase.build import bulk

from ._common import (Labeller, allocate, check_count, progress_bar, rattle, reference_frame, runs, strain,
                      stratified)
from .short_range import ShortRangeRecipe, isolated_atom_frames, short_range_frames

__all__ = ["SI_SW_CUTOFF", "sw_labeller", "sw_short_range", "sw_silicon_dataset"]

A_SI = 5.431  # Å, diamond
#: Cutoff of ``Si.sw`` (Å): its σ times a, 2.0951 × 1.80.
SI_SW_CUTOFF = 2.0951 * 1.80

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


if TYPE_CHECKING:
    from ...lammps.embedded import StillingerWeberEngine


def _vacuum_box(atoms: Atoms) -> Atoms:
    """A fully periodic copy of the non-periodic, non-empty ``atoms`` whose images are out of each other's reach: its
    own box if it leaves more than :data:`SI_SW_CUTOFF` of vacuum between images in every direction, else an
    orthorhombic box of the atoms' extent plus 2 (cutoff + 1 Å)."""
    box = atoms.copy()
    box.pbc = True
    cell = atoms.cell
    if cell.rank == 3:
        frac = np.linalg.solve(cell.array.T, atoms.positions.T).T
        span = frac.max(axis=0) - frac.min(axis=0)
        heights = abs(cell.volume) / np.linalg.norm(np.cross(cell.array[[1, 2, 0]], cell.array[[2, 0, 1]]), axis=1)
        if np.all((1.0 - span) * heights > SI_SW_CUTOFF):
            return box
    margin = SI_SW_CUTOFF + 1.0
    low = atoms.positions.min(axis=0)
    box.set_cell(np.diag(atoms.positions.max(axis=0) - low + 2 * margin))
    box.positions = atoms.positions - low + margin
    return box


def sw_labeller(engine: "StillingerWeberEngine") -> Labeller:
    """The :data:`~mdpot.data.reference._common.Labeller` of Stillinger-Weber Si run by ``engine``: energy (eV),
    forces (eV/Å) and stress (eV/Å³) of a 3-D periodic cell; a non-periodic structure is labelled in a periodic box
    wide enough that its images do not interact (its own box when it is; :func:`_vacuum_box`), without stress.
    LAMMPS's ``pair_style sw`` runs in periodic boxes only: a partly periodic structure raises ``ValueError``."""

    def label(atoms: Atoms):
        if atoms.pbc.all():
            return engine.evaluate(atoms)
        if atoms.pbc.any():
            raise ValueError(f"Stillinger-Weber labels fully periodic or non-periodic structures, not pbc "
                             f"{atoms.pbc.tolist()}")
        energy, forces, _ = engine.evaluate(_vacuum_box(atoms))
        return energy, forces, None

    return label


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
    sw = sw_labeller(engine)

    def label(atoms: Atoms, kind: str, temperature: Optional[float] = None) -> Atoms:
        return reference_frame(atoms, sw, kind=kind, system="si-sw", temperature=temperature)

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
    labelled in a periodic box (:func:`sw_labeller`)."""
    from ...lammps.embedded import StillingerWeberEngine

    engine = StillingerWeberEngine()
    recipe = ShortRangeRecipe(system="si-sw", elements=("Si",), first_neighbour=A_SI * np.sqrt(3.0) / 4,
                              bulk=lambda g: _diamond(g, 1.0), label=sw_labeller(engine))
    try:
        return (isolated_atom_frames(recipe) if isolated else []) + short_range_frames(recipe, n, rng, progress)
    finally:
        engine.close()
