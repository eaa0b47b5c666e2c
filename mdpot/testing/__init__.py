"""The shipped test kit: the physics asserts of the test matrix (``docs/testing.md``), tolerances per dtype,
structure generators and small models, so that every architecture's test suite, the deploy self-check and
``mdpot check`` run the same checks.

Example
-------
>>> from mdpot.deploy import eager_model
>>> model = eager_model(small_model("nequip"), "float64")
>>> assert_equivariant(model, alloy(("Cu", "Au")), "float64")
"""
from .asserts import (
    EQUIVARIANCE_KINDS,
    assert_allclose,
    assert_equivariant,
    assert_forces_match_fd,
    assert_momentum,
    assert_stress_matches_fd,
    compare_contract,
)
from .contract import ContractCalculator, contract_outputs
from .models import SMALL_OPTIONS, small_model
from .structures import alloy, close_contacts, fcc, molecule, sample_structure, slab
from .tolerances import dtype_name, tolerance

__all__ = [
    "EQUIVARIANCE_KINDS", "SMALL_OPTIONS", "ContractCalculator", "alloy", "assert_allclose", "assert_equivariant",
    "assert_forces_match_fd", "assert_momentum", "assert_stress_matches_fd", "close_contacts", "compare_contract",
    "contract_outputs", "dtype_name", "fcc", "molecule", "sample_structure", "slab", "small_model", "tolerance",
]
