"""A dataset by system name, its train/validation/test split and the extended-XYZ files ``mdpot data`` writes."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, NamedTuple, Sequence, Tuple

import numpy as np
from ase import Atoms

from ._common import PathLike, allocate, check_count
from .emt import emt_dataset
from .stillinger_weber import sw_silicon_dataset

__all__ = ["SPLITS", "SYSTEMS", "Split", "generate", "generate_splits", "reference_dataset", "split_dataset",
           "split_paths", "write_dataset"]

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
                    overwrite: bool = False) -> Dict[str, Split]:
    """:func:`generate`, also returning the structures of each split (``mdpot data`` summarises them).

    Returns
    -------
    dict
        ``{"train": Split, "val": Split, "test": Split}``.
    """
    _check_system(system)
    check_count(n_structures)
    paths = split_paths(system, out_dir)
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists; pass --force (overwrite=True) to overwrite it")
    structures = reference_dataset(system, n_structures, seed, progress)
    parts = split_dataset(structures, seed=seed)
    return {s: Split(write_dataset(part, paths[s]), part) for s, part in zip(SPLITS, parts)}


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
    written = generate_splits(system, out_dir, n_structures, seed, progress, overwrite)
    return {s: split.path for s, split in written.items()}
