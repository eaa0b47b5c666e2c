"""Where the plugin lives and when it is rebuilt (mdpot.lammps.plugin), without compiling: a plugin folder is faked
with placeholder binaries and a build record of the real environment. The real first-use build is exercised by
tests/test_install.py; a failing one here, by a CMakeLists.txt that stops cmake at once."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from mdpot.lammps import plugin as P


@pytest.fixture
def src(tmp_path, monkeypatch) -> Path:
    """A private copy of the plugin sources (MDPOT_PLUGIN_SRC), so tests may touch and edit them."""
    folder = tmp_path / "src"
    shutil.copytree(Path(P.__file__).parent / "src", folder)
    monkeypatch.setenv("MDPOT_PLUGIN_SRC", str(folder))
    monkeypatch.delenv("MDPOT_PLUGIN_QUIET", raising=False)
    monkeypatch.delenv("MDPOT_PLUGIN_BUILD", raising=False)
    return folder


def fake_build(folder: Path, **record) -> None:
    """What a successful build leaves in ``folder``, with placeholder binaries."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / P.PLUGIN_NAME).write_bytes(b"placeholder")
    (folder / P.CHECK_NAME).write_bytes(b"placeholder")
    (folder / P.OPS_NAME).write_bytes(b"placeholder")
    src = P._source_dir()
    full = {**P._environment(), "sources_sha256": P._sources_hash(src), "sources_stat": P._sources_stat(src)}
    full.update(record)
    P._write_json(folder / P._INFO_NAME, full)


def count_hashing(monkeypatch) -> list:
    calls = []
    real = P._sources_hash

    def counted(src):
        calls.append(src)
        return real(src)

    monkeypatch.setattr(P, "_sources_hash", counted)
    return calls


def touch(path: Path, seconds: float = 10.0) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + int(seconds * 1e9)))


def test_up_to_date_costs_no_hashing_and_no_writes(src, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "plugin"
    monkeypatch.setenv("MDPOT_PLUGIN_DIR", str(folder))
    fake_build(folder)
    hashed = count_hashing(monkeypatch)

    def no_lock(*args):
        raise AssertionError("an up-to-date plugin must not take the build lock")

    monkeypatch.setattr(P, "_build_lock", no_lock)
    assert P.plugin_dir() == str(folder)
    assert P.build_plugin() == folder / P.PLUGIN_NAME
    info = P.plugin_info()
    assert info["up_to_date"] and info["stale_reason"] is None and info["path"] == str(folder / P.PLUGIN_NAME)
    assert hashed == []
    assert sorted(p.name for p in folder.iterdir()) == sorted([P.PLUGIN_NAME, P.CHECK_NAME, P.OPS_NAME,
                                                              P._INFO_NAME])
    assert capsys.readouterr().err == ""


def test_touched_sources_are_hashed_once(src, tmp_path, monkeypatch):
    """A new modification time with the same content (a git checkout) costs one hash, then the record's
    fingerprint is refreshed; a changed content or environment makes the plugin stale."""
    folder = tmp_path / "plugin"
    monkeypatch.setenv("MDPOT_PLUGIN_DIR", str(folder))
    fake_build(folder)
    hashed = count_hashing(monkeypatch)
    touch(src / "pair_mdpot.cpp")
    assert P.plugin_info()["up_to_date"] and len(hashed) == 1
    assert P.plugin_info()["up_to_date"] and len(hashed) == 1
    assert P._read_json(folder / P._INFO_NAME)["sources_stat"] == P._sources_stat(src)

    with open(src / "pair_mdpot.cpp", "a") as f:
        f.write("// edited\n")
    assert P.plugin_info()["stale_reason"] == "sources changed"
    fake_build(folder, torch_version="0.0.1")
    assert P.plugin_info()["stale_reason"] == "built against another torch_version"
    (folder / P.CHECK_NAME).unlink()
    assert P.plugin_info()["stale_reason"] == "not built"


def test_read_only_up_to_date_install_is_quiet(src, tmp_path, monkeypatch, capsys):
    """Nothing may be written (the refreshed fingerprint cannot be), and nothing may fail or print."""
    folder = tmp_path / "plugin"
    monkeypatch.setenv("MDPOT_PLUGIN_DIR", str(folder))
    fake_build(folder)
    touch(src / "CMakeLists.txt")

    def read_only(path, data):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(P, "_write_json", read_only)
    assert P.plugin_dir() == str(folder)
    assert P.main([]) == 0
    out = capsys.readouterr()
    assert (out.out, out.err) == (f"{folder / P.PLUGIN_NAME}\n", "")


def test_read_only_package_builds_into_the_user_cache(src, tmp_path, monkeypatch):
    package_lib = tmp_path / "site-packages" / "mdpot" / "lammps" / "lib"
    monkeypatch.delenv("MDPOT_PLUGIN_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(P, "_package_lib", lambda: package_lib)
    monkeypatch.setattr(P, "_writable", lambda folder: not str(folder).startswith(str(tmp_path / "site-packages")))
    env = P._environment()
    cache = P.plugin_folder()
    assert cache == P._cache_dir(env)
    assert cache.parent == tmp_path / "cache" / "mdpot" / "plugin"
    assert cache.name.startswith(f"torch{env['torch_version']}-")
    # another venv (another torch installation) gets another folder
    assert P._cache_dir({**env, "torch_dir": "/elsewhere/torch"}) != cache
    # a plugin built into the package (by whoever could write there) is used as long as it is up to date
    fake_build(package_lib)
    assert P.plugin_folder() == package_lib
    fake_build(package_lib, lammps_version="1.0")
    assert P.plugin_folder() == cache


def test_failed_first_use_build_is_reported_once(src, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "plugin"
    monkeypatch.setenv("MDPOT_PLUGIN_DIR", str(folder))
    cmakelists = (src / "CMakeLists.txt").read_text()
    (src / "CMakeLists.txt").write_text('message(FATAL_ERROR "deliberately broken")\n' + cmakelists)
    log = folder / "build.log"

    assert P.plugin_dir() == str(folder)
    err = capsys.readouterr().err.splitlines()
    assert err == [f"mdpot: building the LAMMPS plugin in {folder} (first use, about a minute)...",
                   f"mdpot: LAMMPS plugin not available: cmake failed with exit code 1; full log: {log}"]
    assert "deliberately broken" in log.read_text()

    def no_build(*args):
        raise AssertionError("a failed build must not be retried automatically")

    monkeypatch.setattr(P, "_compile", no_build)
    assert P.plugin_dir() == str(folder)
    assert capsys.readouterr().err.splitlines() == [
        f"mdpot: LAMMPS plugin not built: the last build in {folder} failed (cmake failed with exit code 1; "
        f"full log: {log}); fix the cause, then run `python -m mdpot.lammps.plugin`"]
    # a change (here: the sources fixed) allows the next automatic build again
    (src / "CMakeLists.txt").write_text(cmakelists)
    assert P._previous_failure(folder, P._environment()) is None


def test_build_on_first_use_can_be_turned_off(src, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "plugin"
    monkeypatch.setenv("MDPOT_PLUGIN_DIR", str(folder))
    monkeypatch.setenv("MDPOT_PLUGIN_BUILD", "0")
    assert P.plugin_dir() == str(folder)
    assert capsys.readouterr().err == (f"mdpot: LAMMPS plugin not built in {folder} and MDPOT_PLUGIN_BUILD=0; "
                                       "build it with `python -m mdpot.lammps.plugin`\n")
    assert not folder.exists()
