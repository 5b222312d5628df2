"""The prepared GPU script (benchmarks/gpu.sh) with its tiny settings on the CPU, so that it cannot rot before a GPU
machine is lent: it must run to the end and print every figure it exists for."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NUMBER = r"[0-9][0-9,]*(?:\.[0-9]+)?"


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed (benchmarks/gpu.sh is a bash script)")
def test_gpu_script_runs_tiny_on_the_cpu(tmp_path):
    out = tmp_path / "gpu-tiny"
    env = {**os.environ, "PY": sys.executable, "CUDA_VISIBLE_DEVICES": ""}  # the CPU, even on a GPU machine
    r = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--tiny", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    printed = r.stdout + r.stderr
    assert r.returncode == 0, printed[-3000:]
    # 1. our loop against transformers.Trainer, as a ratio
    assert re.search(rf"transformers\.Trainer, same settings: {NUMBER} tokens/s → ours is {NUMBER}×", printed)
    assert re.search(rf"smollm2: ours {NUMBER} tokens/s, Trainer {NUMBER} tokens/s \({NUMBER}x\)", printed)
    # 2. the held-out BPB curve: a point after step 0 (minutes, step, bits per byte)
    assert re.search(rf"^\s+{NUMBER}\s+[1-9][0-9]*\s+{NUMBER}$", printed, re.M)
    assert re.search(rf"held-out BPB {NUMBER} -> {NUMBER}", printed)
    # 3. the aligners, in seconds
    assert re.search(rf"torch \(cpu\)\s+{NUMBER} s", printed)
    assert re.search(rf"fast_align \(CPU\)\s+{NUMBER} s", printed)
    for name in ("finetune-smollm2.json", "align.json"):
        assert (out / name).is_file()
    from core import models

    if models.gemma_gguf() is not None:  # the second model's curve too, where the gemma extra is installed
        assert re.search(rf"gemma: ours {NUMBER} tokens/s", printed) and (out / "finetune-gemma.json").is_file()
