"""Committee files in LAMMPS (docs/contract.md "Committee files", docs/testing.md row 39): the mean drives the
dynamics, and the spread the pair style reports (per atom through ``fix pair ... force_deviation``, globally through
``compute pair mdpot``, in ``uncertainty_file``) equals the one formed by hand from the members' separate files in
ASE, on 1, 2 and 4 ranks; identical members give zero spread and the single model's forces; ``fix halt`` and
``uncertainty_halt`` stop at the step the deviation first exceeds the threshold. ``committee first every N``: member 0
drives the dynamics bit for bit as its own file does, and the spread is formed on multiples of N and on the steps a
``fix pair`` trigger flag asks for."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np
import pytest

from lammps_helpers import ELEMENTS, atoms_from_frame
from mdpot.lammps.run import read_dump, read_log, write_data
from mdpot.testing import alloy, assert_allclose

RTOL = 1e-10  # float64 members: the spread by hand vs LAMMPS, relative (issue 15)

#: One committee block: thermo reports the four global values, the dump the mean forces and the per-atom spread.
BLOCK = """\
clear
log {name}.log
units metal
atom_style atomic
read_data s.data
pair_style mdpot device cpu {keywords}
pair_coeff * * {model} Cu Au
compute dev all pair mdpot
fix fd all pair 1 mdpot force_deviation 0 energy_deviation 0
thermo_style custom step pe c_dev[1] c_dev[2] c_dev[3] c_dev[4]
thermo_modify format float %.17g
dump d all custom 1 {name}.dump id type x y z fx fy fz f_fd[1] f_fd[2]
dump_modify d format float %.17g sort id
run 0
"""

SINGLE = """\
clear
log single.log
units metal
atom_style atomic
read_data s.data
pair_style mdpot device cpu
pair_coeff * * {model} Cu Au
dump d all custom 1 single.dump id fx fy fz
dump_modify d format float %.17g sort id
run 0
"""


@pytest.fixture(scope="session")
def committee_runs(plugin, lammps, committee_files, tmp_path_factory):
    """nprocs -> the workdir of one LAMMPS process running the committee ab (whole and in max_edges chunks), aa, and
    member a alone."""
    cache = {}

    def get(nprocs):
        if nprocs not in cache:
            workdir = tmp_path_factory.mktemp(f"committee_np{nprocs}")
            write_data(workdir / "s.data", alloy(ELEMENTS, (3, 3, 3), a=3.8, skew=0.0, strain=0.0, rattle=0.1, seed=1),
                       ELEMENTS)
            script = (BLOCK.format(name="ab", model=committee_files["ab"], keywords="uncertainty_file ab.txt")
                      + BLOCK.format(name="chunks", model=committee_files["ab"], keywords="max_edges 1000")
                      + BLOCK.format(name="aa", model=committee_files["aa"], keywords="")
                      + SINGLE.format(model=committee_files["a"]))
            run = lammps(script, workdir, nprocs=nprocs)
            cache[nprocs] = (workdir, run.output)
        return cache[nprocs]

    return get


@functools.lru_cache(maxsize=None)
def calculator(path):
    """One ASE calculator per member file for the whole session (frames of any size)."""
    from mdpot import MDPotCalculator

    return MDPotCalculator(path)


def by_hand(frame, files):
    """Each member's forces and energy from its own file in ASE at the dump's positions, and the spread."""
    atoms = atoms_from_frame(frame, ELEMENTS)
    forces, energies, atom_energies = [], [], []
    for path in files:
        member = atoms.copy()
        member.calc = calculator(path)
        forces.append(member.get_forces())
        energies.append(member.get_potential_energy())
        atom_energies.append(member.get_potential_energies())
    forces, energies, atom_energies = np.array(forces), np.array(energies), np.array(atom_energies)
    mean = forces.mean(0)
    sigma = np.sqrt(((forces - mean) ** 2).sum(-1).mean(0))
    return {"forces": mean, "sigma": sigma, "energies_std": atom_energies.std(0), "energy": energies.mean(), "energy_std": energies.std(),
            "globals": np.array([sigma.max(), sigma.min(), sigma.mean(), energies.std()])}


def thermo_globals(workdir: Path, name: str) -> np.ndarray:
    table = read_log(workdir / f"{name}.log")[-1]
    return np.array([float(table[f"c_dev[{k}]"][-1]) for k in range(1, 5)])


@pytest.mark.parametrize("nprocs", [1, 2, 4])
def test_committee_spread_matches_members(committee_runs, committee_files, nprocs):
    workdir, output = committee_runs(nprocs)
    frame = read_dump(workdir / "ab.dump")[-1]
    want = by_hand(frame, [committee_files["a"], committee_files["b"]])
    assert "mdpot: committee of 2 members: the mean drives the dynamics" in output
    assert want["sigma"].min() > 1e-4  # two different members: a real spread on every atom
    assert_allclose(np.asarray(frame["f_fd[1]"]), want["sigma"], 0.0, f"per-atom force deviation on {nprocs} ranks",
                    rtol=RTOL)
    assert want["energies_std"].min() > 1e-4
    assert_allclose(np.asarray(frame["f_fd[2]"]), want["energies_std"], 0.0,
                    f"per-atom energy deviation on {nprocs} ranks", rtol=RTOL)
    assert_allclose(thermo_globals(workdir, "ab"), want["globals"], 0.0,
                    f"compute pair mdpot c_dev[1..4] on {nprocs} ranks", rtol=RTOL)
    forces = np.column_stack([frame["fx"], frame["fy"], frame["fz"]])
    assert_allclose(forces, want["forces"], 1e-12, f"mean forces on {nprocs} ranks", rtol=RTOL)
    assert_allclose(float(read_log(workdir / "ab.log")[-1]["PotEng"][-1]), want["energy"], 0.0,
                    "mean energy", rtol=RTOL)
    # in chunks of centres (several model calls per step), each member's forces summed over the calls
    calls = [float(v) for v in re.findall(r"model_calls_per_step=(\S+)", output)]
    assert calls[1] > 2 * calls[0], calls  # blocks ab, chunks, aa, single; calls summed over the ranks
    chunks = read_dump(workdir / "chunks.dump")[-1]
    assert_allclose(np.asarray(chunks["f_fd[1]"]), want["sigma"], 0.0, f"force deviation in chunks on {nprocs} ranks",
                    rtol=RTOL)
    assert_allclose(np.asarray(chunks["f_fd[2]"]), want["energies_std"], 0.0,
                    f"energy deviation in chunks on {nprocs} ranks", rtol=RTOL)
    assert_allclose(thermo_globals(workdir, "chunks"), want["globals"], 0.0, f"c_dev in chunks on {nprocs} ranks",
                    rtol=RTOL)
    lines = (workdir / "ab.txt").read_text().splitlines()
    assert lines[1].split() == ["#", "step", "max_devi_f", "min_devi_f", "avg_devi_f", "devi_e"]
    assert len(lines) == 3 and lines[2].split()[0] == "0"
    assert_allclose(np.array(lines[2].split()[1:], dtype=float), want["globals"], 0.0, "uncertainty_file line",
                    rtol=1e-8)  # written with 9 significant digits


def test_float32_committee_on_two_ranks(plugin, lammps, committee_files, tmp_path):
    """A float32 committee: the spread, its global values and the mean forces in LAMMPS on 2 ranks equal those formed
    by hand from the float32 single files in ASE, within row 15's float32 tolerance relative to the largest member
    force (the spread is a difference of float32 forces)."""
    from mdpot.testing import tolerance

    write_data(tmp_path / "s.data", alloy(ELEMENTS, (3, 3, 3), a=3.8, skew=0.0, strain=0.0, rattle=0.1, seed=2),
               ELEMENTS)
    lammps(BLOCK.format(name="ab32", model=committee_files["ab32"], keywords=""), tmp_path, nprocs=2)
    frame = read_dump(tmp_path / "ab32.dump")[-1]
    want = by_hand(frame, [committee_files["a32"], committee_files["b32"]])
    scale = float(np.abs(want["forces"]).max()) + float(want["sigma"].max())
    tol = tolerance("lammps", "float32") * scale
    assert want["sigma"].min() > 100 * tol  # a spread well above float32 rounding
    assert_allclose(np.asarray(frame["f_fd[1]"]), want["sigma"], tol, "float32 per-atom force deviation", rtol=0.0)
    assert_allclose(thermo_globals(tmp_path, "ab32")[:3], want["globals"][:3], tol, "float32 c_dev[1..3]", rtol=0.0)
    forces = np.column_stack([frame["fx"], frame["fy"], frame["fz"]])
    assert_allclose(forces, want["forces"], tol, "float32 mean forces", rtol=0.0)


@pytest.mark.parametrize("nprocs", [1, 2, 4])
def test_identical_members_zero_spread(committee_runs, nprocs):
    workdir, _ = committee_runs(nprocs)
    frame = read_dump(workdir / "aa.dump")[-1]
    single = read_dump(workdir / "single.dump")[-1]
    assert np.all(np.asarray(frame["f_fd[1]"]) == 0.0) and np.all(np.asarray(frame["f_fd[2]"]) == 0.0)
    assert np.all(thermo_globals(workdir, "aa") == 0.0)
    for c in ("fx", "fy", "fz"):  # the mean of identical members is member 0's forces, bit for bit
        assert np.array_equal(np.asarray(frame[c]), np.asarray(single[c])), c


#: One atom dragged through its neighbours by fix move (no integrator: every other atom stays), so the committee's
#: spread grows step by step.
DRAG = """\
units metal
atom_style atomic
read_data s.data
pair_style mdpot device cpu {keywords}
pair_coeff * * {model} Cu Au
compute dev all pair mdpot
variable dev equal c_dev[1]
fix fd all pair 1 mdpot force_deviation 0
dump d all custom 1 drag.dump id f_fd
dump_modify d format float %.17g sort id
group mover id 1
fix m mover move linear 7.0 7.0 0.0
timestep 0.01
thermo_style custom step pe c_dev[1]
thermo_modify format float %.17g
thermo 1
{halt}
run 12
print "after run: step $(step)"
"""


@pytest.fixture(scope="session")
def drag_series(plugin, lammps, committee_files, tmp_path_factory):
    """(workdir, max force deviation per step 0..12, the ID of the atom with the largest deviation per step) of the
    dragged atom's run without a halt."""
    workdir = tmp_path_factory.mktemp("committee_drag")
    write_data(workdir / "s.data", alloy(ELEMENTS, (3, 3, 3), a=3.8, skew=0.0, strain=0.0, rattle=0.1, seed=1),
               ELEMENTS)
    lammps(DRAG.format(model=committee_files["ab"], keywords="", halt=""), workdir)
    table = read_log(workdir / "log.lammps")[-1]
    frames = read_dump(workdir / "drag.dump")
    argmax = [int(np.asarray(f["id"])[np.argmax(f["f_fd"])]) for f in frames]
    series = np.array([float(v) for v in table["c_dev[1]"]])
    assert_allclose(series, [np.max(f["f_fd"]) for f in frames], 0.0, "c_dev[1] vs max f_fd", rtol=1e-15)
    return workdir, series, argmax


def halt_threshold(series):
    """The first step s whose deviation exceeds 1.4 times the starting one (in distribution), before the run's last
    step, and a threshold halfway between it and the largest deviation before s."""
    step = int(np.argmax(series > 1.4 * series[0]))
    assert 0 < step < len(series) - 1, series
    return float(0.5 * (series[:step].max() + series[step])), step


def test_fix_halt_stops_on_deviation(drag_series, lammps, committee_files):
    workdir, series, _ = drag_series
    assert series.max() > 2 * series[0]  # dragged out of distribution: the members disagree more
    threshold, step = halt_threshold(series)
    run = lammps(DRAG.format(model=committee_files["ab"], keywords="",
                             halt=f"fix stop all halt 1 v_dev > {threshold!r} error continue"), workdir)
    assert f"Fix halt condition for fix-id stop met on step {step} with value" in run.output, run.output[-2000:]
    assert f"after run: step {step}" in run.output


def test_uncertainty_halt_names_step_and_atom(drag_series, lammps, committee_files):
    workdir, series, argmax = drag_series
    threshold, step = halt_threshold(series)
    run = lammps(DRAG.format(model=committee_files["ab"], keywords=f"uncertainty_halt {threshold!r}", halt=""),
                 workdir, nprocs=2, check=False)
    assert run.returncode != 0 and run.errors
    found = re.search(r"pair mdpot: uncertainty_halt: force deviation (\S+) eV/Å of atom (\d+) exceeds (\S+) eV/Å "
                      rf"on step {step} \(mean \S+ eV/Å, energy deviation \S+ eV\)", run.errors[0])
    assert found, run.errors[0]
    assert_allclose(float(found.group(1)), series[step], 0.0, "deviation in the message", rtol=1e-5)
    assert int(found.group(2)) == argmax[step]
    assert float(found.group(3)) == pytest.approx(threshold, rel=1e-5)


def test_message_passing_committee(plugin, lammps, tmp_path):
    """NequIP members (receptive field 2 r_max, no block interface in a committee file): the pair style runs the
    committee in message_passing ghosts mode, and the spread on 3 ranks is still the one formed by hand."""
    from mdpot.deploy import deploy_committee, deploy_model
    from mdpot.testing import small_model

    a, b = small_model("nequip", ELEMENTS, seed=0), small_model("nequip", ELEMENTS, seed=1)
    files = {"a": deploy_model(a, tmp_path / "a.pt").path, "b": deploy_model(b, tmp_path / "b.pt").path,
             "ab": deploy_committee([a, b], tmp_path / "ab.pt").path}
    write_data(tmp_path / "s.data", alloy(ELEMENTS, (2, 2, 3), a=3.8, skew=0.0, strain=0.0, rattle=0.1, seed=3),
               ELEMENTS)
    run = lammps(BLOCK.format(name="mp", model=files["ab"], keywords=""), tmp_path, nprocs=3)
    assert "mdpot: message_passing ghosts: ghost shell of the receptive field" in run.output
    frame = read_dump(tmp_path / "mp.dump")[-1]
    want = by_hand(frame, [files["a"], files["b"]])
    assert_allclose(np.asarray(frame["f_fd[1]"]), want["sigma"], 0.0, "message-passing per-atom force deviation",
                    rtol=RTOL)
    assert_allclose(thermo_globals(tmp_path, "mp"), want["globals"], 0.0, "message-passing c_dev[1..4]", rtol=RTOL)


def test_committee_under_hybrid_with_null_types(plugin, lammps, committee_files, tmp_path):
    """``hybrid/overlay`` with the Au type NULL for mdpot: the Cu atoms' spread is the committee's on the Cu atoms
    alone, the Au atoms have deviation 0 and are left out of the global values (2 ranks)."""
    write_data(tmp_path / "s.data", alloy(ELEMENTS, (3, 3, 3), a=3.8, skew=0.0, strain=0.0, rattle=0.1, seed=1),
               ELEMENTS)
    script = BLOCK.format(name="hyb", model="", keywords="").replace(
        "pair_style mdpot device cpu \npair_coeff * *  Cu Au",
        f"pair_style hybrid/overlay zero 4.0 mdpot device cpu\npair_coeff * * zero\n"
        f"pair_coeff * * mdpot {committee_files['ab']} Cu NULL")
    assert "hybrid/overlay" in script
    lammps(script, tmp_path, nprocs=2)
    frame = read_dump(tmp_path / "hyb.dump")[-1]
    cu = np.asarray(frame["type"]) == 1
    sub = {k: (np.asarray(v)[cu] if k in ("id", "type", "x", "y", "z") else v) for k, v in frame.items()}
    want = by_hand(sub, [committee_files["a"], committee_files["b"]])
    sigma = np.asarray(frame["f_fd[1]"])
    assert np.all(sigma[~cu] == 0.0) and cu.sum() > 0 and (~cu).sum() > 0
    assert_allclose(sigma[cu], want["sigma"], 0.0, "Cu atoms' force deviation under hybrid/overlay", rtol=RTOL)
    assert_allclose(thermo_globals(tmp_path, "hyb"), want["globals"], 0.0, "c_dev[1..4] under hybrid/overlay",
                    rtol=RTOL)


#: A short NVE run (2 fs steps, 600 K) of one model file; fix evaporate deletes 3 atoms on step 5, which reorders the
#: atoms of the ranks (the spread kept from step 4 must follow its atoms by ID). The dump has the forces and the
#: per-atom virial of every step.
NVE = """\
clear
log {name}.log
units metal
atom_style atomic
read_data s.data
pair_style mdpot device cpu {keywords}
pair_coeff * * {model} Cu Au
{observe}
velocity all create 600.0 12345 loop geom
region everywhere block INF INF INF INF INF INF
fix gone all evaporate 5 3 everywhere 4928
fix md all nve
timestep 0.002
compute sa all stress/atom NULL virial
thermo_style custom step pe press {thermo}
thermo_modify format float %.17g
thermo 1
dump d all custom 1 {name}.dump id type x y z fx fy fz c_sa[1] c_sa[2] c_sa[3] c_sa[4] c_sa[5] c_sa[6] {columns}
dump_modify d format float %.17g sort id
run 7
"""

#: committee first every 3 with a trigger fix every 2: every member is evaluated on steps 0 (setup), 2, 3, 4, 6
FIRST_STEPS = (0, 2, 3, 4, 6)
DYNAMICS = ("id", "type", "x", "y", "z", "fx", "fy", "fz") + tuple(f"c_sa[{k}]" for k in range(1, 7))
DEV = "compute dev all pair mdpot"
DEV_THERMO = "c_dev[1] c_dev[2] c_dev[3] c_dev[4] c_dev[5]"


@pytest.fixture(scope="session")
def first_mode(plugin, lammps, committee_files, tmp_path_factory):
    """(workdir, output) of one LAMMPS process on 2 ranks running NVE with member a's own file (``single``), the
    committee ab under ``committee first every 3`` with a trigger fix every 2 and an every-step fix pair without
    trigger (``first``), and in the default mean mode without (``mean0``) and with (``mean1``) trigger flags."""
    workdir = tmp_path_factory.mktemp("committee_first")
    write_data(workdir / "s.data", alloy(ELEMENTS, (3, 3, 3), a=3.8, skew=0.0, strain=0.0, rattle=0.1, seed=1),
               ELEMENTS)
    script = (NVE.format(name="single", model=committee_files["a"], keywords="", observe="", thermo="", columns="")
              + NVE.format(name="first", model=committee_files["ab"],
                           keywords="committee first every 3 uncertainty_file first.txt",
                           observe=f"{DEV}\nfix trig all pair 2 mdpot force_deviation 1\n"
                                   "fix fd all pair 1 mdpot force_deviation 0 energy_deviation 0",
                           thermo=DEV_THERMO, columns="f_trig f_fd[1] f_fd[2]")
              + NVE.format(name="mean0", model=committee_files["ab"], keywords="",
                           observe=f"{DEV}\nfix f0 all pair 2 mdpot force_deviation 0 energy_deviation 0",
                           thermo=DEV_THERMO, columns="f_f0[1] f_f0[2]")
              + NVE.format(name="mean1", model=committee_files["ab"], keywords="committee mean",
                           observe=f"{DEV}\nfix f1 all pair 2 mdpot force_deviation 1 energy_deviation 1",
                           thermo=DEV_THERMO, columns="f_f1[1] f_f1[2]"))
    return workdir, lammps(script, workdir, nprocs=2).output


def test_committee_first_is_member_0(first_mode):
    """Member 0 drives the dynamics: positions, forces, per-atom virial, energy and pressure on every step equal those
    of member 0's own file, bit for bit (the same module on the same graph: members[0] alone, or committee_forward's
    first output on the steps every member runs)."""
    workdir, output = first_mode
    assert ("mdpot: committee of 2 members: member 0 drives the dynamics (committee first every 3: all members are "
            "evaluated on steps that are multiples of 3 and on steps where 'fix ID all pair N mdpot force_deviation 1' "
            "(or energy_deviation 1) asks for them, member 0 alone on the others); the spread (c_ID[1..4] of 'compute "
            "ID all pair mdpot', per atom 'fix ID all pair N mdpot force_deviation 1') is that of the latest step the "
            "members were evaluated on") in output
    stats = re.findall(r"mdpot stats: .*", output)
    assert "committee=" not in stats[0]
    assert " steps=8 " in stats[1] and stats[1].endswith(" committee=first committee_steps=5"), stats[1]
    single, first = read_dump(workdir / "single.dump"), read_dump(workdir / "first.dump")
    assert [f["step"] for f in first] == list(range(8)) and len(first[5]["id"]) == 105  # 3 atoms evaporated
    for a, b in zip(single, first):
        for column in DYNAMICS:
            assert np.array_equal(np.asarray(a[column]), np.asarray(b[column])), (b["step"], column)
    for column in ("PotEng", "Press"):
        assert np.array_equal(read_log(workdir / "single.log")[-1][column], read_log(workdir / "first.log")[-1][column])


def test_committee_first_spread_on_its_steps(first_mode, committee_files):
    """The spread of committee first: on steps 0, 3, 6 (multiples of 3) and 2, 4 (fix pair's trigger flag) the one
    formed by hand from the members' own files at those positions (1e-10 relative), per atom and global; in between,
    that of the latest such step, kept with the atoms by ID (after 3 atoms were deleted on step 5); the
    uncertainty_file has the lines of steps 0, 3, 6."""
    workdir, _ = first_mode
    frames = read_dump(workdir / "first.dump")
    table = read_log(workdir / "first.log")[-1]
    dev = np.column_stack([table[f"c_dev[{k}]"] for k in range(1, 5)])
    for step in FIRST_STEPS:
        want = by_hand(frames[step], [committee_files["a"], committee_files["b"]])
        assert want["sigma"].min() > 1e-4
        for column, value in (("f_fd[1]", "sigma"), ("f_fd[2]", "energies_std")):
            assert_allclose(np.asarray(frames[step][column]), want[value], 0.0, f"{column} on step {step}", rtol=RTOL)
        if step % 2 == 0:
            assert_allclose(np.asarray(frames[step]["f_trig"]), want["sigma"], 0.0, f"f_trig on step {step}",
                            rtol=RTOL)
        assert_allclose(dev[step], want["globals"], 0.0, f"c_dev[1..4] on step {step}", rtol=RTOL)
    formed_on = np.array([float(v) for v in table["c_dev[5]"]])
    assert list(formed_on) == [0, 0, 2, 3, 4, 4, 6, 6], formed_on  # c_dev[5]: the step the spread was formed on
    for step, latest in ((1, 0), (5, 4), (7, 6)):
        assert np.array_equal(dev[step], dev[latest]), step
        ids = np.asarray(frames[step]["id"])
        at = np.searchsorted(np.asarray(frames[latest]["id"]), ids)
        for column in ("f_fd[1]", "f_fd[2]"):
            assert np.array_equal(np.asarray(frames[step][column]), np.asarray(frames[latest][column])[at]), step
    lines = (workdir / "first.txt").read_text().splitlines()
    assert [int(line.split()[0]) for line in lines[2:]] == [0, 3, 6]
    assert_allclose(np.array([line.split()[1:] for line in lines[2:]], dtype=float), dev[[0, 3, 6]], 0.0,
                    "uncertainty_file lines", rtol=1e-8)  # written with 9 significant digits


def test_trigger_flag_changes_nothing_in_mean_mode(first_mode):
    """committee mean evaluates every member on every step: a fix pair with trigger flags 1 gives the run and the values
    of one with flags 0, bit for bit."""
    workdir, output = first_mode
    stats = re.findall(r"mdpot stats: .*", output)
    assert stats[2].endswith(" committee=mean committee_steps=8") and stats[3].endswith(" committee=mean committee_steps=8")
    for a, b in zip(read_dump(workdir / "mean0.dump"), read_dump(workdir / "mean1.dump")):
        for column in DYNAMICS:
            assert np.array_equal(np.asarray(a[column]), np.asarray(b[column])), (b["step"], column)
        for k in (1, 2):
            assert np.array_equal(np.asarray(a[f"f_f0[{k}]"]), np.asarray(b[f"f_f1[{k}]"])), (b["step"], k)
    assert np.array_equal(read_log(workdir / "mean0.log")[-1]["c_dev[1]"], read_log(workdir / "mean1.log")[-1]["c_dev[1]"])
