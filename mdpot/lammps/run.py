"""Write LAMMPS inputs from ASE ``Atoms``, run ``lmp`` (optionally under ``mpirun``) and read its outputs.

Used by the demo (``mdpot.demo``), ``scripts/``, the tests (``tests/lammps``) and the in-process reference
calculator (:mod:`.embedded`, for :func:`lammps_box`). No torch import: only numpy and ASE. Helpers that only
the tests need (edge dumps, rank statistics, frames as ``Atoms``) live in ``tests/lammps/lammps_helpers.py``.

Conventions (``docs/contract.md``): LAMMPS ``units metal`` (Å, eV, ps, g/mol, bar). LAMMPS needs a
*restricted* triclinic cell (``a`` along x, ``b`` in the xy plane); :func:`lammps_box` computes the rotation
``Q`` that takes an ASE cell to it: ``x_lammps = x_ase @ Q``, ``F_lammps = F_ase @ Q``,
``W_lammps = Q.T @ W_ase @ Q``.

Example
-------
>>> from mdpot.testing import fcc
>>> from mdpot.lammps.run import write_data, run_lammps, read_dump
>>> box = write_data("cu.data", fcc("Cu", (3, 3, 3)), ["Cu"])                 # doctest: +SKIP
>>> run_lammps(script, workdir=".", nprocs=2)                                  # doctest: +SKIP
>>> frame = read_dump("out.dump")[-1]; frame["fx"]                              # doctest: +SKIP
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

__all__ = [
    "NKTV2P_METAL", "OVERSUBSCRIBED_ENV", "LammpsBox", "LammpsError", "LammpsRun", "lammps_box", "lmp_command",
    "read_dump", "read_log", "run_environment", "run_lammps", "usable_cores", "write_data",
]

PathLike = Union[str, os.PathLike]

#: LAMMPS ``force->nktv2p`` for ``units metal``: pressure (bar) = virial (eV) / volume (Å^3) * NKTV2P_METAL.
NKTV2P_METAL = 1.6021765e6

#: Set for a run with more ranks than usable cores (unless the caller's environment sets them). An MPICH rank
#: that waits for a message polls; on a shared core it holds the core for its whole time slice while the rank it
#: waits for cannot run. MPICH's progress throttle makes a rank that has polled 16 times without progress sleep
#: (usleep(1)) instead, which gives the core back (MPICH's default is 4 096 polls; 16 measured as fast or faster,
#: docs/benchmarks/message_passing.md). Other MPI libraries ignore the variables.
OVERSUBSCRIBED_ENV = {"MPIR_CVAR_CH4_PROGRESS_THROTTLE": "1", "MPIR_CVAR_CH4_PROGRESS_THROTTLE_NO_PROGRESS_COUNT": "16"}


#: Timer slack (ns) of an oversubscribed run's processes: a throttled rank's usleep(1) otherwise lasts the default
#: 50 µs slack, and when every rank on a core is waiting for a message in flight the core idles that long.
OVERSUBSCRIBED_TIMER_SLACK_NS = 1

_PR_SET_TIMERSLACK, _PR_GET_TIMERSLACK = 29, 30


def _set_timer_slack(ns: int) -> Optional[int]:
    """Set this thread's timer slack (Linux ``prctl``; children forked from it inherit it); returns the old value,
    or None where it cannot be set (nothing changed)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        old = libc.prctl(_PR_GET_TIMERSLACK, 0, 0, 0, 0)
        if old < 0 or libc.prctl(_PR_SET_TIMERSLACK, ctypes.c_ulong(ns), 0, 0, 0) != 0:
            return None
        return old
    except (OSError, AttributeError):
        return None


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. under ``taskset``), else ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class LammpsError(RuntimeError):
    """LAMMPS exited with an error or timed out; the message carries its ERROR lines and output tail."""


@dataclass(frozen=True)
class LammpsBox:
    """A LAMMPS simulation box and how it relates to the ASE cell it came from.

    Attributes
    ----------
    lo : (3,) float ndarray
        ``xlo ylo zlo`` in Å (LAMMPS frame).
    cell : (3, 3) float ndarray
        Restricted triclinic cell vectors as rows, Å: ``[[lx,0,0],[xy,ly,0],[xz,yz,lz]]``.
    rotation : (3, 3) float ndarray
        ``Q`` with ``x_lammps = x_ase @ Q + shift`` (identity for orthogonal cells).
    boundary : str
        LAMMPS ``boundary`` arguments, e.g. ``"p p f"``.
    """

    lo: np.ndarray
    cell: np.ndarray
    rotation: np.ndarray
    boundary: str

    @property
    def triclinic(self) -> bool:
        return bool(np.any(self.cell[[1, 2, 2], [0, 0, 1]] != 0.0))


def lammps_box(atoms, margin: float = 5.0) -> LammpsBox:
    """LAMMPS box for ``atoms``: the rotated cell along periodic directions, the atoms' extent plus ``margin``
    Å along non-periodic ones.

    Raises
    ------
    ValueError
        A left-handed or degenerate periodic cell, or a non-periodic direction that is not orthogonal to
        the periodic cell vectors (LAMMPS allows tilt only between periodic directions).
    """
    # Not ase's Prism: its cell (from dot products) and Q (a linear solve) differ from these in the last bits.
    pbc = np.asarray(atoms.pbc, dtype=bool)
    cell = np.array(atoms.cell.array, dtype=np.float64)
    pos = np.asarray(atoms.positions, dtype=np.float64)
    boundary = " ".join("p" if p else "f" for p in pbc)
    if pbc.all():
        if np.linalg.det(cell) <= 0:
            raise ValueError(f"LAMMPS needs a right-handed cell with positive volume, got {cell.tolist()}")
        a, b = cell[0], cell[1]
        e1 = a / np.linalg.norm(a)
        e3 = np.cross(a, b)
        e3 /= np.linalg.norm(e3)
        q = np.column_stack([e1, np.cross(e3, e1), e3])
        rcell = cell @ q
        rcell[0, 1:] = 0.0
        rcell[1, 2] = 0.0
        return LammpsBox(np.zeros(3), rcell, q, boundary)
    # Partial or no periodicity: an orthogonal box, cell lengths along periodic axes.
    lengths = np.zeros(3)
    for k in range(3):
        off = np.delete(cell[k], k)
        if pbc[k]:
            if np.any(off != 0.0) or cell[k, k] <= 0:
                raise ValueError(f"with pbc={pbc.tolist()} the periodic cell vectors must lie along the axes "
                                 f"(LAMMPS cannot tilt towards a non-periodic direction); cell {cell.tolist()}")
            lengths[k] = cell[k, k]
    lo = np.zeros(3)
    for k in np.flatnonzero(~pbc):
        if len(pos) == 0:
            raise ValueError("cannot size a non-periodic box for an empty Atoms object")
        lo[k] = pos[:, k].min() - margin
        lengths[k] = pos[:, k].max() + margin - lo[k]
    return LammpsBox(lo, np.diag(lengths), np.eye(3), boundary)


def _type_order(atoms, type_elements: Optional[Sequence[str]]) -> List[str]:
    symbols = atoms.get_chemical_symbols()
    if type_elements is None:
        return list(dict.fromkeys(symbols))
    type_elements = list(type_elements)
    missing = sorted(set(symbols) - set(type_elements))
    if missing:
        raise ValueError(f"element(s) {missing} of the Atoms have no LAMMPS type in {type_elements}")
    return type_elements


def write_data(path: PathLike, atoms, type_elements: Optional[Sequence[str]] = None,
               velocities: bool = False, general_triclinic: bool = False, margin: float = 5.0) -> LammpsBox:
    """Write ``atoms`` as a LAMMPS data file (``atom_style atomic``, ``units metal``, full precision).

    Parameters
    ----------
    path : str or path
        File to write.
    atoms : ase.Atoms
        Structure; masses come from ``atoms.get_masses()`` (one per type) or ASE's table for unused types.
    type_elements : sequence of str, optional
        Element symbol of each LAMMPS type in order (type 1 first). Elements may repeat and types may be
        unused. Default: elements in order of first appearance.
    velocities : bool
        Also write a ``Velocities`` section from ``atoms.get_velocities()`` converted to Å/ps.
    general_triclinic : bool
        Write the cell as LAMMPS *general* triclinic (``avec bvec cvec``) and let LAMMPS rotate it (needs a
        fully periodic cell); otherwise the file is already in the rotated frame.
    margin : float
        Å of space around the atoms along non-periodic directions.

    Returns
    -------
    LammpsBox
        The box LAMMPS will use, with the rotation from the ASE frame.
    """
    # Not ase's write_lammps_data: Prism's rotation, masses scaled by 1 - 2.6e-10, no margin, no general triclinic.
    from ase.data import atomic_masses, atomic_numbers
    from ase.units import fs

    box = lammps_box(atoms, margin)
    types = _type_order(atoms, type_elements)
    symbols = atoms.get_chemical_symbols()
    type_of = {}
    for t, el in enumerate(types, start=1):
        type_of.setdefault(el, t)  # an element listed twice gets its first type
    atom_types = np.array([type_of[s] for s in symbols], dtype=int)
    masses = atoms.get_masses()
    type_mass = []
    for t, el in enumerate(types, start=1):
        mine = masses[atom_types == t]
        if len(mine) and np.ptp(mine) > 0:
            raise ValueError(f"atoms of LAMMPS type {t} ({el}) have different masses {sorted(set(mine))}")
        type_mass.append(float(mine[0]) if len(mine) else float(atomic_masses[atomic_numbers[el]]))

    general = general_triclinic and box.boundary == "p p p"
    pos = np.asarray(atoms.positions, dtype=np.float64)
    vel = atoms.get_velocities() * (1000.0 * fs) if velocities else None  # Å/ASE-time -> Å/ps
    if not general:
        pos = pos @ box.rotation
        vel = vel @ box.rotation if vel is not None else None
    f = "{:.17g}".format
    lines = ["LAMMPS data file written by mdpot.lammps.run.write_data", "",
             f"{len(atoms)} atoms", f"{len(types)} atom types", ""]
    if general:
        cell = np.asarray(atoms.cell.array, dtype=np.float64)
        for name, vec in zip(("avec", "bvec", "cvec"), cell):
            lines.append(" ".join(f(v) for v in vec) + f" {name}")
        lines.append("0 0 0 abc origin")
    else:
        hi = box.lo + np.diag(box.cell)
        for k, ax in enumerate("xyz"):
            lines.append(f"{f(box.lo[k])} {f(hi[k])} {ax}lo {ax}hi")
        if box.triclinic:
            c = box.cell
            lines.append(f"{f(c[1, 0])} {f(c[2, 0])} {f(c[2, 1])} xy xz yz")
    lines += ["", "Masses", ""]
    lines += [f"{t} {f(m)}  # {el}" for t, (el, m) in enumerate(zip(types, type_mass), start=1)]
    lines += ["", "Atoms  # atomic", ""]
    lines += [f"{k + 1} {atom_types[k]} {f(x)} {f(y)} {f(z)}" for k, (x, y, z) in enumerate(pos)]
    if vel is not None:
        lines += ["", "Velocities", ""]
        lines += [f"{k + 1} {f(x)} {f(y)} {f(z)}" for k, (x, y, z) in enumerate(vel)]
    Path(path).write_text("\n".join(lines) + "\n")
    return box


@dataclass
class LammpsRun:
    """Outcome of :func:`run_lammps`: exit code, combined stdout/stderr, working folder."""

    returncode: int
    output: str
    workdir: Path
    command: List[str] = field(default_factory=list)

    @property
    def errors(self) -> List[str]:
        """``ERROR...`` lines of the output, in order (LAMMPS prefixes every error with it)."""
        return [line.strip() for line in self.output.splitlines() if line.lstrip().startswith("ERROR")]


def _bin_dir() -> Path:
    return Path(sys.executable).parent


def lmp_command(nprocs: int = 1, lmp: Optional[PathLike] = None, mpirun: Optional[PathLike] = None) -> List[str]:
    """``[lmp]`` or ``[mpirun, -np, N, lmp]``, preferring the executables next to the running Python."""
    lmp_exe = str(lmp or (_bin_dir() / "lmp" if (_bin_dir() / "lmp").exists() else "lmp"))
    if nprocs <= 1:
        return [lmp_exe]
    mpi = str(mpirun or (_bin_dir() / "mpirun" if (_bin_dir() / "mpirun").exists() else "mpirun"))
    return [mpi, "-np", str(int(nprocs)), lmp_exe]


def run_environment(nprocs: int = 1, threads: Optional[int] = 1,
                    env: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The environment :func:`run_lammps` gives ``nprocs`` ranks, before its plugin path: ``os.environ``,
    ``OMP_NUM_THREADS`` (unless ``threads`` is None), :data:`OVERSUBSCRIBED_ENV` where a variable is not set and
    the ranks outnumber :func:`usable_cores`, then ``env``."""
    run_env = dict(os.environ)
    if threads is not None:
        run_env["OMP_NUM_THREADS"] = str(threads)
    if nprocs > usable_cores():
        for name, value in OVERSUBSCRIBED_ENV.items():
            run_env.setdefault(name, value)
    run_env.update(env or {})
    return run_env


def run_lammps(script: Union[str, PathLike], workdir: PathLike = ".", nprocs: int = 1,
               variables: Optional[Mapping[str, object]] = None, timeout: float = 600.0,
               threads: Optional[int] = 1, env: Optional[Mapping[str, str]] = None, check: bool = True,
               log: str = "log.lammps") -> LammpsRun:
    """Run LAMMPS on an input script and wait for it.

    Parameters
    ----------
    script : str or path
        Input text (written to ``workdir/in.lmp``) or the path of an existing input file.
    workdir : str or path
        Working folder (created if needed); relative paths in the input resolve from here.
    nprocs : int
        MPI ranks (``mpirun -np nprocs``). More ranks than :func:`usable_cores` is allowed: MPICH oversubscribes,
        and :data:`OVERSUBSCRIBED_ENV` makes waiting ranks give their core back instead of polling on it (a
        variable set in ``os.environ`` or ``env`` wins); their timer slack is then
        :data:`OVERSUBSCRIBED_TIMER_SLACK_NS`, so that those short sleeps stay short.
    variables : mapping, optional
        ``-var NAME VALUE`` for each item.
    timeout : float
        Seconds; on expiry the whole process group (mpirun and every rank) is killed and
        :class:`LammpsError` raised, so nothing hangs.
    threads : int or None
        ``OMP_NUM_THREADS`` per rank (torch threads of the pair style); None leaves the environment alone.
    env : mapping, optional
        Extra environment variables.
    check : bool
        Raise :class:`LammpsError` on a non-zero exit.
    log : str
        LAMMPS log file name (``-log``), relative to ``workdir``.

    Returns
    -------
    LammpsRun
    """
    from .plugin import plugin_dir

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if isinstance(script, str) and "\n" in script:
        infile = workdir / "in.lmp"
        infile.write_text(script)
    else:
        infile = Path(script).resolve()
    cmd = lmp_command(nprocs) + ["-in", str(infile), "-log", log]
    for name, value in (variables or {}).items():
        cmd += ["-var", str(name), str(value)]
    run_env = run_environment(nprocs, threads, env)
    run_env.setdefault("MDPOT_PLUGIN_QUIET", "1")
    plugins = plugin_dir()
    old = run_env.get("LAMMPS_PLUGIN_PATH", "")
    if plugins not in old.split(os.pathsep):
        run_env["LAMMPS_PLUGIN_PATH"] = os.pathsep.join(p for p in (plugins, old) if p)
    oversubscribed = nprocs > usable_cores()
    # mpirun and the ranks inherit this thread's timer slack: fine timers only while starting them
    old_slack = _set_timer_slack(OVERSUBSCRIBED_TIMER_SLACK_NS) if oversubscribed else None
    try:
        proc = subprocess.Popen(cmd, cwd=workdir, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
    finally:
        if old_slack is not None:
            _set_timer_slack(old_slack)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        raise LammpsError(f"LAMMPS timed out after {timeout:g} s: {' '.join(cmd)} in {workdir}\n"
                          f"{output[-3000:]}") from None
    result = LammpsRun(proc.returncode, output, workdir, cmd)
    if check and proc.returncode != 0:
        errors = "\n".join(result.errors) or "(no ERROR line)"
        raise LammpsError(f"LAMMPS failed with exit code {proc.returncode}: {' '.join(cmd)} in {workdir}\n"
                          f"{errors}\n--- output tail ---\n{output[-3000:]}")
    return result


def read_dump(path: PathLike) -> List[Dict[str, object]]:
    """Frames of a LAMMPS text ``dump custom`` file, each sorted by atom id.

    Each frame is a dict: ``step`` (int), ``cell`` ((3, 3) rows, Å, restricted triclinic), ``lo`` ((3,) Å),
    ``boundary`` (str such as ``"p p f"``) and one float array per column (``id`` and ``type`` as int).
    """
    # Not ase's read_lammps_dump_text: its cell (hi - lo) - |xy| - |xz| has other bits; it gives Atoms, not columns.
    lines = Path(path).read_text().splitlines()
    frames = []
    k = 0
    while k < len(lines):
        if not lines[k].startswith("ITEM: TIMESTEP"):
            k += 1
            continue
        step = int(lines[k + 1])
        natoms = int(lines[k + 3])
        head = lines[k + 4].split()
        tilt = "xy" in head
        bounds = np.array([[float(v) for v in lines[k + 5 + a].split()] for a in range(3)])
        flags = head[-3:]
        xy, xz, yz = (bounds[0, 2], bounds[1, 2], bounds[2, 2]) if tilt else (0.0, 0.0, 0.0)
        xlo = bounds[0, 0] - min(0.0, xy, xz, xy + xz)
        xhi = bounds[0, 1] - max(0.0, xy, xz, xy + xz)
        ylo = bounds[1, 0] - min(0.0, yz)
        yhi = bounds[1, 1] - max(0.0, yz)
        zlo, zhi = bounds[2, 0], bounds[2, 1]
        cell = np.array([[xhi - xlo, 0, 0], [xy, yhi - ylo, 0], [xz, yz, zhi - zlo]])
        names = lines[k + 8].split()[2:]
        data = np.array([[float(v) for v in line.split()] for line in lines[k + 9:k + 9 + natoms]])
        data = data.reshape(natoms, len(names))
        frame: Dict[str, object] = {"step": step, "cell": cell, "lo": np.array([xlo, ylo, zlo]),
                                    "boundary": " ".join("p" if f[0] == "p" else f[0] for f in flags)}
        order = np.argsort(data[:, names.index("id")]) if "id" in names else np.arange(natoms)
        for c, name in enumerate(names):
            col = data[order, c]
            frame[name] = col.astype(np.int64) if name in ("id", "type") else col
        frames.append(frame)
        k += 9 + natoms
    return frames


def read_log(path: PathLike) -> List[Dict[str, np.ndarray]]:
    """Thermo tables of a LAMMPS log, one per ``run``/``minimize``: column name -> float array."""
    tables = []
    header = None
    rows: list = []
    for line in Path(path).read_text().splitlines():
        words = line.split()
        if words[:1] == ["Step"]:
            header, rows = words, []
            continue
        if header is None:
            continue
        if line.startswith("Loop time"):
            tables.append({h: np.array([r[c] for r in rows]) for c, h in enumerate(header)})
            header = None
            continue
        if len(words) == len(header):
            try:
                rows.append([float(w) for w in words])
            except ValueError:
                pass
    return tables
