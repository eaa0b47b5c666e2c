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
