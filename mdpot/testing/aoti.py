"""AOTInductor packages of the small test models, compiled once per test session and shared by the Python and
LAMMPS suites (``aoti_models`` fixture). A package takes tens of seconds to compile, mostly in the C++ compiler,
so several compile side by side in worker processes."""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Dict, Iterable, Sequence, Tuple, Union

#: The cases of the ``aoti_models`` fixture: (architecture, model dtype).
AOTI_CASES: Tuple[Tuple[str, str], ...] = tuple((a, d) for a in ("allegro", "nequip") for d in ("float64", "float32"))


def _compile_one(path: str, architecture: str, dtype: str, elements: Tuple[str, ...], seed: int, threads: int) -> str:
    import torch

    from ..deploy import deploy_model
    from .models import small_model

    torch.set_num_threads(threads)
    deploy_model(small_model(architecture, elements, seed=seed), path, dtype=dtype, format="aoti", overwrite=True)
    return path


def compile_packages(folder: Union[str, os.PathLike], cases: Iterable[Tuple[str, str]] = AOTI_CASES,
                     elements: Sequence[str] = ("Cu", "Au"), seed: int = 0,
                     workers: int = 2) -> Dict[Tuple[str, str], Path]:
    """Deploy ``small_model(arch, elements, seed)`` as an AOTInductor package for every ``(arch, dtype)`` of
    ``cases`` into ``folder`` (``{arch}_{dtype}.pt2``), ``workers`` at a time in fresh processes; returns
    ``{(arch, dtype): path}``. Each package passed the deploy self-check."""
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
