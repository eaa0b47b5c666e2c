"""The shipped test kit: tolerances per dtype, structure generators, small models and consistency checks
that every architecture's test suite reuses."""
from .asserts import assert_allclose, max_error
from .models import SMALL_OPTIONS, small_model
from .structures import alloy, fcc, molecule, sample_structure, slab
from .tolerances import dtype_name, tolerance

__all__ = [
    "SMALL_OPTIONS", "alloy", "assert_allclose", "dtype_name", "fcc", "max_error", "molecule", "sample_structure",
    "slab", "small_model", "tolerance",
]
