"""``pair_style mdpot ... message_passing exchange|ghosts`` (issue 11, docs/message_passing_exchange.md).

mdpot's own NequIP (2 and 3 blocks, float64 and float32) in LAMMPS on 1, 2 and 4 ranks: the exchange mode (ghost
cutoff r_max + skin, node features exchanged before every block) equals the ASE calculator and the ghost-shell
mode at row 15's tolerance: energy, per-atom energy, forces, global and per-atom virial. The systems: a skewed
cell smaller than 2·r_max (on 4 ranks its subdomains are thinner than r_max, so features cross several rank
boundaries and every ghost is an image), a general triclinic cell, a slab whose vacuum leaves ranks without
atoms under ``processors 1 1 4``, Cu under ``hybrid/overlay`` with Au as ``NULL``, and an uneven system under
``comm_style tiled`` with an ``rcb`` balance. A float32 model's exchange sends half the bytes of its float64
twin, rows of an odd number of float32 values included.
"""
from __future__ import annotations

import re
from typing import List, Tuple

import numpy as np
import pytest
import torch

from lammps_helpers import ELEMENTS, Reference, assert_results_close, atoms_from_frame, block, nlocal_stats, \
    read_block, tol
from mdpot.lammps.run import write_data
from mdpot.models import MessagePassingPotential
from mdpot.testing import alloy, slab

LAYOUTS = {1: None, 2: None, 4: "1 1 4"}
CASES = [(layers, "float64", n) for layers in (2, 3) for n in (1, 2, 4)] + \
        [(layers, "float32", n) for layers in (2, 3) for n in (1, 4)]
STATS = re.compile(r"^mdpot stats: (.*)$", re.M)


@pytest.fixture(scope="module")
def nequip_models(tmp_path_factory):
    """(layers, dtype) -> deployed small mdpot NequIP (with the mp_* methods)."""
    from mdpot.deploy import deploy_model
    from mdpot.testing import small_model

    folder = tmp_path_factory.mktemp("mp_models")
    out = {}
    for layers in (2, 3):
        model = small_model("nequip", ELEMENTS, seed=layers, num_layers=layers)
        for dtype in ("float64", "float32"):
            out[layers, dtype] = deploy_model(model, folder / f"nequip{layers}_{dtype}.pt", dtype=dtype).path
    return out


def systems(r_max):
    """name -> (atoms, general triclinic data file)."""
    return {
        "small": (alloy(ELEMENTS, (2, 2, 2), a=0.75 * r_max, skew=0.15, rattle=0.1, seed=2), False),
        "triclinic": (alloy(ELEMENTS, (2, 2, 2), a=0.8 * r_max, seed=3), True),
        "slab": (slab(ELEMENTS, (2, 2, 2), a=3.0, vacuum=12.0, seed=5), False),
    }


def stats_of(output: str):
    return [dict(item.split("=") for item in line.split()) for line in STATS.findall(output)]


@pytest.mark.parametrize("layers,dtype,nprocs", CASES)
def test_exchange_matches_ase_and_ghosts(plugin, nequip_models, lammps, tmp_path, layers, dtype, nprocs):
    from mdpot.deploy import load_model

    model = nequip_models[layers, dtype]
    r_max = load_model(model).r_max
    reference = Reference({dtype: model})
    cases = systems(r_max)
    script = []
    for name, (atoms, general) in cases.items():
        box = write_data(tmp_path / f"{name}.data", atoms, ELEMENTS, general_triclinic=general)
        for mode in ("exchange", "ghosts"):
            script.append(block(f"{name}_{mode}", f"{name}.data", box.boundary, f"pair_coeff * * {model} Cu Au",
                                pair_style=f"mdpot message_passing {mode}", processors=LAYOUTS[nprocs]))
    script.append(block("overlay", "small.data", "p p p", f"pair_coeff * * mdpot {model} Cu NULL\n"
                        "pair_coeff * * zero", pair_style="hybrid/overlay zero 3.0 mdpot",
                        processors=LAYOUTS[nprocs]))
    if dtype == "float32":  # the same weights in float64 on the same system and ranks: twice the bytes
        script.append(block("small_float64", "small.data", "p p p",
                            f"pair_coeff * * {nequip_models[layers, 'float64']} Cu Au",
                            pair_style="mdpot message_passing exchange", processors=LAYOUTS[nprocs]))
    run = lammps("".join(script), tmp_path, nprocs=nprocs)

    stats = stats_of(run.output)
    assert [s["mode"] for s in stats] == ["exchange", "ghosts"] * len(cases) + ["exchange"] * (
        2 if dtype == "float32" else 1)
    for s in stats[0:2 * len(cases):2]:
        assert float(s["ghost_edges"]) == 0 and (nprocs == 1 or float(s["comm_bytes_per_step"]) > 0)
    if dtype == "float32":  # float32 rows travel two values per double (the widths here are even)
        bytes32, bytes64 = float(stats[0]["comm_bytes_per_step"]), float(stats[-1]["comm_bytes_per_step"])
        assert bytes32 > 0 and 2 * bytes32 == bytes64, (bytes32, bytes64)
    if nprocs == 4:  # the slab leaves ranks without atoms
        assert min(st[2] for st in nlocal_stats(run.output)) == 0

    what = f"nequip {layers} blocks {dtype} np{nprocs}"
    for name in cases:
        got, ghosts = read_block(tmp_path, f"{name}_exchange"), read_block(tmp_path, f"{name}_ghosts")
        want = reference(atoms_from_frame(got["frame"], ELEMENTS), dtype)
        assert np.abs(want["forces"]).max() > 1e-2, f"{name}: forces vanish, the comparison would be vacuous"
        assert_results_close(got, want, tol("lammps", dtype), f"{what} {name}: exchange vs ASE")
        assert_results_close(got, ghosts, tol("lammps", dtype), f"{what} {name}: exchange vs ghosts")

    overlay = read_block(tmp_path, "overlay")
    cu = overlay["frame"]["type"] == 1
    part = reference(atoms_from_frame(overlay["frame"], ELEMENTS)[cu], dtype)
    want = {"energy": part["energy"], "virial": part["virial"]}
    for key in ("energies", "forces", "atom_virial"):
        want[key] = np.zeros_like(overlay[key])
        want[key][cu] = part[key]
    assert_results_close(overlay, want, tol("lammps", dtype), f"{what}: hybrid/overlay with NULL")


def test_exchange_chunks_and_errors(plugin, nequip_models, lammps, tmp_path):
    """max_edges splits every block into chunks of centres, same numbers; ``exchange`` on a file without the
    mp_* methods (Allegro here) is a one-line error naming the file."""
    model = nequip_models[3, "float64"]
    atoms = alloy(ELEMENTS, (2, 2, 2), a=2.6, seed=7)
    box = write_data(tmp_path / "a.data", atoms, ELEMENTS)
    script = block("whole", "a.data", box.boundary, f"pair_coeff * * {model} Cu Au",
                   pair_style="mdpot message_passing exchange")
    script += block("chunks", "a.data", box.boundary, f"pair_coeff * * {model} Cu Au",
                    pair_style="mdpot message_passing exchange max_edges 50")
    run = lammps(script, tmp_path, nprocs=2)
    stats = stats_of(run.output)
    assert float(stats[0]["model_calls_per_step"]) == 2  # one chunk per rank
    assert float(stats[1]["model_calls_per_step"]) > 4
    assert_results_close(read_block(tmp_path, "chunks"), read_block(tmp_path, "whole"), 1e-12, "max_edges 50")

    from mdpot.deploy import deploy_model
    from mdpot.testing import small_model

    allegro = deploy_model(small_model("allegro", ELEMENTS), tmp_path / "allegro_float64.pt").path
    bad = lammps(block("bad", "a.data", box.boundary, f"pair_coeff * * {allegro} Cu Au",
                       pair_style="mdpot message_passing exchange"), tmp_path, check=False)
    assert bad.returncode != 0
    assert re.search(r"message_passing exchange: model '.*allegro_float64\.pt' cannot be run block by block",
                     bad.output), bad.output[-2000:]


def test_exchange_comm_style_tiled(plugin, nequip_models, lammps, tmp_path):
    """``comm_style tiled`` with an ``rcb`` balance on a system dense on one side and sparse on the other (the
    subdomains are boxes of unequal sizes, not a grid; ghosts come through CommTiled's swaps): the exchange equals
    the ASE calculator at row 15's tolerance."""
    model = nequip_models[3, "float64"]
    atoms = alloy(ELEMENTS, (4, 3, 3), a=3.6, seed=11)
    frac_x = atoms.get_scaled_positions()[:, 0]
    keep = (frac_x < 0.5) | (np.arange(len(atoms)) % 4 == 0)  # a quarter of the atoms on the right half
    atoms = atoms[keep]
    box = write_data(tmp_path / "uneven.data", atoms, ELEMENTS)
    run = lammps(block("tiled", "uneven.data", box.boundary, f"pair_coeff * * {model} Cu Au",
                       pair_style="mdpot message_passing exchange", extra="comm_style tiled\nbalance 1.0 rcb"),
                 tmp_path, nprocs=4)
    per_rank = nlocal_stats(run.output)[-1]
    assert per_rank[1] - per_rank[2] <= 1, f"rcb left atoms per rank (ave, max, min) {per_rank}"
    (s,) = stats_of(run.output)
    assert s["mode"] == "exchange" and float(s["comm_bytes_per_step"]) > 0
    rss_max, rss_all = float(s["peak_rss_mb_max_rank"]), float(s["peak_rss_mb_all_ranks"])
    assert 50 < rss_max < rss_all <= 4 * (rss_max + 1), (rss_max, rss_all)  # torch in every rank; MB rounded

    got = read_block(tmp_path, "tiled")
    want = Reference({"float64": model})(atoms_from_frame(got["frame"], ELEMENTS), "float64")
    assert np.abs(want["forces"]).max() > 1e-2, "forces vanish, the comparison would be vacuous"
    assert_results_close(got, want, tol("lammps", "float64"), "comm_style tiled, balance rcb, 4 ranks")


def test_exchange_float32_odd_width(plugin, lammps, tmp_path):
    """A float32 row of an odd number of values ends in half a double (l_max 2, 3 channels: the last block's
    rows are 27 values, 14 doubles): the padding float never reaches the model."""
    from mdpot.deploy import deploy_model
    from mdpot.testing import small_model

    model = small_model("nequip", ELEMENTS, seed=3, num_layers=3, l_max=2, num_features=3)
    assert model.mp_feature_widths()[1:] == [54, 27]
    path = deploy_model(model, tmp_path / "odd_float32.pt", dtype="float32").path
    atoms = alloy(ELEMENTS, (3, 3, 3), a=3.4, seed=4)
    box = write_data(tmp_path / "a.data", atoms, ELEMENTS)
    run = lammps(block("odd", "a.data", box.boundary, f"pair_coeff * * {path} Cu Au",
                       pair_style="mdpot message_passing exchange"), tmp_path, nprocs=2)
    assert "up to 54 values per atom, float32 packed two per double: 27 doubles" in run.output
    got = read_block(tmp_path, "odd")
    want = Reference({"float32": path})(atoms_from_frame(got["frame"], ELEMENTS), "float32")
    assert np.abs(want["forces"]).max() > 1e-2, "forces vanish, the comparison would be vacuous"
    assert_results_close(got, want, tol("lammps", "float32"), "float32 rows of odd width, 2 ranks")


def test_geometry_once_equals_geometry_per_block(plugin, lammps, tmp_path):
    """A file with mp_geometry/mp_block_geometry (the engine computes the edges' geometry once per step) and the same
    weights without them (every block recomputes it, as files deployed before them do) give the same results in
    exchange mode on 2 ranks, float64; here with the reference kernels, whose geometry carries a per-edge radial
    basis that takes gradients (the fused files' path is the one every test above runs)."""
    from test_model_runner import without_methods

    from mdpot.contract import GEOMETRY_METHODS
    from mdpot.deploy import load_model
    from mdpot.testing import small_model

    model = small_model("nequip", ELEMENTS, seed=7, num_layers=3)
    files = {"once": without_methods(model, (), tmp_path / "once.pt"),
             "per_block": without_methods(model, GEOMETRY_METHODS, tmp_path / "per_block.pt")}
    assert hasattr(load_model(files["once"]).module, "mp_geometry")
    assert not hasattr(load_model(files["per_block"]).module, "mp_geometry")
    atoms, general = systems(load_model(files["once"]).r_max)["triclinic"]
    box = write_data(tmp_path / "t.data", atoms, ELEMENTS, general_triclinic=general)
    script = "".join(block(name, "t.data", box.boundary, f"pair_coeff * * {path} Cu Au",
                           pair_style="mdpot message_passing exchange") for name, path in files.items())
    run = lammps(script, tmp_path, nprocs=2)
    assert [s["mode"] for s in stats_of(run.output)] == ["exchange", "exchange"]
    assert "edge geometry once per step" in run.output  # logged for the first file (the mode's first use)
    once, per_block = read_block(tmp_path, "once"), read_block(tmp_path, "per_block")
    assert np.abs(once["forces"]).max() > 1e-2
    assert_results_close(once, per_block, tol("lammps", "float64"), "geometry once vs per block")
    want = Reference({"float64": files["once"]})(atoms_from_frame(once["frame"], ELEMENTS), "float64")
    assert_results_close(once, want, tol("lammps", "float64"), "geometry once vs ASE")


class RefusingBlocks(MessagePassingPotential):
    """A NequIP file whose block 0 raises when one of its centres has model type ``refused`` (an error on one
    rank only)."""

    def __init__(self, model, refused: int) -> None:
        super().__init__(model)
        self.refused = refused

    def _refuse(self, b: int, centre_type: torch.Tensor) -> None:
        if b == 0 and bool((centre_type == self.refused).any()):
            raise RuntimeError(f"block 0 refuses centres of type {self.refused}")

    @torch.jit.export
    def mp_block(self, b: int, state: torch.Tensor, x: torch.Tensor, edge_vec: torch.Tensor,
                 edge_index: torch.Tensor, centre_type: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        self._refuse(b, centre_type)
        dtype = self.model.energy_scale.dtype
        return self.model.mp_block(b, state, x, edge_vec.to(dtype), edge_index, centre_type)

    @torch.jit.export
    def mp_block_geometry(self, b: int, state: torch.Tensor, x: torch.Tensor, geometry: List[torch.Tensor],
                          edge_index: torch.Tensor, centre_type: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        self._refuse(b, centre_type)
        return self.model.mp_block_geometry(b, state, x, geometry, edge_index, centre_type)


@pytest.mark.parametrize("max_edges", ["", " max_edges 50"])
def test_exchange_model_error_stops_every_rank(plugin, lammps, tmp_path, max_edges):
    """A model call failing on rank 1 alone (block 0, before the first exchange) in ``message_passing exchange``:
    that rank still takes part in every exchange (zero rows), so every rank reaches the end of the step and rank 0
    reports rank 1's error (error->all) instead of rank 1 aborting the job; with the graph kept (one chunk) and in
    chunks of centres (``max_edges 50``, the recompute path)."""
    from mdpot.contract import ALL_KEYS, OPTIONAL_KEYS
    from mdpot.deploy import deploy_model, weights_digest
    from mdpot.testing import small_model

    model = small_model("nequip", ELEMENTS, seed=2, num_layers=2)
    good = deploy_model(model, tmp_path / "good.pt", kernels="reference").path
    extra = {k: "" for k in ALL_KEYS + OPTIONAL_KEYS + ("kernels",)}
    torch.jit.load(str(good), _extra_files=extra)
    meta = {k: v.decode() if isinstance(v, bytes) else v for k, v in extra.items() if v}
    module = torch.jit.script(RefusingBlocks(model.double().eval(), refused=1))
    meta["weights_sha256"] = weights_digest(module)
    torch.jit.save(module, str(tmp_path / "refusing.pt"), _extra_files=meta)

    atoms = alloy(("Cu",), (2, 2, 2), a=0.75 * 4.0, seed=4)
    upper = [k for k, s in enumerate(atoms.get_scaled_positions()) if 0.6 < s[0] < 0.9]
    atoms.symbols[upper] = "Au"    # rank 1's half under processors 2 1 1
    box = write_data(tmp_path / "a.data", atoms, ELEMENTS)
    run = lammps(block("bad", "a.data", box.boundary, f"pair_coeff * * {tmp_path / 'refusing.pt'} Cu Au",
                       pair_style="mdpot message_passing exchange" + max_edges, processors="2 1 1"), tmp_path,
                 nprocs=2, check=False)
    assert run.returncode != 0 and run.errors, run.output[-2000:]
    assert re.match(r"ERROR: pair mdpot: on step 0 \(rank 1\): message-passing block 0 failed \(\d+ atoms, \d+ edges\): "
                    r".*RuntimeError: block 0 refuses centres of type 1", run.errors[0]), run.errors
