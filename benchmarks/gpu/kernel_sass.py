"""What the one-row GEMVs compile to for an H100/H200, on a machine without a GPU: registers,
shared memory, and the instruction mix of the K loop per 32-bit word of weights a thread reads.

    python3 benchmarks/gpu/kernel_sass.py [w8|w4 ...]

Compile with the Triton the GPU machine runs, not only this machine's: the lent H200's image has
Triton 3.6, and its code differs (the 4-bit GEMV's loop is ~55 instructions a word there, ~38
under 3.9). A Triton of another version in a venv of its own, beside this repo's torch:
    python3 -m venv /tmp/t36 && /tmp/t36/bin/pip install --no-deps triton==3.6.0
    echo "$(ls -d .venv/lib/python3*/site-packages)" > /tmp/t36/lib/python3.*/site-packages/z.pth
    mkdir -p /tmp/p/pagoda && ln -sfn "$PWD/engine" /tmp/p/pagoda/engine
    PYTHONPATH=/tmp/p:tests /tmp/t36/bin/python benchmarks/gpu/kernel_sass.py
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from hopper_compile import compile_w4_gemv, compile_w8_row

CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
LINE = re.compile(r"\s+/\*([0-9a-f]{4})\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z0-9_.]+)(.*)")


def w8(block_n: int, block_k: int, sum_each_step: bool, stages: int) -> tuple[Any, float]:
    kernel = compile_w8_row(block_n, block_k, sum_each_step, stages)
    return kernel, block_n * block_k / 4 / (32 * 4)  # 32-bit words a thread reads a step


def w4(block_n: int, block_k: int, warps: int, stages: int) -> tuple[Any, float]:
    kernel = compile_w4_gemv(block_n, block_k, warps, stages)
    return kernel, block_n * block_k / 8 / (32 * warps)


def report(kernel: Any, words_per_thread: float) -> str:
    cubin = Path("/tmp/kernel_sass.cubin")
    cubin.write_bytes(kernel.asm["cubin"])
    sass = subprocess.run([CUOBJDUMP, "-sass", cubin], capture_output=True, text=True).stdout
    usage = subprocess.run(
        [CUOBJDUMP, "--dump-resource-usage", cubin], capture_output=True, text=True
    ).stdout
    code = [(int(m[1], 16), m[2], m[3]) for m in map(LINE.match, sass.splitlines()) if m]
    back = [  # the loop: the backward branch's target up to the branch
        (int(b[1], 16), at)
        for at, op, rest in code
        if op == "BRA" and (b := re.search(r"0x([0-9a-f]+)", rest)) and int(b[1], 16) < at
    ]
    start, end = back[-1] if back else (0, -1)
    ops = collections.Counter(op.split(".")[0] for at, op, _ in code if start <= at <= end)
    regs = re.search(r"REG:(\d+)", usage)
    loop = sum(ops.values())
    return (
        f"regs {regs[1] if regs else '?'}, shared {kernel.metadata.shared} B, loop "
        f"{loop} instructions ({loop / words_per_thread:.1f} a word): "
        + ", ".join(f"{op} {n}" for op, n in ops.most_common(10))
    )


def main() -> None:
    which = sys.argv[1:] or ["w8", "w4"]
    print(f"triton {triton.__version__}, sm_90")
    if "w8" in which:
        for tiles in ((8, 1024, False), (32, 256, True)):
            for stages in (1, 3):
                print(f"w8 row {tiles} stages {stages}: {report(*w8(*tiles, stages))}")
    if "w4" in which:
        for tiles in ((16, 2048, 8), (16, 1024, 4)):
            for stages in (1, 3):
                print(f"w4 gemv {tiles} stages {stages}: {report(*w4(*tiles, stages))}")


if __name__ == "__main__":
    main()
