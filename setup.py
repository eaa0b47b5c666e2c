"""Build hook only; the package is described in pyproject.toml.

``mdpot demo`` needs two files from ``examples/`` (``mdpot.demo.DEMO_FILES``): the LAMMPS input and the shipped
Allegro Cu checkpoint. They stay where they are in the repository; a wheel carries copies under ``mdpot/_demo/``.
An editable install reads them from the checkout instead.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

DEMO_FILES = ("in.nve", "models/allegro-cu-emt/model.ckpt")  # keep equal to mdpot.demo.DEMO_FILES


class BuildPyWithDemo(build_py):
    def run(self):
        super().run()
        if self.editable_mode:
            return
        root = Path(__file__).resolve().parent
        for name in DEMO_FILES:
            target = Path(self.build_lib) / "mdpot" / "_demo" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / "examples" / name, target)


setup(cmdclass={"build_py": BuildPyWithDemo})
