"""Fine-tuning on the demo data: held-out bits per byte before and after the `embeddings` stage, the BPB-vs-minutes
curve, and the training throughput of our loop against a plain `transformers.Trainer` with the same settings (same
model, frozen parameters, packed blocks, batch, learning-rate schedule, clipping, bf16 on CUDA), in the same process.

Throughput is steady state, the same way for both loops: tokens over time from the end of the first fifth of the
steps to the end of the last (the first steps are slow while memory pools grow; evaluation is excluded).
Usage: python benchmarks/finetune.py --model demo-output/model-transtok [--steps 300] [--trainer-steps 30] [--json F]
Lighter runs (benchmarks/gpu.sh --tiny, on the CPU): --trainer-runs 1 (the baseline only before our loop),
--full-eval-bytes N (the final table on the first N held-out bytes instead of all of them).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from common import DEMO, ROOT

from core import finetune, models, resources
from core.evaluate import bits_per_byte
from core.jobs import MARKER
from core.models import load_model


class Printer:
    """Progress as lines on the terminal (`make demo` runs this for minutes): every sub-step, then every tenth of
    the steps, with the time so far and the run's own estimate of the time left."""

    def __init__(self, start: float):
        self.start, self.last = start, ("", "")

    def __call__(self, p) -> None:
        head = p.message.split(" · ")[0]
        step = (p.metrics or {}).get("step")
        tenth = max(1, int(p.total or 1) // 10)
        if p.metrics and "loss" in p.metrics:
            if step % tenth and step != p.total:
                return
        elif (p.stage, head.split(":")[0]) == self.last:
            return
        self.last = (p.stage, head.split(":")[0])
        eta = (p.metrics or {}).get("eta_s")
        left = f" · about {eta / 60:.1f} min left" if eta else ""
        print(f"  {time.monotonic() - self.start:6.0f} s  {p.stage}: {p.message}{left}", flush=True)


def trainer_tokens_per_s(model_dir: Path, text: Path, s: finetune.FinetuneSettings, steps: int, device: str) -> float:
    """A plain Trainer run (run_clm style: packed blocks, labels = inputs) with our stage's parameters trainable."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    model, tok = load_model(model_dir)
    names = set(finetune.trainable_names(model, s))
    for name, p in model.named_parameters():
        p.requires_grad_(name in names)
    blocks = finetune.pack_blocks(tok, resources.read_lines(text), s.block_size, chat_share=s.chat_share, seed=s.seed)
    dataset = [{"input_ids": b, "labels": b} for b in blocks]
    marks: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if device == "cuda":
                torch.cuda.synchronize()
            marks.append(time.monotonic())

    args = TrainingArguments(
        output_dir=str(ROOT / ".trainer-tmp"),
        max_steps=steps,
        per_device_train_batch_size=s.batch_size,
        gradient_accumulation_steps=s.grad_accum,
        learning_rate=s.lr,
        lr_scheduler_type=s.schedule,
        warmup_steps=s.warmup_steps,
        max_grad_norm=s.clip,
        weight_decay=s.weight_decay,
        adam_beta2=0.95,
        bf16=device == "cuda",
        use_cpu=device == "cpu",
        report_to=[],
        save_strategy="no",
        logging_steps=10_000,
        seed=s.seed,
        disable_tqdm=True,
    )
    Trainer(model=model, args=args, train_dataset=dataset, callbacks=[Clock()]).train()
    tokens_per_step = s.batch_size * s.grad_accum * s.block_size
    first = warm(len(marks))
    return tokens_per_step * (len(marks) - 1 - first) / (marks[-1] - marks[first])


def warm(steps: int) -> int:
    """Index of the step where steady-state timing starts."""
    return max(1, steps // 5) - 1


def steady_tokens_per_s(curve: list[finetune.StepRecord]) -> float:
    first, last = curve[warm(len(curve))], curve[-1]
    return (last.tokens - first.tokens) / (last.seconds - first.seconds)


def source_model_of(model_dir: Path) -> str:
    """The source model an adapted model folder was made from (its project.json), else the built-in SmolLM2."""
    try:
        return json.loads((model_dir / "project.json").read_text())["source_model"]
    except (OSError, ValueError, KeyError):
        return models.DEFAULT_MODEL


def main() -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model",
        default=str(ROOT / "demo-output" / "model-transtok"),
        help="adapted model (benchmarks/init_quality.py writes demo-output/model-transtok)",
    )
    p.add_argument("--out", default=str(ROOT / "demo-output" / "model-finetuned"))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--trainer-steps", type=int, default=30, help="steps of the Trainer baseline (0: skip it)")
    p.add_argument("--block-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=finetune.FinetuneSettings.lr)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--eval-max-bytes", type=int, default=30_000)
    p.add_argument(
        "--trainer-runs",
        type=int,
        choices=(1, 2),
        default=2,
        help="2: the Trainer runs before and after our loop and keeps its better figure; 1: before only",
    )
    p.add_argument(
        "--full-eval-bytes",
        type=int,
        default=0,
        help="the final table on the first this many held-out bytes (0: all held-out text)",
    )
    p.add_argument(
        "--source-model",
        help="the source model of the final table (default: the one the adapted model "
        "was made from, as its project.json records it, else the built-in SmolLM2)",
    )
    p.add_argument("--json", help="also write the results to this JSON file")
    a = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    machine = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    text, heldout = DEMO / "bible.train.es.gz", DEMO / "bible.heldout.es.gz"
    s = finetune.FinetuneSettings(
        steps=a.steps,
        block_size=a.block_size,
        batch_size=a.batch_size,
        lr=a.lr,
        eval_every=a.eval_every,
        eval_max_bytes=a.eval_max_bytes,
        checkpoint_every=max(a.steps, 1),
    )
    print(
        f"Fine-tuning ({s.stage} stage) on {machine}: {a.steps} steps × {s.batch_size} × {s.block_size} tokens, "
        f"lr {s.lr:g} {s.schedule}",
        flush=True,
    )
    # The Trainer runs before and after our loop and keeps its better figure: a process gets faster as its memory
    # pools warm up, and the comparison should not favour whichever loop ran later.
    baselines = [trainer_tokens_per_s(Path(a.model), text, s, a.trainer_steps, device)] if a.trainer_steps else []
    if (Path(a.out) / MARKER).exists():  # this benchmark's own earlier output, maybe an interrupted run
        shutil.rmtree(a.out)
    start = time.monotonic()
    result = finetune.finetune(a.model, text, heldout, a.out, s, progress=Printer(start))
    wall = time.monotonic() - start
    ours = steady_tokens_per_s(result.curve)
    print(
        f"\nHeld-out Spanish bits per byte (first {a.eval_max_bytes:,} bytes): {result.initial_bpb:.4f} at init → "
        f"{result.final_bpb:.4f} after {result.steps} steps ({wall / 60:.1f} min wall, evaluations included)"
    )
    print(f"{'minutes':>8} {'step':>6} {'held-out BPB':>13}")
    print(f"{0:>8.2f} {0:>6} {result.initial_bpb:>13.4f}")
    for r in result.curve:
        if r.heldout_bpb is not None:
            print(f"{r.seconds / 60:>8.2f} {r.step:>6} {r.heldout_bpb:>13.4f}")
    print(f"Our loop: {ours:,.0f} tokens/s (steady state)")

    # The figure that matters, on all held-out text (the README's step-0 table uses the same text).
    full = resources.read_text(heldout)
    if a.full_eval_bytes:
        full = resources.head_bytes(full, a.full_eval_bytes)
    source = a.source_model or source_model_of(Path(a.model))
    table = {
        "source model, own tokenizer": bits_per_byte(*load_model(source), full),
        "trans-tokenization, step 0": bits_per_byte(*load_model(a.model), full),
        f"after {result.steps} steps ({s.stage})": bits_per_byte(*load_model(a.out), full),
    }
    print(f"\nAll held-out text ({len(full.encode()):,} bytes):")
    print(f"{'model':<36} {'bits/byte':>10} {'tokens/byte':>12}")
    for name, r in table.items():
        print(f"{name:<36} {r.bits_per_byte:>10.4f} {r.tokens_per_byte:>12.4f}")
    baseline = None
    if a.trainer_steps:
        if a.trainer_runs == 2:
            baselines.append(trainer_tokens_per_s(Path(a.model), text, s, a.trainer_steps, device))
        baseline = max(baselines)
        print(f"transformers.Trainer, same settings: {baseline:,.0f} tokens/s → ours is {ours / baseline:.2f}×")
    if a.json:
        Path(a.json).write_text(
            json.dumps(
                {
                    "machine": machine,
                    "settings": s.__dict__,
                    "source_model": source,
                    "initial_bpb": result.initial_bpb,
                    "final_bpb": result.final_bpb,
                    "wall_s": wall,
                    "ours_tokens_per_s": ours,
                    "trainer_tokens_per_s": baseline,
                    "heldout": {k: v.__dict__ for k, v in table.items()},
                    "curve": [r.__dict__ for r in result.curve],
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
