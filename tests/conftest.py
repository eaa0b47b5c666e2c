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
def deployed(energy_model, dtype, tmp_path_factory):
    """The small model deployed to a file in each dtype, and loaded back."""
    path = tmp_path_factory.mktemp("models") / f"{energy_model.config.architecture}_{dtype}.pt"
    return deploy_model(energy_model, path, dtype=dtype)


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
