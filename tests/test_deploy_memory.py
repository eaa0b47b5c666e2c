"""The optional metadata key ``bytes_per_edge`` (docs/contract.md): measured by every deploy, read back by the
loader, refused when malformed, absent from older files without harm. LAMMPS's use of it (``max_edges auto``) is
tested in tests/lammps/test_max_edges.py."""
from __future__ import annotations

import pytest
import torch

from mdpot.deploy import load_model
from mdpot.deploy import metadata as md
from mdpot.deploy.compile import eager_model
from mdpot.deploy.memory import bytes_per_edge


def test_deploy_records_bytes_per_edge(deployed_torchscript, energy_model):
    """The deployed file carries the value (the fixture is the file loaded back), and measuring the file's module,
    freshly loaded, gives it again to 1 %. (A module that has already run with TorchScript's profiling executor on,
    as other tests run the fixture's, allocates differently even with it off: measured 20 % more for the NequIP.)"""
    meta = deployed_torchscript.metadata
    value = meta[md.BYTES_PER_EDGE]
    assert isinstance(value, float) and value > 0 and value == round(value)
    again = bytes_per_edge(load_model(deployed_torchscript.path).module, meta[md.ELEMENTS], meta[md.R_MAX])
    assert abs(again / value - 1) < 0.01, (again, value)


def test_bytes_per_edge_follows_the_dtype(energy_model):
    """Per-edge tensors dominate a call: float64 takes close to twice the bytes of float32 (int64 edge indices are
    the same in both)."""
    cfg = energy_model.config
    per_edge = {dtype: bytes_per_edge(torch.jit.script(eager_model(energy_model, dtype).module), cfg.elements, cfg.r_max)
                for dtype in ("float32", "float64")}
    assert 1.85 < per_edge["float64"] / per_edge["float32"] < 2.0, per_edge


def test_file_without_bytes_per_edge_loads(deployed_torchscript, tmp_path):
    """Files deployed before the key existed keep loading; the metadata then has no such key."""
    extra = {k: "" for k in md.ALL_KEYS + (md.KERNELS_KEY,)}
    module = torch.jit.load(str(deployed_torchscript.path), _extra_files=extra)
    torch.jit.save(module, str(tmp_path / "old.pt"), _extra_files={k: v for k, v in extra.items() if v})
    meta = load_model(tmp_path / "old.pt").metadata
    assert md.BYTES_PER_EDGE not in meta
    assert md.BYTES_PER_EDGE not in md.encode(meta)


def test_bad_bytes_per_edge_is_refused():
    from mdpot.testing import small_model

    meta = md.make_metadata(small_model("allegro", ("Cu",)), "float64")
    meta[md.WEIGHTS_SHA256] = "0" * 64
    for bad in ("0", "-5", "nan", "inf", "1e999", "lots", " 12"):
        raw = md.encode({**meta, md.BYTES_PER_EDGE: bad})
        with pytest.raises(ValueError) as info:
            md.decode(raw, "m.pt")
        assert str(info.value) == f"m.pt: metadata bytes_per_edge must be a positive float, got {bad!r}"
    assert md.decode(md.encode({**meta, md.BYTES_PER_EDGE: 5000.0}), "m.pt")[md.BYTES_PER_EDGE] == 5000.0
