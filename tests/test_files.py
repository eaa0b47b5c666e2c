"""mdpot._files: atomic writes, temporary files of dead writers removed (never a live writer's), the folder lock
between real processes, portable paths; and no git-tracked file of the repository holds an absolute path of the
machine that made it."""
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from mdpot._files import (LOCK_NAME, FolderLock, FolderLockedError, atomic_write, atomic_write_text, hostname,
                          portable_path, remove_stale_temps, temp_path)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dead_pid():
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


def test_atomic_write_replaces_or_leaves_untouched(tmp_path):
    target = tmp_path / "metrics.csv"
    atomic_write_text(target, "old\n")
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_write(target) as tmp:
            assert tmp == tmp_path / f".metrics.csv.{os.getpid()}@{hostname()}.tmp"
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]


def test_only_dead_writers_temps_are_removed(tmp_path, dead_pid):
    name = "model.pt"
    dead = [tmp_path / f".{name}.{dead_pid}@{hostname()}.tmp", tmp_path / f".{name}.{dead_pid}.tmp"]  # 0.1's name
    alive = [tmp_path / f".{name}.{os.getppid()}@{hostname()}.tmp",  # a live writer on this host
             tmp_path / f".{name}.{dead_pid}@another-host.tmp",  # cannot be checked from here
             tmp_path / f".other.pt.{dead_pid}.tmp", tmp_path / f".{name}.x.{dead_pid}.tmp"]  # not model.pt's
    for p in dead + alive:
        p.write_bytes(b"partial")
    atomic_write_text(tmp_path / name, "complete")  # the next write of model.pt cleans up after the dead
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name] + [p.name for p in alive])
    assert remove_stale_temps(tmp_path, [name]) == []


def test_a_deploy_removes_a_killed_deploys_temp(tmp_path, dead_pid):
    from mdpot.deploy import deploy_model
    from mdpot.testing import small_model

    out = tmp_path / "cu.pt"
    leftover = out.with_name(f".cu.pt.{dead_pid}.tmp")  # what `kill -9` during a deploy of mdpot 0.1 left
    live = out.with_name(f".cu.pt.{os.getppid()}@{hostname()}.tmp")
    leftover.write_bytes(b"PK")
    live.write_bytes(b"PK")
    deploy_model(small_model("allegro", ("Cu",), seed=0), out, dtype="float32")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["cu.pt", live.name])
    # the archive inside is named "archive", not after the temporary file (which names the pid and host)
    assert {n.split("/")[0] for n in zipfile.ZipFile(out).namelist()} == {"archive"}


HOLD = """
import sys, time
from mdpot._files import FolderLock
lock = FolderLock(sys.argv[1], what="training").acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_lock_held_by_another_process(tmp_path):
    folder = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "held\n"
        record = json.loads((folder / LOCK_NAME).read_text())
        assert record["pid"] == proc.pid and record["host"] == hostname()
        with pytest.raises(FolderLockedError) as exc:
            FolderLock(folder, what="training").acquire()
        assert str(exc.value) == (f"{folder} is in use by another training (pid {proc.pid} on host {hostname()}, "
                                  f"started {record['started']}); wait for it to finish or use another folder")
    finally:
        proc.kill()
        proc.wait()
    # killed: the kernel dropped its lock, its record stays; the next holder takes over and says so
    said = []
    with FolderLock(folder, what="training", log=said.append):
        assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert said == [f"taking over the lock on {folder}: the training that held it (pid {proc.pid} on host "
                    f"{hostname()}, started {record['started']}) is no longer running"]
    assert not (folder / LOCK_NAME).exists()


def test_stale_lock_of_a_dead_pid_and_a_lock_from_another_host(tmp_path, dead_pid):
    folder = tmp_path / "run"
    folder.mkdir()
    stale = {"pid": dead_pid, "host": hostname(), "started": "2026-01-02T03:04:05+00:00"}
    (folder / LOCK_NAME).write_text(json.dumps(stale))
    said = []
    with FolderLock(folder, what="training", log=said.append):
        pass
    assert said == [f"taking over the lock on {folder}: the training that held it (pid {dead_pid} on host "
                    f"{hostname()}, started 2026-01-02T03:04:05+00:00) is no longer running"]
    remote = dict(stale, host="node7")
    (folder / LOCK_NAME).write_text(json.dumps(remote))
    with pytest.raises(FolderLockedError) as exc:
        FolderLock(folder, what="training").acquire()
    assert str(exc.value) == (f"{folder} is locked by a training on another host (pid {dead_pid} on host node7, "
                              f"started 2026-01-02T03:04:05+00:00) that cannot be checked from here; if it is no "
                              f"longer running, delete {folder / LOCK_NAME}")
    assert json.loads((folder / LOCK_NAME).read_text()) == remote  # left as it was


def test_a_lock_that_made_its_folder_removes_it_when_empty(tmp_path):
    with FolderLock(tmp_path / "a" / "run"):
        assert (tmp_path / "a" / "run" / LOCK_NAME).is_file()
    assert not (tmp_path / "a").exists()
    with FolderLock(tmp_path / "kept"):
        (tmp_path / "kept" / "best.ckpt").write_bytes(b"")
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["best.ckpt"]


def test_portable_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert portable_path("runs/cu") == "runs/cu"
    assert portable_path(tmp_path / "runs" / "cu" / "best.ckpt") == "runs/cu/best.ckpt"
    assert portable_path(tmp_path) == "."
    assert portable_path("/elsewhere/data/train.xyz") == "train.xyz"
    assert portable_path("/elsewhere/data/train.xyz", base="/elsewhere") == "data/train.xyz"
    assert temp_path(tmp_path / "x.pt") == tmp_path / f".x.pt.{os.getpid()}@{hostname()}.tmp"


# -------------------------------------------------------------------------------- the repository's own files
#: Absolute-path prefixes of build machines (spelled so that this file does not contain them).
MACHINE_PREFIXES = [f"/{d}/".encode() for d in ("work", "root", "home", "tmp", "Users")]


def _contents(path: Path):
    """(where, bytes) of a file, and of every member if it is a zip archive (.pt, .ckpt, .npz; stored or deflated)."""
    data, label = path.read_bytes(), path.name
    yield label, data
    if data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                yield f"{label}:{member}", archive.read(member)


def _machine_paths(path: Path):
    needles = MACHINE_PREFIXES + [str(REPO).encode() + b"/"]
    return [f"{where}: {needle.decode()}" for where, data in _contents(path) for needle in needles if needle in data]


def test_deployed_files_hold_no_machine_path(deployed_torchscript):
    """TorchScript keeps the paths of the Python sources it compiled (debug_pkl, deflated): made relative."""
    assert _machine_paths(deployed_torchscript.path) == []


def test_wrapped_nequip_files_hold_no_machine_path(nequip_wrapped):
    for path in nequip_wrapped.values():
        assert _machine_paths(Path(path)) == []


def test_no_tracked_file_holds_a_build_machine_path():
    try:
        listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    files = [REPO / name for name in listed.decode().split("\0") if name]
    found = [f"{path.relative_to(REPO).parent}/{hit}" for path in files if path.is_file()  # not deleted
             for hit in _machine_paths(path)]
    assert len(files) > 100 and not found, found
