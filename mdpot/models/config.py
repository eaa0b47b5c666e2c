"""Frozen, validated model configurations shared by every architecture."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

from ase.data import chemical_symbols


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_float(name: str, value: Any, positive: bool = True) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value) or (positive and value <= 0):
        raise ValueError(f"{name} must be a finite{' positive' if positive else ''} number, got {value}")


def _check_widths(name: str, value: Any) -> None:
    if not isinstance(value, tuple) or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        raise ValueError(f"{name} must be a sequence of positive ints, got {value!r}")


#: The model ``mdpot init`` writes without a config and the benchmarks run: the README's benchmark Allegro
#: (Cu, r_max 5 Å, every other option at its default), as ``{"architecture": ..., "model": options}``.
DEFAULT_MODEL: Dict[str, Any] = {"architecture": "allegro", "model": {"elements": ["Cu"], "r_max": 5.0}}


@dataclass(frozen=True)
class ModelConfig:
    """Options every architecture shares.

    Parameters
    ----------
    elements : tuple of str
        Chemical symbols in model type order (type index = position).
    r_max : float
        Edge cutoff, Å.
    l_max : int
        Highest spherical-harmonic order of the tensor features.
    parity : bool
        Track both parities of every ``l`` (full O(3)); otherwise only ``(-1)^l``.
    num_layers : int
        Interaction layers.
    num_bessel : int
        Bessel radial basis size.
    cutoff_p : int
        Power of the polynomial cutoff envelope (smoothness at ``r_max``).
    avg_num_neighbors : float
        Normalisation of neighbour sums, ``1/sqrt(avg_num_neighbors)``.
    per_element_energy_shift : tuple of float
        Added to every atom's energy by element, eV. Defaults to zeros.
    per_element_energy_scale : tuple of float
        Multiplies every atom's learned energy by element, eV. Defaults to ones.
    repulsion : str or None
        ``"zbl"`` adds the ZBL screened nuclear repulsion (:mod:`mdpot.nn.repulsion`) to the learned energy, part
        of the deployed model in every engine; ``None`` (default): no such term.
    repulsion_r_inner, repulsion_r_outer : float or None
        Å. The repulsion is the full ZBL below ``r_inner`` and switched smoothly to zero at ``r_outer``
        (``r_inner < r_outer <= r_max``), the same for every pair of elements. ``None`` (default): per pair,
        ``r_outer = 0.5 (rc_i + rc_j)`` from the covalent radii and ``r_inner = 0.75 r_outer``. Only with
        ``repulsion``.
    """

    elements: Tuple[str, ...]
    r_max: float = 5.0
    l_max: int = 1
    parity: bool = True
    num_layers: int = 2
    num_bessel: int = 8
    cutoff_p: int = 6
    avg_num_neighbors: float = 1.0
    per_element_energy_shift: Optional[Tuple[float, ...]] = None
    per_element_energy_scale: Optional[Tuple[float, ...]] = None
    repulsion: Optional[str] = None
    repulsion_r_inner: Optional[float] = None
    repulsion_r_outer: Optional[float] = None

    architecture = "base"

    def __post_init__(self) -> None:
        # Accept lists from YAML/JSON but store tuples so the config stays hashable and frozen.
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, list):
                object.__setattr__(self, f.name, tuple(v))
        if isinstance(self.elements, str) or not isinstance(self.elements, tuple) or not self.elements:
            raise ValueError(f"elements must be a non-empty list of chemical symbols, got {self.elements!r}")
        for el in self.elements:
            if el not in chemical_symbols[1:]:
                raise ValueError(f"unknown chemical symbol {el!r} in elements {list(self.elements)}")
        if len(set(self.elements)) != len(self.elements):
            raise ValueError(f"elements must be unique, got {list(self.elements)}")
        _check_float("r_max", self.r_max)
        _check_int("l_max", self.l_max, 0)
        if not isinstance(self.parity, bool):
            raise TypeError(f"parity must be true or false, got {self.parity!r}")
        _check_int("num_layers", self.num_layers, 1)
        _check_int("num_bessel", self.num_bessel, 1)
        _check_int("cutoff_p", self.cutoff_p, 2)
        _check_float("avg_num_neighbors", self.avg_num_neighbors)
        n = len(self.elements)
        for name, default in (("per_element_energy_shift", 0.0), ("per_element_energy_scale", 1.0)):
            v = getattr(self, name)
            if v is None:
                object.__setattr__(self, name, (default,) * n)
                continue
            if not isinstance(v, tuple) or len(v) != n:
                raise ValueError(f"{name} needs one value per element ({n}: {list(self.elements)}), got {v!r}")
            for x in v:
                _check_float(name, x, positive=False)
            object.__setattr__(self, name, tuple(float(x) for x in v))
        object.__setattr__(self, "r_max", float(self.r_max))
        object.__setattr__(self, "avg_num_neighbors", float(self.avg_num_neighbors))
        self._check_repulsion()

    def _check_repulsion(self) -> None:
        from ..nn.repulsion import REPULSION_KINDS

        radii = (self.repulsion_r_inner, self.repulsion_r_outer)
        if self.repulsion is None:
            if radii != (None, None):
                raise ValueError(f"repulsion_r_inner/repulsion_r_outer ({radii[0]!r}, {radii[1]!r}) need a "
                                 f"repulsion term; set repulsion: {REPULSION_KINDS[0]}")
            return
        if self.repulsion not in REPULSION_KINDS:
            raise ValueError(f"repulsion must be one of {list(REPULSION_KINDS)} or null, got {self.repulsion!r}")
        if (radii[0] is None) != (radii[1] is None):
            raise ValueError(f"give both repulsion_r_inner and repulsion_r_outer or neither, got "
                             f"({radii[0]!r}, {radii[1]!r})")
        if radii[0] is None:
            return
        _check_float("repulsion_r_inner", radii[0])
        _check_float("repulsion_r_outer", radii[1])
        if not radii[0] < radii[1] <= self.r_max:
            raise ValueError(f"repulsion radii must satisfy 0 < r_inner < r_outer <= r_max ({self.r_max}), got "
                             f"r_inner {radii[0]}, r_outer {radii[1]}")
        object.__setattr__(self, "repulsion_r_inner", float(radii[0]))
        object.__setattr__(self, "repulsion_r_outer", float(radii[1]))

    def repulsion_radii(self) -> Tuple[Tuple[Tuple[float, ...], ...], Tuple[Tuple[float, ...], ...]]:
        """``(r_inner, r_outer)`` of the repulsion per type pair, Å, as ``[T][T]`` nested tuples (the explicit
        radii for every pair, or the covalent-radius defaults), each capped at ``r_max``."""
        from ..nn.repulsion import default_radii

        n = len(self.elements)
        if self.repulsion_r_inner is not None:
            return ((self.repulsion_r_inner,) * n,) * n, ((self.repulsion_r_outer,) * n,) * n
        return default_radii(self.elements, self.r_max)

    @property
    def receptive_field(self) -> float:
        """Distance beyond which an atom cannot affect another's energy, Å."""
        return self.r_max

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["repulsion"] is None:
            # without the term, the config reads exactly as before the option existed: an older mdpot, which
            # refuses unknown options, keeps loading these checkpoints and files
            for key in ("repulsion", "repulsion_r_inner", "repulsion_r_outer"):
                del d[key]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelConfig":
        if not isinstance(data, Mapping):
            raise TypeError(f"a model config must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown {cls.architecture} option(s) {unknown}; known options: {sorted(known)}")
        if "elements" not in data:
            raise ValueError(f"{cls.architecture} config needs 'elements'")
        return cls(**dict(data))

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class AllegroConfig(ModelConfig):
    """Allegro: strictly local, equivariant pair features (Musaelian et al., Nat. Commun. 14, 579 (2023)).

    Adds to :class:`ModelConfig`:

    num_scalar_features : int
        Width of the invariant latent pair features.
    num_tensor_features : int
        Channels of the equivariant pair features.
    two_body_mlp, latent_mlp, readout_mlp : tuple of int
        Hidden widths of the radial-chemical embedding, the per-layer latent update and the pair-energy
        readout.

    Example
    -------
    >>> AllegroConfig(elements=("Cu",), r_max=5.0).receptive_field
    5.0
    """

    num_scalar_features: int = 32
    num_tensor_features: int = 16
    two_body_mlp: Tuple[int, ...] = (64, 64)
    latent_mlp: Tuple[int, ...] = (64,)
    readout_mlp: Tuple[int, ...] = (32,)

    architecture = "allegro"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_int("num_scalar_features", self.num_scalar_features, 1)
        _check_int("num_tensor_features", self.num_tensor_features, 1)
        for name in ("two_body_mlp", "latent_mlp", "readout_mlp"):
            _check_widths(name, getattr(self, name))


@dataclass(frozen=True)
class NequIPConfig(ModelConfig):
    """NequIP: equivariant message passing on atoms (Batzner et al., Nat. Commun. 13, 2453 (2022)).

    Adds to :class:`ModelConfig`:

    num_features : int
        Channels of every irrep of the per-atom features.
    radial_mlp : tuple of int
        Hidden widths of the radial network that weights each convolution path from the Bessel basis.
    readout_mlp : tuple of int
        Hidden widths of the per-atom energy readout from the final invariant features.

    Each of the ``num_layers`` interaction blocks passes messages over one ``r_max``, so an atom's energy
    depends on atoms up to ``num_layers * r_max`` away (:attr:`receptive_field`).

    Example
    -------
    >>> NequIPConfig(elements=("Cu",), r_max=5.0, num_layers=3).receptive_field
    15.0
    """

    num_features: int = 32
    radial_mlp: Tuple[int, ...] = (64, 64)
    readout_mlp: Tuple[int, ...] = (16,)

    architecture = "nequip"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_int("num_features", self.num_features, 1)
        for name in ("radial_mlp", "readout_mlp"):
            _check_widths(name, getattr(self, name))

    @property
    def receptive_field(self) -> float:
        return self.num_layers * self.r_max
