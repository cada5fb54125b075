"""Packaging: environment.yml and pyproject.toml name the same packages."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
# Conda-only entries that are not Python packages of the project.
CONDA_TOOLS = {"python", "pip"}


def package_name(requirement: str) -> str:
    """Return the normalized distribution name of a requirement string."""
    name = re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def test_environment_matches_pyproject() -> None:
    """environment.yml lists the runtime and [lab] dependencies of pyproject.toml, and no others."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    expected = {package_name(req) for req in project["dependencies"]}
    expected |= {package_name(req) for req in project["optional-dependencies"]["lab"]}

    environment = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    listed = {package_name(dep) for dep in environment["dependencies"] if isinstance(dep, str)}

    assert listed - CONDA_TOOLS == expected


def test_environment_installs_the_package() -> None:
    """environment.yml installs persistentq itself from the checkout with pip."""
    environment = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    pip_entries = [dep["pip"] for dep in environment["dependencies"] if isinstance(dep, dict)]

    assert pip_entries == [["-e ."]]
