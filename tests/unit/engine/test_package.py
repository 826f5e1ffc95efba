"""The package as tools and users see it: one import name, declared exports, torch on demand."""

import subprocess
import sys
from pathlib import Path

import pagoda.engine

REPO = Path(__file__).resolve().parents[3]


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_the_folder_name_does_not_import():
    done = run_python("import engine", cwd=REPO)
    assert done.returncode != 0
    assert "the engine imports as pagoda.engine, not engine" in done.stderr


def test_every_declared_export_resolves_and_the_package_alone_loads_no_torch():
    code = (
        "import sys, pagoda.engine as e; "
        "assert 'torch' not in sys.modules; "
        "missing = [n for n in e.__all__ if getattr(e, n).__name__ != n]; "
        "assert not missing, missing"
    )
    done = run_python(code, cwd=REPO.parent)
    assert done.returncode == 0, done.stderr
    assert set(pagoda.engine.__all__) == set(pagoda.engine._EXPORTS)
