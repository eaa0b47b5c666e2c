"""The training loop: data once into graphs, weighted MSE through the model contract, EMA, schedulers,
early stopping, checkpoints that resume bit-for-bit, metrics and a learning curve.

Determinism: the weights are drawn from ``training.seed``, the validation split from a generator seeded
with it and the batch order of epoch ``k`` from a generator seeded with ``(seed, k)``; torch's global
generator is seeded too (inside ``fork_rng``, so the caller's is untouched) and saved in ``last.ckpt``.
``last.ckpt`` holds the raw weights, optimiser, scheduler and EMA state, counters and the metrics history, so a
run resumed from it continues exactly as if it had never stopped.

Safety: a run holds an exclusive lock on its folder (:class:`mdpot._files.FolderLock`), so a second run into the
same folder fails at once naming the first; every file is written through a temporary file and renamed
(:func:`mdpot._files.atomic_write`), and the temporary files of an interrupted run are removed by the next run
into the folder. Nothing a run writes holds an absolute path: data files are recorded relative to the run
folder (``config.yaml``, the training state) or to the working directory with their SHA-256 (provenance).
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .._files import FolderLock, atomic_write, atomic_write_text, portable_path, remove_stale_temps, sha256_file
from ..data import (Batch, Labelled, Prediction, Sample, collate, element_counts, evaluate, infer_elements, load_labelled,
                    to_samples)
from ..models import Potential, build_model, load_checkpoint, make_config, save_checkpoint
from ..models.config import ModelConfig
from .config import RESUMABLE_CHANGES, TrainConfig, TrainingConfig
from .fitting import fit_energy_shift, force_rms, isolated_atom_energies, mean_neighbors, split_indices
from .loss import METRICS, MetricAccumulator, errors, loss_from_errors

PathLike = Union[str, os.PathLike]

BEST, LAST, CONFIG, METRICS_CSV, CURVE = "best.ckpt", "last.ckpt", "config.yaml", "metrics.csv", "learning_curve.png"
#: Files a run writes; a folder holding any of them is "a run" and is not overwritten without --force.
RUN_FILES = (CONFIG, METRICS_CSV, CURVE, BEST, LAST)
#: The keys of the data files in the ``data`` section of a config.
DATA_FILES = ("train", "validation")


@dataclass
class TrainResult:
    """What a finished (or stopped) run left behind."""

    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    best_epoch: int
    best_val_loss: float
    epochs: int
    stop_reason: str
    history: List[Dict[str, float]] = field(default_factory=list)


class EMA:
    """Exponential moving average of parameters, ``shadow <- d * shadow + (1 - d) * param`` after every
    optimiser step, with ``d = min(decay, (1 + t) / (10 + t))`` at update ``t`` so that the first updates
    do not keep the random initial weights."""

    def __init__(self, params: Sequence[torch.Tensor], decay: float) -> None:
        self.decay = decay
        self.shadow = [p.detach().clone() for p in params]
        self.num_updates = 0

    @torch.no_grad()
    def update(self, params: Sequence[torch.Tensor]) -> None:
        self.num_updates += 1
        d = min(self.decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))
        for s, p in zip(self.shadow, params):
            s.lerp_(p.detach(), 1.0 - d)

    def state_dict(self) -> Dict[str, Any]:
        return {"shadow": [s.clone() for s in self.shadow], "num_updates": self.num_updates, "decay": self.decay}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if len(state["shadow"]) != len(self.shadow):
            raise ValueError("EMA state does not match the model's parameters")
        with torch.no_grad():
            for s, t in zip(self.shadow, state["shadow"]):
                s.copy_(t)
        self.num_updates = int(state["num_updates"])


def _normalised(config: TrainConfig, train_path: Path, val_path: Optional[Path], run_dir: Path) -> Dict[str, Any]:
    """The config as a run records it: data paths relative to the run folder (so ``run_dir/config.yaml`` finds
    them from any working directory, and no absolute path is written)."""
    d = config.to_dict()
    d["data"]["train"] = _relative_to(train_path, run_dir)
    d["data"]["validation"] = None if val_path is None else _relative_to(val_path, run_dir)
    return d


def _relative_to(path: Path, folder: Path) -> str:
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(folder))).as_posix()


def _data_differences(old: Dict[str, Any], new: Dict[str, Any], old_sha: Optional[Dict[str, Optional[str]]],
                      new_sha: Dict[str, Optional[str]], run_dir: Path) -> List[str]:
    """Data files that are not the ones the run was trained on: by content (SHA-256) when the run recorded it,
    else by path (runs of mdpot 0.1 recorded absolute paths)."""
    diffs = []
    for key in DATA_FILES:
        a, b = old["data"].get(key), new["data"].get(key)
        if (a is None) != (b is None):
            diffs.append(f"data.{key} ({a!r} -> {b!r})")
        elif a is not None and old_sha is not None:
            if old_sha.get(key) != new_sha.get(key):
                diffs.append(f"data.{key} (content changed: sha256 {str(old_sha.get(key))[:12]}… -> "
                             f"{str(new_sha.get(key))[:12]}…)")
        elif a is not None and os.path.abspath(run_dir / a) != os.path.abspath(run_dir / b):
            diffs.append(f"data.{key} ({a!r} -> {b!r})")
    return diffs


_TRAINING_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainingConfig)
                      if f.default is not dataclasses.MISSING}


def _plain(value: Any) -> Any:
    """Tuples as lists, as a YAML round trip returns them."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _config_differences(old: Dict[str, Any], new: Dict[str, Any],
                        resolved_model: Optional[Dict[str, Any]] = None) -> List[str]:
    """Differences outside the data files' paths (see :func:`_data_differences`). ``resolved_model``: the run's
    model with every value it filled in (its ``config.yaml``); a model option the run left to be filled in may
    be given as the value the run chose, so the run's own ``config.yaml`` resumes it."""
    diffs = []
    for section in sorted(set(old) | set(new)):
        a, b = old.get(section), new.get(section)
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                if (section == "training" and key in RESUMABLE_CHANGES) or (section == "data" and key in DATA_FILES):
                    continue
                if section == "training" and key not in a and key in _TRAINING_DEFAULTS and \
                        b.get(key) == _TRAINING_DEFAULTS[key]:
                    continue  # an option newer than the run, at its default
                if section == "model" and a.get(key) is None and resolved_model is not None and \
                        key in resolved_model and _plain(b.get(key)) == _plain(resolved_model[key]):
                    continue  # the value the run filled in
                if a.get(key) != b.get(key):
                    diffs.append(f"{section}.{key} ({a.get(key)!r} -> {b.get(key)!r})")
        elif a != b:
            diffs.append(f"{section} ({a!r} -> {b!r})")
    return diffs


def _fmt(value: float, digits: int = 4) -> str:
    return "nan" if not math.isfinite(value) else f"{value:.{digits}g}"


#: Second seed word of the bootstrap resample's generator (``training.bootstrap``).
BOOTSTRAP_STREAM = 0x626F6F74


class Trainer:
    """Train a model from a :class:`TrainConfig` into ``run_dir``.

    Parameters
    ----------
    config : TrainConfig
    run_dir : path
        Output folder (``config.yaml``, ``metrics.csv``, ``learning_curve.png``, ``best.ckpt``, ``last.ckpt``).
    resume : bool
        Continue from ``run_dir/last.ckpt`` (the config must match the run's, except ``max_epochs``,
        ``max_time`` and ``early_stopping_patience``).
    force : bool
        Start afresh in a folder that already holds a run (its run files are deleted).
    progress : bool
        tqdm bars over epochs and batches when stderr is a terminal (never in a redirected log, which gets
        plain lines only: the one-line epoch summaries are printed either way).
    log : callable
        Receives every message line (default: ``tqdm.write`` to stdout).

    Example
    -------
    >>> result = Trainer(load_train_config("train.yaml"), "runs/cu").run()
    >>> result.best_checkpoint
    PosixPath('runs/cu/best.ckpt')
    """

    def __init__(self, config: TrainConfig, run_dir: PathLike, resume: bool = False, force: bool = False,
                 progress: bool = True, log: Optional[Callable[[str], None]] = None) -> None:
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        if resume and force:
            raise ValueError("--resume and --force exclude each other")
        self.config = config
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.force = force
        self.progress = progress
        if log is None:
            from tqdm import tqdm

            log = tqdm.write
        self.log = log

    # ----------------------------------------------------------------------------------------- set-up
    def _remove_leftovers(self) -> None:
        """Temporary files of an interrupted run into this folder (the lock is held: no live run writes here)."""
        removed = remove_stale_temps(self.run_dir, RUN_FILES)
        for name in RUN_FILES:  # mdpot 0.1 named them NAME.tmp, without the writer
            legacy = self.run_dir / f"{name}.tmp"
            if legacy.is_file():
                legacy.unlink()
                removed.append(legacy)
        if removed:
            self.log(f"removed {len(removed)} temporary file(s) left by an interrupted run: "
                     f"{', '.join(sorted(p.name for p in removed))}")

    def _check_run_dir(self) -> None:
        existing = [f for f in RUN_FILES if (self.run_dir / f).exists()]
        if self.resume:
            if not (self.run_dir / LAST).is_file():
                raise FileNotFoundError(f"cannot resume: no {LAST} in {self.run_dir.resolve()}")
            return
        if existing and not self.force:
            raise FileExistsError(f"{self.run_dir} already holds a run ({', '.join(existing)}); "
                                  "pass --resume to continue it or --force to start afresh")

    def _clear_run_dir(self) -> None:
        """Delete a previous run's files (--force) only once the new run has its data and model."""
        if not self.resume:
            for f in RUN_FILES:
                (self.run_dir / f).unlink(missing_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)

    def _load_data(self) -> Tuple[List[Labelled], List[Labelled]]:
        data = self.config.data
        self.train_path = self.config.resolve_path(data.train)
        self.val_path = None if data.validation is None else self.config.resolve_path(data.validation)
        keys = dict(energy_key=data.energy_key, forces_key=data.forces_key, stress_key=data.stress_key)
        train = load_labelled(self.train_path, **keys)
        if self.val_path is None:
            tr, va = split_indices(len(train), data.effective_val_fraction, self.config.training.seed)
            train, val = [train[k] for k in tr], [train[k] for k in va]
            val_src = f"{100 * data.effective_val_fraction:g} % of {self.train_path.name} (seed {self.config.training.seed})"
        else:
            val = load_labelled(self.val_path, **keys)
            val_src = str(self.val_path)
        if self.config.training.bootstrap:
            # its own stream of the seed: the split and the batch orders keep theirs
            picks = np.random.default_rng([self.config.training.seed, BOOTSTRAP_STREAM]).integers(0, len(train), len(train))
            train = [train[k] for k in picks]
            self.log(f"bootstrap: {len(train)} training structures drawn with replacement "
                     f"({len(set(picks.tolist()))} distinct)")
        n_tr, n_va = sum(len(x.atoms) for x in train), sum(len(x.atoms) for x in val)
        self.log(f"data: {len(train)} training structures ({n_tr} atoms) from {self.train_path}; "
                 f"{len(val)} validation structures ({n_va} atoms) from {val_src}")
        return train, val

    def _resolve_model(self, train: List[Labelled], val: List[Labelled]) -> ModelConfig:
        """The model config with every "auto" option derived from the training data; also builds the graphs."""
        options = {k: v for k, v in self.config.model.items() if v != "auto"}
        if "elements" not in options:
            options["elements"] = list(infer_elements(train))
            self.log(f"elements (from the training data): {' '.join(options['elements'])}")
        probe = make_config(self.config.architecture,
                            {k: v for k, v in options.items() if k not in ("per_element_energy_shift", "per_element_energy_scale")})
        self._build_samples(train, val, probe)
        absent = [el for el, n in zip(probe.elements, element_counts(train, probe.elements).sum(axis=0)) if n == 0]
        if absent:
            self.log(f"note: element(s) {absent} do not occur in the training data; the model learns nothing about them")
        fitted = []
        if "per_element_energy_shift" not in options:
            shift, how = self._energy_shift(train, val, probe.elements)
            options["per_element_energy_shift"] = [float(x) for x in shift]
            fitted.append(f"per-element energy shift ({how}) "
                          + ", ".join(f"{el} {x:.6g} eV" for el, x in zip(probe.elements, shift)))
        if "per_element_energy_scale" not in options:
            rms = force_rms(train, self.train_weights)
            if not rms > 0:
                rms = 1.0
                self.log("note: all training forces are zero; per-element energy scale set to 1")
            options["per_element_energy_scale"] = [rms] * len(probe.elements)
            fitted.append(f"per-element energy scale = force RMS {rms:.6g} eV/Å"
                          + (" (loss-weighted)" if self.train_weights is not None else ""))
        if "avg_num_neighbors" not in options:
            options["avg_num_neighbors"] = mean_neighbors(self.train_samples)
            fitted.append(f"avg_num_neighbors {options['avg_num_neighbors']:.6g}")
        if fitted:
            self.log("fitted on the training set: " + "; ".join(fitted))
        self.fitted_summary = fitted
        return make_config(self.config.architecture, options)

    def _energy_shift(self, train: List[Labelled], val: List[Labelled],
                      elements: Sequence[str]) -> Tuple[List[float], str]:
        """The per-element shift (eV) as ``training.energy_shift`` says, and how it was found. Isolated-atom
        frames are looked for in the validation structures too (a ``val_fraction`` hold-out may take one)."""
        tc = self.config.training
        mode = tc.energy_shift
        if mode == "auto":
            mode = "explicit" if tc.energy_references is not None else None
        if mode == "explicit":
            missing = [el for el in elements if el not in tc.energy_references]
            if missing:
                raise ValueError(f"training.energy_references has no energy for {' '.join(missing)} (the model's "
                                 f"elements are {' '.join(elements)})")
            return [tc.energy_references[el] for el in elements], "training.energy_references"
        isolated = isolated_atom_energies(train + val, self.train_samples + self.val_samples)
        missing = [el for el in elements if el not in isolated]
        if mode == "isolated" and missing:
            raise ValueError(f"training.energy_shift is 'isolated' but the training data has no isolated-atom frame "
                             f"(one atom, no neighbour within r_max) of {' '.join(missing)}; `mdpot data` writes them")
        if mode == "isolated" or (mode is None and not missing):
            return [isolated[el] for el in elements], "isolated-atom frames"
        if missing and isolated:
            self.log(f"note: no isolated-atom frame of {' '.join(missing)}; the energy shift is a least-squares fit")
        return [float(x) for x in fit_energy_shift(train, elements)], "least squares"

    def _kind_weights(self, train: List[Labelled], val: List[Labelled]) -> None:
        """Per-structure loss weights from ``training.kind_weights`` (``None`` when all are 1)."""
        table = self.config.training.kind_weights
        self.train_weights = self.val_weights = None
        if table is None:
            return
        def kind(item: Labelled) -> Optional[str]:
            return str(item.atoms.info["kind"]) if "kind" in item.atoms.info else None

        train_kinds, val_kinds = [kind(it) for it in train], [kind(it) for it in val]
        kinds = {k for k in train_kinds + val_kinds if k is not None}
        unknown = sorted(set(table) - kinds)
        if unknown:
            raise ValueError(f"training.kind_weights names kind(s) {unknown} that no training or validation "
                             f"structure has (kinds in the data: {sorted(kinds) or 'none'})")
        self.train_weights, self.val_weights = ([float(table.get(k, 1.0)) for k in ks]
                                                for ks in (train_kinds, val_kinds))
        if not any(w > 0 for w in self.train_weights):
            raise ValueError(f"training.kind_weights {table} gives every training structure weight 0")
        self.log("loss weights by kind: " + ", ".join(f"{k} {table[k]:g} ({train_kinds.count(k)} training structures)"
                                                       for k in table))

    def _build_samples(self, train: List[Labelled], val: List[Labelled], config: ModelConfig) -> None:
        self._kind_weights(train, val)
        self.train_samples: List[Sample] = to_samples(train, config.r_max, config.elements, self.train_weights)
        self.val_samples: List[Sample] = to_samples(val, config.r_max, config.elements, self.val_weights)

    def _setup_stress(self) -> None:
        n_tr = sum(s.stress is not None for s in self.train_samples)
        n_va = sum(s.stress is not None for s in self.val_samples)
        self.use_stress = n_tr + n_va > 0
        w = dict(self.config.training.loss_weights)
        key = self.config.data.stress_key
        if w["stress"] > 0 and n_tr == 0:
            self.log(f"note: no stress labels '{key}' in the training data (or no 3-D periodic cells): stress loss off")
            w["stress"] = 0.0
        elif self.use_stress:
            self.log(f"stress labels in {n_tr} of {len(self.train_samples)} training and {n_va} of "
                     f"{len(self.val_samples)} validation structures (loss weight {w['stress']:g})")
        self.weights = w

    def _build(self, model_config: ModelConfig) -> None:
        tc = self.config.training
        self.dtype = getattr(torch, tc.dtype)
        self.model = build_model(model_config, seed=tc.seed, dtype=self.dtype).train()
        self.potential = Potential(self.model)
        self.potential.create_graph = True
        self.eval_model = copy.deepcopy(self.model).eval()
        for p in self.eval_model.parameters():
            p.requires_grad_(False)
        self.eval_potential = Potential(self.eval_model).eval()
        names = [n for n, p in self.model.named_parameters() if p.requires_grad]
        self.params = [p for n, p in self.model.named_parameters() if p.requires_grad]
        eval_params = dict(self.eval_model.named_parameters())
        self.eval_params = [eval_params[n] for n in names]
        opt_cls = torch.optim.AdamW if tc.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = opt_cls(self.params, lr=tc.lr, weight_decay=tc.weight_decay)
        if tc.scheduler == "plateau":
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, mode="min", factor=tc.lr_factor, patience=tc.lr_patience, min_lr=tc.min_lr)
        elif tc.scheduler == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=tc.max_epochs, eta_min=tc.min_lr)
        else:
            self.scheduler = None
        self.ema = EMA(self.params, tc.ema_decay) if tc.ema_decay is not None else None
        self.epoch = 0
        self.best_val_loss = math.inf
        self.best_epoch = 0
        self.epochs_since_best = 0
        self.history: List[Dict[str, float]] = []
        self.val_batches = [collate(self.val_samples[k:k + tc.eval_batch_size])
                            for k in range(0, len(self.val_samples), tc.eval_batch_size)]

    def _training_state(self) -> Dict[str, Any]:
        return {
            "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "epoch": self.epoch,
            "best_val_loss": self.best_val_loss,
            "best_epoch": self.best_epoch,
            "epochs_since_best": self.epochs_since_best,
            "history": [dict(row) for row in self.history],
            "config": self.normalised_config,
            "data_sha256": dict(self.data_sha256),
            "weights": dict(self.weights),
            "torch_rng_state": torch.get_rng_state(),
        }

    def _restore(self, state: Dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.epoch = int(state["epoch"])
        self.best_val_loss = float(state["best_val_loss"])
        self.best_epoch = int(state["best_epoch"])
        self.epochs_since_best = int(state["epochs_since_best"])
        self.history = [dict(row) for row in state["history"]]
        self.weights = dict(state["weights"])
        torch.set_rng_state(state["torch_rng_state"])
        self._sync_eval_model()

    # ------------------------------------------------------------------------------------ the loop
    def _sync_eval_model(self) -> None:
        """Copy the weights validation and checkpoints use (EMA if enabled, else the raw ones)."""
        source = self.ema.shadow if self.ema is not None else [p.detach() for p in self.params]
        with torch.no_grad():
            for dst, src in zip(self.eval_params, source):
                dst.copy_(src)

    def _predict(self, potential: Potential, batch: Batch) -> Prediction:
        # The per-atom virial costs a scatter: only batches with a stress label pay for it.
        return evaluate(potential, batch, stress=self.use_stress and bool(batch.stress_mask.any()))

    def _train_epoch(self, bar_factory) -> Dict[str, float]:
        tc = self.config.training
        order = np.random.default_rng([tc.seed, self.epoch]).permutation(len(self.train_samples))
        starts = range(0, len(order), tc.batch_size)
        acc = MetricAccumulator()
        bar = bar_factory(total=len(starts), desc=f"epoch {self.epoch + 1}", leave=False, unit="batch")
        running = None
        try:
            for b, start in enumerate(starts):
                batch = collate([self.train_samples[k] for k in order[start:start + tc.batch_size]])
                pred = self._predict(self.potential, batch)
                err = errors(pred, batch)
                loss = loss_from_errors(err, self.weights)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"training diverged: loss is {float(loss)} at epoch {self.epoch + 1}, "
                                             f"batch {b + 1}; lower training.lr or set training.grad_clip")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if tc.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(self.params, tc.grad_clip)
                self.optimizer.step()
                if self.ema is not None:
                    self.ema.update(self.params)
                acc.update(err)
                value = float(loss.detach())
                running = value if running is None else 0.9 * running + 0.1 * value
                bar.set_postfix(loss=f"{running:.4g}", refresh=False)
                bar.update(1)
        finally:
            bar.close()
        return acc.compute(self.weights)

    def metrics(self, batches: Sequence[Batch]) -> Dict[str, float]:
        """Metrics of the evaluation weights (EMA if enabled) on precollated ``batches``."""
        acc = MetricAccumulator()
        for batch in batches:
            pred = self._predict(self.eval_potential, batch)
            acc.update(errors(pred, batch))
        return acc.compute(self.weights)

    def _stop_reason(self, epoch_times: List[float], t_start: float) -> Optional[str]:
        tc = self.config.training
        if self.epoch >= tc.max_epochs:
            return f"reached max_epochs ({tc.max_epochs})"
        if tc.early_stopping_patience is not None and self.epochs_since_best >= tc.early_stopping_patience:
            return (f"early stopping: no validation improvement for {self.epochs_since_best} epochs "
                    f"(patience {tc.early_stopping_patience})")
        if tc.max_time is not None and epoch_times:
            elapsed = time.perf_counter() - t_start
            if elapsed + epoch_times[-1] > 60.0 * tc.max_time:
                return f"max_time: another epoch would exceed {tc.max_time:g} min (resume with --resume)"
        return None

    def _provenance(self) -> Dict[str, Any]:
        return {
            "kind": "trained",
            "run_dir": portable_path(self.run_dir),
            "epoch": self.best_epoch,
            "val_loss": self.best_val_loss,
            "train_data": portable_path(self.train_path),
            "train_data_sha256": self.data_sha256["train"],
            "validation_data": portable_path(self.val_path) if self.val_path is not None else "split",
            "validation_data_sha256": self.data_sha256["validation"],
            "num_train": len(self.train_samples),
            "num_validation": len(self.val_samples),
            "seed": self.config.training.seed,
            "bootstrap": self.config.training.bootstrap,
            "training_dtype": self.config.training.dtype,
            "ema": self.ema is not None,
        }

    def _summary(self, row: Dict[str, float], improved: bool) -> str:
        parts = [f"epoch {int(row['epoch']):>4d}/{self.config.training.max_epochs}", f"lr {row['lr']:.2e}"]
        for split in ("train", "val"):
            s = (f"{split} loss {_fmt(row[f'{split}_loss'])} E {_fmt(row[f'{split}_energy_mae_meV_atom'], 3)} meV/atom "
                 f"F {_fmt(row[f'{split}_forces_mae_meV_A'], 3)} meV/Å")
            if self.use_stress:
                s += f" S {_fmt(row[f'{split}_stress_mae_GPa'], 3)} GPa"
            parts.append(s)
        return "  ".join(parts) + f"  ({row['epoch_time_s']:.1f} s){'  *best' if improved else ''}"

    def _columns(self) -> List[str]:
        metrics = [m for m in METRICS if self.use_stress or not m.startswith("stress")]
        return ["epoch", "lr", "epoch_time_s"] + [f"{s}_{m}" for s in ("train", "val") for m in metrics]

    def _write_metrics(self) -> None:
        cols = self._columns()
        with atomic_write(self.run_dir / METRICS_CSV) as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(cols)
            for row in self.history:
                writer.writerow([int(row[c]) if c == "epoch" else repr(float(row[c])) for c in cols])

    def _write_config(self, model_config: ModelConfig) -> None:
        import yaml

        d = copy.deepcopy(self.normalised_config)
        d["model"] = model_config.to_dict()
        header = ["# mdpot training run: the resolved configuration (every 'auto' value filled in)."]
        header += [f"# fitted on the training set: {line}" for line in getattr(self, "fitted_summary", [])]
        text = "\n".join(header) + "\n" + yaml.safe_dump(d, sort_keys=False, allow_unicode=True)
        atomic_write_text(self.run_dir / CONFIG, text)

    def run(self) -> TrainResult:
        """Train until ``max_epochs``, early stopping or ``max_time``; returns where everything went."""
        threads = self.config.training.num_threads
        previous = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            # Nothing in mdpot draws from torch's global generator during training, but an architecture with
            # dropout would: seed it here, keep it in last.ckpt, and leave the caller's generator untouched.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.config.training.seed)
                return self._run()
        finally:
            torch.set_num_threads(previous)

    def _run(self) -> TrainResult:
        with FolderLock(self.run_dir, what="training", log=self.log):
            return self._run_locked()

    def _run_locked(self) -> TrainResult:
        from tqdm import tqdm

        t_start = time.perf_counter()
        tc = self.config.training
        self._remove_leftovers()
        self._check_run_dir()
        state = None
        if self.resume:
            eval_model, payload = load_checkpoint(self.run_dir / LAST)
            state = (payload.get("extra") or {}).get("training_state")
            if state is None:
                raise ValueError(f"{self.run_dir / LAST}: holds no training state to resume from")
            model_config = eval_model.config
        train, val = self._load_data()
        self.normalised_config = _normalised(self.config, self.train_path, self.val_path, self.run_dir)
        self.data_sha256 = {"train": sha256_file(self.train_path),
                            "validation": None if self.val_path is None else sha256_file(self.val_path)}
        if state is not None:
            diffs = _config_differences(state["config"], self.normalised_config, model_config.to_dict())
            diffs += _data_differences(state["config"], self.normalised_config, state.get("data_sha256"),
                                       self.data_sha256, self.run_dir)
            if tc.scheduler == "cosine" and state["config"]["training"]["max_epochs"] != tc.max_epochs:
                diffs.append("training.max_epochs (the cosine schedule depends on it)")
            if diffs:
                raise ValueError(f"the config differs from the run in {self.run_dir} in: {'; '.join(diffs)}; "
                                 "start a new run (another -o, or --force) instead of --resume")
            self._build_samples(train, val, model_config)
        else:
            model_config = self._resolve_model(train, val)
        self._setup_stress()
        self._build(model_config)
        if state is not None:
            self._restore(state)
            self.log(f"resuming {self.run_dir} after epoch {self.epoch} (best epoch {self.best_epoch}, "
                     f"val loss {_fmt(self.best_val_loss)})")
        self._clear_run_dir()
        self._write_config(model_config)
        n_params = sum(p.numel() for p in self.params)
        self.log(f"model: {model_config.architecture}, {n_params} parameters, elements {' '.join(model_config.elements)}, "
                 f"r_max {model_config.r_max:g} Å, training in {tc.dtype}; run folder {self.run_dir}")

        # tqdm draws on stderr with carriage returns: only on a terminal, never into a redirected log.
        bars = self.progress and _is_terminal(sys.stderr)
        bar_factory = lambda **kw: tqdm(disable=not bars, dynamic_ncols=True, **kw)  # noqa: E731
        epoch_bar = bar_factory(total=tc.max_epochs, initial=min(self.epoch, tc.max_epochs), desc="training", unit="epoch")
        epoch_times: List[float] = []
        try:
            while True:
                reason = self._stop_reason(epoch_times, t_start)
                if reason is not None:
                    break
                t0 = time.perf_counter()
                lr = float(self.optimizer.param_groups[0]["lr"])
                train_metrics = self._train_epoch(bar_factory)
                self._sync_eval_model()
                val_metrics = self.metrics(self.val_batches)
                val_loss = val_metrics["loss"]
                if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    self.scheduler.step(val_loss)
                elif self.scheduler is not None:
                    self.scheduler.step()
                self.epoch += 1
                improved = val_loss < self.best_val_loss - tc.early_stopping_min_delta
                if improved:
                    self.best_val_loss, self.best_epoch, self.epochs_since_best = val_loss, self.epoch, 0
                else:
                    self.epochs_since_best += 1
                epoch_times.append(time.perf_counter() - t0)
                row = {"epoch": self.epoch, "lr": lr, "epoch_time_s": epoch_times[-1]}
                row.update({f"train_{k}": v for k, v in train_metrics.items()})
                row.update({f"val_{k}": v for k, v in val_metrics.items()})
                self.history.append(row)
                if improved:
                    save_checkpoint(self.eval_model, self.run_dir / BEST, extra={"provenance": self._provenance()})
                save_checkpoint(self.eval_model, self.run_dir / LAST,
                                extra={"provenance": self._provenance(), "training_state": self._training_state()})
                self._write_metrics()
                epoch_bar.set_postfix(loss=_fmt(train_metrics["loss"]), val_F_MAE=_fmt(val_metrics["forces_mae_meV_A"], 3),
                                      refresh=False)
                epoch_bar.update(1)
                self.log(self._summary(row, improved))
        finally:
            epoch_bar.close()
            if self.history:
                from .plots import plot_learning_curve

                plot_learning_curve(self.history, self.run_dir / CURVE)
        ran = len(epoch_times)
        total = time.perf_counter() - t_start
        self.log(f"stopped after epoch {self.epoch}: {reason} ({ran} epochs in this run, {total:.1f} s)")
        best = self.run_dir / BEST
        if best.is_file():
            row = self.history[self.best_epoch - 1] if 0 < self.best_epoch <= len(self.history) else {}
            self.log(f"best model: {best} (epoch {self.best_epoch}, val loss {_fmt(self.best_val_loss)}, "
                     f"val force MAE {_fmt(row.get('val_forces_mae_meV_A', math.nan), 3)} meV/Å)")
            self.log(f"deploy it with: mdpot deploy {best} -o model.pt")
        return TrainResult(self.run_dir, best, self.run_dir / LAST, self.best_epoch, self.best_val_loss,
                           self.epoch, reason, [dict(r) for r in self.history])


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # replaced or closed streams
        return False


def train(config: Union[TrainConfig, PathLike], run_dir: PathLike, resume: bool = False, force: bool = False,
          progress: bool = True, log: Optional[Callable[[str], None]] = None) -> TrainResult:
    """Train from a :class:`TrainConfig` or a YAML path into ``run_dir``; see :class:`Trainer`."""
    if not isinstance(config, TrainConfig):
        from .config import load_train_config

        config = load_train_config(config)
    return Trainer(config, run_dir, resume=resume, force=force, progress=progress, log=log).run()


__all__ = ["EMA", "TrainResult", "Trainer", "train"]


def member_config(config: TrainConfig, k: int, bootstrap: bool = False) -> TrainConfig:
    """The config of committee member ``k``: ``training.seed`` + ``k`` (other weights, validation split when the
    data has no validation file, batch order and bootstrap resample) and ``training.bootstrap`` when asked."""
    training = dataclasses.replace(config.training, seed=config.training.seed + k,
                                   bootstrap=bootstrap or config.training.bootstrap)
    return dataclasses.replace(config, training=training)


def train_committee(config: Union[TrainConfig, PathLike], run_dir: PathLike, size: int, bootstrap: bool = False,
                    resume: bool = False, force: bool = False, progress: bool = True,
                    log: Optional[Callable[[str], None]] = None) -> List[TrainResult]:
    """Train ``size`` committee members into ``run_dir/member_0`` ... ``member_{size-1}``, one after the other,
    each from :func:`member_config` (seeds ``seed``, ``seed + 1``, ...; ``bootstrap``: each also trains on its own
    resample of the training structures). ``resume`` continues every member from its ``last.ckpt``. Deploy the members' ``best.ckpt`` together with
    ``mdpot deploy RUN/member_*/best.ckpt -o committee.pt``."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 2:
        raise ValueError(f"a committee needs at least 2 members, got {size!r}")
    if not isinstance(config, TrainConfig):
        from .config import load_train_config

        config = load_train_config(config)
    if log is None:
        from tqdm import tqdm

        log = tqdm.write
    results = []
    for k in range(size):
        cfg = member_config(config, k, bootstrap)
        log(f"committee member {k + 1}/{size}: seed {cfg.training.seed}"
            + (", bootstrap resample" if cfg.training.bootstrap else ""))
        results.append(Trainer(cfg, Path(run_dir) / f"member_{k}", resume=resume, force=force, progress=progress,
                               log=log).run())
    return results


__all__ += ["member_config", "train_committee"]
