"""Checkpoints (config + weights) and the architecture registry."""
from __future__ import annotations

import datetime
import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Type, Union

import torch
from torch import nn

from .._files import atomic_write_bytes
from .allegro import Allegro
from .config import AllegroConfig, ModelConfig, NequIPConfig
from .nequip import NequIP

CHECKPOINT_FORMAT = 1

ARCHITECTURES: Dict[str, Tuple[Type[ModelConfig], Type[nn.Module]]] = {
    "allegro": (AllegroConfig, Allegro),
    "nequip": (NequIPConfig, NequIP),
}


def _arch(name: str) -> Tuple[Type[ModelConfig], Type[nn.Module]]:
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; expected one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def make_config(architecture: str, options: Mapping[str, Any]) -> ModelConfig:
    """Validated config for ``architecture`` from a plain mapping (YAML/JSON)."""
    return _arch(architecture)[0].from_dict(options)


def build_model(config: ModelConfig, seed: Optional[int] = None, dtype: torch.dtype = torch.float64) -> nn.Module:
    """A fresh energy model for ``config`` with weights drawn from ``seed`` (deterministic when given)."""
    cls = _arch(config.architecture)[1]
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls(config)
    else:
        model = cls(config)
    return model.to(dtype)


def save_checkpoint(model: nn.Module, path: Union[str, os.PathLike], extra: Optional[Mapping[str, Any]] = None) -> Path:
    """Write ``model``'s config and float64 weights to ``path`` atomically (temporary file, then rename; see
    :func:`mdpot._files.atomic_write`); ``extra`` (training state, provenance) rides along."""
    config: ModelConfig = model.config
    state = {k: v.detach().to("cpu", torch.float64) if v.is_floating_point() else v.detach().cpu()
             for k, v in model.state_dict().items()}
    payload = {
        "mdpot_checkpoint": CHECKPOINT_FORMAT,
        "architecture": config.architecture,
        "config": config.to_dict(),
        "state_dict": state,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "extra": dict(extra or {}),
    }
    # Serialised in memory first: the archive's inner folder is then "archive", not the temporary file's name
    # (which carries the pid and host), and the file appears at ``path`` complete or not at all.
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Union[str, os.PathLike], dtype: torch.dtype = torch.float64) -> Tuple[nn.Module, Dict[str, Any]]:
    """Rebuild the model stored at ``path`` in ``dtype``. Returns ``(model, payload)``; the model is in eval mode.

    The caller's random stream is left alone: the module is built under a forked RNG (its fresh weights are
    overwritten by the stored ones), and the stored float64 weights are cast to ``dtype`` once, on loading.
    Raises ``FileNotFoundError`` (resolved path) or ``ValueError`` naming what is wrong with the file.
    """
    path = Path(path)
    payload = _read_payload(path)
    if payload["mdpot_checkpoint"] != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: checkpoint format {payload['mdpot_checkpoint']} is not supported "
                         f"(this mdpot reads format {CHECKPOINT_FORMAT})")
    try:
        config = make_config(payload["architecture"], payload["config"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: the checkpoint's model config is invalid: {exc}") from None
    with torch.random.fork_rng(devices=[]):
        model = _arch(config.architecture)[1](config).to(dtype)
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, TypeError) as exc:  # missing/unexpected keys or shape mismatches, many lines
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
        raise ValueError(f"{path}: the checkpoint's weights do not fit its {config.architecture} config "
                         f"({(lines[1:2] or lines or [type(exc).__name__])[0].rstrip('.')})") from None
    return model.eval(), payload


def _read_payload(path: Path) -> Dict[str, Any]:
    """The checkpoint's payload, read with ``weights_only=True`` (nothing in the file is executed); one-line
    errors name what the file is when it is not an mdpot checkpoint."""
    from ..deploy.load import torch_error_summary
    from ..interop.nequip import KIND_LABELS, MDPOT, MDPOT_CHECKPOINT, detect_source_kind

    if path.is_dir():
        raise ValueError(f"{path}: is a folder; expected an mdpot checkpoint file (.ckpt)")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path.resolve()}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty (0 bytes); expected an mdpot checkpoint")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not an mdpot checkpoint (not a zip archive written by torch.save; truncated or "
                         f"corrupt?)")
    try:
        kind = detect_source_kind(path)
    except ValueError:
        kind = None  # not a model file of a known kind: torch.load below says what it can
    if kind == MDPOT:
        raise ValueError(f"{path}: is a deployed mdpot model, not a training checkpoint; use the .ckpt it was "
                         f"deployed from (`mdpot info {path}` shows its provenance)")
    if kind is not None and kind != MDPOT_CHECKPOINT:
        raise ValueError(f"{path}: is a {KIND_LABELS[kind]}, not an mdpot checkpoint; deploy it with "
                         f"`mdpot deploy {path} -o model.pt`")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # the weights-only unpickler met an object it does not rebuild
        raise ValueError(f"{path}: not an mdpot checkpoint (it holds Python objects other than tensors and plain "
                         f"data, which mdpot never unpickles)") from None
    except Exception as exc:  # torch raises many types for damaged files
        raise ValueError(f"{path}: not a readable mdpot checkpoint ({torch_error_summary(exc)}; truncated or "
                         f"corrupt?)") from None
    if not isinstance(payload, dict) or "mdpot_checkpoint" not in payload:
        raise ValueError(f"{path}: not an mdpot checkpoint (no 'mdpot_checkpoint' key)")
    missing = [k for k in ("architecture", "config", "state_dict") if k not in payload]
    if missing:
        raise ValueError(f"{path}: mdpot checkpoint without {missing}; the file is damaged or was not written by mdpot")
    return payload


def create_checkpoint(config: ModelConfig, path: Union[str, os.PathLike], seed: int = 0) -> Path:
    """A checkpoint with fresh (untrained) weights for ``config``, drawn from ``seed``."""
    model = build_model(config, seed=seed)
    return save_checkpoint(model, path, extra={"provenance": {"kind": "fresh", "seed": seed}})
