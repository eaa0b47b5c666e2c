"""Building blocks: radial basis, cutoff envelope, channel-wise tensor product and mixing equivariance."""
import math

import pytest
import torch
from e3nn import o3

from mdpot.nn import BesselBasis, ChannelMixing, ChannelwiseTensorProduct, PolynomialCutoff, feature_irreps, sh_irreps


def test_cutoff_envelope_is_smooth_at_rmax():
    cut = PolynomialCutoff(4.0, p=6)
    r = torch.tensor([0.0, 4.0 - 1e-6, 4.0, 4.5], dtype=torch.float64, requires_grad=True)
    u = cut(r)
    (du,) = torch.autograd.grad(u.sum(), r, create_graph=True)
    (d2u,) = torch.autograd.grad(du.sum(), r)
    assert u[0] == 1.0 and u[2] == 0.0 and u[3] == 0.0
    # u has a triple root at r_max: value, slope and curvature all vanish continuously
    assert abs(float(u[1].detach())) < 1e-15 and abs(float(du[1].detach())) < 1e-10 and abs(float(d2u[1].detach())) < 1e-5
    assert float(du[2].detach()) == 0.0 and float(d2u[2]) == 0.0


def test_bessel_basis_values():
    basis = BesselBasis(5.0, 3, trainable=False)
    r = torch.tensor([1.7], dtype=torch.float64)
    expected = [math.sqrt(2 / 5.0) * math.sin(n * math.pi * 1.7 / 5.0) / 1.7 for n in (1, 2, 3)]
    assert torch.allclose(basis(r)[0].double(), torch.tensor(expected, dtype=torch.float64), atol=1e-7)


@pytest.mark.parametrize("bad", [dict(r_max=-1.0), dict(num_basis=0)])
def test_bessel_rejects_bad_arguments(bad):
    args = dict(r_max=5.0, num_basis=8)
    args.update(bad)
    with pytest.raises(ValueError):
        BesselBasis(**args)


def _wigner(irreps, rot):
    """Block-diagonal representation of ``irreps`` (list of (l, p)) for the O(3) matrix ``rot``."""
    return torch.block_diag(*[o3.Irrep(l, p).D_from_matrix(rot) for l, p in irreps])


@pytest.mark.parametrize("l_max,parity", [(1, False), (1, True), (2, False), (2, True)])
@pytest.mark.parametrize("reflect", [False, True])
def test_tensor_product_and_mixing_equivariant(l_max, parity, reflect):
    torch.manual_seed(0)
    torch.set_default_dtype(torch.float64)
    try:
        x_irreps = feature_irreps(l_max, parity)
        y_irreps = sh_irreps(l_max)
        tp = ChannelwiseTensorProduct(x_irreps, y_irreps, x_irreps)
        mix = ChannelMixing(tp.out_blocks, x_irreps, 3, 5)
        rot = o3.rand_matrix()
        if reflect:
            rot = -rot
        dx, dy = _wigner(x_irreps, rot), _wigner(y_irreps, rot)
        x = torch.randn(dx.shape[0], 7, 3)
        y = torch.randn(dy.shape[0], 7, 3)
        out = mix(tp(x, y))
        out_rot = mix(tp(torch.einsum("ij,jeu->ieu", dx, x), torch.einsum("ij,jeu->ieu", dy, y)))
        assert torch.allclose(out_rot, torch.einsum("ij,jeu->ieu", dx, out), atol=1e-10)
        assert out.abs().max() > 1e-3
    finally:
        torch.set_default_dtype(torch.float32)
