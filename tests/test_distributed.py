"""Fine-tuning on two CPU processes through the real torchrun (gloo backend, FSDP) on a tiny Llama (3 layers, hidden
64, the 800-token Spanish tokenizer; the outer-layers stage with gradient accumulation, so tied embeddings, whole
layers, the final norm and a frozen layer are all in play): the same weights as one process with the same global
batch, a killed rank
fails the launch with a message naming it while the last checkpoint stays loadable and resumable, a cancel stops
every rank at one checkpointed step, and `--print-launch` writes a job folder whose `launch.sh` runs."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import demo_lines, write_lines
from safetensors.torch import load_file

from core.distributed import LaunchSettings, launch
from core.errors import TweetyError
from core.finetune import FinetuneSettings, checkpoint_state, finetune
from core.jobs import Cancelled, CancelToken

SETTINGS = FinetuneSettings(
    stage="outer-layers",
    outer_layers=1,
    steps=16,
    block_size=32,
    batch_size=4,
    grad_accum=2,
    warmup_steps=2,
    eval_every=8,
    eval_max_bytes=1500,
    checkpoint_every=2,
    lr=2e-3,
)
TWO = LaunchSettings(nproc=2)
# Adam divides by the running gradient size, so rounding differences of the all-reduced gradients move a weight by
# up to ~lr × a few ulps-relative per step; 1e-4 is 5% of one step at lr 2e-3.
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def tiny(module_tmp, target_tokenizer, pairs):
    """A random tiny Llama (tied embeddings, like SmolLM2) with the target tokenizer, the texts, and the
    one-process reference run."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from core.init import save_adapted

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(target_tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    )
    d = module_tmp("distributed")
    save_adapted(LlamaForCausalLM(config), target_tokenizer, d / "model")
    write_lines(d / "train.es", pairs[1])
    write_lines(d / "heldout.es", demo_lines("bible.heldout.es.gz", 10))
    d.joinpath("one").mkdir()
    # Sharded runs update every vocabulary row and end uncalibrated (core.finetune.loop.AbsentRows and the final
    # calibration are for one process): the one-process run they are compared with does the same.
    one = replace(SETTINGS, absent_rows_stay=False, calibration=0.0)
    finetune(d / "model", d / "train.es", d / "heldout.es", d / "one", one)
    return d


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def max_difference(a: Path, b: Path) -> float:
    x, y = weights(a), weights(b)
    assert set(x) == set(y)
    return max(float((x[n].float() - y[n].float()).abs().max()) for n in x)


def curve(folder: Path) -> list[dict]:
    return json.loads((folder / "training" / "log.json").read_text())["curve"]


def rank_pid(mark: str, rank: int) -> int | None:
    """The training process of `rank` among the processes started with TWEETY_TEST_RUN=mark."""
    for proc in Path("/proc").iterdir():
        try:
            env = (proc / "environ").read_bytes().split(b"\0") if proc.name.isdigit() else []
        except OSError:
            continue
        if f"TWEETY_TEST_RUN={mark}".encode() in env and f"RANK={rank}".encode() in env:
            return int(proc.name)
    return None


def test_two_processes_reach_the_weights_of_one(tiny, tmp_path):
    events = []
    result = launch(
        tiny / "model", tiny / "train.es", tiny / "heldout.es", tmp_path / "two", SETTINGS, TWO, progress=events.append
    )
    difference = max_difference(tiny / "one", tmp_path / "two")
    print(f"2 processes vs 1: max weight difference {difference:.2e}")
    assert difference < TOLERANCE
    # The embedding (= the tied head), the first and last layers and the final norm trained; the middle layer is
    # saved untouched.
    before, after = weights(tiny / "model"), weights(tmp_path / "two")
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed == {n for n in before if ".layers.1." not in n} and len(changed) == 20
    # Rank 0 alone reports: one event per step, the same losses and held-out figures as one process.
    steps = [e.metrics for e in events if e.metrics and "loss" in e.metrics]
    assert [m["step"] for m in steps] == list(range(1, 17))
    one = curve(tiny / "one")
    assert [m["loss"] for m in steps] == pytest.approx([r["loss"] for r in one], abs=1e-4)
    assert [r.heldout_bpb for r in result.curve if r.heldout_bpb] == pytest.approx(
        [r["heldout_bpb"] for r in one if r["heldout_bpb"]], abs=1e-4
    )
    assert result.steps == 16 and result.resumed_from == 0 and result.final_bpb < result.initial_bpb
    assert (tmp_path / "two" / "training" / "launch.log").read_text().startswith("$ ")


def test_killed_rank_fails_clearly_and_the_run_resumes(tiny, tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setenv("TWEETY_TEST_RUN", str(out))
    killed = []

    def kill_rank_1(p):
        if p.metrics and p.metrics.get("step", 0) >= 2 and not killed:
            pid = rank_pid(str(out), 1)
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            killed.append(p.metrics["step"])

    with pytest.raises(TweetyError, match=r"rank 1 \(on \S+\) was killed by SIGKILL") as failure:
        launch(tiny / "model", tiny / "train.es", tiny / "heldout.es", out, SETTINGS, TWO, progress=kill_rank_1)
    state = checkpoint_state(out)
    assert 2 <= state.step < SETTINGS.steps and not state.finished
    message = str(failure.value)
    assert f"step {state.step} of 16" in message and str(out / "training" / "checkpoint") in message
    assert "--resume" in message and "launch.log" in message
    load_file(out / "training" / "checkpoint" / "trainable.safetensors")  # loadable
    # A refused run is refused by every rank with the one-process message (rank 0 checks, the others are told).
    with pytest.raises(TweetyError, match=f"unfinished fine-tuning run \\(step {state.step} of 16\\)"):
        launch(tiny / "model", tiny / "train.es", tiny / "heldout.es", out, SETTINGS, TWO)

    # Resumed on two processes and cancelled: every rank stops after one step, which is checkpointed.
    cancel = CancelToken()
    stop_at = state.step + 2

    def cancel_later(p):
        if p.metrics and p.metrics.get("step", 0) >= stop_at:
            cancel.cancel()

    with pytest.raises(Cancelled):
        launch(
            tiny / "model",
            tiny / "train.es",
            tiny / "heldout.es",
            out,
            SETTINGS,
            TWO,
            resume=True,
            progress=cancel_later,
            cancel=cancel,
        )
    stopped = checkpoint_state(out)
    assert stop_at <= stopped.step < SETTINGS.steps and not stopped.finished

    # Finished by the job folder's launch.sh (the torchrun command `--print-launch` writes), resuming again.
    from core.cli import main

    assert (
        main(
            [
                "finetune",
                "--model",
                str(tiny / "model"),
                "--text",
                str(tiny / "train.es"),
                "--heldout",
                str(tiny / "heldout.es"),
                "--out",
                str(out),
                "--stage",
                "outer-layers",
                "--outer-layers",
                "1",
                "--steps",
                "16",
                "--block-size",
                "32",
                "--batch-size",
                "4",
                "--grad-accum",
                "2",
                "--warmup",
                "2",
                "--eval-every",
                "8",
                "--eval-max-bytes",
                "1500",
                "--checkpoint-every",
                "2",
                "--lr",
                "2e-3",
                "--nproc",
                "2",
                "--print-launch",
                str(tmp_path / "job"),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "job" / "job.json").read_text())["settings"] == asdict(SETTINGS)
    done = subprocess.run(["sh", str(tmp_path / "job" / "launch.sh"), "--resume"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert checkpoint_state(out).finished
    assert max_difference(tiny / "one", out) < TOLERANCE
    assert [r["loss"] for r in curve(out)] == pytest.approx([r["loss"] for r in curve(tiny / "one")], abs=1e-4)


def test_print_launch_writes_the_job_folder_and_runs_nothing(tiny, tmp_path, capsys):
    from core.cli import main

    args = [
        "finetune",
        "--model",
        str(tiny / "model"),
        "--text",
        str(tiny / "train.es"),
        "--out",
        str(tmp_path / "out"),
        "--batch-size",
        "8",
        "--steps",
        "50",
        "--nproc",
        "4",
        "--nnodes",
        "2",
        "--rdzv",
        "node1:29400",
    ]
    assert main([*args, "--print-launch", str(tmp_path / "job")]) == 0
    printed = capsys.readouterr().out
    job = tmp_path / "job"
    config = json.loads((job / "job.json").read_text())
    assert config["settings"] == asdict(FinetuneSettings(batch_size=8, steps=50))
    assert config["model"] == str(tiny / "model") and config["out"] == str(tmp_path / "out")
    assert config["launch"] == {"nproc": 4, "nnodes": 2, "rdzv": "node1:29400"}
    command = (job / "launch.sh").read_text().splitlines()[-1]
    for flags in (
        "-m torch.distributed.run",
        "--nproc-per-node 4",
        "--nnodes 2",
        "--rdzv-backend c10d",
        "--rdzv-endpoint node1:29400",
        "--rdzv-id tweety-",
        f"-m core.distributed {job / 'job.json'}",
    ):
        assert flags in command and flags in printed
    sbatch = (job / "slurm.sbatch").read_text()
    assert "#SBATCH --nodes=2" in sbatch and "srun " in sbatch
    assert '--rdzv-endpoint "$head:29400"' in sbatch and "--nproc-per-node 4" in sbatch
    assert not (tmp_path / "out").exists()  # nothing ran
    # Launch settings that cannot work are refused before anything starts.
    assert main([*args[:-4], "--nproc", "3", "--print-launch", str(tmp_path / "job3")]) == 2
    assert "multiple of the number of training processes (3)" in capsys.readouterr().err
    assert main([*args[:-2], "--print-launch", str(tmp_path / "job4")]) == 2
    assert "rendezvous" in capsys.readouterr().err
