"""The active-learning loop of issue 15 end to end, through the commands a user types (docs/active_learning.md, the
README's example): ``mdpot data`` → ``mdpot train --committee`` → the ``mdpot deploy`` command it prints → LAMMPS
running ``examples/in.committee_halt`` on 2 ranks, stopped by ``fix halt`` → ``mdpot select`` on its dump →
``mdpot label`` (EMT) appended to the training file → ``mdpot train --committee`` again on the grown data.

The Python commands run in-process through ``mdpot.cli.main``, LAMMPS as ``mpirun -np 2 lmp``. The halt threshold
comes from a first run of the same example that does not halt, so the test knows the step it must stop at."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms

from mdpot.cli import main
from mdpot.lammps.run import read_dump

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "in.committee_halt"
STEPS, EVERY, TOP = 30, 5, 2


def uncertainty(path: Path) -> np.ndarray:
    """``(step, max_devi_f)`` rows of an ``uncertainty_file``."""
    rows = [line.split() for line in path.read_text().splitlines() if not line.startswith("#")]
    return np.array([[float(r[0]), float(r[1])] for r in rows])


def halt_threshold(series: np.ndarray):
    """``(threshold, k)``: the run must stop at check ``k`` of ``series`` (the max force deviation at steps 0, EVERY,
    ..., STEPS): the last check before the final one, and after the first two, whose deviation exceeds every earlier
    one by 5 %; the threshold lies halfway between, so that reruns stop there whatever their last-digit noise."""
    for k in range(len(series) - 2, 1, -1):
        if series[k] > 1.05 * series[:k].max():
            return float(0.5 * (series[k] + series[:k].max())), k
    raise AssertionError(f"no check before the last rises 5 % above the earlier ones: {series}")


def test_active_learning_loop_with_lammps(plugin, lammps, tmp_path, monkeypatch, capsys):
    from ase.calculators.emt import EMT

    from mdpot.deploy import load_model
    from mdpot.testing.models import SMALL_OPTIONS

    monkeypatch.chdir(tmp_path)  # the commands' relative paths, as a user types them
    assert main(["data", "cu-emt", "-o", "data", "-n", "8", "--seed", "0", "--no-progress"]) == 0
    train_file = Path("data/cu-emt_train.xyz")
    n_train = len(ase.io.read(train_file, index=":"))
    options = {k: list(v) if isinstance(v, tuple) else v for k, v in SMALL_OPTIONS["allegro"].items()}
    options.update(elements=["Cu"], r_max=4.5)
    config = {"architecture": "allegro", "model": options,
              "data": {"train": str(train_file), "validation": "data/cu-emt_val.xyz"},
              "training": {"max_epochs": 2, "batch_size": 3, "early_stopping_patience": None}}
    Path("cu.yaml").write_text(json.dumps(config))  # JSON is YAML
    capsys.readouterr()

    # train --committee, then the deploy command it prints
    assert main(["train", "cu.yaml", "-o", "runs/cu", "--committee", "2", "--no-progress"]) == 0
    deploy = capsys.readouterr().out.splitlines()[-1].strip()
    assert deploy == "mdpot deploy runs/cu/member_0/best.ckpt runs/cu/member_1/best.ckpt -o runs/cu/committee.pt"
    assert main(shlex.split(deploy)[1:]) == 0
    committee = "runs/cu/committee.pt"
    assert load_model(committee).committee_size == 2

    # the trained committee tells structures far from its data (rattled by 0.3 Å) from training structures
    training = [Atoms(a.numbers, a.positions, cell=a.cell, pbc=True)
                for a in ase.io.read(train_file, index=":") if a.info["kind"] in ("rattled", "strained", "vacancy")][:2]
    far = [a.copy() for a in training]
    for seed, atoms in enumerate(far):
        atoms.rattle(0.3, seed=seed)
    ase.io.write("probe.extxyz", training + far, format="extxyz")
    assert main(["select", "probe.extxyz", "--model", committee, "--top", "4", "-o", "ranked.extxyz"]) == 0
    ranked = ase.io.read("ranked.extxyz", index=":")
    assert sorted(a.info["source_frame"] for a in ranked[:2]) == [2, 3]
    deviation = [a.info["committee_max_force_std"] for a in ranked]
    assert min(deviation[:2]) > 2 * max(deviation[2:]), deviation  # by a wide margin, not by chance

    # LAMMPS: the shipped example, first without a reachable threshold, then stopped by fix halt
    variables = {"model": tmp_path / committee, "size": 2, "steps": STEPS, "every": EVERY, "thermo": STEPS}
    free = lammps(EXAMPLE, tmp_path / "free", nprocs=2, variables=dict(variables, threshold="1e9"))
    assert f"ran all {STEPS} steps: no check found a max force deviation above 1e9 eV/Angstrom" in free.output
    series = uncertainty(tmp_path / "free" / "uncertainty.txt")
    assert list(series[:, 0]) == list(range(0, STEPS + 1, EVERY))
    threshold, k = halt_threshold(series[:, 1])
    step = k * EVERY
    run = lammps(EXAMPLE, tmp_path / "md", nprocs=2, variables=dict(variables, threshold=repr(threshold)))
    halted = re.search(rf"Fix halt condition for fix-id stop met on step {step} with value (\S+)", run.output)
    assert halted and float(halted.group(1)) > threshold, run.output[-2000:]
    stopped = re.search(r"stopped at step (\d+): max force deviation (\S+) eV/Angstrom \(threshold (\S+)\)",
                        run.output)
    assert stopped and int(stopped.group(1)) == step < STEPS, run.output[-2000:]
    assert float(stopped.group(2)) > float(stopped.group(3)) == pytest.approx(threshold, rel=1e-12)
    checked = uncertainty(tmp_path / "md" / "uncertainty.txt")  # the same run as the free one until it stopped
    np.testing.assert_allclose(checked, series[: k + 1], rtol=1e-6, atol=0)

    # select from the dump: the most uncertain frames, the one fix halt stopped on first
    dump = "md/frames.dump"
    frames = read_dump(tmp_path / dump)
    assert [f["step"] for f in frames] == list(range(0, step + 1, EVERY))
    lammps_max = np.array([max(f["f_sigma"]) for f in frames])
    ranking = sorted(range(len(frames)), key=lambda j: -lammps_max[j])
    assert main(["select", dump, "--elements", "Cu", "--model", committee, "--top", str(TOP), "--min-distance",
                 "0.01", "-o", "picked.extxyz"]) == 0
    picked = ase.io.read("picked.extxyz", index=":")
    assert [a.info["source_frame"] for a in picked] == ranking[:TOP]
    assert picked[0].info["source_frame"] == k  # the frame fix halt stopped on
    np.testing.assert_allclose([a.info["committee_max_force_std"] for a in picked], lammps_max[ranking[:TOP]],
                               rtol=1e-4)  # ASE at the dump's 6-digit positions vs LAMMPS

    # label with EMT and append to the training file
    assert main(["label", "picked.extxyz", "--reference", "cu-emt", "-o", str(train_file), "--append",
                 "--no-progress"]) == 0
    assert capsys.readouterr().out.endswith(f"appended them to {train_file}: {n_train + TOP} frames now\n")
    grown = ase.io.read(train_file, index=":")
    assert len(grown) == n_train + TOP
    for atoms, source in zip(grown[n_train:], picked):
        assert (atoms.info["kind"], atoms.info["system"]) == ("selected", "cu-emt")
        assert atoms.info["source_frame"] == source.info["source_frame"]
        source = source.copy()
        source.wrap()
        source.calc = EMT()
        assert atoms.get_potential_energy() == pytest.approx(source.get_potential_energy(), rel=1e-12)

    # retrain the committee on the grown data, the new frames weighted by their kind
    config["training"]["kind_weights"] = {"selected": 2.0}
    Path("cu2.yaml").write_text(json.dumps(config))
    assert main(["train", "cu2.yaml", "-o", "runs/cu2", "--committee", "2", "--no-progress"]) == 0
    assert f"loss weights by kind: selected 2 ({TOP} training structures)" in capsys.readouterr().out
    for member in range(2):
        payload = torch.load(tmp_path / "runs" / "cu2" / f"member_{member}" / "best.ckpt", weights_only=True)
        assert payload["extra"]["provenance"]["num_train"] == n_train + TOP
