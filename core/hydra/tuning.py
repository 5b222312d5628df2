"""A Hydra's own fine-tune: one language's tables trained on translation pairs (from a parallel corpus, or made by
back-translating target-language text with the Hydra itself), the body untouched.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from core.errors import TweetyError
from core.hydra.model import Hydra, Segment
from core.hydra.prompt import translate_batch, translation_segments
from core.jobs import CancelToken, ProgressFn, Reporter

ExamplesFn = Callable[[str], list[tuple[str, str]]]  # a source text → its prompt's example pairs


@dataclass(frozen=True)
class HydraTuning:
    steps: int = 200
    batch_size: int = 4  # pairs per optimizer step
    lr: float = 3e-3  # chrF 23.8 against 20.7 at 1e-3 (200 verses, 400 steps of 8 real pairs, untied)
    warmup_steps: int = 20
    seed: int = 0
    # A tied language gets a reading table and a writing head of its own: reading back what was written (and keeping
    # the body's place in the text) and choosing the next word are different jobs for one vector (chrF 17.4 tied,
    # 20.7 untied: benchmarks/translate_chrf.py, 200 verses, 400 steps of 8 real pairs).
    untie: bool = True

    def check(self) -> None:
        """Refuse settings no run can use, in plain words (`steps` 0 would divide by zero in the schedule)."""
        problems = []
        if self.steps < 1:
            problems.append("the number of steps must be at least 1")
        if self.batch_size < 1:
            problems.append("the batch size must be at least 1 pair")
        if not self.lr > 0:
            problems.append("the learning rate must be positive")
        if self.warmup_steps < 0:
            problems.append("the warm-up steps cannot be negative")
        if problems:
            raise TweetyError("bad Hydra tuning settings: " + "; ".join(problems), fix="change the settings")


def back_translate(hydra: Hydra, code: str, lines: list[str], *, batch_size: int = 8,
                   progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> list[tuple[str, str]]:
    """Synthetic pairs (source-language text, line) for target-language `lines` only: each line translated into the
    Hydra's source language by the Hydra itself (read with `code`'s table, written with the source head)."""
    report = Reporter(progress, cancel, "Back-translating")
    pairs = []
    for start in range(0, len(lines), batch_size):
        report(start, len(lines), f"line {start + 1:,} of {len(lines):,}")
        batch = lines[start:start + batch_size]
        out = translate_batch(hydra, batch, code, hydra.source_language, batch_size=batch_size, cancel=cancel)
        pairs += [(s, t) for s, t in zip(out, batch) if s and t.strip()]
    report(len(lines), len(lines), f"{len(pairs):,} pairs")
    return pairs


def finetune_language(hydra: Hydra, code: str, pairs: list[tuple[str, str]], settings: HydraTuning = HydraTuning(),
                      *, examples_of: ExamplesFn | None = None, progress: ProgressFn | None = None,
                      cancel: CancelToken | None = None) -> list[float]:
    """Train `code`'s embedding table and head (nothing else: the body stays every language's; a tied language
    gets a head of its own unless `settings.untie` is off) to write the second text of each pair when prompted to
    translate the first (in the Hydra's source language) — the prompt `translate` uses, the loss on the reply and
    its closing line break only. Pairs come from a parallel corpus or from `back_translate` (target-language text
    only). `examples_of`: each pair's own prompt examples (a translation memory's closest pairs, as translation
    will use them), instead of the Hydra's fixed ones. The Hydra's tables are replaced when training ends; a cancel
    leaves them as they were. Returns the loss of each step."""
    import random

    import torch

    from core.finetune import FinetuneSettings, learning_rate

    settings.check()
    lang = hydra.language(code)
    if code == hydra.source_language:
        raise TweetyError(f"{code!r} is the source language: its tables are the body's own",
                          fix="tune another language")
    if not pairs:
        raise TweetyError("there are no translation pairs to train on", fix="give a parallel corpus or target text")
    report = Reporter(progress, cancel, f"Tuning {code}")
    embeddings = torch.nn.Parameter(lang.embeddings.detach().float().clone())
    tied = lang.tied and not settings.untie
    head = embeddings if tied else torch.nn.Parameter(lang.head.detach().float().clone())
    params = [embeddings] if tied else [embeddings, head]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, betas=(0.9, 0.95), weight_decay=0.0)
    schedule = FinetuneSettings(steps=settings.steps, lr=settings.lr, warmup_steps=settings.warmup_steps)
    for p in hydra.model.parameters():
        p.requires_grad_(False)
    rng = random.Random(settings.seed)
    order: list[int] = []
    losses: list[float] = []
    hydra.languages[code] = replace(lang, embeddings=embeddings, head=head)
    try:
        for step in range(settings.steps):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(schedule, step)
            batch = []
            for _ in range(settings.batch_size):
                if not order:
                    order = rng.sample(range(len(pairs)), len(pairs))
                batch.append(pairs[order.pop()])
            loss = reply_loss(hydra, code, batch, examples_of)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            report(step + 1, settings.steps, f"step {step + 1} of {settings.steps}, loss {losses[-1]:.3f}",
                   {"step": step + 1, "loss": losses[-1]})
    except BaseException:
        hydra.languages[code] = lang
        raise
    dtype = lang.embeddings.dtype
    tuned_embeddings = embeddings.detach().to(dtype)
    hydra.languages[code] = replace(lang, embeddings=tuned_embeddings,
                                    head=tuned_embeddings if tied else head.detach().to(dtype))
    return losses


def reply_loss(hydra: Hydra, code: str, batch: list[tuple[str, str]], examples_of: ExamplesFn | None = None):
    """Mean over the pairs of each reply's mean cross-entropy after the translation prompt. The prompt's shared
    opening (the example pairs) is read once, without gradient, into a KV cache the pairs share; the rest of each
    prompt and its reply run as one right-padded batch (on 2 CPU cores, 4–8 pairs a step: about twice the pairs per
    second of one whole prompt at a time). So the examples' rows learn only where they are replies, not where they
    are read."""
    import torch
    import torch.nn.functional as F

    if examples_of is not None and len(batch) > 1:
        # Each pair has its own examples, so the pairs share no opening: one pair at a time, its whole prompt read
        # without gradient into its own cache (the examples are most of it: 2-3 times fewer operations per pair
        # than a padded batch that also trains through them).
        return sum(reply_loss(hydra, code, [pair], examples_of) for pair in batch) / len(batch)
    prompts, replies = [], []
    for source_text, target_text in batch:
        examples = examples_of(source_text) if examples_of is not None else None
        prompts.append(translation_segments(hydra, source_text, hydra.source_language, code, examples).segments)
        replies.append(hydra.segment(code, f" {target_text.strip()}\n"))
    flat = [[(s.language, i) for s in p for i in s.ids] for p in prompts]
    shared = min(len(f) for f in flat) - 1  # each prompt keeps its last token: it predicts the reply's first
    for f in flat[1:]:
        shared = next((k for k in range(shared) if f[k] != flat[0][k]), shared)
    cache = hydra.new_cache()
    if shared:
        with torch.no_grad():
            hydra.hidden(hydra.embed(_segments(flat[0][:shared])), cache)
        cache.batch_repeat_interleave(len(batch))
    rows, targets, where, weights = [], [], [], []
    for i, (f, reply) in enumerate(zip(flat, replies)):
        rows.append(hydra.embed(_segments(f[shared:]) + [reply])[0])
        n, end = len(reply.ids), len(rows[-1])
        targets += reply.ids
        where += [(i, t) for t in range(end - n - 1, end - 1)]  # the positions that predict the reply's tokens
        weights += [1 / (n * len(batch))] * n
    width = max(len(r) for r in rows)
    embeds = torch.stack([F.pad(r, (0, 0, 0, width - len(r))) for r in rows])
    mask = torch.tensor([[1] * (shared + len(r)) + [0] * (width - len(r)) for r in rows])
    positions = torch.arange(shared, shared + width).expand(len(rows), -1)
    h = hydra.hidden(embeds, cache, mask if len(rows) > 1 else None, positions)
    b, t = torch.tensor(where).T
    logits = hydra.project(h[b, t], hydra.language(code).head)
    per_token = F.cross_entropy(logits.float(), torch.tensor(targets), reduction="none")
    return (per_token * torch.tensor(weights)).sum()


def _segments(tokens: list[tuple[str, int]]) -> list[Segment]:
    """(language, id) tokens back into segments, one per run of one language."""
    from itertools import groupby

    return [Segment(language, tuple(i for _, i in run)) for language, run in groupby(tokens, key=lambda t: t[0])]
