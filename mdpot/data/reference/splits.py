"""A dataset by system name, its train/validation/test split and the extended-XYZ files ``mdpot data`` writes."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, NamedTuple, Sequence, Tuple

import numpy as np
from ase import Atoms

from ._common import PathLike, allocate, check_count
from .emt import emt_dataset, emt_short_range
from .short_range import SHORT_RANGE_SHARE, short_range_count
from .stillinger_weber import sw_short_range, sw_silicon_dataset

__all__ = ["SPLITS", "SYSTEMS", "Split", "generate", "generate_splits", "reference_dataset", "short_range_dataset",
           "split_dataset", "split_paths", "write_dataset"]

#: The short-range frames draw from their own stream of the seed, so the near-equilibrium structures and the
#: split do not depend on whether (or how many) short-range frames are made.
SHORT_RANGE_STREAM = 13

#: System names accepted by :func:`generate` and ``mdpot data``.
SYSTEMS: Tuple[str, ...] = ("cu-emt", "cuau-emt", "si-sw")
SPLITS: Tuple[str, ...] = ("train", "val", "test")


def _check_system(system: str) -> None:
    if system not in SYSTEMS:
        raise ValueError(f"unknown system {system!r}; expected one of {', '.join(SYSTEMS)}")


def reference_dataset(system: str, n_structures: int, seed: int, progress: bool = True) -> List[Atoms]:
    """Structures of one of :data:`SYSTEMS` (``cu-emt``, ``cuau-emt``, ``si-sw``); see :func:`emt_dataset`
    and :func:`sw_silicon_dataset`.

    Raises
    ------
    ValueError
        Unknown ``system`` or ``n_structures < 1``.
    """
    _check_system(system)
    check_count(n_structures)
    if system == "si-sw":
        return sw_silicon_dataset(n_structures, seed, progress)
    return emt_dataset(system.split("-")[0], n_structures, seed, progress)


def short_range_dataset(system: str, n_train: int, seed: int, share: float = SHORT_RANGE_SHARE,
                        isolated: bool = True, progress: bool = True) -> List[Atoms]:
    """Isolated-atom frames (one per element, if ``isolated``) and ``round(share * n_train)`` short-range frames
    (dimers, trimers, compressed and hot bulk) of one of :data:`SYSTEMS`, for a training split of ``n_train``
    near-equilibrium structures; see :mod:`mdpot.data.reference.short_range`.

    Raises
    ------
    ValueError
        Unknown ``system`` or ``share`` outside [0, 1].
    """
    _check_system(system)
    n = short_range_count(n_train, share)
    rng = np.random.default_rng([seed, SHORT_RANGE_STREAM])
    if system == "si-sw":
        return sw_short_range(n, rng, isolated, progress) if n or isolated else []
    return emt_short_range(system.split("-")[0], n, rng, isolated, progress)


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
    counts = list(allocate(n, dict(zip(SPLITS, fractions))).values())
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

    from ..._files import atomic_write

    path = Path(path)
    with atomic_write(path) as tmp:
        ase.io.write(tmp, list(atoms_list), format="extxyz")
    return path


def split_paths(system: str, out_dir: PathLike) -> Dict[str, Path]:
    """``{split: out_dir/{system}_{split}.xyz}`` for train, val and test."""
    return {s: Path(out_dir) / f"{system}_{s}.xyz" for s in SPLITS}


class Split(NamedTuple):
    """One written split: the extended-XYZ file and the structures in it."""

    path: Path
    structures: List[Atoms]


def generate_splits(system: str, out_dir: PathLike, n_structures: int, seed: int = 0, progress: bool = True,
                    overwrite: bool = False, short_range_share: float = SHORT_RANGE_SHARE,
                    isolated_atoms: bool = True) -> Dict[str, Split]:
    """:func:`generate`, also returning the structures of each split (``mdpot data`` summarises them).

    Returns
    -------
    dict
        ``{"train": Split, "val": Split, "test": Split}``.
    """
    _check_system(system)
    check_count(n_structures)
    short_range_count(0, short_range_share)  # a bad share fails before any work
    paths = split_paths(system, out_dir)
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists; pass --force (overwrite=True) to overwrite it")
    structures = reference_dataset(system, n_structures, seed, progress)
    train, val, test = split_dataset(structures, seed=seed)
    train = train + short_range_dataset(system, len(train), seed, short_range_share, isolated_atoms, progress)
    return {s: Split(write_dataset(part, paths[s]), part) for s, part in zip(SPLITS, (train, val, test))}


def generate(system: str, out_dir: PathLike, n_structures: int, seed: int = 0, progress: bool = True,
             overwrite: bool = False, short_range_share: float = SHORT_RANGE_SHARE,
             isolated_atoms: bool = True) -> Dict[str, Path]:
    """Generate a reference dataset and write ``{system}_train.xyz``, ``_val.xyz`` and ``_test.xyz``.

    The ``n_structures`` near-equilibrium structures (:func:`reference_dataset`) are split 80/10/10; the training
    file then also gets one isolated-atom frame per element and ``round(short_range_share * n_train)``
    short-range frames (:func:`short_range_dataset`), so validation and test stay near-equilibrium.

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
    short_range_share : float
        Short-range frames per near-equilibrium training structure (default 0.1; 0 makes none).
    isolated_atoms : bool
        Add the isolated-atom frames to the training file (default true).

    Returns
    -------
    dict
        ``{"train": Path, "val": Path, "test": Path}``.
    """
    written = generate_splits(system, out_dir, n_structures, seed, progress, overwrite, short_range_share,
                              isolated_atoms)
    return {s: split.path for s, split in written.items()}
