"""``pair_style mdpot max_edges auto`` (the default): edges per model call = a byte budget over the file's
``bytes_per_edge`` (measured at deploy), at least 1000: for a strictly local model on the CPU without ``max_memory``,
cache-sized calls of 32 MB; otherwise ``max_memory`` (default 2 GB); 400000 for a file without the key. The choice is
one log line and a field of the ``mdpot stats:`` line; chunks chosen this way give the unchunked numbers (float64).
The bad values are in test_errors.py."""
from __future__ import annotations

import math
import re

import torch

from lammps_helpers import ELEMENTS, assert_results_close, block, read_block
from mdpot.contract import ALL_KEYS, KERNELS_KEY
from mdpot.lammps.run import write_data
from mdpot.testing import alloy

STATS = re.compile(r"^mdpot stats: (.*)$", re.M)
MB = 1024.0 ** 2


def stats_of(output: str) -> list:
    return [dict(kv.split("=", 1) for kv in line.split()) for line in STATS.findall(output)]


def test_auto_max_edges(plugin, lammps, models, arch, tmp_path):
    from mdpot.deploy import load_model

    path = models["float64"]
    per_edge = load_model(path).metadata["bytes_per_edge"]
    extra = {k: "" for k in ALL_KEYS + (KERNELS_KEY,)}
    old = tmp_path / "old.pt"  # as deployed before the key existed (its kernels kept)
    module = torch.jit.load(str(path), _extra_files=extra)
    torch.jit.save(module, str(old), _extra_files={k: v for k, v in extra.items() if v})

    atoms = alloy(ELEMENTS, (3, 3, 3), a=3.0, seed=3)
    box = write_data(tmp_path / "a.data", atoms, ELEMENTS)
    small_mb = math.ceil(1200 * per_edge / MB * 1000) / 1000  # a budget of about 1200 edges, in thousandths of a MB
    cases = {"whole": (path, "mdpot max_edges 100000000"), "auto": (path, "mdpot"),
             "small": (path, f"mdpot max_memory {small_mb:g}MB"), "floor": (path, "mdpot max_memory 1MB"),
             "old": (old, "mdpot max_edges auto")}
    script = "".join(block(name, "a.data", box.boundary, f"pair_coeff * * {model} Cu Au", pair_style=style)
                     for name, (model, style) in cases.items())
    run = lammps(script, tmp_path)
    lines = re.findall(r"^mdpot: max_edges .*$", run.output, re.M)
    # Allegro (strictly local) on the CPU: cache-sized calls; NequIP runs message_passing exchange, whose chunks
    # would recompute each block: the memory budget
    cached = arch == "allegro"
    budget_mb = 32 if cached else 2048
    auto = max(1000, math.floor(budget_mb * MB / per_edge))
    raised = ", raised to the minimum 1000" if budget_mb * MB / per_edge < 1000 else ""
    small = math.floor(small_mb * MB / per_edge)
    # 1 MB holds fewer than 1000 edges unless the file needs little memory per edge (NequIP's shared radial table)
    floor = max(1000, math.floor(MB / per_edge))
    floor_raised = ", raised to the minimum 1000" if MB / per_edge < 1000 else ""
    assert lines == [
        "mdpot: max_edges 100000000 per model call (set by pair_style)",
        f"mdpot: max_edges {auto} per model call (auto: {'cache-sized calls on the CPU,' if cached else 'max_memory'} "
        f"{budget_mb} MB / {per_edge:.0f} bytes per edge measured at deploy{raised})",
        f"mdpot: max_edges {small} per model call (auto: max_memory {small_mb:g} MB / "
        f"{per_edge:.0f} bytes per edge measured at deploy)",
        f"mdpot: max_edges {floor} per model call (auto: max_memory 1 MB / {per_edge:.0f} bytes per edge measured at "
        f"deploy{floor_raised})",
        "mdpot: max_edges 400000 per model call (auto: the model file records no bytes_per_edge (deployed before "
        "mdpot measured it, or wrapped from another package), default)",
    ], run.output[-3000:]
    stats = dict(zip(cases, stats_of(run.output)))
    assert [int(s["max_edges"]) for s in stats.values()] == [100000000, auto, small, floor, 400000]
    assert float(stats["whole"]["model_calls_per_step"]) == 1
    if not cached:
        assert float(stats["auto"]["model_calls_per_step"]) == 1
    assert float(stats["small"]["model_calls_per_step"]) > 2  # several chunks (per block for NequIP)
    whole = read_block(tmp_path, "whole")
    for name in ("auto", "small", "floor", "old"):
        assert_results_close(read_block(tmp_path, name), whole, 1e-10, f"max_edges {name} vs one call")
