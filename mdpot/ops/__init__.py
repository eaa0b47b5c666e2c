"""Fused C++ kernels of the channel-wise tensor product (``torch.ops.mdpot.*``).

The operators live in ``libmdpot_ops.so`` (sources: ``mdpot/lammps/src/mdpot_ops.cpp``), built and installed
beside the LAMMPS plugin by :mod:`mdpot.lammps.plugin` with the same staleness rules:

- ``mdpot::tp_scatter`` — NequIP's convolution: the weighted channel-wise product of the neighbours' features
  with the edge's spherical harmonics, summed into the centres (``ChannelwiseTensorProduct.convolve``);
- ``mdpot::tp_gather`` — Allegro's product of pair features with the centre's environment
  (``ChannelwiseTensorProduct.gather_product``);

each with a hand-written backward (first-order gradients in eager Python and TorchScript; double backward is
refused with one line, so training uses the reference implementation). Their loops run on torch's threads
(``torch.ops.mdpot.parallel_threads()`` says how many). The library also registers
``torch.classes.mdpot.PackageRunner``, through which :mod:`mdpot.deploy.aoti` runs CPU packages so that calls from
several Python threads overlap.

:func:`load_ops` loads the library into this process (building it first if needed); :func:`set_kernels` switches
every tensor product of a model between the fused operators and the pure-torch reference.

Example
-------
>>> from mdpot.ops import load_ops, set_kernels
>>> load_ops()                          # doctest: +SKIP
True
>>> set_kernels(model, "fused")         # doctest: +SKIP
3
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch
from torch import nn

__all__ = ["KERNELS", "OpsUnavailableError", "load_ops", "ops_loaded", "ops_library", "set_kernels", "kernels_of"]

#: The implementations a model's tensor products can use: ``"reference"`` (pure torch, differentiable twice,
#: what training uses) and ``"fused"`` (the C++ operators of this module).
KERNELS = ("reference", "fused")
_OPS = ("tp_scatter", "tp_scatter_shared", "tp_gather")


class OpsUnavailableError(RuntimeError):
    """The fused kernels cannot be loaded (not built, failed to build, or a library torch cannot load)."""


def ops_loaded() -> bool:
    """Whether this process has the ``mdpot`` operators registered (no loading, no building)."""
    try:
        return all(hasattr(torch.ops.mdpot, name) for name in _OPS)
    except (AttributeError, RuntimeError):
        return False


def ops_library(build: bool = True) -> Path:
    """Path of ``libmdpot_ops.so``, built with the plugin first if it is missing or out of date and ``build``.

    Raises :class:`OpsUnavailableError` (one line) when it is not built and cannot be (``build=False``,
    ``MDPOT_PLUGIN_BUILD=0``, no compiler).
    """
    from ..lammps import plugin

    env = plugin._environment()
    folder, reason = plugin._locate(env)
    if reason is not None:
        if not build or os.environ.get("MDPOT_PLUGIN_BUILD", "1") == "0":
            raise OpsUnavailableError(f"mdpot's fused kernels ({plugin.OPS_NAME}) are {reason} in {folder}; build "
                                      "them with `python -m mdpot.lammps.plugin`, or use --kernels reference")
        try:
            folder = plugin.build_plugin().parent
        except (plugin.PluginBuildError, OSError) as exc:
            raise OpsUnavailableError(f"cannot build mdpot's fused kernels ({plugin.OPS_NAME}): "
                                      f"{plugin._one_line(exc)}; use --kernels reference") from None
    return folder / plugin.OPS_NAME


def load_ops(build: bool = True, required: bool = True) -> bool:
    """Register the ``torch.ops.mdpot`` operators in this process (once; later calls cost nothing).

    Builds the library with the plugin on first use (about a minute) unless ``build`` is False or
    ``MDPOT_PLUGIN_BUILD=0``. Returns True when the operators are available; when they are not, raises
    :class:`OpsUnavailableError` with one line saying why, or returns False if ``required`` is False.
    """
    if ops_loaded():
        _register_fakes()
        return True
    try:
        library = ops_library(build)
        try:
            torch.ops.load_library(str(library))
        except (OSError, RuntimeError) as exc:
            text = " ".join(str(exc).split()) or type(exc).__name__
            raise OpsUnavailableError(f"cannot load mdpot's fused kernels from {library}: {text}; use --kernels "
                                      "reference") from None
        if not ops_loaded():
            raise OpsUnavailableError(f"{library} does not register the operators {', '.join(_OPS)}; rebuild it with "
                                      "`python -m mdpot.lammps.plugin --force`, or use --kernels reference")
    except OpsUnavailableError:
        if required:
            raise
        return False
    _register_fakes()
    return True


_FAKES_REGISTERED = False


def _register_fakes() -> None:
    """Shape-only (fake) kernels, so that ``make_fx``/``torch.export`` trace the operators with symbolic sizes (the
    first step of an AOTInductor package, ``docs/contract.md``). Masked gradients of the backward operators are
    empty ``[0]`` tensors, as the C++ kernels return them."""
    global _FAKES_REGISTERED
    if _FAKES_REGISTERED:
        return

    def grads(tensors, mask):
        return tuple(t.new_empty(t.shape) if wanted else t.new_empty((0,)) for t, wanted in zip(tensors, mask))

    @torch.library.register_fake("mdpot::tp_scatter")
    def _tp_scatter(x, y, w, centre, neighbour, num_targets, term_ptr, term_i, term_j, term_c, comp_path, unit_y):
        return x.new_empty((len(term_ptr) - 1, num_targets, x.shape[2]))

    @torch.library.register_fake("mdpot::tp_scatter_backward")
    def _tp_scatter_backward(grad_out, x, y, w, centre, neighbour, term_ptr, term_i, term_j, term_c, comp_path, unit_y,
                             output_mask):
        return grads((x, y, w), output_mask)

    @torch.library.register_fake("mdpot::tp_scatter_shared")
    def _tp_scatter_shared(x, y, r, w, dw, row, centre, neighbour, num_targets, term_ptr, term_i, term_j, term_c,
                           comp_path, unit_y):
        return x.new_empty((len(term_ptr) - 1, num_targets, x.shape[2]))

    @torch.library.register_fake("mdpot::tp_scatter_shared_backward")
    def _tp_scatter_shared_backward(grad_out, x, y, w, dw, row, centre, neighbour, term_ptr, term_i, term_j, term_c,
                                    comp_path, unit_y, output_mask):
        return grads((x, y, x.new_empty(row.shape)), output_mask)

    @torch.library.register_fake("mdpot::tp_gather")
    def _tp_gather(x, env, centre, term_ptr, term_i, term_j, term_c):
        return x.new_empty((len(term_ptr) - 1, x.shape[1], x.shape[2]))

    @torch.library.register_fake("mdpot::tp_gather_backward")
    def _tp_gather_backward(grad_out, x, env, centre, term_ptr, term_i, term_j, term_c, output_mask):
        return grads((x, env), output_mask)

    _FAKES_REGISTERED = True


def set_kernels(model: nn.Module, kernels: str, shared_radial: bool = True) -> int:
    """Make every :class:`~mdpot.nn.ChannelwiseTensorProduct` of ``model`` use ``kernels`` (``"fused"`` or
    ``"reference"``), in place; returns how many there are. ``"fused"`` loads the operators first
    (:func:`load_ops`). Set it before ``torch.jit.script``: a scripted model keeps the kernels it was scripted with.

    With ``"fused"`` and ``shared_radial``, a NequIP model in eval mode also evaluates its radial networks once per
    distinct edge length (``mdpot::distinct``, ``mdpot::tp_scatter_shared``; format version 8); committee files
    and AOTInductor packages keep the per-edge networks (``shared_radial=False``)."""
    from ..nn.equivariant import ChannelwiseTensorProduct

    if kernels not in KERNELS:
        raise ValueError(f"unknown kernels {kernels!r}; expected one of {list(KERNELS)}")
    if kernels == "fused":
        load_ops()
    count = 0
    for module in model.modules():
        if isinstance(module, ChannelwiseTensorProduct):
            module.fused = kernels == "fused"
            count += 1
        if hasattr(module, "memo_radial"):
            module.memo_radial = kernels == "fused" and shared_radial
    return count


def kernels_of(model: nn.Module) -> Optional[str]:
    """``"fused"`` or ``"reference"``: what the tensor products of an eager ``model`` use (None if it has none;
    ``ValueError`` if they differ)."""
    from ..nn.equivariant import ChannelwiseTensorProduct

    seen = {bool(m.fused) for m in model.modules() if isinstance(m, ChannelwiseTensorProduct)}
    if not seen:
        return None
    if len(seen) > 1:
        raise ValueError("the model mixes fused and reference tensor products")
    return "fused" if seen.pop() else "reference"
