"""schemathesis against a real `pagoda serve`, from the /openapi.json it serves: thousands of
generated requests (fixed seed) across every operation; none may answer 5xx or break the schema
it declares.

Where the time goes: the server. Uncapped, an accepted completion with `max_tokens: null` fills
the context: a run of 250 cases an operation spent 327 of its 424 s in 112 such completions (a
loaded 2-core machine). So every request is capped at 1 new token (vLLM's
--override-generation-config) in a context of 32 (room for a chat with its own system message).
Even so, the chat cases of schemathesis's `coverage` phase (669 boundary values) took 351 s of
server time at load 15, so only the random `fuzzing` phase runs: CASES_PER_OPERATION for each
operation that takes input (five: >= 2,000 cases), two workers so that one generates cases while
the other's request is in the server.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from server_process import ServerProcess

pytestmark = pytest.mark.integration

CASES_PER_OPERATION = 400
SEED = 20261203


def test_fuzzing_the_served_spec_finds_no_5xx_and_no_schema_violation(tmp_path):
    server = ServerProcess(
        "--max-model-len",
        "32",
        "--max-num-seqs",
        "4",
        "--override-generation-config",
        '{"max_new_tokens": 1}',
    ).wait_healthy()
    try:
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "schemathesis.cli",
                "run",
                f"{server.url}/openapi.json",
                "--phases",
                "fuzzing",
                "--checks",
                "not_a_server_error,response_schema_conformance,status_code_conformance",
                "--max-examples",
                str(CASES_PER_OPERATION),
                "--seed",
                str(SEED),
                "--workers",
                "2",
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
