"""mdpot.lammps.run with more MPI ranks than usable cores: MPICH's progress throttle is set, so that a rank waiting
for a message sleeps instead of polling on the core the rank it waits for needs; the caller's own setting wins."""

from __future__ import annotations

import pytest

from mdpot.lammps import run as R

VARIABLE = "MPIR_CVAR_CH4_PROGRESS_THROTTLE"
INPUT = f'variable t getenv {VARIABLE}\nprint "throttle=[${{t}}]"\n'


def throttle_seen(tmp_path, name, nprocs, **kwargs) -> str:
    """The variable as every rank of the LAMMPS run saw it (rank 0 prints)."""
    output = R.run_lammps(INPUT, tmp_path / name, nprocs=nprocs, timeout=120, **kwargs).output
    found = [line for line in output.splitlines() if line.startswith("throttle=[")]
    assert found, output[-2000:]
    return found[-1][len("throttle=["):-1]


def test_oversubscribed_runs_throttle_mpich(tmp_path, monkeypatch):
    monkeypatch.delenv(VARIABLE, raising=False)
    monkeypatch.setattr(R, "usable_cores", lambda: 1)
    assert R.OVERSUBSCRIBED_ENV[VARIABLE] == "1"
    assert throttle_seen(tmp_path, "over", 2) == "1"
    assert throttle_seen(tmp_path, "serial", 1) == ""
    assert throttle_seen(tmp_path, "asked", 2, env={VARIABLE: "0"}) == "0"
    monkeypatch.setenv(VARIABLE, "0")
    assert throttle_seen(tmp_path, "environment", 2) == "0"


def test_enough_cores_leaves_mpich_alone(tmp_path, monkeypatch):
    monkeypatch.delenv(VARIABLE, raising=False)
    monkeypatch.setattr(R, "usable_cores", lambda: 2)
    assert throttle_seen(tmp_path, "fits", 2) == ""


def test_usable_cores_follows_the_affinity_mask():
    import os

    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no sched_getaffinity on this platform")
    assert R.usable_cores() == len(os.sched_getaffinity(0)) >= 1


def test_oversubscribed_ranks_get_fine_timers(tmp_path, monkeypatch):
    """The ranks (and what they start) inherit a 1 ns timer slack; this process's own is restored."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("timer slack is Linux's")
    libc = ctypes.CDLL(None)
    before = libc.prctl(30, 0, 0, 0, 0)  # PR_GET_TIMERSLACK
    monkeypatch.setattr(R, "usable_cores", lambda: 1)
    script = "shell cat /proc/self/timerslack_ns\n"
    output = R.run_lammps(script, tmp_path / "over", nprocs=2, timeout=120).output
    assert str(R.OVERSUBSCRIBED_TIMER_SLACK_NS) in output.split(), output[-2000:]
    assert libc.prctl(30, 0, 0, 0, 0) == before
    monkeypatch.setattr(R, "usable_cores", lambda: 2)
    output = R.run_lammps(script, tmp_path / "fits", nprocs=2, timeout=120).output
    assert str(before) in output.split(), output[-2000:]


def test_more_torch_threads_than_cores_warn(tmp_path):
    """The pair style says so, once per node, when its ranks' torch threads outnumber the node's cores (they then
    wait on each other: docs/benchmarks/threads.md); one thread per rank is never warned about."""
    import os
    from pathlib import Path

    model = Path(__file__).resolve().parents[2] / "examples" / "models" / "allegro-cu-emt" / "model.pt"
    cores = os.cpu_count() or 1
    script = ("units metal\nlattice fcc 3.61\nregion box block 0 2 0 2 0 2\ncreate_box 1 box\ncreate_atoms 1 box\n"
              "mass 1 63.5\npair_style mdpot threads {threads}\npair_coeff * * " + str(model) + " Cu\nrun 0\n")
    warning = (f"WARNING: pair mdpot: 1 rank(s) on this node x {cores + 1} torch threads each exceed its {cores} "
               "cores, so the threads wait on each other; use 'threads auto' without OMP_NUM_THREADS, or fewer "
               "threads")
    output = R.run_lammps(script.format(threads=cores + 1), tmp_path / "many", nprocs=1, timeout=120).output
    assert warning in output, output[-2000:]
    output = R.run_lammps(script.format(threads=1), tmp_path / "one", nprocs=1, timeout=120).output
    assert "torch threads each exceed" not in output, output[-2000:]
