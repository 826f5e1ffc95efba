"""Maps the folders engine/ and operator/ onto the import names pagoda.engine and pagoda.operator.

The folder `operator/` must never be importable as `operator` (a standard-library module), so the
packages are listed under their mapped names; package-dir in pyproject.toml says where each lives.
"""
from setuptools import find_packages, setup


def mapped(folder: str, name: str) -> list[str]:
    return [name] + [f"{name}.{sub}" for sub in find_packages(folder)]


setup(packages=mapped("engine", "pagoda.engine") + mapped("operator", "pagoda.operator"))
