"""FCC Cu and Cu-Au structures labelled with ASE's EMT potential (``cu-emt``, ``cuau-emt``)."""
from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
from ase import Atoms, units
from ase.build import bulk

from ._common import allocate, check_count, progress_bar, rattle, reference_frame, runs, strain, stratified
from .short_range import ShortRangeRecipe, isolated_atom_frames, short_range_frames

__all__ = ["EMT_ELEMENTS", "EMT_SYSTEMS", "emt_dataset", "emt_labels", "emt_short_range"]

EMT_SYSTEMS: Tuple[str, ...] = ("cu", "cuau")
#: Elements of each EMT system (what ``mdpot data`` makes and ``mdpot label`` labels).
EMT_ELEMENTS: Dict[str, Tuple[str, ...]] = {"cu": ("Cu",), "cuau": ("Cu", "Au")}

A_CU = 3.61  # Å, FCC lattice constants; Cu-Au alloys interpolate linearly (Vegard)
A_AU = 4.08
#: FCC supercells of the 4-atom cubic cell: 32, 48, 72 and 108 atoms.
FCC_REPEATS: Tuple[Tuple[int, int, int], ...] = ((2, 2, 2), (2, 2, 3), (2, 3, 3), (3, 3, 3))

EMT_KINDS: Dict[str, float] = {"rattled": 0.30, "strained": 0.20, "vacancy": 0.15, "md": 0.35}

EMT_MD_TEMPERATURE_K = (300.0, 1500.0)
EMT_MD_TIMESTEP_FS = 4.0
EMT_MD_FRICTION_PER_FS = 0.02
EMT_MD_EQUILIBRATION_STEPS = 100
EMT_MD_SAMPLE_INTERVAL = 25  # steps between snapshots: 0.1 ps, twice the thermostat's 50 fs memory


def emt_labels(atoms: Atoms) -> Tuple[float, np.ndarray, Optional[np.ndarray]]:
    """EMT energy (eV), forces (eV/Å) and, for a 3-D periodic cell, stress (eV/Å³, ASE order and sign; else None)
    of a clean structure (:data:`~mdpot.data.reference._common.Labeller`)."""
    from ase.calculators.emt import EMT

    atoms = atoms.copy()
    atoms.calc = EMT()
    stress = atoms.get_stress() if atoms.pbc.all() else None
    return atoms.get_potential_energy(), atoms.get_forces(), stress


def _fcc_cell(system: str, rng: np.random.Generator, au_fraction: float, scale_spread: float = 0.01) -> Atoms:
    """FCC supercell of random size; for ``cuau`` a random substitutional alloy near ``au_fraction``."""
    repeat = FCC_REPEATS[rng.integers(len(FCC_REPEATS))]
    atoms = bulk("Cu", "fcc", a=A_CU, cubic=True).repeat(repeat)
    x = 0.0
    if system == "cuau":
        n_au = int(round(au_fraction * len(atoms)))
        symbols = np.array(["Cu"] * len(atoms), dtype=object)
        symbols[rng.permutation(len(atoms))[:n_au]] = "Au"
        atoms.set_chemical_symbols(list(symbols))
        x = n_au / len(atoms)
    a = ((1.0 - x) * A_CU + x * A_AU) * (1.0 + rng.uniform(-scale_spread, scale_spread))
    atoms.set_cell(atoms.cell.array * (a / A_CU), scale_atoms=True)
    return atoms


def _emt_md(atoms: Atoms, rng: np.random.Generator, temperature_K: float, n_snapshots: int) -> Iterator[Atoms]:
    """Langevin MD with EMT at ``temperature_K``; yields ``n_snapshots`` decorrelated configurations."""
    from ase.calculators.emt import EMT
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin

    atoms = atoms.copy()
    atoms.calc = EMT()
    atoms.set_constraint(FixCom())  # no drift; the labels are computed without the constraint
    # Maxwell-Boltzmann momenta (sqrt(eV amu) in ASE units) without centre-of-mass motion.
    masses = atoms.get_masses()
    momenta = rng.standard_normal((len(atoms), 3)) * np.sqrt(masses * units.kB * temperature_K)[:, None]
    momenta -= masses[:, None] * (momenta.sum(axis=0) / masses.sum())
    atoms.set_momenta(momenta, apply_constraint=False)
    dyn = Langevin(atoms, timestep=EMT_MD_TIMESTEP_FS * units.fs, temperature_K=temperature_K,
                   friction=EMT_MD_FRICTION_PER_FS / units.fs, fixcm=False, rng=rng)
    dyn.run(EMT_MD_EQUILIBRATION_STEPS)
    for _ in range(n_snapshots):
        dyn.run(EMT_MD_SAMPLE_INTERVAL)
        yield atoms


def emt_dataset(system: str, n_structures: int, seed: int, progress: bool = True) -> List[Atoms]:
    """FCC Cu or Cu-Au structures labelled with ASE's EMT potential.

    Kinds (``info["kind"]``), in order: ``rattled`` (30 %: FCC supercells of 32-108 atoms, lattice constant
    ±1 %, Gaussian displacements of 0.02-0.12 Å), ``strained`` (20 %: random symmetric strain up to ±4 % per
    component, shear included, plus 0.01-0.05 Å displacements), ``vacancy`` (15 %: one or two atoms removed,
    then 0.02-0.1 Å displacements) and ``md`` (35 %: Langevin MD snapshots, 4 fs steps, 0.4 ps
    equilibration, 0.1 ps apart, five per run, run temperatures spread over 300-1500 K and stored in
    ``info["temperature"]`` in K).

    Parameters
    ----------
    system : {"cu", "cuau"}
        ``cuau`` makes random substitutional alloys whose Au fraction (``info["au_fraction"]``) is spread
        over [0, 1], with the lattice constant interpolated between Cu (3.61 Å) and Au (4.08 Å).
    n_structures : int
        Number of structures (≥ 1).
    seed : int
        Seed of the one ``numpy.random.Generator`` all randomness comes from.
    progress : bool
        Show a progress bar on stderr.

    Returns
    -------
    list of ase.Atoms
        Periodic structures with energy (eV), forces (eV/Å) and stress (eV/Å³, ASE Voigt order and sign).

    Raises
    ------
    ValueError
        Unknown ``system`` or ``n_structures < 1``.
    """
    if system not in EMT_SYSTEMS:
        raise ValueError(f"unknown EMT system {system!r}; expected one of {', '.join(EMT_SYSTEMS)}")
    check_count(n_structures)
    rng = np.random.default_rng(seed)
    counts = allocate(n_structures, EMT_KINDS)
    md_runs = runs(counts["md"])
    n_static = n_structures - counts["md"]
    alloy = system == "cuau"
    # Au fractions spread evenly over [0, 1] across static structures and MD runs.
    au_static = stratified(rng, n_static, 0.0, 1.0) if alloy else np.zeros(n_static)
    au_runs = stratified(rng, len(md_runs), 0.0, 1.0) if alloy else np.zeros(len(md_runs))
    temperatures = stratified(rng, len(md_runs), *EMT_MD_TEMPERATURE_K)

    def info(atoms: Atoms, kind: str, temperature: Optional[float] = None) -> dict:
        x = atoms.get_chemical_symbols().count("Au") / len(atoms) if alloy else None
        return {"kind": kind, "system": f"{system}-emt", "temperature": temperature, "au_fraction": x}

    out: List[Atoms] = []
    with progress_bar(n_structures, f"{system}-emt", progress) as bar:
        static = iter(au_static)
        for _ in range(counts["rattled"]):
            atoms = _fcc_cell(system, rng, next(static))
            rattle(atoms, rng, rng.uniform(0.02, 0.12))
            out.append(reference_frame(atoms, emt_labels, **info(atoms, "rattled")))
            bar.update()
        for _ in range(counts["strained"]):
            atoms = _fcc_cell(system, rng, next(static), scale_spread=0.0)
            strain(atoms, rng)
            rattle(atoms, rng, rng.uniform(0.01, 0.05))
            out.append(reference_frame(atoms, emt_labels, **info(atoms, "strained")))
            bar.update()
        for _ in range(counts["vacancy"]):
            atoms = _fcc_cell(system, rng, next(static))
            del atoms[sorted(rng.choice(len(atoms), size=int(rng.integers(1, 3)), replace=False).tolist())]
            rattle(atoms, rng, rng.uniform(0.02, 0.10))
            out.append(reference_frame(atoms, emt_labels, **info(atoms, "vacancy")))
            bar.update()
        for n_snap, x, t in zip(md_runs, au_runs, temperatures):
            atoms = _fcc_cell(system, rng, x)
            rattle(atoms, rng, 0.05)
            for snap in _emt_md(atoms, rng, float(t), n_snap):
                out.append(reference_frame(snap, emt_labels, **info(snap, "md", round(float(t), 3))))
                bar.update()
    return out

def emt_short_range(system: str, n: int, rng: np.random.Generator, isolated: bool = True,
                    progress: bool = True) -> List[Atoms]:
    """Isolated atoms (one frame per element, if ``isolated``) and ``n`` short-range frames labelled with EMT;
    see :mod:`mdpot.data.reference.short_range`. Bulk frames are FCC supercells of 32-108 atoms (for ``cuau``
    random alloys of a uniformly drawn Au fraction)."""
    if system not in EMT_SYSTEMS:
        raise ValueError(f"unknown EMT system {system!r}; expected one of {', '.join(EMT_SYSTEMS)}")
    recipe = ShortRangeRecipe(
        system=f"{system}-emt", elements=EMT_ELEMENTS[system],
        first_neighbour=A_CU / np.sqrt(2.0),
        bulk=lambda g: _fcc_cell(system, g, g.uniform() if system == "cuau" else 0.0), label=emt_labels)
    return (isolated_atom_frames(recipe) if isolated else []) + short_range_frames(recipe, n, rng, progress)
