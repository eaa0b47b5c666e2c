"""e3nn-based building blocks shared by every mdpot architecture."""
from .equivariant import (
    ChannelMixing,
    ChannelwiseTensorProduct,
    IrrepWeighting,
    SphericalHarmonics,
    feature_irreps,
    irreps_dim,
    sh_irreps,
)
from .mlp import MLP
from .radial import BesselBasis, PolynomialCutoff

__all__ = [
    "BesselBasis",
    "ChannelMixing",
    "ChannelwiseTensorProduct",
    "IrrepWeighting",
    "MLP",
    "PolynomialCutoff",
    "SphericalHarmonics",
    "feature_irreps",
    "irreps_dim",
    "sh_irreps",
]
