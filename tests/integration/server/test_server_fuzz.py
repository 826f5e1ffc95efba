"""schemathesis against a real `pagoda serve`, from the /openapi.json it serves: thousands of
generated requests (fixed seed) across every operation; none may answer 5xx or break the schema
it declares. A context of 16 tokens keeps every generation short (most generated prompts do not fit: a 400)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from server_process import ServerProcess

pytestmark = [pytest.mark.integration, pytest.mark.fuzz]

CASES_PER_OPERATION = 250  # 9 operations
SEED = 20261203


def test_fuzzing_the_served_spec_finds_no_5xx_and_no_schema_violation(tmp_path):
    server = ServerProcess("--max-model-len", "16", "--max-num-seqs", "4").wait_healthy()
    try:
        run = subprocess.run(
            [
                str(Path(sys.executable).parent / "st"),
                "run",
                f"{server.url}/openapi.json",
                "--checks",
                "not_a_server_error,response_schema_conformance,status_code_conformance",
                "--max-examples",
                str(CASES_PER_OPERATION),
                "--seed",
                str(SEED),
                "--generation-database",
                "none",
                "--request-timeout",
                "60",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
    finally:
        server.terminate()
    report = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, report + server.output()
    cases = re.search(r"(\d[\d,]*) generated", report)
    assert cases and int(cases.group(1).replace(",", "")) >= 2000, report
