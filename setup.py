"""Packaging beside pyproject.toml: two source trees in one distribution.

`functions/leadflow` is what Lambda runs; `infra/` is the package `leadflow_infra`
(the local stack, the CLI, the demo, the development receivers, the template
readers). setuptools' declarative config cannot map a folder to a package of
another name, and a built distribution must carry `template.yaml` (the local stack
reads it), so both are said here.
"""

from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildWithTemplate(build_py):
    """Ship template.yaml inside leadflow_infra, so `pip install .` then `leadflow serve`
    works outside a checkout."""

    def run(self):
        super().run()
        target = Path(self.build_lib) / "leadflow_infra" / "template.yaml"
        target.parent.mkdir(parents=True, exist_ok=True)
        self.copy_file(str(ROOT / "template.yaml"), str(target))


setup(
    package_dir={"": "functions", "leadflow_infra": "infra"},
    packages=find_packages("functions", include=["leadflow", "leadflow.*"])
    + ["leadflow_infra"] + [f"leadflow_infra.{name}" for name in find_packages("infra")],
    cmdclass={"build_py": BuildWithTemplate},
)
