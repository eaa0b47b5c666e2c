"""LAMMPS integration: build the ``mdpot`` pair-style plugin (:mod:`.plugin`), write inputs from ASE Atoms,
run ``lmp`` and read its outputs (:mod:`.run`).

Importing this package is free (no torch, numpy or ASE): the ``lmp`` launcher imports
``mdpot.lammps.plugin`` at every start. Names load from their module on first use.
"""

_PLUGIN = ("PluginBuildError", "build_plugin", "plugin_dir", "plugin_info", "plugin_path")
_RUN = ("LammpsBox", "LammpsError", "LammpsRun", "atoms_from_frame", "lammps_box", "read_dump", "read_edges",
        "read_log", "run_lammps", "write_data")

__all__ = [*_PLUGIN, *_RUN]


def __getattr__(name):
    if name in _PLUGIN:
        from . import plugin

        return getattr(plugin, name)
    if name in _RUN:
        from . import run

        return getattr(run, name)
    raise AttributeError(f"module 'mdpot.lammps' has no attribute {name!r}")
