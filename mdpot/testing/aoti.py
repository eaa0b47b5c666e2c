"""AOTInductor packages of the small test models, compiled once per test session and shared by the Python and
LAMMPS suites (``aoti_models`` fixture). A package takes tens of seconds to compile, mostly in the C++ compiler,
so several compile side by side in worker processes."""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Dict, Iterable, Sequence, Tuple, Union

from ..contract import KERNELS, default_kernels

#: The cases of the ``aoti_models`` fixture: (architecture, model dtype).
AOTI_CASES: Tuple[Tuple[str, str], ...] = tuple((a, d) for a in ("allegro", "nequip") for d in ("float64", "float32"))
#: The one case compiled with the kernels that are *not* ``default_kernels("aoti")`` (today: the fused kernels, format
#: version 6; the default is the reference, version 3): both tensor-product kernel sets then run through every
#: physics and LAMMPS row of packages without a fifth compile. Allegro float64, because it is the benchmark
#: architecture, the package the refusal tests edit and the C++ runner's crafted packages start from, and in LAMMPS
#: it runs on 1 and 4 ranks, in ``max_edges`` chunks (program calls of other sizes) and in the MD continuation.
OTHER_KERNELS_CASE: Tuple[str, str] = ("allegro", "float64")


def case_kernels(architecture: str, dtype: str) -> str:
    """The tensor-product kernels the ``aoti_models`` package of ``(architecture, dtype)`` is compiled with."""
    default = default_kernels("aoti")
    if (architecture, dtype) != OTHER_KERNELS_CASE:
        return default
    return next(k for k in KERNELS if k != default)


def _compile_one(path: str, architecture: str, dtype: str, elements: Tuple[str, ...], seed: int, threads: int) -> str:
    import torch

    from ..deploy import deploy_model
    from .models import small_model

    torch.set_num_threads(threads)
    deploy_model(small_model(architecture, elements, seed=seed), path, dtype=dtype, format="aoti", overwrite=True,
                 kernels=case_kernels(architecture, dtype))
    return path


def compile_packages(folder: Union[str, os.PathLike], cases: Iterable[Tuple[str, str]] = AOTI_CASES,
                     elements: Sequence[str] = ("Cu", "Au"), seed: int = 0,
                     workers: int = 2) -> Dict[Tuple[str, str], Path]:
    """Deploy ``small_model(arch, elements, seed)`` as an AOTInductor package for every ``(arch, dtype)`` of
    ``cases`` into ``folder`` (``{arch}_{dtype}.pt2``), with the kernels of :func:`case_kernels`, ``workers`` at a
    time in fresh processes; returns ``{(arch, dtype): path}``. Each package passed the deploy self-check."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cases = list(cases)
    paths = {case: folder / f"{case[0]}_{case[1]}.pt2" for case in cases}
    if workers <= 1:
        for (arch, dtype), path in paths.items():
            _compile_one(str(path), arch, dtype, tuple(elements), seed, 1)
        return paths
    # fresh interpreters ("spawn"): a forked torch process must not run inductor's own worker pools
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        jobs = [pool.submit(_compile_one, str(path), arch, dtype, tuple(elements), seed, 1)
                for (arch, dtype), path in paths.items()]
        for job in jobs:
            job.result()
    return paths
