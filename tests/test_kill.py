"""A process killed at a random moment (SIGKILL: no cleanup runs) never leaves an output that loads half-right, and
running the same command again finishes the job: a real `tweety adapt` and a real `tweety finetune` (resumed from
its checkpoint when it had written one)."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time

from conftest import write_lines
from core.layout import PROJECT_FILE


def start(*args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "core.cli", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def kill_after(process: subprocess.Popen, seconds: float) -> bool:
    """SIGKILL after `seconds` (True), unless it ended first (False)."""
    try:
        process.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return True


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "core.cli", *map(str, args)], capture_output=True, text=True, timeout=900
    )


def test_killed_adapt_and_finetune_rerun_to_a_complete_result(tmp_path, pairs):
    from core.models import load_model
    from core.project import Project

    seed = int(time.time())
    moment = random.Random(seed)
    en, es = write_lines(tmp_path / "en.txt", pairs[0][:300]), write_lines(tmp_path / "es.txt", pairs[1][:300])
    out = tmp_path / "adapted"
    adapt = ("adapt", "--target-text", es, "--parallel", en, es, "--vocab-size", 700, "--out", out)
    killed = kill_after(start(*adapt), moment.uniform(2.0, 8.0))
    # Killed or not, the folder is either absent or a complete project (it appears by one rename at the end).
    assert not out.exists() or (out / PROJECT_FILE).exists() and (out / "model" / "config.json").exists(), seed
    r = run(*adapt)
    assert r.returncode == 0, f"seed {seed}, killed {killed}: {r.stderr[-2000:]}"
    project = Project.open(out)
    assert project.next_stage == "finetune"

    tuned = tmp_path / "tuned"
    finetune = (
        "finetune",
        "--model",
        out,
        "--text",
        es,
        "--steps",
        6,
        "--block-size",
        32,
        "--batch-size",
        2,
        "--checkpoint-every",
        2,
        "--out",
        tuned,
    )
    killed = kill_after(start(*finetune), moment.uniform(5.0, 25.0))
    # A model appears only when training ended (a kill can still land after that, while the process exits): then it
    # is the complete model, else the command is run again, resuming from its checkpoint if it wrote one.
    if not (tuned / "config.json").exists():
        checkpointed = (tuned / "training" / "checkpoint" / "state.json").exists()
        r = run(*finetune, *(["--resume"] if killed and checkpointed else []))
        assert r.returncode == 0, f"seed {seed}, killed {killed}, checkpoint {checkpointed}: {r.stderr[-2000:]}"
    model, tokenizer = load_model(tuned)
    assert model.config.vocab_size == len(tokenizer) == 700
