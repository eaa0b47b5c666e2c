"""Reference datasets labelled with classical potentials: EMT Cu and Cu-Au (ASE), Stillinger-Weber Si (LAMMPS).

Each structure is an ``ase.Atoms`` with a ``SinglePointCalculator`` holding the potential's total energy (eV),
forces (eV/Å) and stress (eV/Å³, Voigt ``xx yy zz yz xz xy``, ASE sign), so ``ase.io.write(..., format=
"extxyz")`` stores ``energy``, ``forces`` and ``stress``. ``atoms.info["kind"]`` names how it was made
(``rattled``, ``strained``, ``vacancy``, ``md``; for Si ``rattled``, ``strained``, ``liquid``, ``amorphous``;
in the training file of ``mdpot data`` also ``isolated``, ``dimer``, ``trimer``, ``compressed``, ``hot``:
:mod:`.short_range`; non-periodic frames have no stress),
``atoms.info["temperature"]`` (K) is the thermostat temperature of MD snapshots, ``info["system"]`` the dataset
name and, for Cu-Au, ``info["au_fraction"]`` the Au fraction. Labels never contain a kinetic contribution.

Everything draws from one ``numpy.random.default_rng(seed)`` (LAMMPS seeds included), so the same seed gives
bit-identical files on the same machine and software versions.

Modules: :mod:`.short_range` (isolated atoms, dimers, trimers, compressed and hot bulk), :mod:`.emt` (Cu, Cu-Au), :mod:`.stillinger_weber` (Si, labelled by the in-process LAMMPS of
:mod:`mdpot.lammps.embedded`, which also provides the ASE calculator ``StillingerWeberSi``), :mod:`.splits`
(system names, train/val/test split, files), :mod:`.labels` (new labels for given structures: ``mdpot label``).
Every labelled frame, of ``mdpot data`` and ``mdpot label`` alike, comes from one function,
``_common.reference_frame``.

Example
-------
>>> from mdpot.data.reference import generate
>>> paths = generate("cu-emt", "data", n_structures=500, seed=0)        # doctest: +SKIP
>>> paths["train"]                                                       # doctest: +SKIP
PosixPath('data/cu-emt_train.xyz')
"""
from .emt import emt_dataset
from .labels import REFERENCES, label_structures
from .short_range import SHORT_RANGE_KINDS, SHORT_RANGE_SHARE
from .splits import (SYSTEMS, Split, generate, generate_splits, reference_dataset, short_range_dataset,
                     split_dataset, split_paths, write_dataset)
from .stillinger_weber import sw_silicon_dataset

__all__ = [
    "REFERENCES", "SHORT_RANGE_KINDS", "SHORT_RANGE_SHARE", "SYSTEMS", "Split", "emt_dataset", "generate",
    "generate_splits", "label_structures", "reference_dataset", "short_range_dataset", "split_dataset", "split_paths",
    "sw_silicon_dataset", "write_dataset",
]
