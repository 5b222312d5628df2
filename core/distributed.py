"""Fine-tuning on several processes, GPUs or machines: PyTorch's `torchrun` starts and watches the processes, FSDP
shards the trainable tensors, and core.finetune's one training loop runs in each of them (see core.finetune.ranks).

What is here is the launching, for the three ways a run starts:
- `launch()` (`tweety finetune --nproc N`, the wizard's "Run on this machine"): writes a job file, runs torchrun as a
  child process, relays rank 0's progress to the caller's progress callback, turns a cancel into a graceful stop
  (every rank checkpoints the same step) and a failed or killed rank into a TweetyError that names it;
- `write_job()` (`tweety finetune --print-launch`): the same job file plus `launch.sh` and a SLURM example, for a
  cluster; nothing runs (docs/cluster.md);
- `main()` (`python -m core.distributed JOB.json [--resume]`): what torchrun starts in each process.

The job file (`job.json`) holds the absolute model/data/output paths and every FinetuneSettings field, so a job runs
exactly the settings it was written with. Rank 0 talks to `launch()` through lines on its stdout that start with
`EVENT` (JSON: progress, result, error); everything else the processes print goes to `OUT/training/launch.log`.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import logging
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from core.errors import TweetyError
from core.finetune import (
    TRAINING,
    FinetuneResult,
    FinetuneSettings,
    StepRecord,
    checkpoint_dir,
    checkpoint_state,
    finetune,
)
from core.jobs import Cancelled, CancelToken, Progress, ProgressFn, atomic_dir
from core.models import DEFAULT_MODEL

log = logging.getLogger(__name__)

EVENT = "@tweety "  # prefix of the JSON lines rank 0 writes for `launch()`
ROOT = Path(__file__).resolve().parent.parent  # the folder holding `core`: on the workers' PYTHONPATH
DEFAULT_PORT = 29500


@dataclass(frozen=True)
class LaunchSettings:
    nproc: int = 1  # training processes per machine: one per GPU (on the CPU: a few, each with some cores)
    nnodes: int = 1  # machines; each runs the same command, they meet at `rdzv`
    rdzv: str = ""  # HOST:PORT where the machines meet (a free port on one of them); needed when nnodes > 1

    @property
    def world(self) -> int:
        return self.nproc * self.nnodes

    def check(self, settings: FinetuneSettings) -> None:
        problems = []
        if self.nproc < 1 or self.nnodes < 1:
            problems.append("the number of processes and of machines must be at least 1")
        elif settings.batch_size % self.world:
            problems.append(
                f"the batch size ({settings.batch_size}) must be a multiple of the number of training "
                f"processes ({self.world}): each takes an equal slice of every batch"
            )
        if self.rdzv and not re.fullmatch(r"\[?[\w.:-]+\]?:\d+", self.rdzv):
            problems.append(f"the rendezvous {self.rdzv!r} is not HOST:PORT")
        if self.nnodes > 1 and not self.rdzv:
            problems.append("several machines need a rendezvous HOST:PORT (--rdzv) that all of them can reach")
        if problems:
            raise TweetyError("bad launch settings: " + "; ".join(problems), fix="change the settings")


# --- the job and its command line -----------------------------------------------------------------------------------


def job_config(
    model_dir: str | Path,
    text: str | Path,
    heldout: str | Path | None,
    out_dir: str | Path,
    settings: FinetuneSettings,
    launch_settings: LaunchSettings,
) -> dict:
    """What `job.json` holds: absolute paths (every machine must see them at the same place) and all settings."""

    def absolute(path):
        return None if path is None else str(Path(path).expanduser().resolve())

    return {
        "model": str(model_dir) if str(model_dir) == DEFAULT_MODEL else absolute(model_dir),
        "text": absolute(text),
        "heldout": absolute(heldout),
        "out": absolute(out_dir),
        "settings": asdict(settings),
        "launch": asdict(launch_settings),
    }


def rendezvous_id(out: str) -> str:
    """The same on every machine of a job (they meet by this id), different for other runs."""
    return "tweety-" + hashlib.sha256(out.encode()).hexdigest()[:12]


def torchrun_command(job_file: Path, job: dict, *, resume: bool = False, python: str = sys.executable) -> list[str]:
    """`python -m torch.distributed.run …` starting `python -m core.distributed JOB.json` in every process."""
    launch_settings = LaunchSettings(**job["launch"])
    cmd = [python, "-m", "torch.distributed.run", "--nproc-per-node", str(launch_settings.nproc)]
    if launch_settings.nnodes == 1 and not launch_settings.rdzv:
        cmd.append("--standalone")  # a private rendezvous on a free local port
    else:
        cmd += [
            "--nnodes",
            str(launch_settings.nnodes),
            "--rdzv-backend",
            "c10d",
            "--rdzv-endpoint",
            launch_settings.rdzv,
            "--rdzv-id",
            rendezvous_id(job["out"]),
        ]
    cmd += ["-m", "core.distributed", str(job_file)]
    return cmd + (["--resume"] if resume else [])


def write_job(
    folder: str | Path,
    model_dir: str | Path,
    text: str | Path,
    heldout: str | Path | None,
    out_dir: str | Path,
    settings: FinetuneSettings,
    launch_settings: LaunchSettings,
    *,
    resume: bool = False,
) -> tuple[Path, str]:
    """A job folder for a cluster: `job.json`, `launch.sh` (the exact torchrun command; run it on each machine, add
    --resume to continue) and `slurm.sbatch` (srun + torchrun, rendezvous on the first node). Runs nothing. Returns
    the folder and the command (as the shell reads it)."""
    settings.check()
    launch_settings.check(settings)
    folder = Path(folder).expanduser().resolve()
    job = job_config(model_dir, text, heldout, out_dir, settings, launch_settings)
    cmd = torchrun_command(folder / "job.json", job, resume=resume)
    n = launch_settings
    port = n.rdzv.rsplit(":", 1)[1] if n.rdzv else str(DEFAULT_PORT)
    srun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "$SLURM_NNODES",
        "--nproc-per-node",
        str(n.nproc),
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"$head:{port}",
        "--rdzv-id",
        "tweety-$SLURM_JOB_ID",
        "-m",
        "core.distributed",
        str(folder / "job.json"),
    ] + (["--resume"] if resume else [])
    gpus = f"#SBATCH --gpus-per-node={n.nproc}\n" if settings.device != "cpu" else ""
    with atomic_dir(folder) as tmp:
        (tmp / "job.json").write_text(json.dumps(job, indent=1) + "\n")
        (tmp / "launch.sh").write_text(
            "#!/bin/sh\n"
            "# Written by `tweety finetune --print-launch` (Tweety Studio); see docs/cluster.md.\n"
            f"# Run it on each of the {n.nnodes} machine(s); "
            "`./launch.sh --resume` continues from the last checkpoint.\n"
            f"export PYTHONPATH={shlex.quote(str(ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}\n"
            f'exec {shlex.join(cmd)} "$@"\n'
        )
        (tmp / "slurm.sbatch").write_text(
            "#!/bin/bash\n"
            "# Written by `tweety finetune --print-launch` (Tweety Studio); see docs/cluster.md. Submit with\n"
            "# `sbatch slurm.sbatch`; `sbatch slurm.sbatch --resume` continues from the last checkpoint.\n"
            "#SBATCH --job-name=tweety-finetune\n"
            f"#SBATCH --nodes={n.nnodes}\n"
            "#SBATCH --ntasks-per-node=1\n"
            f"{gpus}"
            f"#SBATCH --output={folder}/slurm-%j.out\n"
            "# One torchrun per node (srun starts them); they meet on the first node of the allocation.\n"
            'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)\n'
            f"export PYTHONPATH={shlex.quote(str(ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}\n"
            f'srun {" ".join(_shell_word(w) for w in srun)} "$@"\n'
        )
        for name in ("launch.sh", "slurm.sbatch"):
            (tmp / name).chmod(0o755)
    return folder, shlex.join(cmd)


def _shell_word(word: str) -> str:
    """Quoted for the shell, leaving $VARIABLES to expand."""
    return f'"{word}"' if "$" in word else shlex.quote(word)


# --- running it here ------------------------------------------------------------------------------------------------


def launch(
    model_dir: str | Path,
    text: str | Path,
    heldout: str | Path | None,
    out_dir: str | Path,
    settings: FinetuneSettings = FinetuneSettings(),
    launch_settings: LaunchSettings = LaunchSettings(),
    *,
    resume: bool = False,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> FinetuneResult:
    """`finetune()` with `launch_settings.nproc` processes on this machine (and the same command on the other
    machines of a multi-machine job): the same arguments, progress, cancel and resume contract and result. A pause
    request is not honoured (the processes cannot pause together); cancel and resume instead."""
    settings.check()
    launch_settings.check(settings)
    if getattr(sys, "frozen", False):  # the installed bundle has no Python to start torchrun's processes with
        raise TweetyError(
            "training with several processes needs a Python installation of Tweety Studio",
            fix="train with one process here, or prepare a cluster job (--print-launch) and run it "
            "where `pip install tweety-studio` is installed",
        )
    with tempfile.TemporaryDirectory(prefix="tweety-job-") as tmp:
        job_file = Path(tmp) / "job.json"
        job = job_config(model_dir, text, heldout, out_dir, settings, launch_settings)
        job_file.write_text(json.dumps(job, indent=1))
        cmd = torchrun_command(job_file, job, resume=resume) + ["--events"]
        run = _Run(cmd, launch_settings)
        if progress is not None:
            progress(Progress("Fine-tuning", 0, None, f"starting {launch_settings.world} processes with torchrun"))
        try:
            run.relay(progress, cancel)
        finally:
            run.stop()
    out = Path(job["out"])
    run.save_log(out)
    if run.errors:
        rank, e = min(run.errors, key=lambda pair: pair[0])  # all ranks refuse a run alike; rank 0 says it as usual
        raise TweetyError(
            e["what"] if rank == 0 else f"rank {rank}: {e['what']}", path=e["path"], line=e["line"], fix=e["fix"]
        )
    if run.cancelled:
        raise Cancelled()
    if run.returncode == 0 and run.result is not None:
        r = run.result
        return FinetuneResult(**{**r, "out": Path(r["out"]), "curve": [StepRecord(**s) for s in r["curve"]]})
    raise _failure(run, out, settings)


class _Run:
    """torchrun as a child process: its stdout read for rank 0's events, its stderr kept for the log."""

    def __init__(self, cmd: list[str], launch_settings: LaunchSettings):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        # torchrun would give each process 1 thread; on the CPU they share the machine's cores instead.
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // launch_settings.nproc)))
        env["PYTHONUNBUFFERED"] = "1"
        self.cmd = cmd
        log.info("launching: %s", shlex.join(cmd))
        # Its own session: a Ctrl-C in the terminal reaches only us, and we decide what torchrun is told.
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
        self.lines: queue.Queue = queue.Queue()
        self.output: collections.deque[str] = collections.deque(maxlen=5000)
        self.errors: list[tuple[int, dict]] = []
        self.result: dict | None = None
        self.cancelled = False
        self.returncode: int | None = None
        self._stderr = threading.Thread(target=self._keep_stderr, daemon=True)
        self._stderr.start()
        threading.Thread(target=self._read_stdout, daemon=True).start()

    def _read_stdout(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _keep_stderr(self) -> None:
        for line in self.proc.stderr:
            self.output.append(line.rstrip("\n"))
            log.debug("torchrun: %s", line.rstrip())

    def relay(self, progress: ProgressFn | None, cancel: CancelToken | None) -> None:
        """Until torchrun ends: events to the callback (in the caller's thread, as a plain run calls it), a cancel
        to torchrun as SIGTERM — it hands it to every process, which all stop after the same step and checkpoint."""
        while True:
            if cancel is not None and cancel.cancelled and not self.cancelled:
                self.cancelled = True
                log.info("cancel: asking every training process to stop after this step")
                self.proc.send_signal(signal.SIGTERM)
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                continue
            if line is None:
                break
            start = line.find(EVENT)
            try:
                event, end = json.JSONDecoder().raw_decode(line, start + len(EVENT)) if start >= 0 else (None, 0)
            except json.JSONDecodeError:
                event = None
            if event is None:
                self.output.append(line)
                continue
            # Another process's output glued to our line (a print of its own, cut by the pipe): kept for the log.
            if (line[:start] + line[end:]).strip():
                self.output.append(line[:start] + line[end:])
            if event["kind"] == "progress" and progress is not None:
                progress(Progress(**event["progress"]))
            elif event["kind"] == "result":
                self.result = event["result"]
            elif event["kind"] == "error":
                self.errors.append((event["rank"], event["error"]))
        self.returncode = self.proc.wait()
        self._stderr.join(5)

    def stop(self) -> None:
        """On the way out: normally torchrun has ended. If not, we are leaving on an abort (a second Ctrl-C, an error
        in the progress callback): it is killed at once with every process it started. Checkpoints are replaced
        atomically, so the last complete one stays loadable."""
        if self.proc.poll() is not None:
            return
        for child in _children(self.proc.pid):
            try:
                os.killpg(child, signal.SIGKILL)  # torchrun starts each worker in a session of its own
            except OSError:
                pass
        self.proc.kill()
        self.proc.wait()

    def save_log(self, out: Path) -> None:
        training = out / TRAINING
        if training.is_dir():
            (training / "launch.log").write_text(f"$ {shlex.join(self.cmd)}\n" + "\n".join(self.output) + "\n")


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


_FAILED_RANK = re.compile(r"host\s*:\s*(\S+)\s*\n\s*rank\s*:\s*(\d+) \(local_rank: \d+\)\s*\n\s*exitcode\s*:\s*(-?\d+)")


def _failure(run: _Run, out: Path, settings: FinetuneSettings) -> TweetyError:
    """torchrun failed: name the rank that failed and say what the checkpoint offers. From torchrun's failure report:
    first a rank killed by a signal other than the SIGTERM/SIGINT torchrun itself sends the others once one fails
    (they also fail on their own, having lost a peer), else the report's root cause (its first failure, to the
    second)."""
    text = "\n".join(run.output)
    failed = [(int(rank), int(code), host) for host, rank, code in _FAILED_RANK.findall(text)]
    root = _FAILED_RANK.findall(text.split("Root Cause", 1)[1]) if "Root Cause" in text else []
    culprits = (
        [f for f in failed if f[1] < 0 and -f[1] not in (signal.SIGTERM, signal.SIGINT)]
        or [(int(rank), int(code), host) for host, rank, code in root]
        or failed
    )
    if culprits:
        rank, code, host = culprits[0]
        how = (
            f"was killed by {signal.Signals(-code).name}"
            if code < 0 and -code in signal.valid_signals()
            else f"exited with code {code}"
        )
        others = sorted({r for r, _, _ in failed} - {rank})
        what = f"training process rank {rank} (on {host}) {how}"
        if others:
            what += f"; rank{'s' if len(others) > 1 else ''} {', '.join(map(str, others))} stopped with it"
    else:
        what = f"the training processes failed (torchrun exit code {run.returncode})"
    logfile = out / TRAINING / "launch.log"
    where = f"every process's output is in {logfile}" if logfile.exists() else "run with -v to see torchrun's output"
    try:
        state = checkpoint_state(out)
    except TweetyError:
        state = None
    if state is not None and not state.finished:
        return TweetyError(
            f"{what}. The last checkpoint (step {state.step} of {settings.steps}) in {checkpoint_dir(out)} is loadable",
            fix=f"run the same command with --resume to continue from it ({where})",
        )
    return TweetyError(f"{what}, before the first checkpoint", fix=f"start the run again ({where})")


# --- what torchrun runs in each process -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """One training process: `python -m core.distributed JOB.json [--resume] [--events]` under torchrun. SIGTERM or
    SIGINT (torchrun passes on what it gets: a cancel from `launch()`, Ctrl-C, SLURM's scancel or time limit) stops
    every rank after the current step with a checkpoint. Repeats are ignored: torchrun and SLURM may both deliver
    the same stop, and the checkpoint must not be cut short (SIGKILL, which torchrun sends 30 s after its SIGTERM
    and SLURM after its KillWait, still ends the process; the last complete checkpoint stays loadable)."""
    p = argparse.ArgumentParser(prog="python -m core.distributed", description=main.__doc__)
    p.add_argument("job", help="job.json written by `tweety finetune --print-launch` or --nproc")
    p.add_argument("--resume", action="store_true", help="continue the run in the job's output folder")
    p.add_argument("--events", action="store_true", help="report as JSON lines on stdout (for `launch()`)")
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    _quiet_transformers()
    rank = int(os.environ.get("RANK", "0"))
    job = json.loads(Path(a.job).read_text())
    cancel = CancelToken()

    def stop(_signum, _frame):
        cancel.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    emit = _emit if a.events else _print_progress
    try:
        # from_dict: a job file written by another version still runs (unknown settings dropped with a warning).
        settings = FinetuneSettings.from_dict(job["settings"])
        result = finetune(
            job["model"],
            job["text"],
            job["heldout"],
            job["out"],
            settings,
            resume=a.resume,
            progress=emit if rank == 0 else None,
            cancel=cancel,
        )
    except TweetyError as e:
        if a.events:
            _emit_raw(
                {
                    "kind": "error",
                    "rank": rank,
                    "error": {
                        "what": e.what,
                        "path": None if e.path is None else str(e.path),
                        "line": e.line,
                        "fix": e.fix,
                    },
                }
            )
        print(f"error (rank {rank}): {e}", file=sys.stderr)
        return 2
    except Cancelled:
        if rank == 0:
            print(
                f"stopped; the last finished step is checkpointed in {job['out']} — run again with --resume to "
                "continue",
                file=sys.stderr,
            )
        return 130
    if rank == 0:
        if a.events:
            _emit_raw({"kind": "result", "result": {**asdict(result), "out": str(result.out)}})
        else:
            print(
                f"{result.steps} steps, {result.tokens_per_s:,.0f} tokens/s; model written to {result.out}",
                file=sys.stderr,
            )
    return 0


def _emit(p: Progress) -> None:
    _emit_raw({"kind": "progress", "progress": asdict(p)})


def _emit_raw(event: dict) -> None:
    # One write() of the whole line: every process shares torchrun's stdout pipe, and a pipe keeps a write of up to
    # 4 KiB in one piece, where print's separate writes of text and newline could interleave with another rank's.
    sys.stdout.flush()
    os.write(sys.stdout.fileno(), (EVENT + json.dumps(event) + "\n").encode())


_last_stage = None


def _print_progress(p: Progress) -> None:
    """Plain lines for a cluster's log file (no progress bars): each step and evaluation, and each new stage."""
    global _last_stage
    if p.metrics or p.stage != _last_stage:
        _last_stage = p.stage
        total = f"/{p.total:g}" if p.total is not None else ""
        print(f"{p.stage} {p.done:g}{total}: {p.message}", file=sys.stderr, flush=True)


def _quiet_transformers() -> None:
    """transformers' own progress bars and warnings are noise in N interleaved process logs."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


if __name__ == "__main__":
    sys.exit(main())
