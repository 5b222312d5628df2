"""Peak memory and seconds a step of teaching a project's Hydra to translate (`tweety finetune --stage translation`,
core.translating.tune: the wizard's "Teach it to translate" runs the same), on the demo project, in a child process.

The demo project is the README's (`tweety adapt` on the demo verses, a 16k Spanish vocabulary), built once into
`--work` and reused. Each measurement starts the same tuning afresh (the project's tuned Hydra and any stopped
tuning's checkpoint are forgotten first), in a fresh child that does nothing else, for `--steps` steps of 4 pairs;
its checkpoints (every quarter of a short run) are part of what is measured. Peak memory is the child's maximum
resident set size, `ru_maxrss` as `os.wait4` reports it for that child alone — what
`resource.getrusage(RUSAGE_CHILDREN)` reports when it is the only child, without the adaptation's own child processes
when the project was built in the same run. Seconds a step: from the first step's end to the last's (loading and the
first step excluded), its mean (a short run's checkpoints, every quarter of it, included) and its median (a step
alone). The target: ≤ 4 GiB peak for the 135M and 270M models on a CPU.
Usage: python benchmarks/translation_tuning_memory.py [--steps 20] [--batch-size 4] [--work DIR]
       [--source-model default|gemma] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import DEMO, ROOT

# Run in a child: the tuning alone, timed step by step; prints one JSON line.
CHILD = """
import json, shutil, statistics, sys, time
sys.path.insert(0, {root!r})
from core import translating
from core.project import Project

began = time.monotonic()
project = Project.open(sys.argv[1])
project.state.stages.pop("hydra", None)  # start from the adapted tables, as a first tuning does
project.save()
shutil.rmtree(project.hydra_checkpoint_dir, ignore_errors=True)
ends = []
progress = lambda p: (p.metrics or {{}}).get("step") and ends.append(time.monotonic())
losses = translating.tune(project, steps=int(sys.argv[2]), batch_size=int(sys.argv[3]), progress=progress)
gaps = [b - a for a, b in zip(ends, ends[1:])] or [0.0]
print(json.dumps({{"steps": len(losses), "first_step_s": ends[0] - began, "total_s": time.monotonic() - began,
                  "s_per_step": sum(gaps) / len(gaps), "median_step_s": statistics.median(gaps),
                  "first_loss": losses[0], "last_loss": losses[-1]}}))
"""


def demo_project(work: Path, source_model: str = "default") -> Path:
    """The README's demo project in `work/spanish` (`work/spanish-SOURCE` from another source model), adapted once
    (a folder whose adaptation finished is reused)."""
    from core.project import PROJECT_FILE, Project

    project = work / ("spanish" if source_model == "default" else f"spanish-{source_model}")
    if (project / PROJECT_FILE).is_file() and "init" in Project.open(project).state.stages:
        return project
    print(f"adapting the demo into {project} (once; a few minutes)", flush=True)
    if source_model == "gemma":
        from core.models import gemma_gguf

        source_model = str(gemma_gguf())
    subprocess.run(
        [
            sys.executable,
            "-m",
            "core.cli",
            "adapt",
            "--source-model",
            source_model,
            "--accept-licence",
            "--target-text",
            str(DEMO / "bible.train.es.gz"),
            "--parallel",
            str(DEMO / "bible.train.en.gz"),
            str(DEMO / "bible.train.es.gz"),
            "--heldout-text",
            str(DEMO / "bible.heldout.es.gz"),
            "--vocab-size",
            "16000",
            "--language",
            "es",
            "--out",
            str(project),
        ],
        cwd=ROOT,
        check=True,
    )
    return project


def measure(project: Path, steps: int, batch_size: int) -> dict:
    """One tuning in a fresh child: its figures and its peak resident memory."""
    with tempfile.TemporaryFile("w+") as out:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD.format(root=str(ROOT)), str(project), str(steps), str(batch_size)],
            cwd=ROOT,
            stdout=out,
        )
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode:
            raise SystemExit(f"the tuning failed (exit code {child.returncode})")
        out.seek(0)
        result = json.loads(out.read().strip().splitlines()[-1])
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the same, unless the adaptation ran
    return {**result, "peak_rss_gib": usage.ru_maxrss / 2**20, "children_peak_rss_gib": children / 2**20}  # KiB


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=4, help="pairs a step (the command line's)")
    p.add_argument(
        "--work",
        default=str(Path(tempfile.gettempdir()) / "tweety-translation-tuning"),
        help="where the demo project is built once and kept",
    )
    p.add_argument(
        "--source-model",
        default="default",
        help="default (SmolLM2-135M), gemma (Gemma 3 270M, the "
        "`gemma` extra), or any source model `tweety adapt` takes",
    )
    p.add_argument("--json", help="also write the figures to this file")
    a = p.parse_args()
    project = demo_project(Path(a.work), a.source_model)
    start = time.strftime("%Y-%m-%d %H:%M")
    result = {"date": start, "cpus": os.cpu_count(), **measure(project, a.steps, a.batch_size)}
    print(
        f"{result['steps']} steps of {a.batch_size} pairs on {result['cpus']} CPUs: peak resident memory "
        f"{result['peak_rss_gib']:.2f} GiB, {result['s_per_step']:.2f} s a step with its checkpoints "
        f"({result['median_step_s']:.2f} s the median step; first step "
        f"{result['first_step_s']:.1f} s after the start, loading included; {result['total_s']:.1f} s in all), "
        f"loss {result['first_loss']:.2f} → {result['last_loss']:.2f}"
    )
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
