"""Loading deployed models: the file checks, the metadata and the weights digest."""
from __future__ import annotations

import copy
import hashlib
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..contract import INTEGER_PATTERN
from . import aoti
from . import metadata as md

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to evaluate: the contract module (TorchScript, AOTInductor package or eager ``Potential``) and
    its metadata.

    Frozen: :meth:`to` gives a copy on another device instead of moving this one.

    Attributes
    ----------
    module : nn.Module
        The contract module, ``forward(pos, atom_type, edge_index, edge_shift, n_local, compute_atom_virial)``
        (see ``docs/contract.md``).
    metadata : dict
        Typed metadata (:mod:`mdpot.deploy.metadata`).
    path : Path or None
        The file it was loaded from (``None`` for an in-memory eager model).
    device : torch.device
        Where ``module`` lives.
    target : dict or None
        For an AOTInductor package, what it was compiled for (``device``, ``machine``, ``isa``, ``arch_flags``).

    Example
    -------
    >>> model = load_model("cu.pt")
    >>> model.elements, model.r_max
    (('Cu',), 5.0)
    """

    module: nn.Module
    metadata: Dict[str, Any]
    path: Optional[Path] = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    target: Optional[Dict[str, Any]] = None

    @property
    def format(self) -> str:
        """``"aoti"`` (an AOTInductor package), ``"torchscript"`` or ``"eager"``."""
        from .aoti import AOTIModule

        if isinstance(self.module, AOTIModule):
            return "aoti"
        return "torchscript" if isinstance(self.module, torch.jit.ScriptModule) else "eager"

    @property
    def elements(self) -> Tuple[str, ...]:
        """Chemical symbols in model type order."""
        return self.metadata[md.ELEMENTS]

    @property
    def committee_size(self) -> int:
        """Number of members of a committee file (format version 7, ``docs/contract.md``); 1 for a single model."""
        return int(self.metadata.get(md.COMMITTEE_SIZE, 1))

    @property
    def r_max(self) -> float:
        """Neighbour cutoff, Å."""
        return self.metadata[md.R_MAX]

    @property
    def num_parameters(self) -> Optional[int]:
        """Number of weights. A package's are inside its compiled library: counted on the model its config
        describes, ``None`` where that is not an mdpot config."""
        counted = getattr(self.module, "num_parameters", None)
        if counted is not None or self.format == "aoti":
            return counted
        return sum(p.numel() for p in self.module.parameters())

    def to(self, device: Union[str, torch.device]) -> "LoadedModel":
        """This model on ``device``: itself if it is already there, otherwise a copy (this one is not moved). A
        package runs only on the device type it was compiled for (``ValueError`` otherwise)."""
        device = torch.device(device)
        if device == self.device:
            return self
        if self.format == "aoti":
            from .aoti import load_package

            source = str(self.path) if self.path is not None else "the package"
            module = load_package(self.module.package.data, source, device)
            return LoadedModel(module, dict(self.metadata), self.path, device, self.target)
        if self.metadata.get(md.KERNELS_KEY) == "fused":
            refuse_fused_off_cpu(device, str(self.path) if self.path is not None else "the model")
        return LoadedModel(copy.deepcopy(self.module).to(device), dict(self.metadata), self.path, device)

    def __call__(self, pos, atom_type, edge_index, edge_shift, n_local: int, compute_atom_virial: bool = False):
        # TorchScript's profiling optimiser measured slower on CPU and re-specialises whenever N or E change.
        with torch.jit.optimized_execution(False):
            return self.module(pos, atom_type, edge_index, edge_shift, n_local, compute_atom_virial)


def weights_digest(module: nn.Module) -> str:
    """SHA-256 over every parameter and buffer (name, dtype, shape, bytes): detects a modified file."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def load_model(path: PathLike, device: Union[str, torch.device] = "cpu") -> LoadedModel:
    """Load a deployed model onto ``device``, checking every metadata key and the weights digest.

    The kind is read from the content: a TorchScript file, or an AOTInductor package (``.pt2``), whose records,
    digest and target (device, machine architecture, CPU features) are checked before any of its code is loaded
    (``docs/contract.md``, "AOTInductor packages").

    Loading has no process-wide side effects; the ASE calculator tunes malloc for speed itself
    (:class:`mdpot.MDPotCalculator`, ``tune_malloc``).

    Raises ``FileNotFoundError`` (with the resolved path) or a one-line ``ValueError`` naming what is wrong,
    including what a file of another kind is (an mdpot training checkpoint, a nequip model) and how to deploy it.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; expected a deployed model file (written by `mdpot deploy`)")
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path.resolve()}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty (0 bytes); expected a deployed model (written by `mdpot deploy`)")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not an mdpot model (neither a TorchScript archive nor an AOTInductor package; "
                         "truncated or corrupt?)")
    try:
        with zipfile.ZipFile(path) as z:
            package = aoti.is_package(z.namelist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"{path}: not an mdpot model (a damaged zip archive: {exc})") from None
    if package:
        device = parse_device(device)
        module = aoti.load_package(path.read_bytes(), str(path), device)
        return LoadedModel(module, module.package.metadata, path, device, module.package.target)
    other = other_model_kind(path)
    if other is not None:
        raise ValueError(other)
    keys = md.ALL_KEYS + (md.KERNELS_KEY,) + md.OPTIONAL_KEYS + md.COMMITTEE_KEYS
    stored_records = _stored_records(path, keys)
    raw = {key: "" for key in keys}  # an absent record reads as empty, as torch.jit.load's _extra_files leaves it
    raw.update(stored_records)
    stored = raw[md.FORMAT_VERSION_KEY]
    if re.fullmatch(INTEGER_PATTERN, stored):
        md.refuse_unreadable_version(int(stored), str(path))
    # every key checked before torch reads (and compiles) the code; a zip without any metadata record (another
    # zip, or a TorchScript file that is not mdpot's) is left to torch.jit.load to say what it is
    meta = md.decode(raw, str(path)) if stored_records else None
    fused = stored in map(str, md.TORCHSCRIPT_FUSED_FORMAT_VERSIONS) or (
        stored == str(md.COMMITTEE_FORMAT_VERSION) and raw[md.KERNELS_KEY] == "fused")
    if fused:
        refuse_fused_off_cpu(device, str(path))  # before parse_device: says why also where CUDA is missing
    device = parse_device(device)
    if fused:
        # the file calls torch.ops.mdpot.*: they must be registered before torch reads its code
        require_fused_ops(str(path))
    try:
        module = torch.jit.load(str(path), map_location=device)
    except Exception as exc:  # torch raises RuntimeError and friends for damaged archives
        raise ValueError(f"{path}: not a loadable mdpot model ({torch_error_summary(exc)})") from None
    if meta is None:
        meta = md.decode(raw, str(path))
    digest = weights_digest(module)
    if digest != meta[md.WEIGHTS_SHA256]:
        raise ValueError(f"{path}: weights do not match the digest recorded at deploy "
                         f"({digest[:12]}… != {meta[md.WEIGHTS_SHA256][:12]}…): the file was modified after `mdpot deploy`")
    if meta[md.FORMAT_VERSION_KEY] == md.PAIR_FORMAT_VERSION:
        why = block_interface_missing(module, meta[md.NUM_LAYERS])
        if why:
            raise ValueError(f"{path}: model format version {md.PAIR_FORMAT_VERSION} is for message-passing "
                             f"TorchScript files with a short-range pair term, but {why}; deploy it again")
    if meta[md.FORMAT_VERSION_KEY] == md.COMMITTEE_FORMAT_VERSION and not hasattr(module, md.COMMITTEE_METHOD):
        raise ValueError(f"{path}: a committee file (model format version {md.COMMITTEE_FORMAT_VERSION}) without "
                         f"its {md.COMMITTEE_METHOD} method; deploy it again")
    module.eval()
    return LoadedModel(module, meta, path, device)


def refuse_fused_off_cpu(device: Union[str, torch.device], source: str) -> None:
    """A one-line ``ValueError`` when a TorchScript file calling mdpot's fused kernels (CPU only) is asked to run on
    another device; a device name torch does not know is left to :func:`parse_device`."""
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError, ValueError):
        return
    if kind != "cpu":
        raise ValueError(f"{source}: calls mdpot's fused kernels ({md.KERNELS_KEY} fused), which run on the CPU only, "
                         f"not on {device}; deploy it with --kernels reference to run it there")


def require_fused_ops(source: str) -> None:
    """Register mdpot's fused operators (:func:`mdpot.ops.load_ops`) before a file that calls them (format version 5, 6
    or 8) is loaded; a one-line ``ValueError`` naming ``source``, the library and the remedy when they cannot be."""
    from ..ops import OpsUnavailableError, load_ops

    try:
        load_ops()
    except OpsUnavailableError as exc:
        raise ValueError(f"{source}: calls mdpot's fused kernels ({md.KERNELS_KEY} fused), which this process cannot "
                         f"load: {exc}") from None


def _stored_records(path: Path, keys: Sequence[str]) -> Dict[str, str]:
    """The metadata records of ``keys`` that a TorchScript archive holds (``<archive>/extra/<key>``, as
    ``torch.jit.save`` writes ``_extra_files``), as text, read without loading the code; ``{}`` for a damaged zip."""
    wanted, found = set(keys), {}
    try:
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                parts = name.split("/")
                if len(parts) == 3 and parts[1] == "extra" and parts[2] in wanted:
                    found[parts[2]] = z.read(name).decode("utf-8", errors="replace")
    except (zipfile.BadZipFile, OSError):
        return {}
    return found


def block_interface_missing(module: nn.Module, num_layers: int) -> str:
    """Why ``module`` lacks the block interface of a version-4 file (``docs/message_passing_exchange.md``), in one
    phrase, or ``""``: a method of ``BLOCK_METHODS`` missing, ``mp_num_blocks()`` or the feature widths not matching
    ``num_layers``, or a method of ``PAIR_METHODS`` missing. The C++ runner's rule and phrases
    (``Model::Impl::check_exchange``): a version-4 file for which this is not ``""`` is refused by both loaders."""
    missing = [name for name in md.BLOCK_METHODS if not hasattr(module, name)]
    if len(missing) == len(md.BLOCK_METHODS):
        return "its module has no block-by-block (mp_*) methods (strictly local, wrapped, or deployed before them)"
    if missing:
        return f"its module lacks {', '.join(missing)}"
    missing_pair = [name for name in md.PAIR_METHODS if not hasattr(module, name)]
    try:
        blocks = int(module.mp_num_blocks())
        widths = list(module.mp_feature_widths())
        if not missing_pair:
            bool(module.mp_has_pair())
    except Exception as exc:  # a TorchScript method that throws: torch.jit.Error and friends
        return f"cannot read its mp_* methods ({torch_error_summary(exc)})"
    if blocks != num_layers or len(widths) != blocks:
        return f"mp_num_blocks() = {blocks} and {len(widths)} feature widths do not match num_layers {num_layers}"
    if missing_pair:
        return f"its module lacks {', '.join(missing_pair)}"
    return ""


def parse_device(device: Union[str, torch.device]) -> torch.device:
    """``device`` as a ``torch.device``; a one-line ``ValueError`` for a name torch does not know or CUDA without
    a CUDA build or GPU."""
    if isinstance(device, torch.device):
        parsed = device
    elif isinstance(device, (str, int)) and not isinstance(device, bool):
        try:
            parsed = torch.device(device)
        except (RuntimeError, ValueError):
            raise ValueError(f"unknown device {device!r}; expected 'cpu', 'cuda' or 'cuda:N'") from None
    else:
        raise TypeError(f"device must be a string like 'cpu' or 'cuda:0', or a torch.device, got {device!r}")
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {parsed} requested but CUDA is not available")
    return parsed


def torch_error_summary(exc: BaseException) -> str:
    """The first sentence of a torch error, without torch's advice about checkpoints (``weights_only``, "your
    checkpoint file is corrupted"), which does not apply to mdpot's files."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    for marker in (". This is an internal miniz error", ". If you are seeing this error", " In PyTorch 2.6",
                   ". Re-running `torch.load`", " weights_only"):
        cut = text.find(marker)
        if cut > 0:
            text = text[:cut].rstrip(" .,;:")
    return text


def other_model_kind(path: Path) -> Optional[str]:
    """A one-line explanation when ``path`` is another kind of model file mdpot knows (an mdpot training
    checkpoint, a nequip model), with the command that deploys it; ``None`` for a deployed mdpot model or a file
    of no known kind (the caller reports those)."""
    import shlex

    from ..interop.nequip import KIND_LABELS, MDPOT, MDPOT_CHECKPOINT, detect_source_kind

    try:
        kind = detect_source_kind(path)
    except ValueError:
        return None
    if kind == MDPOT:
        return None
    what = "an mdpot training checkpoint, not a deployed model" if kind == MDPOT_CHECKPOINT else \
        f"a {KIND_LABELS[kind]}, not a deployed mdpot model"
    return f"{path}: is {what}; deploy it with `mdpot deploy {shlex.quote(str(path))} -o model.pt`"
