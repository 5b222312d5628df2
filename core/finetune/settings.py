"""Fine-tuning settings and the learning-rate schedule they describe.

Settings travel as plain dicts (in a checkpoint's `state.json`, in a distributed job's `job.json`), so they are read
back with `FinetuneSettings.from_dict`, which takes a dict written by another version of Tweety Studio: keys this
version does not know are dropped (with a warning), keys it lacks take their defaults.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

from core.errors import TweetyError

log = logging.getLogger(__name__)

STAGES = ("embeddings", "outer-layers")
SCHEDULES = ("cosine", "linear")


@dataclass(frozen=True)
class FinetuneSettings:
    stage: str = "embeddings"
    steps: int = 300
    outer_layers: int = 2  # `outer-layers`: this many first and last transformer layers train too
    block_size: int = 256  # tokens per sequence, the document-start token included
    batch_size: int = 8  # sequences per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 1e-3
    schedule: str = "cosine"  # decay after warm-up: cosine to min_lr_ratio × lr, or linear to 0
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    clip: float = 1.0  # gradient-norm clipping (0: off)
    eval_every: int = 50  # held-out bits per byte every this many steps (and at the start and the end)
    # Held-out text is cut to this many bytes (0: all): the curve's measure, taken before the first step and every
    # eval_every steps, so it must be cheap — 8 kB take ~5 s for a 135M model on 2 CPU cores (50 kB took ~40 s,
    # and the first step came ~100 s after Start). The Evaluate page measures a larger fixed sample.
    eval_max_bytes: int = 8_000
    checkpoint_every: int = 100
    # Share of the training text's passages trained as chat turns in the model's own template, so that replies end
    # by themselves (core.finetune.data); 0 trains on raw text only, as before.
    chat_share: float = 0.2
    seed: int = 0
    # Rows of tokens no sequence of a step holds stay as they are. Adam moves every row about as far each step, so
    # every absent token would be pushed down a little each step, undoing the frequency calibration the adapted model
    # starts with (core.calibrate): held-out bits per byte rose over the first 50 steps (demo: 2.006 → 2.090).
    absent_rows_stay: bool = True
    # After the last step each token's row is calibrated to the training text's frequencies again (core.calibrate;
    # 0: off). Training moves a row only in steps whose sequences hold its token, which favours rare tokens: from the
    # calibrated start, 300 demo steps made all the held-out verses read worse (1.832 → 1.851 bits per byte); calibrated
    # after them, 1.761. One process only, as absent_rows_stay.
    calibration: float = 1.0
    device: str = "auto"  # auto: CUDA (bf16 autocast) when there is a GPU, else CPU float32

    def check(self) -> None:
        problems = []
        if self.stage not in STAGES:
            problems.append(f"unknown stage {self.stage!r} (choose {' or '.join(STAGES)})")
        if self.schedule not in SCHEDULES:
            problems.append(f"unknown schedule {self.schedule!r} (choose {' or '.join(SCHEDULES)})")
        for name in ("steps", "block_size", "batch_size", "grad_accum", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                problems.append(f"{name.replace('_', ' ')} must be at least 1")
        if self.block_size < 2:
            problems.append("block size must be at least 2 tokens")
        if self.stage == "outer-layers" and self.outer_layers < 1:
            problems.append("the outer-layers stage needs at least 1 outer layer")
        if not 0 <= self.chat_share <= 1:
            problems.append("the chat share must be between 0 and 1")
        if self.calibration < 0:
            problems.append("the calibration share must not be negative")
        if not self.lr > 0:
            problems.append("the learning rate must be positive")
        if problems:
            raise TweetyError("bad fine-tuning settings: " + "; ".join(problems), fix="change the settings")

    @staticmethod
    def from_dict(data: dict) -> FinetuneSettings:
        """Settings from a dict (`asdict` of them), tolerant of another version's keys (see the module)."""
        known = known_fields(FinetuneSettings, data)
        dropped = sorted(set(data) - set(known))
        if dropped:
            log.warning("ignoring fine-tuning settings this version does not know: %s", ", ".join(dropped))
        return FinetuneSettings(**known)


def known_fields(cls, data: dict) -> dict:
    """The entries of `data` that are fields of the dataclass `cls`: what another version wrote, minus what this
    version does not know (missing fields are left to the dataclass's defaults)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def required_fields(cls) -> list[str]:
    """The fields of the dataclass `cls` that have no default."""
    return [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]


# The wizard's presets: a first look that finishes in minutes on a laptop CPU, and a run worth keeping on a GPU.
# "Quick look": 120 steps × 4 × 128 tokens = 61k tokens, ~5 min at the ~200 tokens/s the built-in 135M model trains
# at with the wizard's default of physical cores minus one threads (measured on 2 cores with one busy: 132 tokens/s
# with 1 thread, 31 with 2; 480 with 2 threads on an idle machine, README › Fine-tuning), plus four 8 kB held-out
# measurements.
PRESETS = {
    "quick": FinetuneSettings(steps=120, batch_size=4, block_size=128, eval_every=40),
    "gpu": FinetuneSettings(steps=2000, batch_size=16, block_size=512, eval_every=200, checkpoint_every=200),
}
CPU_TOKENS_PER_S_135M = 200.0  # training, embeddings stage, built-in model, CPU, threads = physical cores − 1
GPU_TOKENS_PER_S_135M = 20_000.0  # a rough figure for one recent GPU, bf16 — not measured in this project
EVAL_TOKENS_PER_S_135M = 330.0  # held-out measurement (forward only), 2 CPU cores


HELDOUT_TOKENS_PER_BYTE = 0.3  # a new vocabulary's tokens per byte of its language's text (16k on Spanish: ~0.3)


def heldout_tokens(settings: FinetuneSettings) -> int:
    """The tokens one held-out measurement of a run reads: its first `eval_max_bytes` (all of a held-out text of
    ~100 kB when 0) — for `estimate_seconds`."""
    return int(HELDOUT_TOKENS_PER_BYTE * settings.eval_max_bytes) if settings.eval_max_bytes else 30_000


def estimate_seconds(
    settings: FinetuneSettings, tokens_per_s: float, heldout_tokens: int = 0, eval_tokens_per_s: float | None = None
) -> float:
    """Wall time of a run: its training tokens at `tokens_per_s`, plus the held-out measurements (before the first
    step, every `eval_every` steps and at the end) of `heldout_tokens` each at `eval_tokens_per_s` (default: 3 ×
    the training rate — a forward pass without the backward)."""
    if tokens_per_s <= 0:
        raise ValueError("tokens_per_s must be positive")
    train = settings.steps * settings.batch_size * settings.grad_accum * settings.block_size / tokens_per_s
    evaluations = 1 + settings.steps // settings.eval_every + (settings.steps % settings.eval_every != 0)
    return train + evaluations * heldout_tokens / (eval_tokens_per_s or 3 * tokens_per_s)


def learning_rate(s: FinetuneSettings, step: int) -> float:
    """Linear warm-up over `warmup_steps`, then cosine (to min_lr_ratio × lr) or linear (to 0) decay."""
    if step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    span = max(1, s.steps - s.warmup_steps)
    t = min(1.0, (step - s.warmup_steps) / span)
    if s.schedule == "linear":
        return s.lr * (1 - t)
    return s.lr * (s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))
