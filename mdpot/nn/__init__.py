"""e3nn-based building blocks shared by every mdpot architecture."""
from .equivariant import ChannelwiseTensorProduct, IrrepWeighting, SphericalHarmonics
from .gate import Gate
from .irreps import Irrep, as_irreps, feature_irreps, offsets, offsets_by_irrep, sh_irreps
from .linear import ChannelMixing, SpeciesLinear
from .mlp import MLP
from .radial import BesselBasis, PolynomialCutoff

__all__ = [
    "BesselBasis",
    "ChannelMixing",
    "ChannelwiseTensorProduct",
    "Gate",
    "Irrep",
    "IrrepWeighting",
    "MLP",
    "PolynomialCutoff",
    "SpeciesLinear",
    "SphericalHarmonics",
    "as_irreps",
    "feature_irreps",
    "offsets",
    "offsets_by_irrep",
    "sh_irreps",
]
