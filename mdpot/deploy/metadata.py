"""Metadata of a deployed model (TorchScript ``_extra_files``): what a deploy records (:func:`make_metadata`) and the
codec between typed values and the stored strings. The keys and accepted values are the contract's, in
:mod:`mdpot.contract`."""
from __future__ import annotations

import json
from typing import Any, Dict, Mapping, Optional

import torch
from torch import nn

from ..contract import (  # noqa: F401  (re-exported: the contract's facts, stated once in mdpot.contract)
    AOTI_FORMAT_VERSION, AOTI_FORMAT_VERSIONS, AOTI_FUSED_FORMAT_VERSION, ALL_KEYS, ARCHITECTURE, ARCHITECTURE_NAMES,
    BLOCK_METHODS, BYTES_PER_EDGE, COMMITTEE_FORMAT_VERSION, COMMITTEE_KEYS, COMMITTEE_MEMBERS, COMMITTEE_METHOD,
    COMMITTEE_SIZE, CONFIG, DEFAULT_KERNELS, DTYPES, ELEMENTS, ENERGY_UNIT, ENERGY_UNITS, FORMAT_VERSION,
    FORMAT_VERSION_KEY, FUSED_FORMAT_VERSION, FUSED_FORMAT_VERSIONS, KERNELS, KERNELS_KEY, LENGTH_UNIT,
    MIN_COMMITTEE_SIZE, OPTIONAL_KEYS, PAIR_FORMAT_VERSION, PAIR_METHODS,
    default_kernels,
    READABLE_FORMAT_VERSIONS, LENGTH_UNITS, MDPOT_VERSION, MODEL_DTYPE, NUM_LAYERS, PROVENANCE, R_MAX, RECEPTIVE_FIELD,
    TORCH_VERSION, TORCHSCRIPT_FUSED_FORMAT_VERSIONS, WEIGHTS_SHA256,
)
from .._version import __version__
from ..models import Potential
from ..models.config import ModelConfig

#: Format versions of TorchScript files; AOTInductor packages are those of ``AOTI_FORMAT_VERSIONS`` only.
TORCHSCRIPT_FORMAT_VERSIONS = tuple(v for v in READABLE_FORMAT_VERSIONS if v not in AOTI_FORMAT_VERSIONS)


def energy_model_of(model: nn.Module) -> nn.Module:
    """The energy model (``Allegro``, ``NequIP``) of ``model`` or of the ``Potential`` wrapping it; ``TypeError``
    for anything else."""
    if isinstance(model, Potential):
        model = model.model
    if not isinstance(getattr(model, "config", None), ModelConfig):
        raise TypeError(f"deploy needs an mdpot energy model (Allegro, NequIP) or Potential, got {type(model).__name__}")
    return model


def make_metadata(model: nn.Module, dtype: str, provenance: Optional[Mapping[str, Any]] = None,
                  kernels: str = "reference") -> Dict[str, Any]:
    """Typed metadata of ``model`` (energy model or ``Potential``) deployed in ``dtype`` (``"float32"`` or
    ``"float64"``) calling the tensor-product ``kernels`` (``"reference"`` or ``"fused"``: format version
    ``FUSED_FORMAT_VERSION``); ``provenance`` is stored as given. The weights digest is left empty: the deploy
    fills it in from the compiled module."""
    energy = energy_model_of(model)
    config: ModelConfig = energy.config
    with_pair = config.repulsion is not None and hasattr(energy, "mp_block")
    if kernels not in KERNELS:
        raise ValueError(f"unknown kernels {kernels!r}; expected one of {list(KERNELS)}")
    version = FUSED_FORMAT_VERSION if kernels == "fused" else PAIR_FORMAT_VERSION if with_pair else FORMAT_VERSION
    return {
        FORMAT_VERSION_KEY: version,
        KERNELS_KEY: kernels,
        ARCHITECTURE: config.architecture,
        ELEMENTS: tuple(config.elements),
        R_MAX: float(config.r_max),
        NUM_LAYERS: int(config.num_layers),
        RECEPTIVE_FIELD: float(config.receptive_field),
        MODEL_DTYPE: dtype,
        ENERGY_UNITS: ENERGY_UNIT,
        LENGTH_UNITS: LENGTH_UNIT,
        TORCH_VERSION: torch.__version__,
        MDPOT_VERSION: __version__,
        PROVENANCE: dict(provenance or {}),
        CONFIG: config.to_dict(),
        WEIGHTS_SHA256: "",
    }


def encode(meta: Mapping[str, Any]) -> Dict[str, str]:
    """Typed metadata -> the strings stored in the file (``kernels`` only where it is not the reference, so that a
    file of an older format keeps exactly its old records; an optional key only when ``meta`` has it)."""
    out: Dict[str, str] = {}
    if meta.get(KERNELS_KEY, "reference") != "reference":
        out[KERNELS_KEY] = str(meta[KERNELS_KEY])
    committee = COMMITTEE_KEYS if meta.get(COMMITTEE_SIZE) is not None else ()
    for key in ALL_KEYS + tuple(k for k in OPTIONAL_KEYS if meta.get(k) is not None) + committee:
        value = meta[key]
        if key == ELEMENTS:
            out[key] = " ".join(value)
        elif key in (PROVENANCE, CONFIG, COMMITTEE_MEMBERS):
            out[key] = json.dumps(value, sort_keys=True)
        else:
            out[key] = str(value)
    return out


def refuse_unreadable_version(version: int, source: str) -> None:
    """Raise ``ValueError`` for a format version this mdpot does not read (the loaders call it before torch reads
    a file's code too: code written for an unknown version may call operators this process lacks)."""
    if version not in READABLE_FORMAT_VERSIONS:
        raise ValueError(f"{source}: model format version {version} is not supported (this mdpot reads versions "
                         f"{', '.join(map(str, TORCHSCRIPT_FORMAT_VERSIONS))} of TorchScript files and "
                         f"{', '.join(map(str, AOTI_FORMAT_VERSIONS))} of AOTInductor packages)")


def decode(raw: Mapping[str, str], source: str, package: bool = False) -> Dict[str, Any]:
    """Stored strings -> typed metadata, checking every key; errors name ``source`` and the bad key.

    ``package``: the strings come from an AOTInductor package, whose format version must be one of
    ``AOTI_FORMAT_VERSIONS`` (3; 6 calling the fused kernels); a TorchScript file's must be one of
    ``TORCHSCRIPT_FORMAT_VERSIONS``.

    The C++ loader (``mdpot/lammps/src/mdpot_model.cpp``) applies the same rules in the same order, so both
    accept and refuse the same files (docs/contract.md, "Metadata").
    """
    import math
    import re

    from ..contract import FLOAT_PATTERN, INTEGER_PATTERN, MAX_NUM_LAYERS

    def refuse_constant(name: str):
        raise ValueError(f"{name} is not JSON")

    missing = [k for k in ALL_KEYS if not raw.get(k)]
    if missing:
        raise ValueError(f"{source}: missing mdpot metadata key(s) {missing}; is this a model written by `mdpot deploy`?")
    if not re.fullmatch(INTEGER_PATTERN, raw[FORMAT_VERSION_KEY]):
        raise ValueError(f"{source}: {FORMAT_VERSION_KEY} must be an integer, got {raw[FORMAT_VERSION_KEY]!r}")
    version = int(raw[FORMAT_VERSION_KEY])
    refuse_unreadable_version(version, source)
    if package and version not in AOTI_FORMAT_VERSIONS:
        raise ValueError(f"{source}: an AOTInductor package claiming model format version {version} (packages are "
                         f"version {' or '.join(map(str, AOTI_FORMAT_VERSIONS))}); deploy it again")
    if not package and version in AOTI_FORMAT_VERSIONS:
        raise ValueError(f"{source}: a TorchScript file claiming model format version {version} (TorchScript files are "
                         f"versions {', '.join(map(str, TORCHSCRIPT_FORMAT_VERSIONS))}); deploy it again")
    meta: Dict[str, Any] = {FORMAT_VERSION_KEY: version}
    for key in (ARCHITECTURE, MODEL_DTYPE, ENERGY_UNITS, LENGTH_UNITS, TORCH_VERSION, MDPOT_VERSION, WEIGHTS_SHA256):
        meta[key] = raw[key]
    if meta[ARCHITECTURE] not in ARCHITECTURE_NAMES:
        raise ValueError(f"{source}: unknown architecture {meta[ARCHITECTURE]!r}; expected one of {list(ARCHITECTURE_NAMES)}")
    if meta[MODEL_DTYPE] not in DTYPES:
        raise ValueError(f"{source}: model_dtype {meta[MODEL_DTYPE]!r} is not one of {list(DTYPES)}")
    if (meta[ENERGY_UNITS], meta[LENGTH_UNITS]) != (ENERGY_UNIT, LENGTH_UNIT):
        raise ValueError(f"{source}: units {meta[ENERGY_UNITS]}/{meta[LENGTH_UNITS]} are not supported "
                         f"(expected {ENERGY_UNIT}/{LENGTH_UNIT})")
    meta[ELEMENTS] = tuple(word for word in re.split(r"[ \t\n\r\v\f]+", raw[ELEMENTS]) if word)  # ASCII, as C++
    if not meta[ELEMENTS] or len(set(meta[ELEMENTS])) != len(meta[ELEMENTS]):
        raise ValueError(f"{source}: metadata elements must name distinct elements, got {raw[ELEMENTS]!r}")
    for key in (R_MAX, RECEPTIVE_FIELD):
        if not re.fullmatch(FLOAT_PATTERN, raw[key]):
            raise ValueError(f"{source}: metadata {key} must be a float, got {raw[key]!r}")
        meta[key] = float(raw[key])
    if not re.fullmatch(INTEGER_PATTERN, raw[NUM_LAYERS]) or not 1 <= int(raw[NUM_LAYERS]) <= MAX_NUM_LAYERS:
        raise ValueError(f"{source}: metadata {NUM_LAYERS} must be an integer from 1 to {MAX_NUM_LAYERS}, got {raw[NUM_LAYERS]!r}")
    meta[NUM_LAYERS] = int(raw[NUM_LAYERS])
    if not (math.isfinite(meta[R_MAX]) and meta[R_MAX] > 0 and math.isfinite(meta[RECEPTIVE_FIELD])
            and meta[RECEPTIVE_FIELD] >= meta[R_MAX]):
        raise ValueError(f"{source}: inconsistent cutoffs r_max={raw[R_MAX]} receptive_field={raw[RECEPTIVE_FIELD]} "
                         "(expected finite values with 0 < r_max <= receptive_field)")
    for key in (PROVENANCE, CONFIG):
        try:
            meta[key] = json.loads(raw[key], parse_constant=refuse_constant)
        except (json.JSONDecodeError, ValueError) as exc:
            raise ValueError(f"{source}: metadata {key} is not valid JSON ({exc})") from None
    kernels = raw.get(KERNELS_KEY) or "reference"  # optional: absent means reference
    if kernels not in KERNELS:
        raise ValueError(f"{source}: metadata {KERNELS_KEY} {kernels!r} is not one of {list(KERNELS)}")
    # a committee file (version 7) holds members with either kernels
    if version != COMMITTEE_FORMAT_VERSION and (kernels == "fused") != (version in FUSED_FORMAT_VERSIONS):
        what, fused = (("packages", (AOTI_FUSED_FORMAT_VERSION,)) if package
                       else ("files", TORCHSCRIPT_FUSED_FORMAT_VERSIONS))
        raise ValueError(f"{source}: metadata {KERNELS_KEY} {kernels!r} with {FORMAT_VERSION_KEY} {version} ({what} "
                         f"calling the fused kernels are version {' or '.join(map(str, fused))}, and only they); "
                         "deploy it again")
    meta[KERNELS_KEY] = kernels
    meta.update(_decode_committee(raw, source, version, refuse_constant))
    if raw.get(BYTES_PER_EDGE):  # optional: absent or empty in files deployed before it existed
        text = raw[BYTES_PER_EDGE]
        if not re.fullmatch(FLOAT_PATTERN, text) or not (math.isfinite(float(text)) and float(text) > 0):
            raise ValueError(f"{source}: metadata {BYTES_PER_EDGE} must be a positive float, got {text!r}")
        meta[BYTES_PER_EDGE] = float(text)
    return meta


def _decode_committee(raw: Mapping[str, str], source: str, version: int, refuse_constant) -> Dict[str, Any]:
    """The committee keys of a version-7 file (``docs/contract.md``, "Committee files"): both present, K an integer
    >= ``MIN_COMMITTEE_SIZE`` and the members a JSON list of K objects; in a file of another version, neither."""
    present = [k for k in COMMITTEE_KEYS if raw.get(k)]
    if version != COMMITTEE_FORMAT_VERSION:
        if present:
            raise ValueError(f"{source}: metadata {present[0]} in a file of {FORMAT_VERSION_KEY} {version} (committee "
                             f"files are version {COMMITTEE_FORMAT_VERSION}); deploy it again")
        return {}
    missing = [k for k in COMMITTEE_KEYS if k not in present]
    if missing:
        raise ValueError(f"{source}: a committee file ({FORMAT_VERSION_KEY} {version}) without metadata "
                         f"{', '.join(missing)}; deploy it again")
    import re

    from ..contract import INTEGER_PATTERN

    text = raw[COMMITTEE_SIZE]
    if not re.fullmatch(INTEGER_PATTERN, text) or int(text) < MIN_COMMITTEE_SIZE:
        raise ValueError(f"{source}: metadata {COMMITTEE_SIZE} must be an integer >= {MIN_COMMITTEE_SIZE}, got {text!r}")
    size = int(text)
    try:
        members = json.loads(raw[COMMITTEE_MEMBERS], parse_constant=refuse_constant)
    except (json.JSONDecodeError, ValueError) as exc:
        raise ValueError(f"{source}: metadata {COMMITTEE_MEMBERS} is not valid JSON ({exc})") from None
    if not isinstance(members, list) or len(members) != size or not all(isinstance(m, dict) for m in members):
        raise ValueError(f"{source}: metadata {COMMITTEE_MEMBERS} must be a JSON list of {size} objects "
                         f"({COMMITTEE_SIZE} {size})")
    return {COMMITTEE_SIZE: size, COMMITTEE_MEMBERS: members}
