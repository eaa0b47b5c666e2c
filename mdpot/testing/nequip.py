"""Small models of the nequip package (fresh weights, or trained for a few steps with nequip-train), exported by
nequip's own code: the sources of the nequip interoperability tests.

``build_nequip_file(path, architecture, dtype)`` runs in a subprocess (``python -m
mdpot.testing.nequip OUT ARCH DTYPE``) because nequip's global state (default dtype float64, seeds,
JIT and e3nn flags) is process-wide. Needs ``nequip`` (and ``nequip-allegro`` for Allegro) importable.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ELEMENTS = ("Cu", "Au")
R_MAX = 4.0


#: Widths of the test models ("tiny") and of the benchmark models ("benchmark": the sizes of mdpot's benchmark
#: Allegro and NequIP in the README: l_max 1, 2 layers, 32 scalar / 16 tensor features or 32 features).
SIZES = {
    "tiny": {"nequip": dict(num_features=4, radial_mlp_width=8),
             "allegro": dict(num_scalar_features=8, num_tensor_features=2, scalar_embed_mlp_hidden_layers_width=8,
                             allegro_mlp_hidden_layers_width=8, readout_mlp_hidden_layers_width=8, num_bessels=4)},
    "benchmark": {"nequip": dict(num_features=32, radial_mlp_width=64),
                  "allegro": dict(num_scalar_features=32, num_tensor_features=16, scalar_embed_mlp_hidden_layers_width=32,
                                  allegro_mlp_hidden_layers_width=32, readout_mlp_hidden_layers_width=32,
                                  num_bessels=8)},
}


def _build(out: str, architecture: str, dtype: str, r_max: float = R_MAX, num_layers: int = 2, seed: int = 1,
           size: str = "tiny") -> dict:
    import torch
    from nequip.model.inference_models.torchscript import save_torchscript_model
    from nequip.scripts._workflow_utils import set_workflow_state
    from nequip.utils.global_state import get_latest_global_state, set_global_state

    set_workflow_state("compile")
    set_global_state(allow_tf32=False)
    common = dict(seed=seed, model_dtype=dtype, type_names=list(ELEMENTS), r_max=r_max, avg_num_neighbors=12.0,
                  per_type_energy_scales={"Cu": 1.3, "Au": 0.7}, per_type_energy_shifts={"Cu": -3.5, "Au": -2.25})
    if architecture == "nequip":
        from nequip.model import NequIPGNNModel

        model = NequIPGNNModel(num_layers=num_layers, l_max=1, **SIZES[size]["nequip"], **common)
    elif architecture == "allegro":
        from allegro.model import AllegroModel

        widths = dict(SIZES[size]["allegro"])
        embed = {"_target_": "allegro.nn.TwoBodyBesselScalarEmbed", "num_bessels": widths.pop("num_bessels")}
        model = AllegroModel(l_max=1, num_layers=num_layers, radial_chemical_embed=embed, **widths, **common)
    else:
        raise ValueError(f"architecture must be nequip or allegro, got {architecture!r}")
    # Give the untrained weights some size so forces are not tiny (nequip initialises some layers to zero).
    with torch.no_grad():
        gen = torch.Generator().manual_seed(seed)
        for p in model.parameters():
            if p.is_floating_point() and p.numel() > 1:
                p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype))
    metadata = dict(model.metadata)
    for key, value in get_latest_global_state(only_metadata_related=True).items():
        metadata[key] = ("1" if value else "0") if isinstance(value, bool) else value
    save_torchscript_model(model, metadata, out, torch.device("cpu"))
    return {k: str(v) for k, v in metadata.items()}


def build_nequip_file(path, architecture: str, dtype: str, num_layers: int = 2, seed: int = 1, size: str = "tiny",
                      r_max: float = R_MAX) -> Path:
    """Write a small fresh-weight nequip model (Cu, Au; r_max 4 Å) as ``path`` (must end in ``.nequip.pth``)."""
    path = Path(path)
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, "-m", "mdpot.testing.nequip", str(path), architecture, dtype,
                           str(num_layers), str(seed), size, str(r_max)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"building the nequip test model failed: {proc.stderr.strip()[-2000:]}")
    return path


_MODEL_YAML = {
    "allegro": """    _target_: allegro.model.AllegroModel
    l_max: 1
    num_layers: 1
    num_scalar_features: 8
    num_tensor_features: 2
    radial_chemical_embed:
      _target_: allegro.nn.TwoBodyBesselScalarEmbed
      num_bessels: 4
    scalar_embed_mlp_hidden_layers_width: 8
    allegro_mlp_hidden_layers_width: 8
    readout_mlp_hidden_layers_width: 8
""",
    "nequip": """    _target_: nequip.model.NequIPGNNModel
    num_layers: 2
    l_max: 1
    num_features: 4
    radial_mlp_width: 8
""",
}

_CONFIG = """# Tiny nequip-train config written by mdpot's interop tests: {arch}, {symbols}, {dtype}, two epochs.
run: [train]
cutoff_radius: {r_max}
chemical_symbols: [{symbols}]
model_type_names: ${{chemical_symbols}}
global_options:
  allow_tf32: false
data:
  _target_: nequip.data.datamodule.ASEDataModule
  seed: 3
  split_dataset:
    file_path: {data}
    train: {n_train}
    val: {n_val}
  transforms:
    - _target_: nequip.data.transforms.ChemicalSpeciesToAtomTypeMapper
      model_type_names: ${{model_type_names}}
    - _target_: nequip.data.transforms.NeighborListTransform
      r_max: ${{cutoff_radius}}
  train_dataloader:
    _target_: torch.utils.data.DataLoader
    batch_size: 5
  val_dataloader:
    _target_: torch.utils.data.DataLoader
    batch_size: 2
  stats_manager:
    _target_: nequip.data.CommonDataStatisticsManager
    type_names: ${{model_type_names}}
trainer:
  _target_: lightning.Trainer
  accelerator: cpu
  max_epochs: 2
  logger: false
  enable_progress_bar: false
  enable_model_summary: false
  callbacks:
    - _target_: lightning.pytorch.callbacks.ModelCheckpoint
      dirpath: ${{hydra:runtime.output_dir}}
      filename: best
      monitor: val0_epoch/weighted_sum
      mode: min
      save_last: true
training_module:
  _target_: nequip.train.EMALightningModule
  ema_decay: 0.9
  loss:
    _target_: nequip.train.EnergyForceLoss
    per_atom_energy: true
  val_metrics:
    _target_: nequip.train.EnergyForceMetrics
  optimizer:
    _target_: torch.optim.Adam
    lr: 0.01
  model:
    seed: 1
    model_dtype: {dtype}
    type_names: ${{model_type_names}}
    r_max: ${{cutoff_radius}}
    avg_num_neighbors: ${{training_data_stats:num_neighbors_mean}}
    per_type_energy_shifts: ${{training_data_stats:per_atom_energy_mean}}
    per_type_energy_scales: ${{training_data_stats:forces_rms}}
{model}"""


def emt_data(path, n_frames: int = 12) -> Path:
    """Rattled, strained Cu/Au cells labelled with ASE's EMT (energy, forces, stress) as extxyz."""
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    from ..testing.structures import alloy

    frames = []
    for seed in range(n_frames):
        atoms = alloy(ELEMENTS, (2, 2, 2), a=3.8, skew=0.05, strain=0.02, rattle=0.08, seed=seed)
        atoms.calc = EMT()
        e, f, s = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f, stress=s)
        frames.append(atoms)
    write(str(path), frames, format="extxyz")
    return Path(path)


def train_checkpoint(workdir, architecture: str, dtype: str = "float64", data=None, elements=ELEMENTS,
                     n_train: int = 10, n_val: int = 2, timeout: float = 900.0) -> Path:
    """``nequip-train`` a tiny model for two epochs; returns ``best.ckpt`` (about 20 s).

    ``data`` is an extxyz file with energy, forces and stress of at least ``n_train + n_val`` structures of
    ``elements`` (default: 12 EMT Cu/Au cells written into ``workdir``)."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    data = emt_data(workdir / "data.xyz") if data is None else Path(data).resolve()
    (workdir / "config.yaml").write_text(_CONFIG.format(
        arch=architecture, dtype=dtype, r_max=R_MAX, data=data, model=_MODEL_YAML[architecture],
        symbols=", ".join(elements), n_train=n_train, n_val=n_val))
    exe = Path(sys.executable).parent / "nequip-train"
    proc = subprocess.run([str(exe), "-cp", str(workdir), "-cn", "config.yaml", f"hydra.run.dir={workdir / 'run'}"],
                          capture_output=True, text=True, timeout=timeout, cwd=workdir)
    ckpt = workdir / "run" / "best.ckpt"
    if proc.returncode != 0 or not ckpt.is_file():
        raise RuntimeError(f"nequip-train failed: {proc.stderr.strip()[-2000:]}")
    return ckpt


def package_checkpoint(ckpt, out, timeout: float = 600.0) -> Path:
    """``nequip-package build CKPT OUT.nequip.zip``."""
    exe = Path(sys.executable).parent / "nequip-package"
    proc = subprocess.run([str(exe), "build", str(ckpt), str(out)], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not Path(out).is_file():
        raise RuntimeError(f"nequip-package failed: {proc.stderr.strip()[-2000:]}")
    return Path(out)


def export_torchscript(source, out) -> Path:
    """nequip's own TorchScript export of a checkpoint or package (``mdpot.interop._nequip_export``)."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, "-m", "mdpot.interop._nequip_export", str(source), str(out)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip()[-2000:])
    return Path(out)


if __name__ == "__main__":
    out, arch, dt, layers, seed, size, r_max = sys.argv[1:8]
    print(json.dumps(_build(out, arch, dt, r_max=float(r_max), num_layers=int(layers), seed=int(seed), size=size)))
