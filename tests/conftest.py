import fcntl
import json
import os
from pathlib import Path
from typing import Callable, Dict, Tuple

import pytest
import torch

from mdpot.deploy import deploy_model
from mdpot.models import ARCHITECTURES
from mdpot.testing import small_model

torch.set_num_threads(int(os.environ.get("MDPOT_TEST_THREADS", "1")))

ELEMENTS = ("Cu", "Au")
ARCHS = sorted(ARCHITECTURES)
DTYPES = ("float64", "float32")
FORMATS = ("torchscript", "aoti")


@pytest.fixture(scope="session", params=ARCHS)
def arch(request):
    return request.param


@pytest.fixture(scope="session")
def energy_model(arch):
    """Fresh small float64 energy model of each architecture (two elements, nonzero energy shifts)."""
    return small_model(arch, ELEMENTS, seed=0)


@pytest.fixture(scope="session", params=DTYPES)
def dtype(request):
    return request.param


@pytest.fixture(scope="session")
def deployed_torchscript(energy_model, dtype, tmp_path_factory):
    """The small model deployed to a TorchScript file in each dtype, and loaded back."""
    path = tmp_path_factory.mktemp("models") / f"{energy_model.config.architecture}_{dtype}.pt"
    return deploy_model(energy_model, path, dtype=dtype)


def built_once(tmp_path_factory, name: str,
               build: Callable[[Path], Dict[Tuple[str, ...], Path]]) -> Dict[Tuple[str, ...], Path]:
    """``build(folder)`` (files keyed by tuples of strings) run once per test run: under pytest-xdist (``make test``
    runs two workers) the first worker to ask builds them into the run's shared temp folder while holding a lock,
    and the others wait and read its index; a build that raised left no index, so the next worker builds again.
    For the expensive session fixtures (compiled packages, nequip's own exports); tests only read the files."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return build(tmp_path_factory.mktemp(name))
    root = tmp_path_factory.getbasetemp().parent  # shared by the run's workers
    index = root / f"{name}.json"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this worker dies
        if index.is_file():
            return {tuple(key): Path(path) for key, path in json.loads(index.read_text())}
        folder = root / name
        folder.mkdir(exist_ok=True)
        files = build(folder)
        index.write_text(json.dumps([[list(key), str(path)] for key, path in files.items()]))
        return files


@pytest.fixture(scope="session")
def aoti_models(tmp_path_factory):
    """(architecture, dtype) -> an AOTInductor package (``.pt2``) of ``small_model(arch, ("Cu", "Au"), seed=0)``,
    the model of ``energy_model``; all four compiled on first use, two at a time (tens of seconds each), once per
    test run (:func:`built_once`)."""
    from mdpot.testing.aoti import compile_packages

    return built_once(tmp_path_factory, "aoti_models", lambda folder: compile_packages(
        folder, elements=ELEMENTS, seed=0, workers=int(os.environ.get("MDPOT_TEST_COMPILE_WORKERS", "2"))))


@pytest.fixture(scope="session", params=FORMATS)
def model_format(request):
    return request.param


@pytest.fixture(scope="session")
def deployed(model_format, arch, dtype, request):
    """The small model deployed in each format and dtype, loaded back."""
    if model_format == "torchscript":
        return request.getfixturevalue("deployed_torchscript")
    from mdpot.deploy import load_model

    return load_model(request.getfixturevalue("aoti_models")[(arch, dtype)])


@pytest.fixture()
def calc(deployed):
    from mdpot import MDPotCalculator

    return MDPotCalculator(deployed.path)


NEQUIP_CASES = [(a, d) for a in ("allegro", "nequip") for d in DTYPES]


@pytest.fixture(scope="session")
def nequip_sources(tmp_path_factory):
    """(architecture, dtype) -> a small fresh-weight model of the nequip package (Cu, Au; r_max 4 Å; 2 layers),
    exported to TorchScript (``.nequip.pth``) by nequip's own code. Skips without nequip and nequip-allegro."""
    pytest.importorskip("nequip", reason="nequip is not importable (pip install nequip==0.19.1 nequip-allegro==0.8.3)")
    pytest.importorskip("allegro", reason="nequip-allegro is not importable (pip install nequip-allegro==0.8.3)")
    from mdpot.testing.nequip import build_nequip_file

    return built_once(tmp_path_factory, "nequip_sources", lambda folder: {
        (a, d): build_nequip_file(folder / f"{a}_{d}.nequip.pth", a, d) for a, d in NEQUIP_CASES})


@pytest.fixture(scope="session")
def nequip_wrapped(nequip_sources, tmp_path_factory):
    """(architecture, dtype) -> the nequip source deployed by mdpot (``deploy_nequip``)."""
    from mdpot.interop.nequip import deploy_nequip

    return built_once(tmp_path_factory, "nequip_wrapped", lambda folder: {
        key: deploy_nequip(src, folder / f"{key[0]}_{key[1]}.pt").path for key, src in nequip_sources.items()})
