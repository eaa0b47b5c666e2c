"""`mdpot train`: config validation, fitted statistics, determinism, exact resume, EMA, early stopping, outputs."""
import argparse
import csv
import math

import ase
import ase.io
import numpy as np
import pytest
import torch
import yaml
from ase.build import bulk
from ase.calculators.emt import EMT

from mdpot.models import ARCHITECTURES, load_checkpoint
from mdpot.testing import SMALL_OPTIONS
from mdpot.train import TrainConfig, Trainer, load_train_config, train
from mdpot.data import load_labelled
from mdpot.train.cli import add_parser as add_train_parser
from mdpot.validate.cli import add_parser as add_validate_parser

ARCHS = sorted(ARCHITECTURES)
ELEMENTS = ("Cu", "Au")


def make_structures(n, seed, elements=ELEMENTS, stress=True, repeat=(2, 1, 1)):
    """``n`` rattled, slightly strained 8-atom FCC cells with random ``elements``, labelled by ASE's EMT."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        atoms = bulk("Cu", "fcc", a=3.8 * (1 + 0.02 * rng.uniform(-1, 1)), cubic=True).repeat(repeat)
        atoms.set_chemical_symbols(rng.choice(elements, len(atoms)).tolist())
        atoms.positions += rng.normal(0.0, 0.08, atoms.positions.shape)
        atoms.calc = EMT()
        atoms.get_potential_energy()
        if stress:
            atoms.get_stress()
        else:
            atoms.calc.results.pop("stress", None)
        out.append(atoms)
    return out


def write_dataset(path, n, seed, **kw):
    ase.io.write(path, make_structures(n, seed, **kw), format="extxyz")
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("train_data")
    write_dataset(d / "train.xyz", 8, seed=1)
    write_dataset(d / "val.xyz", 3, seed=2)
    return d


def config_dict(data_dir, arch="allegro", **training):
    options = {k: list(v) if isinstance(v, tuple) else v for k, v in SMALL_OPTIONS[arch].items()}
    options.pop("avg_num_neighbors", None)  # "auto": fitted from the data
    options["elements"] = list(ELEMENTS)
    tr = dict(seed=0, max_epochs=3, batch_size=3, lr=0.01, lr_patience=0, ema_decay=0.9,
              loss_weights={"energy": 1.0, "forces": 10.0, "stress": 1.0})
    tr.update(training)
    return {"architecture": arch, "model": options,
            "data": {"train": str(data_dir / "train.xyz"), "validation": str(data_dir / "val.xyz")}, "training": tr}


def run(cfg, run_dir, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("log", lambda msg: None)
    return Trainer(TrainConfig.from_dict(cfg), run_dir, **kw).run()


def strip_time(history):
    return [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in history]


def same_history(a, b):
    a, b = strip_time(a), strip_time(b)
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for k in ra:
            assert ra[k] == rb[k] or (math.isnan(ra[k]) and math.isnan(rb[k])), (k, ra[k], rb[k])


def training_state(path):
    return torch.load(path, weights_only=True)["extra"]["training_state"]


def same_weights(path_a, path_b):
    sa, sb = training_state(path_a), training_state(path_b)
    for name in sa["model"]:
        assert torch.equal(sa["model"][name], sb["model"][name]), name
    for a, b in zip(sa["ema"]["shadow"], sb["ema"]["shadow"]):
        assert torch.equal(a, b)
    pa, _ = load_checkpoint(path_a)
    pb, _ = load_checkpoint(path_b)
    for (na, ta), (_, tb) in zip(pa.state_dict().items(), pb.state_dict().items()):
        assert torch.equal(ta, tb), na


@pytest.fixture(scope="module", params=ARCHS)
def trained(request, data_dir, tmp_path_factory):
    """A 3-epoch run of each architecture (EMA on, plateau scheduler, stress in the loss)."""
    cfg = config_dict(data_dir, request.param)
    run_dir = tmp_path_factory.mktemp(f"run_{request.param}")
    return cfg, run_dir, run(cfg, run_dir)


def test_run_reduces_loss_and_writes_outputs(trained):
    cfg, run_dir, result = trained
    for name in ("config.yaml", "metrics.csv", "learning_curve.png", "best.ckpt", "last.ckpt"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    hist = result.history
    assert [row["epoch"] for row in hist] == [1, 2, 3] and result.epochs == 3
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert min(row["val_loss"] for row in hist[1:]) < hist[0]["val_loss"]
    assert result.best_val_loss == min(row["val_loss"] for row in hist)
    with open(run_dir / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3
    assert {"epoch", "lr", "epoch_time_s", "train_loss", "val_loss", "train_forces_mae_meV_A", "val_energy_rmse_meV_atom",
            "val_stress_mae_GPa"} <= set(rows[0])
    assert float(rows[2]["val_forces_mae_meV_A"]) == hist[2]["val_forces_mae_meV_A"]
    # The resolved config trains the same model again: every "auto" value is filled in.
    resolved = load_train_config(run_dir / "config.yaml")
    model, payload = load_checkpoint(run_dir / "best.ckpt")
    assert resolved.model == model.config.to_dict()
    assert payload["extra"]["provenance"]["kind"] == "trained"
    assert payload["extra"]["provenance"]["epoch"] == result.best_epoch


def test_fitted_statistics(trained, data_dir):
    _, run_dir, _ = trained
    model, _ = load_checkpoint(run_dir / "best.ckpt")
    cfg = model.config
    items = load_labelled(data_dir / "train.xyz")
    counts = np.array([[np.sum(np.array(it.atoms.get_chemical_symbols()) == el) for el in ELEMENTS] for it in items])
    energies = np.array([it.atoms.get_potential_energy() for it in items])
    expected = np.linalg.lstsq(counts, energies, rcond=None)[0]
    np.testing.assert_allclose(cfg.per_element_energy_shift, expected, rtol=1e-12, atol=1e-12)
    rms = np.sqrt(np.mean(np.concatenate([it.atoms.get_forces().ravel() for it in items]) ** 2))
    np.testing.assert_allclose(cfg.per_element_energy_scale, [rms, rms], rtol=1e-12)
    from mdpot.data import TypeMapper, atoms_to_graph

    mapper = TypeMapper(ELEMENTS)
    graphs = [atoms_to_graph(it.atoms, cfg.r_max, mapper) for it in items]
    assert cfg.avg_num_neighbors == pytest.approx(sum(g.num_edges for g in graphs) / sum(g.num_atoms for g in graphs), rel=1e-12)


def test_deterministic_and_exact_resume(trained, data_dir, tmp_path):
    cfg, run_dir, result = trained
    again = run(cfg, tmp_path / "again")
    same_history(again.history, result.history)
    same_weights(tmp_path / "again" / "last.ckpt", run_dir / "last.ckpt")
    # Interrupted after one epoch, then resumed to the full length: bit-identical to the uninterrupted run.
    short = dict(cfg, training=dict(cfg["training"], max_epochs=1))
    run(short, tmp_path / "resumed")
    resumed = run(cfg, tmp_path / "resumed", resume=True)
    same_history(resumed.history, result.history)
    same_weights(tmp_path / "resumed" / "last.ckpt", run_dir / "last.ckpt")
    assert (tmp_path / "resumed" / "best.ckpt").read_bytes() != b""
    assert resumed.best_epoch == result.best_epoch


def test_ema_weights_are_evaluated(trained, data_dir, tmp_path):
    _, run_dir, _ = trained
    state = training_state(run_dir / "last.ckpt")
    evaluated, _ = load_checkpoint(run_dir / "last.ckpt")
    raw = state["model"]
    diffs = [float((evaluated.state_dict()[k] - raw[k].double()).abs().max()) for k in raw if raw[k].is_floating_point()]
    assert max(diffs) > 1e-6  # EMA weights, not the raw ones
    no_ema = run(config_dict(data_dir, max_epochs=1, ema_decay=None), tmp_path / "no_ema")
    state = training_state(tmp_path / "no_ema" / "last.ckpt")
    evaluated, _ = load_checkpoint(tmp_path / "no_ema" / "last.ckpt")
    for k, v in state["model"].items():
        assert torch.equal(evaluated.state_dict()[k], v.double()), k
    assert no_ema.history[0]["val_loss"] != training_state(run_dir / "last.ckpt")["history"][0]["val_loss"]


def test_early_stopping(data_dir, tmp_path):
    # A huge min_delta: only the first epoch counts as an improvement.
    result = run(config_dict(data_dir, max_epochs=10, early_stopping_patience=2, early_stopping_min_delta=1e9),
                 tmp_path / "es")
    assert result.epochs == 3 and "early stopping" in result.stop_reason
    assert result.best_epoch == 1


def test_round_trip_train_deploy_validate(trained, data_dir, tmp_path):
    from mdpot.deploy import deploy_model
    from mdpot.validate import validate

    _, run_dir, result = trained
    model, _ = load_checkpoint(run_dir / "best.ckpt")
    deployed = deploy_model(model, tmp_path / "model.pt", dtype="float32")
    report = validate(deployed, data_dir / "val.xyz")
    best = result.history[result.best_epoch - 1]
    assert report.forces.mae == pytest.approx(best["val_forces_mae_meV_A"], rel=1e-4)
    assert report.energy.mae == pytest.approx(best["val_energy_mae_meV_atom"], rel=1e-3, abs=1e-3)
    assert report.stress.mae == pytest.approx(best["val_stress_mae_GPa"], rel=1e-3)
    from_checkpoint = validate(run_dir / "best.ckpt", data_dir / "val.xyz")  # eager float64
    assert from_checkpoint.forces.mae == pytest.approx(report.forces.mae, rel=1e-3)


def test_example_config_parses():
    from pathlib import Path

    cfg = load_train_config(Path(__file__).parents[1] / "examples" / "train_minimal.yaml")
    assert cfg.architecture == "allegro" and cfg.training.max_epochs > 0
    assert "avg_num_neighbors" not in cfg.model  # fitted from the data


def parse(argv):
    parser = argparse.ArgumentParser(prog="mdpot")
    sub = parser.add_subparsers()
    add_train_parser(sub)
    add_validate_parser(sub)
    return parser.parse_args(argv)


def write_config(path, cfg):
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_cli_train_without_stress_labels(tmp_path, capsys):
    write_dataset(tmp_path / "nostress.xyz", 6, seed=3, stress=False)
    cfg = config_dict(tmp_path, max_epochs=1)
    cfg["data"] = {"train": "nostress.xyz", "val_fraction": 0.3}  # relative to the config file
    args = parse(["train", str(write_config(tmp_path / "c.yaml", cfg)), "-o", str(tmp_path / "run"), "--no-progress"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "stress loss off" in out
    assert f"mdpot deploy {tmp_path / 'run' / 'best.ckpt'} -o model.pt" in out
    with open(tmp_path / "run" / "metrics.csv") as fh:
        header = next(csv.reader(fh))
    assert not any("stress" in c for c in header)
    # The folder now holds a run: refused without --resume/--force, accepted with --force.
    with pytest.raises(FileExistsError, match="already holds a run"):
        args.func(args)
    args = parse(["train", str(tmp_path / "c.yaml"), "-o", str(tmp_path / "run"), "--no-progress", "--force"])
    assert args.func(args) == 0


@pytest.mark.parametrize("mutate, error, match", [
    (lambda c: c.update(optimiser="adam"), ValueError, r"unknown top-level key\(s\) \['optimiser'\]"),
    (lambda c: c["training"].update(optimizer="sgdx"), ValueError, r"training.optimizer must be one of .*'sgdx'"),
    (lambda c: c["training"].update(epochs=3), ValueError, r"unknown key\(s\) \['epochs'\] in the 'training' section"),
    (lambda c: c["training"].update(lr=-1), ValueError, r"training.lr must be .* got -1"),
    (lambda c: c["training"].update(batch_size="4"), TypeError, r"training.batch_size must be an integer, got '4'"),
    (lambda c: c["training"].update(scheduler="step"), ValueError, r"scheduler must be one of .*'step'"),
    (lambda c: c["training"].update(loss_weights={"force": 1.0}), ValueError, r"unknown loss term\(s\) \['force'\]"),
    (lambda c: c["data"].update(shuffle=True), ValueError, r"unknown key\(s\) \['shuffle'\] in the 'data' section"),
    (lambda c: c["data"].update(val_fraction=0.2), ValueError, r"either data.validation or data.val_fraction"),
    (lambda c: c["model"].update(l_maxx=2), ValueError, r"model: unknown allegro option\(s\) \['l_maxx'\]"),
    (lambda c: c.update(architecture="mace"), ValueError, r"unknown architecture 'mace'"),
    (lambda c: c["data"].update(train="missing.xyz"), FileNotFoundError, r"data file not found: missing.xyz"),
    (lambda c: c["data"].update(energy_key="REF_energy"), ValueError, r"train.xyz: structure 0: no energy label 'REF_energy'"),
    (lambda c: c["model"].update(elements=["Cu"]), ValueError, r"train.xyz: structure 0: element\(s\) \['Au'\] not in the model"),
])
def test_bad_config_errors(data_dir, tmp_path, mutate, error, match):
    cfg = config_dict(data_dir, max_epochs=1)
    mutate(cfg)
    args = parse(["train", str(write_config(tmp_path / "bad.yaml", cfg)), "-o", str(tmp_path / "run"), "--no-progress"])
    with pytest.raises(error, match=match) as exc:
        args.func(args)
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "run").exists()  # the lock made the folder and took it away again


def test_resume_refuses_a_changed_config(trained, tmp_path):
    cfg, _, _ = trained
    short = dict(cfg, training=dict(cfg["training"], max_epochs=1))
    run(short, tmp_path / "r")
    changed = dict(cfg, training=dict(cfg["training"], lr=0.02))
    with pytest.raises(ValueError, match=r"training.lr \(0.01 -> 0.02\)"):
        run(changed, tmp_path / "r", resume=True)
    with pytest.raises(FileNotFoundError, match="cannot resume: no last.ckpt"):
        run(cfg, tmp_path / "empty", resume=True)
    # The run's own config.yaml (every 'auto' value filled in) resumes it; a filled-in value changed is refused.
    import yaml

    recorded = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert recorded["model"]["avg_num_neighbors"] is not None and cfg["model"].get("avg_num_neighbors") is None
    recorded["training"]["max_epochs"] = 2
    (tmp_path / "r" / "longer.yaml").write_text(yaml.safe_dump(recorded))
    quiet = dict(progress=False, log=lambda msg: None)
    assert Trainer(load_train_config(tmp_path / "r" / "longer.yaml"), tmp_path / "r", resume=True, **quiet).run().epochs == 2
    recorded["model"]["avg_num_neighbors"] *= 1.5
    (tmp_path / "r" / "changed.yaml").write_text(yaml.safe_dump(recorded))
    with pytest.raises(ValueError, match=r"model.avg_num_neighbors \("):
        Trainer(load_train_config(tmp_path / "r" / "changed.yaml"), tmp_path / "r", resume=True, **quiet).run()


def test_train_accepts_a_yaml_path(data_dir, tmp_path):
    cfg = config_dict(data_dir, max_epochs=5, optimizer="adamw", scheduler="cosine", dtype="float64", weight_decay=1e-4,
                      max_time=1e-6, num_threads=1)
    result = train(write_config(tmp_path / "c.yaml", cfg), tmp_path / "run", progress=True, log=lambda m: None)
    assert result.epochs == 1 and result.best_checkpoint.is_file()
    assert result.stop_reason.startswith("max_time")


def _wait_for(predicate, proc, log, timeout=180.0):
    import time

    t0 = time.monotonic()
    while not predicate():
        assert proc.poll() is None, f"the first training exited ({proc.returncode}):\n{log.read_text()}"
        assert time.monotonic() - t0 < timeout, f"timed out:\n{log.read_text()}"
        time.sleep(0.05)


def test_concurrent_runs_lock_the_folder_and_a_killed_run_is_taken_over(data_dir, tmp_path):
    """Two real `mdpot train` processes into one folder: the second fails at once naming the first; the first,
    killed with SIGKILL, leaves a stale lock that the next run takes over aloud. The first run's output went to
    a file: plain lines, no progress-bar carriage returns."""
    import json
    import os
    import signal
    import subprocess
    import sys

    from mdpot._files import LOCK_NAME, hostname

    run_dir, log = tmp_path / "run", tmp_path / "train.log"
    first = write_config(tmp_path / "c0.yaml", config_dict(data_dir, max_epochs=500, seed=0))
    second = write_config(tmp_path / "c1.yaml", config_dict(data_dir, max_epochs=2, seed=1))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mdpot.cli", "train", str(first), "-o", str(run_dir)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_for(lambda: (run_dir / LOCK_NAME).is_file() and (run_dir / LOCK_NAME).read_text().endswith("\n"),
                  proc, log)
        holder = json.loads((run_dir / LOCK_NAME).read_text())
        assert holder["pid"] == proc.pid and holder["host"] == hostname()
        other = subprocess.run([sys.executable, "-m", "mdpot.cli", "train", str(second), "-o", str(run_dir)],
                               capture_output=True, text=True, env=env, timeout=300)
        _wait_for(lambda: (run_dir / "metrics.csv").is_file(), proc, log)  # alive all along; one epoch logged
        assert other.returncode == 1 and other.stdout == ""
        assert other.stderr == (f"mdpot: error: {run_dir} is in use by another training (pid {proc.pid} on host "
                                f"{hostname()}, started {holder['started']}); wait for it to finish or use another "
                                "folder\n")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    text = log.read_bytes().decode()  # not read_text(): universal newlines would turn "\r" into "\n"
    assert "epoch    1/500" in text and "\r" not in text
    assert (run_dir / LOCK_NAME).is_file()  # a dead holder's record stays behind
    lines = []
    result = run(config_dict(data_dir, max_epochs=1, seed=1), run_dir, force=True, log=lines.append)
    assert result.epochs == 1
    assert lines[0] == (f"taking over the lock on {run_dir}: the training that held it (pid {proc.pid} on host "
                        f"{hostname()}, started {holder['started']}) is no longer running")
    assert not (run_dir / LOCK_NAME).exists()  # released, and the file removed


def test_leftovers_removed_paths_recorded_portably_and_resume_checks_data(data_dir, tmp_path, monkeypatch):
    import hashlib
    import os
    import shutil
    import subprocess
    import sys

    from mdpot._files import hostname

    data = tmp_path / "data"
    data.mkdir()
    for name in ("train.xyz", "val.xyz"):
        shutil.copy(data_dir / name, data / name)
    cfg = config_dict(data, max_epochs=1)
    work = tmp_path / "work"
    (work / "runs" / "cu").mkdir(parents=True)
    monkeypatch.chdir(work)
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    leftovers = ["last.ckpt.tmp", f".best.ckpt.{dead.pid}@{hostname()}.tmp"]  # mdpot 0.1's name; a killed writer's
    for name in leftovers:
        (work / "runs" / "cu" / name).write_bytes(b"partial")
    lines = []
    run(cfg, "runs/cu", log=lines.append)
    assert f"removed 2 temporary file(s) left by an interrupted run: {', '.join(sorted(leftovers))}" in lines
    assert sorted(p.name for p in (work / "runs" / "cu").iterdir()) == sorted(
        ["config.yaml", "metrics.csv", "learning_curve.png", "best.ckpt", "last.ckpt"])
    prov = load_checkpoint(work / "runs" / "cu" / "best.ckpt")[1]["extra"]["provenance"]
    sha = {name: hashlib.sha256((data / name).read_bytes()).hexdigest() for name in ("train.xyz", "val.xyz")}
    assert (prov["run_dir"], prov["train_data"], prov["validation_data"]) == ("runs/cu", "train.xyz", "val.xyz")
    assert (prov["train_data_sha256"], prov["validation_data_sha256"]) == (sha["train.xyz"], sha["val.xyz"])
    # config.yaml names the data relative to itself: it trains again from any working directory
    recorded = load_train_config(work / "runs" / "cu" / "config.yaml")
    assert recorded.data.train == os.path.relpath(data / "train.xyz", work / "runs" / "cu")
    # resumed from elsewhere: the same data by content; a changed validation file is refused
    monkeypatch.chdir(tmp_path)
    longer = dict(cfg, training=dict(cfg["training"], max_epochs=2))
    assert run(longer, work / "runs" / "cu", resume=True).epochs == 2
    with open(data / "val.xyz", "a") as fh:
        fh.write("\n")
    new = hashlib.sha256((data / "val.xyz").read_bytes()).hexdigest()
    with pytest.raises(ValueError, match=rf"data.validation \(content changed: sha256 {sha['val.xyz'][:12]}… -> "
                                         rf"{new[:12]}…\)"):
        run(dict(cfg, training=dict(cfg["training"], max_epochs=3)), work / "runs" / "cu", resume=True)


def isolated_atom(element):
    """One atom in a non-periodic 20 Å box labelled by EMT: energy, zero forces, no stress (as `mdpot data`)."""
    atoms = ase.Atoms(element, positions=[[10.0, 10.0, 10.0]], cell=[20.0] * 3, pbc=False)
    atoms.calc = EMT()
    atoms.get_potential_energy()
    return atoms


EMT_ISOLATED = {el: float(isolated_atom(el).get_potential_energy()) for el in ELEMENTS}


@pytest.fixture(scope="module")
def isolated_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("isolated_data")
    frames = make_structures(6, seed=5) + [isolated_atom(el) for el in ELEMENTS]
    ase.io.write(d / "train.xyz", frames, format="extxyz")
    write_dataset(d / "val.xyz", 2, seed=6)
    return d


@pytest.mark.parametrize("arch", ARCHS)
def test_isolated_atom_frames_set_the_energy_references(isolated_data, tmp_path, arch):
    from mdpot import MDPotCalculator
    from mdpot.deploy import deploy_model

    messages = []
    cfg = config_dict(isolated_data, arch, max_epochs=1, batch_size=4)  # the one-atom, zero-edge frames share a batch
    result = run(cfg, tmp_path / "run", log=messages.append)
    assert any(f"per-element energy shift (isolated-atom frames) Cu {EMT_ISOLATED['Cu']:.6g} eV, "
               f"Au {EMT_ISOLATED['Au']:.6g} eV" in m for m in messages)
    model, _ = load_checkpoint(result.best_checkpoint)
    assert list(model.config.per_element_energy_shift) == [EMT_ISOLATED[el] for el in ELEMENTS]
    assert math.isfinite(result.history[0]["train_loss"])
    calc = MDPotCalculator(deploy_model(model, tmp_path / "model.pt", dtype="float64"))
    for el in ELEMENTS:
        atoms = isolated_atom(el)
        atoms.calc = calc
        assert atoms.get_potential_energy() == EMT_ISOLATED[el]
        assert not atoms.get_forces().any()


def test_energy_shift_options(isolated_data, data_dir, tmp_path):
    def shift(cfg):
        messages = []
        result = run(cfg, tmp_path / f"run{len(list(tmp_path.iterdir()))}", log=messages.append)
        return list(load_checkpoint(result.best_checkpoint)[0].config.per_element_energy_shift), messages

    refs = {"Cu": -0.123, "Au": 0.25}
    got, messages = shift(config_dict(isolated_data, max_epochs=1, energy_references=refs))
    assert got == [-0.123, 0.25]
    assert any("per-element energy shift (training.energy_references)" in m for m in messages)
    # The Cu atom (structure 6) falls into the validation hold-out of seed 0: it is found there.
    held_out = config_dict(isolated_data, max_epochs=1)
    held_out["data"] = {"train": held_out["data"]["train"], "val_fraction": 0.5}
    got, messages = shift(held_out)
    assert got == [EMT_ISOLATED[el] for el in ELEMENTS]
    got, messages = shift(config_dict(isolated_data, max_epochs=1, energy_shift="least_squares"))
    assert got != [EMT_ISOLATED[el] for el in ELEMENTS]
    assert any("per-element energy shift (least squares)" in m for m in messages)
    with pytest.raises(ValueError, match=r"^training.energy_shift is 'isolated' but the training data has no "
                                         r"isolated-atom frame \(one atom, no neighbour within r_max\) of Cu Au; "):
        shift(config_dict(data_dir, max_epochs=1, energy_shift="isolated"))
    with pytest.raises(ValueError, match=r"^training.energy_references has no energy for Au \(the model's elements "
                                         r"are Cu Au\)$"):
        shift(config_dict(data_dir, max_epochs=1, energy_references={"Cu": 1.0}))


@pytest.mark.parametrize("training, model, error, match", [
    ({"energy_shift": "explicit"}, {}, ValueError, r"energy_shift is 'explicit' but no training.energy_references"),
    ({"energy_shift": "least_squares", "energy_references": {"Cu": 0.0, "Au": 0.0}}, {}, ValueError,
     r"energy_references is given but training.energy_shift is 'least_squares'"),
    ({"energy_references": {"Cu": 0.0, "Xx": 0.0}}, {}, ValueError, r"energy_references: unknown element 'Xx'"),
    ({"energy_references": {"Cu": "0.1"}}, {}, TypeError, r"energy_references.Cu must be a number, got '0.1'"),
    ({"energy_references": [0.1, 0.2]}, {}, TypeError, r"energy_references must be a mapping of element"),
    ({"energy_shift": "mean"}, {}, ValueError, r"energy_shift must be one of \['auto', 'isolated', 'explicit', "
                                               r"'least_squares'\], got 'mean'"),
    ({"energy_shift": "isolated"}, {"per_element_energy_shift": [0.0, 0.0]}, ValueError,
     r"either model.per_element_energy_shift or training.energy_shift / training.energy_references"),
])
def test_energy_shift_config_errors(data_dir, training, model, error, match):
    cfg = config_dict(data_dir, max_epochs=1, **training)
    cfg["model"].update(model)
    with pytest.raises(error, match=match) as exc:
        TrainConfig.from_dict(cfg)
    assert "\n" not in str(exc.value)


def test_weighted_loss_by_hand():
    """Per-structure weights multiply every squared error of a structure (its energy, its atoms' force components,
    its stress components) before the mean, without renormalising per batch; the accumulated epoch loss is the
    same number; weight 1 is the plain mean."""
    from mdpot.train.loss import Errors, MetricAccumulator, loss_from_errors

    rng = np.random.default_rng(3)
    e, f, s = (torch.tensor(rng.normal(size=shape)) for shape in ((3,), (7, 3), (2, 6)))
    w = torch.tensor([0.5, 2.0, 0.0])
    atom_of = torch.tensor([0, 0, 1, 1, 1, 2, 2])
    stress_of = torch.tensor([0, 2])  # structure 1 has no stress label
    weights = {"energy": 1.5, "forces": 10.0, "stress": 3.0}
    err = Errors(e, f, s, (w, w[atom_of], w[stress_of]))
    expected = (1.5 * float((w * e ** 2).sum() / 3)
                + 10.0 * float((w[atom_of][:, None] * f ** 2).sum() / 21)
                + 3.0 * float((w[stress_of][:, None] * s ** 2).sum() / 12))
    assert float(loss_from_errors(err, weights)) == pytest.approx(expected, rel=1e-12)
    acc = MetricAccumulator()
    acc.update(Errors(e[:2], f[:5], s[:1], (w[:2], w[atom_of][:5], w[stress_of][:1])))
    acc.update(Errors(e[2:], f[5:], s[1:], (w[2:], w[atom_of][5:], w[stress_of][1:])))
    metrics = acc.compute(weights)
    assert metrics["loss"] == pytest.approx(expected, rel=1e-12)
    assert metrics["forces_mae_meV_A"] == pytest.approx(1e3 * float(f.abs().mean()), rel=1e-12)  # unweighted
    # a batch of low-weight structures alone adds little: no renormalisation within the batch
    small = torch.full((3,), 0.01, dtype=torch.float64)
    assert float(loss_from_errors(Errors(e, f, s, (small, small[atom_of], small[stress_of])), weights)) == \
        pytest.approx(0.01 * float(loss_from_errors(Errors(e, f, s), weights)), rel=1e-12)
    ones = torch.ones(3)
    assert float(loss_from_errors(Errors(e, f, s, (ones, ones[atom_of], ones[stress_of])), weights)) == \
        pytest.approx(float(loss_from_errors(Errors(e, f, s), weights)), rel=1e-14)


def test_kind_weights(tmp_path):
    """training.kind_weights weighs structures by their `kind` (as `mdpot data` writes it): structures of a
    weight-0 kind, here with absurd labels, change nothing (the run trains the same model as one without them), the
    run logs the table, and a kind the data lacks is refused."""
    frames = make_structures(6, seed=11)
    for k, atoms in enumerate(frames):
        atoms.info["kind"] = "far" if k >= 4 else "near"
    for atoms in frames[4:]:
        atoms.calc.results["energy"] += 1e3
        atoms.calc.results["forces"] = atoms.calc.results["forces"] + 50.0
    ase.io.write(tmp_path / "train.xyz", frames, format="extxyz")
    ase.io.write(tmp_path / "only_near.xyz", frames[:4], format="extxyz")
    write_dataset(tmp_path / "val.xyz", 2, seed=12)

    def cfg(train, **training):
        c = config_dict(tmp_path, max_epochs=2, batch_size=6, ema_decay=None, **training)  # one batch per epoch
        c["data"]["train"] = str(tmp_path / train)
        # nothing fitted from the training set, so both runs build the same model
        c["model"].update(per_element_energy_shift=[0.0, 0.0], per_element_energy_scale=[1.0, 1.0],
                          avg_num_neighbors=20.0)
        return c

    messages = []
    weighted = run(cfg("train.xyz", kind_weights={"far": 0.0}), tmp_path / "weighted", log=messages.append)
    assert "loss weights by kind: far 0 (2 training structures)" in messages
    near = run(cfg("only_near.xyz"), tmp_path / "near")
    for a, b in zip(weighted.history, near.history):
        # the weight-0 structures count as zeros in the mean (4 of 6 structures' rows carry the loss), and Adam's
        # steps do not depend on the gradient's scale: the same model comes out
        assert a["train_loss"] == pytest.approx(b["train_loss"] * 4 / 6, rel=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
    assert weighted.history[-1]["train_forces_mae_meV_A"] > 1e4  # metrics are unweighted: the absurd labels show
    with pytest.raises(ValueError, match=r"^training.kind_weights names kind\(s\) \['dimers'\] that no training or "
                                         r"validation structure has \(kinds in the data: \['far', 'near'\]\)$"):
        run(cfg("train.xyz", kind_weights={"dimers": 0.1}), tmp_path / "bad")
    with pytest.raises(TypeError, match=r"training.kind_weights must be a mapping of structure kind to loss weight"):
        TrainConfig.from_dict(cfg("train.xyz", kind_weights=[0.1]))
    with pytest.raises(ValueError, match=r"kind_weights.far must be"):
        TrainConfig.from_dict(cfg("train.xyz", kind_weights={"far": -1.0}))
