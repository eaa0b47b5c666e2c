"""The fused tensor-product operators (``torch.ops.mdpot.*``, :mod:`mdpot.ops`) against the pure-torch reference
(``ChannelwiseTensorProduct`` with ``fused = False``): outputs and every gradient, float32 and float64, random
shapes and the edge cases of real graphs (no edges, an atom without edges, unsorted edges, one channel)."""
from __future__ import annotations

import copy

import pytest
import torch

from mdpot.nn import ChannelwiseTensorProduct, feature_irreps, sh_irreps
from mdpot.ops import OpsUnavailableError, kernels_of, load_ops, set_kernels

RTOL = {torch.float64: 1e-12, torch.float32: 1e-5}


@pytest.fixture(scope="module", autouse=True)
def ops():
    assert load_ops()


def _close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    rtol = RTOL[want.dtype]
    scale = max(float(want.detach().abs().max()), 1.0) if want.numel() else 1.0
    torch.testing.assert_close(got, want, rtol=rtol, atol=rtol * scale, msg=lambda m: f"{what}: {m}")


def _tp(l_max: int, unit: bool) -> ChannelwiseTensorProduct:
    irreps = feature_irreps(l_max, True)
    return ChannelwiseTensorProduct(irreps, sh_irreps(l_max), irreps, unit_scalar_y=unit)


def _both(tp: ChannelwiseTensorProduct, fn, inputs):
    """(output, grads of inputs) for the reference and the fused kernels, with one random output gradient."""
    results = []
    for fused in (False, True):
        tp.fused = fused
        leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
        out = fn(*leaves)
        g = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(7))
        grads = torch.autograd.grad((out * g).sum(), leaves, allow_unused=True) if out.numel() else [None] * len(leaves)
        results.append((out, [torch.zeros_like(t) if d is None else d for t, d in zip(leaves, grads)]))
    tp.fused = False
    return results


def _graph(n_atoms: int, n_edges: int, sort: bool, seed: int):
    g = torch.Generator().manual_seed(seed)
    # atom n_atoms - 1 is never a centre: an atom without edges
    centre = torch.randint(0, max(n_atoms - 1, 1), (n_edges,), generator=g)
    if sort:
        centre = centre.sort().values
    neighbour = torch.randint(0, n_atoms, (n_edges,), generator=g)
    return centre, neighbour


SHAPES = [  # l_max, U, atoms, edges, sorted, y width
    (0, 3, 5, 17, True, 1),
    (1, 4, 6, 31, True, 1),
    (2, 5, 7, 40, True, 1),
    (2, 1, 4, 12, True, 1),     # one channel
    (1, 3, 6, 25, False, 1),    # unsorted edges
    (2, 3, 9, 100, False, 1),   # unsorted, more edges than one of tp_gather's tiles (32)
    (2, 4, 6, 30, False, "U"),  # y with one value per channel
    (1, 3, 5, 0, True, 1),      # no edges
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("l_max,u,n,e,sort,yw", SHAPES)
def test_tp_scatter_matches_reference(dtype, l_max, u, n, e, sort, yw):
    tp = _tp(l_max, unit=True)
    g = torch.Generator().manual_seed(l_max * 100 + e)
    d1, d2 = max(tp.term_i) + 1, (l_max + 1) ** 2
    # x as the block interface hands it over: atom-major rows viewed as planes (not contiguous)
    x = torch.randn(n, d1 * u, dtype=dtype, generator=g).reshape(n, d1, u).permute(1, 0, 2)
    y = torch.randn(d2, e, u if yw == "U" else 1, dtype=dtype, generator=g)
    y[0] = 1.0
    w = torch.randn(e, tp.num_paths * u, dtype=dtype, generator=g)
    centre, neighbour = _graph(n, e, sort, seed=e)
    (ref, ref_grads), (got, got_grads) = _both(tp, lambda x, y, w: tp.convolve(x, y, w, centre, neighbour, n), [x, y, w])
    assert got.shape == (tp.dim_out, n, u) and got.dtype == dtype
    _close(got, ref, "output")
    assert not got[:, n - 1].any()  # the atom without edges
    for name, a, b in zip("xyw", got_grads, ref_grads):
        _close(a, b, f"d/d{name}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("l_max,u,n,e,sort,yw", SHAPES)
def test_tp_gather_matches_reference(dtype, l_max, u, n, e, sort, yw):
    tp = _tp(l_max, unit=False)
    g = torch.Generator().manual_seed(l_max * 100 + e + 1)
    d1, d2 = max(tp.term_i) + 1, (l_max + 1) ** 2
    v = torch.randn(d1, e, u, dtype=dtype, generator=g)
    env = torch.randn(d2, n, u, dtype=dtype, generator=g)
    centre, _ = _graph(n, e, sort, seed=e + 1)
    (ref, ref_grads), (got, got_grads) = _both(tp, lambda v, env: tp.gather_product(v, env, centre), [v, env])
    assert got.shape == (tp.dim_out, e, u) and got.dtype == dtype
    _close(got, ref, "output")
    for name, a, b in zip(("v", "env"), got_grads, ref_grads):
        _close(a, b, f"d/d{name}")


def test_gradcheck():
    tp = _tp(1, unit=True)
    tp.fused = True
    g = torch.Generator().manual_seed(3)
    x = torch.randn(max(tp.term_i) + 1, 4, 2, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.randn(4, 9, 1, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(9, tp.num_paths * 2, dtype=torch.float64, generator=g, requires_grad=True)
    centre, neighbour = _graph(4, 9, False, seed=3)
    assert torch.autograd.gradcheck(lambda x, y, w: tp.convolve(x, y, w, centre, neighbour, 4), (x, y, w))
    tp = _tp(1, unit=False)
    tp.fused = True
    v = torch.randn(max(tp.term_i) + 1, 9, 2, dtype=torch.float64, generator=g, requires_grad=True)
    env = torch.randn(4, 4, 2, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, env: tp.gather_product(v, env, centre), (v, env))


# ----------------------------------------------------------------- radial weights shared per distinct length


def _shared_inputs(tp, l_max, u, n, e, yw, dtype, seed):
    """x, y, edge lengths r, the table (w, dw) of q distinct lengths and each edge's row."""
    g = torch.Generator().manual_seed(seed)
    d1, d2 = max(tp.term_i) + 1, (l_max + 1) ** 2
    x = torch.randn(n, d1 * u, dtype=dtype, generator=g).reshape(n, d1, u).permute(1, 0, 2)
    y = torch.randn(d2, e, u if yw == "U" else 1, dtype=dtype, generator=g)
    y[0] = 1.0
    r = 1.0 + torch.rand(e, dtype=dtype, generator=g)
    q = max(e // 2, 1)
    w = torch.randn(q, tp.num_paths * u, dtype=dtype, generator=g)
    dw = torch.randn(q, tp.num_paths * u, dtype=dtype, generator=g)
    row = torch.randint(0, q, (e,), generator=g)
    return x, y, r, w, dw, row


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("l_max,u,n,e,sort,yw", SHAPES)
def test_tp_scatter_shared_matches_reference(dtype, l_max, u, n, e, sort, yw):
    """mdpot::tp_scatter_shared against the reference (the table expanded to the edges): the output, and the
    gradients w.r.t. x, y and the edge lengths r (dE/dr_e = sum grad * product * dw[row[e]])."""
    tp = _tp(l_max, unit=True)
    x, y, r, w, dw, row = _shared_inputs(tp, l_max, u, n, e, yw, dtype, seed=l_max * 100 + e + 2)
    centre, neighbour = _graph(n, e, sort, seed=e + 2)
    fn = lambda x, y, r: tp.convolve_shared(x, y, r, w, dw, row, centre, neighbour, n)  # noqa: E731
    (ref, ref_grads), (got, got_grads) = _both(tp, fn, [x, y, r])
    assert got.shape == (tp.dim_out, n, u) and got.dtype == dtype
    _close(got, ref, "output")
    # the value is the plain convolution with every edge's row of the table
    _close(got, tp.convolve(x, y, w.index_select(0, row), centre, neighbour, n), "output vs w[row]")
    for name, a, b in zip(("x", "y", "r"), got_grads, ref_grads):
        _close(a, b, f"d/d{name}")


def test_tp_scatter_shared_gradcheck_and_refusals():
    tp = _tp(1, unit=True)
    tp.fused = True
    x, y, r, w, dw, row = _shared_inputs(tp, 1, 2, 4, 9, 1, torch.float64, seed=4)
    centre, neighbour = _graph(4, 9, False, seed=4)
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, y, r)]
    # a table that is a function of the lengths (one row per edge here), so that finite differences in r see it
    freq = torch.linspace(0.5, 2.0, w.shape[1], dtype=torch.float64)

    def conv(x, y, r):
        arg = r.detach().unsqueeze(1) * freq
        return tp.convolve_shared(x, y, r, torch.sin(arg), freq * torch.cos(arg), torch.arange(len(r)), centre,
                                  neighbour, 4)

    assert torch.autograd.gradcheck(conv, leaves)
    with pytest.raises(RuntimeError) as info:  # the table takes no gradient: refused, not silently given none
        tp.convolve_shared(x, y, r, w.clone().requires_grad_(True), dw, row, centre, neighbour, 4)
    assert str(info.value).splitlines()[0] == ("mdpot::tp_scatter_shared: the shared radial table (w, dw) takes no "
                                               "gradient; train with the reference kernels")
    with pytest.raises(RuntimeError) as info:
        tp.convolve_shared(x, y, r, w, dw, torch.full_like(row, w.shape[0]), centre, neighbour, 4)
    assert str(info.value).splitlines()[0] == f"mdpot::tp_scatter_shared: row[0] = {w.shape[0]} out of range [0, {w.shape[0]})"
    with pytest.raises(RuntimeError) as info:
        leaves[2] = leaves[2].detach().requires_grad_(True)
        out = tp.convolve_shared(*leaves, w, dw, row, centre, neighbour, 4)
        torch.autograd.grad(out.sum(), [leaves[2]], create_graph=True)
    assert "mdpot::tp_scatter_shared: double backward (create_graph=True) is not supported" in str(info.value)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_distinct_values(dtype):
    g = torch.Generator().manual_seed(9)
    pool = torch.rand(50, dtype=dtype, generator=g) * 5
    values = pool[torch.randint(0, 50, (400,), generator=g)]
    values[3] = 0.0
    values[4] = -0.0  # another bit pattern: its own entry (the same function value, evaluated twice)
    distinct, inverse = torch.ops.mdpot.distinct(values)
    assert inverse.dtype == torch.long and distinct.dtype == dtype
    assert torch.equal(distinct.index_select(0, inverse).view(torch.uint8), values.view(torch.uint8))  # bit for bit
    bits = distinct.view(torch.int32 if dtype == torch.float32 else torch.int64)
    assert len(set(bits.tolist())) == len(distinct)
    # in order of first occurrence
    first = [int((inverse == k).nonzero()[0]) for k in range(len(distinct))]
    assert first == sorted(first) and first[0] == 0
    empty, none = torch.ops.mdpot.distinct(values[:0])
    assert empty.shape == (0,) and none.shape == (0,)
    with pytest.raises(RuntimeError) as info:
        torch.ops.mdpot.distinct(torch.arange(3))
    assert str(info.value).splitlines()[0] == ("mdpot::distinct: expects a 1-D float32 or float64 tensor, got Long of "
                                               "shape [3]")


def test_mlp_value_and_tangent():
    """Forward mode through the MLP: the value equals the network's and the tangent equals torch.func.jvp, also
    when the rows go through in several chunks."""
    from mdpot.nn import MLP

    torch.manual_seed(0)
    mlp = MLP(8, 48, (64, 64), bias=True, bias_last=True).double()
    for n in (7, 5000):  # 5000 rows of width 64 in float64: three chunks
        x = torch.randn(n, 8, dtype=torch.float64)
        tx = torch.randn(n, 8, dtype=torch.float64)
        with torch.no_grad():
            value, tangent = mlp.value_and_tangent(x, tx)
        want_value, want_tangent = torch.func.jvp(mlp, (x,), (tx,))
        torch.testing.assert_close(value, want_value, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(tangent, want_tangent, rtol=1e-12, atol=1e-12)


def test_radial_value_and_derivative():
    """The closed-form derivatives of the basis and the envelope equal autograd's; the values equal forward's bit
    for bit (inside and beyond the cutoff)."""
    from mdpot.nn import BesselBasis, PolynomialCutoff

    r = torch.linspace(0.3, 5.5, 41, dtype=torch.float64, requires_grad=True)
    for module in (BesselBasis(5.0, 8).double(), PolynomialCutoff(5.0, 6)):
        value, derivative = module.value_and_derivative(r.detach())
        assert torch.equal(value, module(r.detach()))
        want = torch.func.jacfwd(module)(r.detach())  # [E, (B,) E]: diagonal in the edge index
        want = torch.diagonal(want, dim1=0, dim2=-1).T if want.dim() == 3 else torch.diagonal(want)
        torch.testing.assert_close(derivative, want.reshape(derivative.shape), rtol=1e-12, atol=1e-12)


def test_shared_radial_nequip_matches_reference_path():
    """NequIP with the fused kernels in eval mode evaluates its radial networks once per distinct length: the same
    energies, forces and virials as the reference kernels, eager and scripted; in training mode it keeps the per-edge
    network, so its weights get gradients."""
    from mdpot.data import TypeMapper, atoms_to_graph
    from mdpot.models import contract_potential
    from mdpot.testing import alloy, small_model

    model = small_model("nequip", ELEMENTS, seed=2, l_max=2, num_layers=3).double().eval()
    reference = contract_potential(model)
    fused = contract_potential(copy.deepcopy(model))
    set_kernels(fused, "fused")
    assert fused.model.memo_radial and not reference.model.memo_radial
    atoms = alloy(ELEMENTS, (2, 2, 2), a=3.0, skew=0.1, rattle=0.1, seed=5)
    g = atoms_to_graph(atoms, model.config.r_max, TypeMapper(ELEMENTS))
    args = (g.pos, g.atom_type, g.edge_index, g.edge_shift, g.num_atoms, True)
    want = reference(*args)
    scripted = torch.jit.script(fused)
    assert "ops.mdpot.distinct" in scripted.model._geometry.code
    assert "tp_scatter_shared" in getattr(scripted.model.blocks, "0").tp.convolve_shared.code
    assert float(want[1].abs().max()) > 1e-2
    for got in (fused(*args), scripted(*args)):
        for name, a, b in zip(("energies", "forces", "virial", "atom virial"), got, want):
            _close(a, b, name)
    # n_local < N prunes edges by hop distance: the table's rows follow the kept edges
    pruned = [t(g.pos, g.atom_type, g.edge_index, g.edge_shift, 5, True) for t in (reference, fused)]
    for name, a, b in zip(("energies", "forces"), pruned[1], pruned[0]):
        _close(a, b, f"pruned {name}")
    fused.train()
    vec = g.pos.index_select(0, g.edge_index[1]) - g.pos.index_select(0, g.edge_index[0]) + g.edge_shift
    energy = fused.model(vec, g.edge_index, g.atom_type).sum()
    radial = fused.model.blocks[0].radial.net[0].weight
    grad, = torch.autograd.grad(energy, [radial], allow_unused=True)
    assert grad is not None and float(grad.abs().max()) > 0


class _Conv(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.tp = _tp(2, unit=True)
        self.gather = _tp(2, unit=False)

    def forward(self, x, y, w, centre, neighbour, n: int):
        out = self.tp.convolve(x, y, w, centre, neighbour, n)
        return self.gather.gather_product(out.index_select(1, neighbour), out, centre)


def test_scripted_equals_eager_and_double_backward_refused():
    module = _Conv().double()
    assert set_kernels(module, "fused") == 2 and kernels_of(module) == "fused"
    scripted = torch.jit.script(module)
    assert "ops.mdpot.tp_scatter" in scripted.tp.convolve.code
    assert "ops.mdpot.tp_gather" in scripted.gather.gather_product.code
    g = torch.Generator().manual_seed(5)
    n, e, u = 5, 20, 3
    x = torch.randn(18, n, u, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.randn(9, e, 1, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(e, module.tp.num_paths * u, dtype=torch.float64, generator=g, requires_grad=True)
    centre, neighbour = _graph(n, e, True, seed=5)
    got = scripted(x, y, w, centre, neighbour, n)
    want = module(x, y, w, centre, neighbour, n)
    assert torch.equal(got, want)
    assert all(torch.equal(a, b) for a, b in zip(torch.autograd.grad(got.sum(), [x, y, w]),
                                                 torch.autograd.grad(want.sum(), [x, y, w])))
    for fn in (module, scripted):
        with pytest.raises(RuntimeError) as info:
            torch.autograd.grad(fn(x, y, w, centre, neighbour, n).sum(), [x], create_graph=True)
        line = str(info.value).strip().splitlines()[0]
        assert "mdpot::tp_gather: double backward (create_graph=True) is not supported by mdpot's fused kernels" in line
    # the reference path stays twice differentiable, and its scripted code calls no operator
    set_kernels(module, "reference")
    assert "mdpot" not in torch.jit.script(module).tp.convolve.code
    gx, = torch.autograd.grad(module(x, y, w, centre, neighbour, n).sum(), [x], create_graph=True)
    assert gx.requires_grad


def test_errors_are_one_line():
    tp = _tp(1, unit=True)
    tp.fused = True
    x = torch.randn(max(tp.term_i) + 1, 3, 2, dtype=torch.float64)
    y = torch.randn(4, 4, 1, dtype=torch.float64)
    w = torch.randn(4, tp.num_paths * 2, dtype=torch.float64)
    centre = torch.tensor([0, 0, 1, 2])
    cases = [
        ((x, y, w, centre, torch.tensor([0, 1, 3, 2]), 3), "mdpot::tp_scatter: neighbour[2] = 3 out of range [0, 3)"),
        ((x, y, w, centre, torch.tensor([0, 1, 2, 2]), 2), "mdpot::tp_scatter: centre[3] = 2 out of range [0, 2)"),
        ((x, y.float(), w, centre, centre, 3), "mdpot::tp_scatter: x, y and w must have one dtype, got Double, Float, Double"),
    ]
    for args, message in cases:
        with pytest.raises(RuntimeError) as info:
            tp.convolve(*args)
        assert str(info.value).splitlines()[0] == message
    with pytest.raises(ValueError, match=r"^unknown kernels 'fast'; expected one of \['reference', 'fused'\]$"):
        set_kernels(tp, "fast")


def test_load_ops_without_library(monkeypatch, tmp_path):
    """Where the library is not built and may not be, load_ops says so in one line (or returns False)."""
    import mdpot.ops as ops

    monkeypatch.setattr(ops, "ops_loaded", lambda: False)
    monkeypatch.setenv("MDPOT_PLUGIN_DIR", str(tmp_path))
    monkeypatch.setenv("MDPOT_PLUGIN_BUILD", "0")
    with pytest.raises(OpsUnavailableError) as info:
        load_ops()
    assert str(info.value) == (f"mdpot's fused kernels (libmdpot_ops.so) are not built in {tmp_path}; build them "
                               "with `python -m mdpot.lammps.plugin`, or use --kernels reference")
    assert load_ops(required=False) is False


# ---------------------------------------------------------------------------------------------- deployed files

ELEMENTS = ("Cu", "Au")


@pytest.fixture(scope="module")
def fused_files(tmp_path_factory):
    """arch -> (reference file, fused file), float64: NequIP l_max 2, 3 layers; Allegro l_max 2."""
    from mdpot.deploy import deploy_model
    from mdpot.testing import small_model

    folder = tmp_path_factory.mktemp("fused")
    models = {"nequip": small_model("nequip", ELEMENTS, seed=1, l_max=2, num_layers=3),
              "allegro": small_model("allegro", ELEMENTS, seed=1, l_max=2)}
    return {arch: tuple(deploy_model(m, folder / f"{arch}_{k}.pt", kernels=k).path for k in ("reference", "fused"))
            for arch, m in models.items()}


@pytest.mark.parametrize("arch", ["nequip", "allegro"])
def test_fused_file_matches_reference_file(fused_files, arch):
    import numpy as np
    from ase.calculators.calculator import all_changes

    from mdpot import MDPotCalculator
    from mdpot.deploy import load_model
    from mdpot.testing import alloy, assert_allclose

    reference, fused = fused_files[arch]
    meta = load_model(fused).metadata
    assert (meta["mdpot_format_version"], meta["kernels"]) == (8, "fused")
    assert (load_model(reference).metadata["mdpot_format_version"], load_model(reference).metadata["kernels"]) == \
        (2, "reference")
    atoms = alloy(ELEMENTS, (2, 2, 2), a=3.0, skew=0.1, rattle=0.1, seed=2)
    results = []
    threads = torch.get_num_threads()
    try:
        for path, count in ((reference, 1), (fused, 1), (fused, 2)):    # two threads: per-thread d/dx buffers
            torch.set_num_threads(count)
            calc = MDPotCalculator(path)
            calc.calculate(atoms.copy(), ["energy", "energies", "forces", "stress", "stresses"], all_changes)
            results.append(calc.results)
    finally:
        torch.set_num_threads(threads)
    assert np.abs(results[0]["forces"]).max() > 1e-2
    for key in ("energy", "energies", "forces", "stress", "stresses"):
        assert_allclose(results[1][key], results[0][key], 1e-10, f"{arch} fused vs reference {key}")
        assert_allclose(results[2][key], results[0][key], 1e-10, f"{arch} fused on 2 threads vs reference {key}")


def test_fused_file_is_refused_off_the_cpu(fused_files):
    """The fused kernels run on the CPU only: asking for another device is one line naming the file, the device and
    the fix, before any CUDA is needed (here there is none); the reference file gets the usual CUDA refusal."""
    from mdpot import MDPotCalculator
    from mdpot.deploy import load_model

    reference, fused = fused_files["allegro"]
    expected = (f"{fused}: calls mdpot's fused kernels (kernels fused), which run on the CPU only, not on cuda:1; "
                "deploy it with --kernels reference to run it there")
    for attempt in (lambda: load_model(fused, device="cuda:1"), lambda: MDPotCalculator(fused, device="cuda:1"),
                    lambda: load_model(fused).to("cuda:1")):
        with pytest.raises(ValueError) as info:
            attempt()
        assert str(info.value) == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            load_model(reference, device="cuda:1")
    assert load_model(fused, device="cpu").metadata["kernels"] == "fused"


def test_fused_file_needs_the_ops(fused_files, monkeypatch, tmp_path):
    import mdpot.ops as ops
    from mdpot.deploy import load_model

    fused = fused_files["nequip"][1]
    monkeypatch.setattr(ops, "ops_loaded", lambda: False)
    monkeypatch.setenv("MDPOT_PLUGIN_DIR", str(tmp_path))
    monkeypatch.setenv("MDPOT_PLUGIN_BUILD", "0")
    with pytest.raises(ValueError) as info:
        load_model(fused)
    assert str(info.value) == (f"{fused}: calls mdpot's fused kernels (kernels fused), which this process cannot load: "
                               f"mdpot's fused kernels (libmdpot_ops.so) are not built in {tmp_path}; build them with "
                               "`python -m mdpot.lammps.plugin`, or use --kernels reference")


def test_kernels_metadata_rules():
    from mdpot.deploy import metadata as md
    from mdpot.testing import small_model

    meta = md.make_metadata(small_model("allegro", ELEMENTS), "float64", kernels="fused")
    raw = md.encode({**meta, "weights_sha256": "0" * 64})
    assert raw["mdpot_format_version"] == "8" and raw["kernels"] == "fused"
    assert "kernels" not in md.encode(md.make_metadata(small_model("allegro", ELEMENTS), "float64"))
    assert md.decode(raw, "f.pt")["kernels"] == "fused"
    for version, kernels, message in (
            ("2", "fused", "f.pt: metadata kernels 'fused' with mdpot_format_version 2 (files calling the fused "
                           "kernels are version 5 or 8, and only they); deploy it again"),
            ("5", "", "f.pt: metadata kernels 'reference' with mdpot_format_version 5 (files calling the fused "
                      "kernels are version 5 or 8, and only they); deploy it again"),
            ("8", "", "f.pt: metadata kernels 'reference' with mdpot_format_version 8 (files calling the fused "
                      "kernels are version 5 or 8, and only they); deploy it again"),
            ("8", "fast", "f.pt: metadata kernels 'fast' is not one of ['reference', 'fused']")):
        with pytest.raises(ValueError) as info:
            md.decode({**raw, "mdpot_format_version": version, "kernels": kernels}, "f.pt")
        assert str(info.value) == message
    # packages: version 6 calls the fused kernels, 3 the reference (tests/test_aoti.py forges whole packages)
    assert md.decode({**raw, "mdpot_format_version": "6"}, "f.pt2", package=True)["kernels"] == "fused"
    assert md.decode({**raw, "mdpot_format_version": "3", "kernels": ""}, "f.pt2", package=True)["kernels"] == "reference"
    for version, kernels in (("3", "fused"), ("6", "")):
        with pytest.raises(ValueError) as info:
            md.decode({**raw, "mdpot_format_version": version, "kernels": kernels}, "f.pt2", package=True)
        assert str(info.value) == (f"f.pt2: metadata kernels {kernels or 'reference'!r} with mdpot_format_version "
                                   f"{version} (packages calling the fused kernels are version 6, and only they); "
                                   "deploy it again")
    with pytest.raises(ValueError) as info:
        md.decode(raw, "f.pt2", package=True)
    assert str(info.value) == ("f.pt2: an AOTInductor package claiming model format version 8 (packages are version "
                               "3 or 6); deploy it again")
    # a fused file of the first operator set, written by an earlier mdpot, still decodes
    assert md.decode({**raw, "mdpot_format_version": "5"}, "f.pt")["kernels"] == "fused"


def test_kernels_run_on_torchs_threads():
    """The kernels' parallel loops (at::parallel_for, an inline `omp parallel` in torch's headers) run on as many
    threads as torch is set to: a library built without OpenMP runs them on one thread whatever the setting."""
    threads = torch.get_num_threads()
    try:
        for count in (2, 1, 3):
            torch.set_num_threads(count)
            assert torch.ops.mdpot.parallel_threads() == count, f"torch.set_num_threads({count})"
    finally:
        torch.set_num_threads(threads)


def test_threads_agree_and_are_deterministic():
    """With two threads each thread scatters d/dx into its own buffer: same numbers (to rounding) as one thread,
    and bit-identical from run to run."""
    tp = _tp(1, unit=True)
    g = torch.Generator().manual_seed(11)
    n, e, u = 64, 600, 3
    x = torch.randn(max(tp.term_i) + 1, n, u, dtype=torch.float64, generator=g)
    y = torch.randn(4, e, 1, dtype=torch.float64, generator=g)
    w = torch.randn(e, tp.num_paths * u, dtype=torch.float64, generator=g)
    centre, neighbour = _graph(n, e, True, seed=11)
    threads = torch.get_num_threads()
    runs = []
    try:
        for count in (1, 2, 2):
            torch.set_num_threads(count)
            runs.append(_both(tp, lambda x, y, w: tp.convolve(x, y, w, centre, neighbour, n), [x, y, w])[1])
    finally:
        torch.set_num_threads(threads)
    (out1, grads1), (out2, grads2), (out3, grads3) = runs
    _close(out2, out1, "output, 2 threads")
    for name, a, b, c in zip("xyw", grads2, grads1, grads3):
        _close(a, b, f"d/d{name}, 2 threads")
        assert torch.equal(a, c), f"d/d{name} differs between two runs on 2 threads"


@pytest.mark.parametrize("arch", ["nequip", "allegro"])
def test_fused_contract_is_exportable(arch):
    """The operators' fake kernels let the contract module be traced with symbolic sizes and exported with dynamic
    atom and edge counts, as an AOTInductor deploy does (``mdpot.deploy.aoti.compile_program``); the exported
    program equals the reference on a structure of another size, with ghosts."""
    from torch.export import Dim, export
    from torch.fx.experimental import _config as fx_config
    from torch.fx.experimental.proxy_tensor import make_fx

    from mdpot.data import TypeMapper, atoms_to_graph
    from mdpot.deploy import eager_model
    from mdpot.deploy.aoti import _Program
    from mdpot.testing import alloy, assert_allclose, sample_structure, small_model

    reference = eager_model(small_model(arch, ELEMENTS, seed=2), "float64")
    fused = eager_model(small_model(arch, ELEMENTS, seed=2), "float64")
    set_kernels(fused.module, "fused", shared_radial=False)  # as a package deploy does
    g = atoms_to_graph(sample_structure(ELEMENTS, fused.r_max, seed=0), fused.r_max, TypeMapper(ELEMENTS))
    example = (g.pos, g.atom_type, g.edge_index, g.edge_shift, torch.empty((g.num_atoms - 1, 0), dtype=torch.float64))
    with fx_config.patch(use_duck_shape=False):
        graph = make_fx(_Program(fused.module).eval(), tracing_mode="symbolic", _allow_non_fake_inputs=True)(*example)
    op = "tp_scatter" if arch == "nequip" else "tp_gather"
    assert {f"mdpot.{op}.default", f"mdpot.{op}_backward.default"} <= {str(n.target) for n in graph.graph.nodes}
    exported = export(graph, example, strict=False, dynamic_shapes=(
        {0: Dim("N", min=1)}, {0: Dim("N", min=1)}, {1: Dim("E", min=0)}, {0: Dim("E", min=0)}, {0: Dim("L", min=0)}))
    other = atoms_to_graph(alloy(ELEMENTS, (3, 2, 2), a=3.0, seed=1), fused.r_max, TypeMapper(ELEMENTS))
    n_local = 2 * other.num_atoms // 3
    got = exported.module()(other.pos, other.atom_type, other.edge_index, other.edge_shift,
                            torch.empty((n_local, 0), dtype=torch.float64))
    want = reference.module(other.pos, other.atom_type, other.edge_index, other.edge_shift, n_local, True)
    for name, a, b in zip(("energy", "forces", "virial", "atom_virial"), got, want):
        assert_allclose(a.detach(), b.detach(), 1e-12, f"exported fused {arch} {name}")
