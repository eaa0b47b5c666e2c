"""Material properties of one element measured with any ASE calculator (a deployed model or a reference).

Every measurement uses ASE's own tools: ``ase.eos.EquationOfState`` (Birch-Murnaghan) for the bulk modulus,
``FrechetCellFilter`` and ``BFGS`` for relaxations, ``Langevin`` MD and ``ase.geometry.rdf.get_rdf`` for the
liquid. Structures are built with ``ase.build`` at the calculator's own lattice constant, so a model is
measured at its own equilibrium, as a user would measure it. Everything is deterministic: the same calculator
gives bit-identical numbers (the MD draws from ``numpy.random.default_rng(seed)``).

Isolated atoms and dimers sit in a periodic cubic box of :data:`ISOLATED_BOX` Å, far larger than twice any
cutoff involved (the Stillinger-Weber path through LAMMPS needs a periodic cell; the energy is the same as
without periodicity).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
from ase import Atoms, units

__all__ = ["Crystal", "ISOLATED_BOX", "LIQUID", "Measurement", "crystal_for", "measure"]

#: Edge of the periodic cubic box (Å) around an isolated atom or a dimer.
ISOLATED_BOX = 30.0
#: Structures with a measurement recipe, from ``ase.data.reference_states``.
STRUCTURES = ("fcc", "diamond")

#: Small strain (dimensionless) of the elastic constants, applied as + and - (central difference).
ELASTIC_STRAIN = 0.005
#: Lattice strains of the equation of state around the relaxed lattice constant (±, 7 points).
EOS_STRAIN = 0.01
EOS_POINTS = 7
#: Relaxation thresholds, eV/Å.
FMAX_CELL = 1e-4
FMAX_INTERNAL = 1e-4
FMAX_DEFECT = 1e-3
MAX_STEPS = 500
#: Displacements (Å, standard deviation, fixed seed) that break the symmetry of the vacancy before relaxing.
VACANCY_RATTLE = 0.02
#: Dimer grid: from DIMER_R_MIN (Å) to the model's r_max in steps of DIMER_STEP (Å).
DIMER_R_MIN = 0.5
DIMER_STEP = 0.05
#: The first peak of an RDF is looked for within this many Å of the first r where g(r) exceeds 1.
RDF_PEAK_WINDOW = 0.6


@dataclass(frozen=True)
class LiquidProtocol:
    """NVT Langevin MD of the liquid whose radial distribution function is compared.

    ``repeat``³ conventional cells (8 atoms each; default 216 atoms) at ``density_g_cm3`` (g/cm³): melted at
    ``melt_K`` for ``melt_steps``, held at ``temperature_K`` for ``equilibration_steps``, then sampled every
    ``sample_interval`` steps for ``sample_steps``. Steps are ``timestep_fs`` long and the friction is
    ``friction_per_fs`` (1/fs). The RDF goes to ``rdf_rmax`` Å in ``rdf_bins`` bins, smoothed by a Gaussian of
    ``rdf_smooth`` Å for the peak; the coordination counts neighbours within ``coordination_cutoff`` Å (a fixed
    radius: a hot liquid's g(r) has no clear first minimum). Defaults: 0.6 ps melt at 4000 K, 0.5 ps at 3000 K,
    2 ps sampled every 20 fs (100 frames), 2 fs steps. The sampling noise of these defaults, measured as the
    spread of Stillinger-Weber against itself over four seeds: ±0.006 Å in the peak position, ±2 % in its height,
    ±0.02 in the coordination (with 64 atoms: ±0.02 Å, ±2 %).
    """

    density_g_cm3: float = 2.57  # liquid Si at its melting point
    temperature_K: float = 3000.0  # inside the liquid range of the si-sw training data (2500-3500 K)
    melt_K: float = 4000.0
    melt_steps: int = 300
    equilibration_steps: int = 250
    sample_steps: int = 1000
    sample_interval: int = 10
    timestep_fs: float = 2.0
    friction_per_fs: float = 0.02
    rdf_rmax: float = 5.0
    rdf_bins: int = 500
    rdf_smooth: float = 0.05  # Å
    coordination_cutoff: float = 3.1  # Å, the usual first-shell radius of liquid Si
    repeat: int = 3
    seed: int = 0


#: The liquid protocol of :func:`measure` (Si only).
LIQUID = LiquidProtocol()


@dataclass(frozen=True)
class Crystal:
    """The ground-state crystal of one element: ``structure`` (``fcc`` or ``diamond``) and a starting lattice
    constant ``a_guess`` (Å, from ``ase.data.reference_states``)."""

    element: str
    structure: str
    a_guess: float

    def cubic(self, a: float) -> Atoms:
        """The conventional cubic cell (4 atoms for fcc, 8 for diamond) with lattice constant ``a`` (Å)."""
        from ase.build import bulk

        return bulk(self.element, self.structure, a=a, cubic=True)

    def surface(self, a: float) -> Tuple[Atoms, str]:
        """A relaxable slab with two equivalent free surfaces (fcc: (111), 8 layers; diamond: (100), 8 layers),
        1x1 in plane, periodic with 10 Å of vacuum on each side, and the facet's name."""
        from ase.build import diamond100, fcc111

        if self.structure == "fcc":
            slab, facet = fcc111(self.element, size=(1, 1, 8), a=a, orthogonal=False), "(111)"
        else:
            slab, facet = diamond100(self.element, size=(1, 1, 8), a=a), "(100)"
        slab.center(vacuum=10.0, axis=2)
        slab.pbc = True
        return slab, facet

    def vacancy_supercell(self) -> Tuple[int, int, int]:
        """Repeats of the cubic cell for the vacancy: 108 atoms (fcc) or 64 atoms (diamond)."""
        return (3, 3, 3) if self.structure == "fcc" else (2, 2, 2)


def crystal_for(element: str) -> Crystal:
    """The :class:`Crystal` of ``element`` from ``ase.data.reference_states``.

    Raises
    ------
    ValueError
        Unknown element, or a ground state other than fcc or diamond.
    """
    from ase.data import atomic_numbers, reference_states

    if element not in atomic_numbers:
        raise ValueError(f"unknown element {element!r}")
    state = reference_states[atomic_numbers[element]] or {}
    structure = state.get("symmetry")
    if structure not in STRUCTURES:
        raise ValueError(f"no property benchmark for {element}: its ground state in ase.data.reference_states is "
                         f"{structure!r}; supported: {', '.join(STRUCTURES)}")
    return Crystal(element, structure, float(state["a"]))


@dataclass
class Measurement:
    """What :func:`measure` found for one calculator.

    ``values`` maps property keys to numbers (units in :data:`mdpot.properties.PROPERTIES`); ``curves`` holds the
    equation of state (``eos_volume`` Å³/atom, ``eos_energy`` eV/atom), the dimer curve (``dimer_r`` Å,
    ``dimer_energy`` eV, relative to two isolated atoms) and, for Si, the liquid RDF (``rdf_r`` Å, ``rdf_g``);
    ``seconds`` the wall time of each step; ``notes`` anything the reader should know (an unconverged
    relaxation); ``facet`` the surface measured (``(111)``, ``(100)``).
    """

    values: Dict[str, float] = field(default_factory=dict)
    curves: Dict[str, List[float]] = field(default_factory=dict)
    seconds: Dict[str, float] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    facet: Optional[str] = None


def _energy(atoms: Atoms, calc) -> float:
    atoms.calc = calc
    return float(atoms.get_potential_energy())


def _relax(atoms: Atoms, calc, fmax: float, what: str, notes: List[str], cell: bool = False) -> Atoms:
    """BFGS relaxation of positions (or, with ``cell``, of the hydrostatic cell with FrechetCellFilter)."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    atoms.calc = calc
    target = FrechetCellFilter(atoms, hydrostatic_strain=True) if cell else atoms
    converged = BFGS(target, logfile=None).run(fmax=fmax, steps=MAX_STEPS)
    if not converged:
        notes.append(f"{what}: BFGS did not reach fmax {fmax:g} eV/Å in {MAX_STEPS} steps")
    return atoms


def isolated_atom(element: str) -> Atoms:
    """One atom in the middle of a periodic cubic box of :data:`ISOLATED_BOX` Å."""
    return Atoms(element, positions=[[ISOLATED_BOX / 2] * 3], cell=[ISOLATED_BOX] * 3, pbc=True)


def dimer(element: str, r: float) -> Atoms:
    """Two atoms ``r`` Å apart along x in a periodic cubic box of :data:`ISOLATED_BOX` Å."""
    c = ISOLATED_BOX / 2
    return Atoms([element] * 2, positions=[[c - r / 2, c, c], [c + r / 2, c, c]], cell=[ISOLATED_BOX] * 3, pbc=True)


def _lattice(crystal: Crystal, calc, m: Measurement) -> float:
    """Relaxed lattice constant, then the equation of state around it: a (Å), E/atom (eV), B (GPa)."""
    from ase.eos import EquationOfState

    atoms = _relax(crystal.cubic(crystal.a_guess), calc, FMAX_CELL, "lattice constant", m.notes, cell=True)
    a_relaxed = float(np.cbrt(atoms.get_volume()))
    n = len(atoms)
    volumes, energies = [], []
    for s in np.linspace(-EOS_STRAIN, EOS_STRAIN, EOS_POINTS):
        cell = crystal.cubic(a_relaxed * (1.0 + s))
        volumes.append(cell.get_volume() / n)
        energies.append(_energy(cell, calc) / n)
    v0, _, b = EquationOfState(volumes, energies, eos="birchmurnaghan").fit()
    a = float(np.cbrt(v0 * n))
    m.values["lattice_constant"] = a
    m.values["bulk_energy"] = _energy(crystal.cubic(a), calc) / n
    m.values["bulk_modulus"] = float(b / units.GPa)
    m.curves["eos_volume"] = [float(v) for v in volumes]
    m.curves["eos_energy"] = [float(e) for e in energies]
    return a


def _elastic(crystal: Crystal, calc, a: float, m: Measurement) -> None:
    """C11, C12, C44 (GPa) of a cubic crystal: stress of ± small strains, internal coordinates relaxed."""

    def stress(eps: np.ndarray) -> np.ndarray:
        atoms = crystal.cubic(a)
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
        _relax(atoms, calc, FMAX_INTERNAL, "elastic constants (internal relaxation)", m.notes)
        return atoms.get_stress(voigt=True)  # xx yy zz yz xz xy, eV/Å³

    d = ELASTIC_STRAIN
    normal = np.zeros((3, 3))
    normal[0, 0] = d
    shear = np.zeros((3, 3))
    shear[1, 2] = shear[2, 1] = d / 2  # engineering shear strain gamma_yz = d
    ds_normal = (stress(normal) - stress(-normal)) / (2 * d)
    ds_shear = (stress(shear) - stress(-shear)) / (2 * d)
    m.values["c11"] = float(ds_normal[0] / units.GPa)
    m.values["c12"] = float(0.5 * (ds_normal[1] + ds_normal[2]) / units.GPa)
    m.values["c44"] = float(ds_shear[3] / units.GPa)


def _vacancy(crystal: Crystal, calc, a: float, m: Measurement) -> None:
    """Relaxed vacancy formation energy (eV) at constant volume: E(N-1, relaxed) - (N-1)/N E(N), relaxed from
    the rattled vacancy."""
    perfect = crystal.cubic(a).repeat(crystal.vacancy_supercell())
    n = len(perfect)
    e_perfect = _energy(perfect, calc)
    vac = perfect.copy()
    del vac[0]
    # The symmetric vacancy can be a stationary point that is no minimum (Stillinger-Weber Si: every remaining
    # bond sits at the pair minimum, so no force at all); the same small fixed rattle lets both calculators find
    # the distorted minimum.
    vac.rattle(VACANCY_RATTLE, seed=0)
    _relax(vac, calc, FMAX_DEFECT, "vacancy", m.notes)
    m.values["vacancy_formation_energy"] = float(vac.get_potential_energy() - (n - 1) / n * e_perfect)


def _surface(crystal: Crystal, calc, a: float, e_bulk: float, m: Measurement) -> None:
    """Relaxed surface energy (J/m²) of a symmetric slab: (E_slab - N E_bulk) / (2 A)."""
    slab, facet = crystal.surface(a)
    _relax(slab, calc, FMAX_DEFECT, f"surface {facet}", m.notes)
    area = float(np.linalg.norm(np.cross(slab.cell[0], slab.cell[1])))
    gamma = (slab.get_potential_energy() - len(slab) * e_bulk) / (2 * area)  # eV/Å²
    m.values["surface_energy"] = float(gamma / (units.J / units.m ** 2))
    m.facet = facet


def _dimer(element: str, calc, r_max: float, e_atom: float, m: Measurement) -> None:
    """Dimer binding curve E(r) - 2 E_atom (eV) from :data:`DIMER_R_MIN` to ``r_max`` Å; its minimum, whether
    the energy falls strictly with r all the way from the shortest distance to the minimum (``dimer_repulsive``)
    and whether it also never falls past the minimum (``dimer_single_well``)."""
    r = np.round(np.arange(DIMER_R_MIN, r_max + 1e-9, DIMER_STEP), 10)
    e = np.array([_energy(dimer(element, x), calc) - 2 * e_atom for x in r])
    k = int(np.argmin(e))
    m.values["dimer_r_min"] = float(r[k])
    m.values["dimer_e_min"] = float(e[k])
    m.values["dimer_e_shortest"] = float(e[0])
    m.values["dimer_repulsive"] = bool(np.all(np.diff(e[: k + 1]) < 0.0))
    # Repulsive down to the shortest distance can still hide a spurious well at short range, deeper than the
    # bond: a single well also rises (or stays flat) everywhere past its minimum.
    m.values["dimer_single_well"] = m.values["dimer_repulsive"] and bool(np.all(np.diff(e[k:]) >= 0.0))
    m.curves["dimer_r"] = r.tolist()
    m.curves["dimer_energy"] = e.tolist()


def rdf_peak(r: np.ndarray, g: np.ndarray, density: float, cutoff: float, smooth: float = 0.0) -> Dict[str, float]:
    """First peak of a radial distribution function and the coordination number within ``cutoff``.

    Parameters
    ----------
    r, g : numpy.ndarray
        Bin centres (Å) and g(r) (dimensionless), equal bins.
    density : float
        Number density (atoms/Å³).
    cutoff : float
        Radius (Å) of the first coordination shell.
    smooth : float
        Standard deviation (Å) of the Gaussian that smooths g before the peak is looked for (0: none); it
        lowers the sampling noise of a broad liquid peak.

    Returns
    -------
    dict
        ``rdf_peak_position`` (Å) and ``rdf_peak_height``: the vertex of the parabola through the first peak's
        highest bin of the smoothed g and its neighbours, the first peak being the highest bin within
        :data:`RDF_PEAK_WINDOW` Å of the first bin where the smoothed g exceeds 1; ``coordination``: 4πρ ∫ g r² dr
        of the unsmoothed g over the bins whose centre lies below ``cutoff``.
    """
    from scipy.ndimage import gaussian_filter1d

    dr = float(r[1] - r[0])
    gs = gaussian_filter1d(np.asarray(g, dtype=np.float64), smooth / dr, mode="nearest") if smooth > 0 else g
    above = np.flatnonzero(gs > 1.0)
    onset = int(above[0]) if above.size else 0
    window = np.flatnonzero((r >= r[onset]) & (r <= r[onset] + RDF_PEAK_WINDOW))
    k = int(window[np.argmax(gs[window])])
    pos, height = float(r[k]), float(gs[k])
    if 0 < k < len(gs) - 1:
        y0, y1, y2 = gs[k - 1], gs[k], gs[k + 1]
        denom = y0 - 2 * y1 + y2
        if denom < 0:
            shift = 0.5 * (y0 - y2) / denom
            pos, height = float(r[k] + shift * dr), float(y1 - 0.25 * (y0 - y2) * shift)
    inside = r < cutoff
    coordination = float(4 * np.pi * density * np.sum(g[inside] * r[inside] ** 2) * dr)
    return {"rdf_peak_position": pos, "rdf_peak_height": height, "coordination": coordination}


def _liquid(crystal: Crystal, calc, m: Measurement, protocol: LiquidProtocol = LIQUID) -> None:
    """Liquid RDF at the protocol's size, density and temperature (NVT Langevin MD with ASE)."""
    from ase.constraints import FixCom
    from ase.geometry.rdf import get_rdf
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

    atoms = crystal.cubic(crystal.a_guess).repeat((protocol.repeat,) * 3)
    mass_g = atoms.get_masses().sum() / units.mol  # g
    volume = mass_g / protocol.density_g_cm3 * 1e24  # Å³
    atoms.set_cell(np.eye(3) * np.cbrt(volume), scale_atoms=True)
    atoms.calc = calc
    atoms.set_constraint(FixCom())  # no drift of the centre of mass
    rng = np.random.default_rng(protocol.seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=protocol.melt_K, rng=rng)
    Stationary(atoms)
    dyn = Langevin(atoms, timestep=protocol.timestep_fs * units.fs, temperature_K=protocol.melt_K,
                   friction=protocol.friction_per_fs / units.fs, fixcm=False, rng=rng)
    dyn.run(protocol.melt_steps)
    dyn.set_temperature(temperature_K=protocol.temperature_K)
    dyn.run(protocol.equilibration_steps)
    frames = []
    for _ in range(protocol.sample_steps // protocol.sample_interval):
        dyn.run(protocol.sample_interval)
        frames.append(Atoms(atoms.get_chemical_symbols(), positions=atoms.positions, cell=atoms.cell, pbc=True))
    g, r = get_rdf(frames, protocol.rdf_rmax, protocol.rdf_bins)
    density = len(atoms) / atoms.get_volume()
    m.values.update(rdf_peak(np.asarray(r), np.asarray(g), density, protocol.coordination_cutoff,
                             protocol.rdf_smooth))
    m.curves["rdf_r"] = [float(x) for x in r]
    m.curves["rdf_g"] = [float(x) for x in g]


def measure(calc, element: str, r_max: float, quick: bool = False,
            log: Optional[Callable[[str], None]] = None) -> Measurement:
    """Measure the properties of ``element`` with one ASE calculator.

    Parameters
    ----------
    calc : ase.calculators.calculator.Calculator
        Energy (eV), forces (eV/Å) and stress (eV/Å³) of periodic cells.
    element : str
        A chemical symbol whose ground state is fcc or diamond (``ase.data.reference_states``).
    r_max : float
        End of the dimer curve (Å): the model's cutoff.
    quick : bool
        Only the lattice constant, cohesive energy, bulk modulus and dimer curve.
    log : callable, optional
        Receives one line per finished step.

    Returns
    -------
    Measurement
        Values: ``lattice_constant`` (Å), ``bulk_energy`` and ``isolated_atom_energy`` (eV/atom),
        ``cohesive_energy`` (eV/atom, isolated minus bulk), ``bulk_modulus``, ``c11``, ``c12``, ``c44`` (GPa),
        ``vacancy_formation_energy`` (eV), ``surface_energy`` (J/m²), ``dimer_r_min`` (Å), ``dimer_e_min`` and
        ``dimer_e_shortest`` (eV), ``dimer_repulsive`` and ``dimer_single_well`` (bool) and, for Si, the liquid RDF's
        ``rdf_peak_position`` (Å), ``rdf_peak_height`` and ``coordination`` (within 3.1 Å).
    """
    crystal = crystal_for(element)
    m = Measurement()
    say = log or (lambda line: None)

    def step(name: str, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        m.seconds[name] = time.perf_counter() - t0
        say(f"{name} ({m.seconds[name]:.1f} s)")
        return out

    a = step("lattice constant and equation of state", _lattice, crystal, calc, m)
    e_atom = step("isolated atom", lambda: _energy(isolated_atom(element), calc))
    m.values["isolated_atom_energy"] = e_atom
    m.values["cohesive_energy"] = e_atom - m.values["bulk_energy"]
    step("dimer curve", _dimer, element, calc, r_max, e_atom, m)
    if quick:
        return m
    step("elastic constants", _elastic, crystal, calc, a, m)
    step("vacancy", _vacancy, crystal, calc, a, m)
    step("surface", _surface, crystal, calc, a, m.values["bulk_energy"], m)
    if element == "Si":
        step("liquid MD and RDF", _liquid, crystal, calc, m)
    return m
