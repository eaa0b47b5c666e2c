"""The training configuration: a YAML file with ``architecture``, ``model``, ``data`` and ``training`` sections.

Everything but ``data.train`` and the model's ``elements`` has a default, so a minimal config is a few
lines (``examples/train_minimal.yaml``). Values are validated when the config is built; errors are
``ValueError``/``TypeError`` naming the key and the offending value.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

#: Model options the trainer can derive from the training data when they are absent or ``"auto"``.
AUTO_MODEL_OPTIONS = ("elements", "avg_num_neighbors", "per_element_energy_shift", "per_element_energy_scale")

OPTIMIZERS = ("adam", "adamw")
SCHEDULERS = ("plateau", "cosine", "none")
DTYPES = ("float32", "float64")
LOSS_TERMS = ("energy", "forces", "stress")
#: Where the per-element energy shift (the energy of an isolated atom) comes from; see TrainingConfig.
ENERGY_SHIFTS = ("auto", "isolated", "explicit", "least_squares")

#: Training options that may change when a run is resumed (everything else must match the original run).
RESUMABLE_CHANGES = ("max_epochs", "max_time", "early_stopping_patience", "num_threads")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    """The type of a rejected value; a string that reads as a number was quoted in the YAML."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return "str"
        return "a quoted string; write the number without quotes"
    return type(value).__name__


def _number(section: str, name: str, value: Any, minimum: float = -math.inf, strict: bool = False,
            maximum: float = math.inf, optional: bool = False) -> Optional[float]:
    key = f"{section}.{name}"
    if value is None and optional:
        return None
    if not _is_number(value):
        raise TypeError(f"{key} must be a number, got {value!r} ({_kind(value)})")
    value = float(value)
    if not math.isfinite(value) or value < minimum or (strict and value == minimum) or value > maximum:
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        upper = f" and <= {maximum:g}" if math.isfinite(maximum) else ""
        raise ValueError(f"{key} must be a finite number {bound}{upper}, got {value!r}")
    return value


def _integer(section: str, name: str, value: Any, minimum: int, optional: bool = False) -> Optional[int]:
    key = f"{section}.{name}"
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{key} must be an integer, got {value!r} ({_kind(value)})")
    if value < minimum:
        raise ValueError(f"{key} must be >= {minimum}, got {value}")
    return value


def _choice(section: str, name: str, value: Any, choices: Tuple[str, ...]) -> str:
    if not isinstance(value, str) or value.lower() not in choices:
        raise ValueError(f"{section}.{name} must be one of {list(choices)}, got {value!r}")
    return value.lower()


def _string(section: str, name: str, value: Any, optional: bool = False) -> Optional[str]:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise TypeError(f"{section}.{name} must be a non-empty string, got {value!r}")
    return value


def _from_mapping(cls, section: str, data: Any):
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise TypeError(f"the '{section}' section must be a mapping, got {type(data).__name__}")
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in the '{section}' section; known keys: {known}")
    return cls(**dict(data))


@dataclass(frozen=True)
class DataConfig:
    """Where the labelled structures are and under which keys their labels live.

    Parameters
    ----------
    train : str
        Training structures (extxyz or anything ``ase.io.read`` knows). Relative paths are looked up next
        to the config file first, then in the working directory.
    validation : str, optional
        Validation structures. Without it, ``val_fraction`` of the training file is held out.
    val_fraction : float, optional
        Fraction held out for validation when there is no ``validation`` file (default 0.1, at least one
        structure). The split is a permutation drawn from ``training.seed``.
    energy_key, forces_key, stress_key : str
        Label names, looked up in the calculator results ase.io attached, then ``atoms.info`` /
        ``atoms.arrays``. Energy in eV (total), forces in eV/Å, stress in eV/Å³ (ASE sign, Voigt or 3x3).
        ``stress_key: null`` ignores stress labels; structures without one do not enter the stress loss.
    """

    train: str = ""
    validation: Optional[str] = None
    val_fraction: Optional[float] = None
    energy_key: str = "energy"
    forces_key: str = "forces"
    stress_key: Optional[str] = "stress"

    def __post_init__(self) -> None:
        if not self.train:
            raise ValueError("data.train is required (the training structures, e.g. an extxyz file)")
        _string("data", "train", self.train)
        _string("data", "validation", self.validation, optional=True)
        if self.validation is not None and self.val_fraction is not None:
            raise ValueError("give either data.validation or data.val_fraction, not both")
        frac = _number("data", "val_fraction", self.val_fraction, 0.0, strict=True, maximum=0.9, optional=True)
        object.__setattr__(self, "val_fraction", frac)
        for name in ("energy_key", "forces_key"):
            _string("data", name, getattr(self, name))
        _string("data", "stress_key", self.stress_key, optional=True)

    @property
    def effective_val_fraction(self) -> float:
        return 0.1 if self.val_fraction is None else self.val_fraction


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation settings.

    Parameters
    ----------
    seed : int
        Weight initialisation, validation split and per-epoch batch order (default 0).
    dtype : str
        Training precision, ``float32`` (default) or ``float64``; checkpoints hold float64 weights anyway.
    max_epochs : int
        Default 100.
    batch_size, val_batch_size : int
        Structures per optimiser step (default 4) and per validation call (default: ``batch_size``).
    optimizer : str
        ``adam`` (default; ``weight_decay`` is an L2 term) or ``adamw`` (decoupled weight decay).
    lr, weight_decay : float
        Learning rate (default 0.005) and weight decay (default 0).
    scheduler : str
        ``plateau`` (default: multiply the lr by ``lr_factor`` after ``lr_patience`` epochs without a lower
        validation loss, not below ``min_lr``), ``cosine`` (from ``lr`` to ``min_lr`` over ``max_epochs``)
        or ``none``. Defaults: ``lr_factor`` 0.5, ``lr_patience`` 5, ``min_lr`` 1e-6.
    loss_weights : mapping
        ``energy`` (per-atom energy MSE, eV²; default 1), ``forces`` (force component MSE, (eV/Å)²;
        default 10), ``stress`` (stress component MSE, (eV/Å³)²; default 0 — stresses are small numbers in
        eV/Å³, so useful weights are large, e.g. 1000). Omitted terms keep their default.
    kind_weights : mapping or None
        Loss weight of the structures of each kind (the ``kind`` key of a structure's info, which ``mdpot data``
        writes: ``md``, ``rattled``, ``dimer``, ``hot``, ...), e.g. ``{dimer: 0.1, trimer: 0.1}``; kinds not
        named, and structures without a kind, weigh 1 (the default: every structure weighs 1). Each squared error is
        multiplied by its structure's weight before the mean, in training and validation (no renormalisation per
        batch); metrics stay unweighted. A kind that no training or
        validation structure has is an error (a misspelt kind would otherwise do nothing).
    ema_decay : float or None
        Exponential moving average of the weights (default 0.99); validation, ``best.ckpt`` and the model
        in ``last.ckpt`` use the averaged weights. ``null`` disables it.
    early_stopping_patience : int or None
        Stop after this many epochs without the validation loss dropping below the best by more than
        ``early_stopping_min_delta`` (defaults 20 and 0). ``null`` disables early stopping.
    grad_clip : float or None
        Clip the gradient norm to this value (default: no clipping).
    max_time : float or None
        Wall-clock limit of one invocation in minutes: no epoch is started that would end past it
        (estimated from the previous epoch). Continue with ``--resume``.
    num_threads : int or None
        torch CPU threads during training (default: torch's own choice). On a machine shared with other
        jobs, 1 thread per process can be several times faster than 2.
    energy_shift : str
        Where the model's per-element energy shift comes from; it is exactly the energy the model gives an
        isolated atom (eV). ``isolated``: the energies of the data's isolated-atom frames (one atom, no
        neighbour within r_max, in the training or validation structures; ``mdpot data`` writes one per element
        into the training file); ``explicit``: ``energy_references``;
        ``least_squares``: the least-squares fit of total energies on element counts (a mean bulk energy, so
        cohesive energies come out wrong); ``auto`` (default): ``explicit`` when ``energy_references`` is given,
        else ``isolated`` when the data holds an isolated atom of every element, else
        ``least_squares``. A ``model.per_element_energy_shift`` list excludes ``energy_shift`` (other than
        ``auto``) and ``energy_references``.
    energy_references : mapping or None
        Energy of an isolated atom per element (eV), e.g. ``{Cu: -0.123}``: every element of the model.
    bootstrap : bool
        Train on a bootstrap resample of the training structures (drawn with replacement, as many as there are,
        after the validation split, from a generator seeded with ``seed``): what ``mdpot train --committee N
        --bootstrap`` sets so that the members also see different data (default false).
    """

    seed: int = 0
    dtype: str = "float32"
    max_epochs: int = 100
    batch_size: int = 4
    val_batch_size: Optional[int] = None
    optimizer: str = "adam"
    lr: float = 0.005
    weight_decay: float = 0.0
    scheduler: str = "plateau"
    lr_factor: float = 0.5
    lr_patience: int = 5
    min_lr: float = 1e-6
    loss_weights: Mapping[str, float] = field(default_factory=lambda: {"energy": 1.0, "forces": 10.0, "stress": 0.0})
    ema_decay: Optional[float] = 0.99
    early_stopping_patience: Optional[int] = 20
    early_stopping_min_delta: float = 0.0
    grad_clip: Optional[float] = None
    max_time: Optional[float] = None
    num_threads: Optional[int] = None
    energy_shift: str = "auto"
    energy_references: Optional[Mapping[str, float]] = None
    kind_weights: Optional[Mapping[str, float]] = None
    bootstrap: bool = False

    def __post_init__(self) -> None:
        s = "training"
        if not isinstance(self.bootstrap, bool):
            raise TypeError(f"training.bootstrap must be true or false, got {self.bootstrap!r}")
        _integer(s, "seed", self.seed, 0)
        object.__setattr__(self, "dtype", _choice(s, "dtype", self.dtype, DTYPES))
        _integer(s, "max_epochs", self.max_epochs, 1)
        _integer(s, "batch_size", self.batch_size, 1)
        _integer(s, "val_batch_size", self.val_batch_size, 1, optional=True)
        object.__setattr__(self, "optimizer", _choice(s, "optimizer", self.optimizer, OPTIMIZERS))
        object.__setattr__(self, "lr", _number(s, "lr", self.lr, 0.0, strict=True))
        object.__setattr__(self, "weight_decay", _number(s, "weight_decay", self.weight_decay, 0.0))
        sched = "none" if self.scheduler is None else self.scheduler
        object.__setattr__(self, "scheduler", _choice(s, "scheduler", sched, SCHEDULERS))
        object.__setattr__(self, "lr_factor", _number(s, "lr_factor", self.lr_factor, 0.0, strict=True, maximum=1.0))
        _integer(s, "lr_patience", self.lr_patience, 0)
        object.__setattr__(self, "min_lr", _number(s, "min_lr", self.min_lr, 0.0))
        weights = self.loss_weights
        if not isinstance(weights, Mapping):
            raise TypeError(f"training.loss_weights must be a mapping like {{energy: 1.0, forces: 10.0}}, got {weights!r}")
        unknown = sorted(str(k) for k in weights if k not in LOSS_TERMS)
        if unknown:
            raise ValueError(f"unknown loss term(s) {unknown} in training.loss_weights; known: {list(LOSS_TERMS)}")
        merged = {"energy": 1.0, "forces": 10.0, "stress": 0.0}
        for k, v in weights.items():
            merged[k] = _number(s, f"loss_weights.{k}", v, 0.0)
        if not any(v > 0 for k, v in merged.items()):
            raise ValueError(f"training.loss_weights: at least one weight must be > 0, got {merged}")
        object.__setattr__(self, "loss_weights", merged)
        if self.ema_decay is not None:
            object.__setattr__(self, "ema_decay", _number(s, "ema_decay", self.ema_decay, 0.0, maximum=1.0))
            if self.ema_decay >= 1.0:
                raise ValueError(f"training.ema_decay must be < 1 (null disables EMA), got {self.ema_decay}")
        _integer(s, "early_stopping_patience", self.early_stopping_patience, 1, optional=True)
        object.__setattr__(self, "early_stopping_min_delta",
                           _number(s, "early_stopping_min_delta", self.early_stopping_min_delta, 0.0))
        object.__setattr__(self, "grad_clip", _number(s, "grad_clip", self.grad_clip, 0.0, strict=True, optional=True))
        object.__setattr__(self, "max_time", _number(s, "max_time", self.max_time, 0.0, strict=True, optional=True))
        _integer(s, "num_threads", self.num_threads, 1, optional=True)
        object.__setattr__(self, "energy_shift", _choice(s, "energy_shift", self.energy_shift, ENERGY_SHIFTS))
        refs = self.energy_references
        if refs is not None:
            if not isinstance(refs, Mapping) or not refs:
                raise TypeError(f"training.energy_references must be a mapping of element to energy in eV like "
                                f"{{Cu: -0.123}}, got {refs!r}")
            from ase.data import atomic_numbers

            for el in refs:
                if el not in atomic_numbers:
                    raise ValueError(f"training.energy_references: unknown element {el!r}")
            refs = {str(el): _number(s, f"energy_references.{el}", v) for el, v in refs.items()}
            object.__setattr__(self, "energy_references", refs)
            if self.energy_shift not in ("auto", "explicit"):
                raise ValueError(f"training.energy_references is given but training.energy_shift is "
                                 f"{self.energy_shift!r}; use energy_shift: explicit (or auto) with references")
        elif self.energy_shift == "explicit":
            raise ValueError("training.energy_shift is 'explicit' but no training.energy_references are given "
                             "(e.g. {Cu: -0.123}, eV per isolated atom)")
        kinds = self.kind_weights
        if kinds is not None:
            if not isinstance(kinds, Mapping) or not kinds:
                raise TypeError(f"training.kind_weights must be a mapping of structure kind to loss weight like "
                                f"{{dimer: 0.1}}, got {kinds!r}")
            object.__setattr__(self, "kind_weights", {str(k): _number(s, f"kind_weights.{k}", v, 0.0)
                                                      for k, v in kinds.items()})

    @property
    def eval_batch_size(self) -> int:
        return self.val_batch_size or self.batch_size


@dataclass(frozen=True)
class TrainConfig:
    """A whole training configuration.

    Parameters
    ----------
    architecture : str
        A key of :data:`mdpot.models.ARCHITECTURES` (``allegro``, ...).
    model : mapping
        Model options of that architecture. ``elements``, ``avg_num_neighbors``,
        ``per_element_energy_shift`` and ``per_element_energy_scale`` may be absent or ``"auto"``: they are
        then derived from the training data (elements by atomic number; mean neighbours per atom within
        ``r_max``; least-squares energy per element, eV; RMS force component, eV/Å).
    data : DataConfig
    training : TrainingConfig
    base_dir : Path, optional
        Directory relative data paths are looked up in first (the config file's folder).

    Example
    -------
    >>> cfg = TrainConfig.from_dict({"model": {"elements": ["Cu"]}, "data": {"train": "cu.xyz"}})
    >>> cfg.training.loss_weights["forces"]
    10.0
    """

    architecture: str = "allegro"
    model: Mapping[str, Any] = field(default_factory=dict)
    data: Optional[DataConfig] = None
    training: TrainingConfig = field(default_factory=TrainingConfig)
    base_dir: Optional[Path] = None

    def __post_init__(self) -> None:
        from ..models import ARCHITECTURES, make_config

        if not isinstance(self.architecture, str) or self.architecture.lower() not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.architecture!r}; expected one of {sorted(ARCHITECTURES)}")
        object.__setattr__(self, "architecture", self.architecture.lower())
        if not isinstance(self.model, Mapping):
            raise TypeError(f"the 'model' section must be a mapping, got {type(self.model).__name__}")
        model = {k: list(v) if isinstance(v, tuple) else v for k, v in self.model.items()}
        for key in AUTO_MODEL_OPTIONS:
            if isinstance(model.get(key), str) and model[key] != "auto":
                raise ValueError(f"model.{key} must be a list/number or 'auto', got {model[key]!r}")
        object.__setattr__(self, "model", model)
        # Fail on bad model options now, before any data is read: validate with placeholders for the auto ones.
        probe = {k: v for k, v in model.items() if v != "auto"}
        if "elements" not in probe:
            probe["elements"] = ["H"]
            # Per-element lists cannot be length-checked until the elements are known.
            probe.pop("per_element_energy_shift", None)
            probe.pop("per_element_energy_scale", None)
        try:
            make_config(self.architecture, probe)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"model: {exc}") from None
        if not isinstance(self.data, DataConfig):
            raise TypeError(f"data must be a DataConfig (with at least 'train'), got {self.data!r}")
        if not isinstance(self.training, TrainingConfig):
            raise TypeError("training must be a TrainingConfig")
        if "per_element_energy_shift" in probe and (self.training.energy_shift != "auto"
                                                    or self.training.energy_references is not None):
            raise ValueError("give either model.per_element_energy_shift or training.energy_shift / "
                             "training.energy_references, not both")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base_dir: Union[str, Path, None] = None) -> "TrainConfig":
        """Build from the parsed YAML mapping; unknown keys in any section raise ``ValueError``."""
        if not isinstance(data, Mapping):
            raise TypeError(f"a training config must be a mapping, got {type(data).__name__}")
        known = ("architecture", "model", "data", "training")
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise ValueError(f"unknown top-level key(s) {unknown} in the training config; known keys: {list(known)}")
        if "data" not in data:
            raise ValueError("the training config needs a 'data' section with at least 'train'")
        return cls(
            architecture=data.get("architecture", "allegro"),
            model=data.get("model") or {},
            data=_from_mapping(DataConfig, "data", data.get("data")),
            training=_from_mapping(TrainingConfig, "training", data.get("training")),
            base_dir=None if base_dir is None else Path(base_dir),
        )

    def to_dict(self) -> Dict[str, Any]:
        """Plain mapping (YAML-ready); ``base_dir`` is not part of it."""
        return {
            "architecture": self.architecture,
            "model": dict(self.model),
            "data": dataclasses.asdict(self.data),
            "training": {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in dataclasses.asdict(self.training).items()},
        }

    def resolve_path(self, path: str) -> Path:
        """A data path as given: absolute, else next to the config file, else relative to the working directory."""
        p = Path(path).expanduser()
        if p.is_absolute():
            return p
        candidates = ([self.base_dir / p] if self.base_dir is not None else []) + [Path.cwd() / p]
        for c in candidates:
            if c.exists():
                return c.resolve()
        tried = " or ".join(str(c.resolve()) for c in candidates)
        raise FileNotFoundError(f"data file not found: {path} (looked for {tried})")


def load_train_config(path: Union[str, Path]) -> TrainConfig:
    """Read and validate a training config YAML file."""
    from .._yaml import read_yaml_mapping

    data = read_yaml_mapping(path, "'architecture', 'model', 'data' and 'training' sections")
    return TrainConfig.from_dict(data, base_dir=Path(path).resolve().parent)
