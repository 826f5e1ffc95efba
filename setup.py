"""Maps the folders engine/, operator/ and gateway/ onto the import names pagoda.engine,
pagoda.operator and pagoda.gateway.

The folder `operator/` must never be importable as `operator` (a standard-library module): it has
no __init__.py, so from the repository root (on sys.path under `python -m ...`) the name `operator`
still finds the standard library first; as pagoda.operator it imports through the mapping below.
"""

from setuptools import find_packages, setup


def mapped(folder: str, name: str) -> list[str]:
    return [name] + [f"{name}.{sub}" for sub in find_packages(folder)]


setup(
    packages=mapped("engine", "pagoda.engine")
    + mapped("operator", "pagoda.operator")
    + mapped("gateway", "pagoda.gateway")
)
