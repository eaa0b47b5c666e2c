import os

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


@pytest.fixture(scope="session")
def aoti_models(tmp_path_factory):
    """(architecture, dtype) -> an AOTInductor package (``.pt2``) of ``small_model(arch, ("Cu", "Au"), seed=0)``,
    the model of ``energy_model``; all four compiled on first use, two at a time (tens of seconds each)."""
    from mdpot.testing.aoti import compile_packages

    return compile_packages(tmp_path_factory.mktemp("aoti_models"), elements=ELEMENTS, seed=0,
                            workers=int(os.environ.get("MDPOT_TEST_COMPILE_WORKERS", "2")))


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

    folder = tmp_path_factory.mktemp("nequip_sources")
    return {(a, d): build_nequip_file(folder / f"{a}_{d}.nequip.pth", a, d) for a, d in NEQUIP_CASES}


@pytest.fixture(scope="session")
def nequip_wrapped(nequip_sources, tmp_path_factory):
    """(architecture, dtype) -> the nequip source deployed by mdpot (``deploy_nequip``)."""
    from mdpot.interop.nequip import deploy_nequip

    folder = tmp_path_factory.mktemp("nequip_wrapped")
    return {key: deploy_nequip(src, folder / f"{key[0]}_{key[1]}.pt").path for key, src in nequip_sources.items()}
