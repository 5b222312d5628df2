"""A Hydra's own fine-tune on translation pairs (from a parallel corpus, or made by back-translating target-language
text with the Hydra itself): one language's tables, or a LoRA adapter on the body for one direction (core.hydra.lora:
what teaching a Hydra to translate trains), or both; the body's own weights untouched.

Given a checkpoint folder, a tuning keeps what it has done there every few steps and when cancelled — the tables
being trained and the optimizer's moments (safetensors), the step, the losses so far and the pair order's random
state (`state.json`), replaced atomically — and a run started again with the same language, pairs, settings and
starting tables continues from it, drawing the batches the uninterrupted run would have drawn. Anything else
starts over, saying what changed. No pickles: nothing in the folder can run code when read.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from core.errors import TweetyError
import core.hydra.lora as lora
from core.hydra.model import Hydra, Segment
from core.hydra.prompt import translate_batch, translation_segments
from core.jobs import Cancelled, CancelToken, ProgressFn, Reporter, atomic_dir

log = logging.getLogger(__name__)

ExamplesFn = Callable[[str], list[tuple[str, str]]]  # a source text → its prompt's example pairs
TRAINS = ("tables", "lora", "lora+tables")
STATE_FILE = "state.json"  # in a tuning's checkpoint folder, beside tables.safetensors and optimizer.safetensors


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
    # Steps between checkpoints (when the run is given a folder for them). A checkpoint of a 16k-token language
    # writes ~230 MB (the two float32 tables and two Adam moments each): 0.25 s into the page cache, 4-6 s on a disk
    # busy with a test run (2 cores); every 50 steps of 1.5-4 s keeps that to a few percent of the run, and a kill
    # loses at most 50 steps. A run shorter than 4 × this checkpoints every quarter of it instead, so that a short
    # run stopped early also has something to continue from. Not part of what a resume must match.
    checkpoint_every: int = 50
    # What trains: "tables" (the language's embeddings and head), "lora" (an adapter on the body for the direction
    # source → this language, core.hydra.lora; the tables as they are) or "lora+tables". The adapter learns at
    # `lora_lr` (weights already trained move less than new rows).
    trains: str = "tables"
    lora_lr: float = 3e-4

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
        if self.checkpoint_every < 1:
            problems.append("the steps between checkpoints must be at least 1")
        if self.trains not in TRAINS:
            problems.append(f"what it trains must be one of {', '.join(TRAINS)}, not {self.trains!r}")
        if not self.lora_lr > 0:
            problems.append("the adapter's learning rate must be positive")
        if problems:
            raise TweetyError("bad Hydra tuning settings: " + "; ".join(problems), fix="change the settings")


def back_translate(
    hydra: Hydra,
    code: str,
    lines: list[str],
    *,
    batch_size: int = 8,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> list[tuple[str, str]]:
    """Synthetic pairs (source-language text, line) for target-language `lines` only: each line translated into the
    Hydra's source language by the Hydra itself (read with `code`'s table, written with the source head)."""
    report = Reporter(progress, cancel, "Back-translating")
    pairs = []
    for start in range(0, len(lines), batch_size):
        report(start, len(lines), f"line {start + 1:,} of {len(lines):,}")
        batch = lines[start : start + batch_size]
        out = translate_batch(hydra, batch, code, hydra.source_language, batch_size=batch_size, cancel=cancel)
        pairs += [(s, t) for s, t in zip(out, batch) if s and t.strip()]
    report(len(lines), len(lines), f"{len(pairs):,} pairs")
    return pairs


@dataclass
class TuningState:
    """What a tuning's checkpoint says in `state.json`: the run it belongs to and where that run stands."""

    key: dict  # what a run must match to continue this one (`_run_key`)
    steps: int  # of the whole run
    step: int = 0  # steps done
    losses: list[float] = field(default_factory=list)  # one a step done
    order: list[int] = field(default_factory=list)  # the pairs still to draw in this pass over them
    rng: list | None = None  # the pair order's random.Random.getstate(), as JSON lists


def tuning_checkpoint(folder: str | Path) -> TuningState | None:
    """The state of the tuning stopped with its checkpoint in `folder`, or None when there is none; a damaged one is
    a TweetyError."""
    path = Path(folder) / STATE_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return TuningState(**{name: data[name] for name in TuningState.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TweetyError(
            f"the stopped tuning's checkpoint is damaged ({e})",
            path=path,
            fix="delete the folder; the tuning then starts over",
        ) from None


def finetune_language(
    hydra: Hydra,
    code: str,
    pairs: list[tuple[str, str]],
    settings: HydraTuning = HydraTuning(),
    *,
    examples_of: ExamplesFn | None = None,
    checkpoint: str | Path | None = None,
    run_key: dict[str, str] | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> list[float]:
    """Train what `settings.trains` names — `code`'s embedding table and head (a tied language gets a head of its
    own unless `settings.untie` is off), and/or a LoRA adapter for the direction source → `code` (the body's own
    weights stay every language's) — to write the second text of each pair when prompted to translate the first (in
    the Hydra's source language): the prompt `translate` uses, the loss on the reply and its closing line break
    only. Pairs come from a parallel corpus or from `back_translate` (target-language text only). `examples_of`: each
    pair's own prompt examples (a translation memory's closest pairs, as translation will use them), instead of the
    Hydra's fixed ones. The Hydra's tables, and its adapter for the direction (`Hydra.adapters`), are replaced when
    training ends; a cancel leaves them as they were.

    `checkpoint`: a folder where the run keeps what it has done every `settings.checkpoint_every` steps and when
    cancelled, and continues from when it holds a stopped run of the same tuning (see the module); `run_key` names
    what else makes it the same run, in the user's words ({"the translation memory": its hash}). The caller removes
    the folder once it has kept the tuned tables. Returns the loss of each step, those of a continued run's earlier
    steps included."""
    import random

    import torch

    from core.finetune import FinetuneSettings, learning_rate

    settings.check()
    lang = hydra.language(code)
    if code == hydra.source_language:
        raise TweetyError(
            f"{code!r} is the source language: its tables are the body's own", fix="tune another language"
        )
    if not pairs:
        raise TweetyError("there are no translation pairs to train on", fix="give a parallel corpus or target text")
    report = Reporter(progress, cancel, f"Tuning {code}")
    for p in hydra.model.parameters():
        p.requires_grad_(False)
    trained, groups = {}, []  # what the optimizer trains, by name (as the checkpoint keeps it)
    tied = lang.tied and not settings.untie
    embeddings, head = lang.embeddings, lang.head
    if "tables" in settings.trains:
        embeddings = torch.nn.Parameter(lang.embeddings.detach().float().clone())
        head = embeddings if tied else torch.nn.Parameter(lang.head.detach().float().clone())
        trained = {"embeddings": embeddings} if tied else {"embeddings": embeddings, "head": head}
        groups.append({"params": list(trained.values()), "lr": settings.lr, "base_lr": settings.lr})
    key = lora.direction(hydra.source_language, code)
    if "lora" in settings.trains:
        adapter = lora.attach(hydra, key, seed=settings.seed)  # a new one: it replaces the direction's old one
        trained.update(adapter)
        groups.append({"params": list(adapter.values()), "lr": settings.lora_lr, "base_lr": settings.lora_lr})
    else:
        lora.detach(hydra)  # the tables learn under the bare body, as a direction without an adapter reads them
    params = list(trained.values())
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.95), weight_decay=0.0)
    schedule = FinetuneSettings(steps=settings.steps, lr=1.0, warmup_steps=settings.warmup_steps)  # a factor
    rng = random.Random(settings.seed)
    run = TuningState(_run_key(lang, pairs, settings, run_key) if checkpoint is not None else {}, settings.steps)
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        run = _continued(checkpoint, run, trained, optimizer, rng, report)
    saved = run.step  # the last step kept in the checkpoint
    every = min(settings.checkpoint_every, max(1, settings.steps // 4))
    hydra.languages[code] = replace(lang, embeddings=embeddings, head=head)
    try:
        for step in range(run.step, settings.steps):
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * learning_rate(schedule, step)
            batch = []
            for _ in range(settings.batch_size):
                if not run.order:
                    run.order = rng.sample(range(len(pairs)), len(pairs))
                batch.append(pairs[run.order.pop()])
            loss = reply_loss(hydra, code, batch, examples_of)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            run.losses.append(loss.item())
            run.step = step + 1  # the step is complete: a checkpoint from here on is at a step boundary
            if checkpoint is not None and run.step % every == 0 and run.step < settings.steps:
                _save_checkpoint(checkpoint, run, trained, optimizer, rng)
                saved = run.step
            report(
                run.step,
                settings.steps,
                f"step {run.step} of {settings.steps}, loss {run.losses[-1]:.3f}",
                {"step": run.step, "loss": run.losses[-1]},
            )
    except BaseException as e:
        hydra.languages[code] = lang
        lora.detach(hydra)  # the direction's old adapter, if any, goes back on when it next translates
        # Only a cancel stops at a step boundary (the report after a finished step); any other error may have
        # come in the middle of one, so the last periodic checkpoint stands.
        if isinstance(e, Cancelled) and checkpoint is not None and run.step > saved:
            _save_checkpoint(checkpoint, run, trained, optimizer, rng)
        raise
    if "tables" in settings.trains:
        dtype = lang.embeddings.dtype
        tuned_embeddings = embeddings.detach().to(dtype)
        hydra.languages[code] = replace(
            lang, embeddings=tuned_embeddings, head=tuned_embeddings if tied else head.detach().to(dtype)
        )
    if "lora" in settings.trains:
        hydra.adapters[key] = lora.weights_of(adapter)
        lora.detach(hydra)
    return run.losses


def _run_key(lang, pairs: list[tuple[str, str]], settings: HydraTuning, extra: dict[str, str] | None) -> dict:
    """What a run must match to continue a stopped one: its language, settings (how often it checkpoints aside),
    pairs and starting tables (a project re-initialised, or tuned since, starts from others), and the caller's
    `extra`."""
    import torch

    tables = hashlib.sha256()
    for t in (lang.embeddings,) if lang.tied else (lang.embeddings, lang.head):
        tables.update(t.detach().cpu().contiguous().view(torch.uint8).numpy())  # the bytes, whatever the dtype
    pairs_hash = hashlib.sha256(json.dumps(pairs, ensure_ascii=False).encode()).hexdigest()
    tuning = {k: v for k, v in asdict(settings).items() if k != "checkpoint_every"}
    return {
        "language": lang.code,
        "settings": tuning,
        "pairs": pairs_hash,
        "tables": tables.hexdigest(),
        **(extra or {}),
    }


_SETTING_WORDS = {
    "steps": "the number of steps",
    "batch_size": "the pairs per step",
    "lr": "the learning rate",
    "warmup_steps": "the warm-up steps",
    "seed": "the seed",
    "untie": "whether the head is untied",
    "trains": "what it trains",
    "lora_lr": "the adapter's learning rate",
}
_KEY_WORDS = {
    "pairs": "the training pairs",
    "tables": "the tables it starts from (the model was made again or tuned since)",
}


def _changes(saved: dict, now: dict) -> list[str]:
    """What differs between a stopped run's key and this run's, in the user's words."""
    was, settings = saved.get("settings") or {}, now["settings"]
    words = [
        f"{_SETTING_WORDS.get(k, k.replace('_', ' '))} ({was.get(k)}, now {v})"
        for k, v in settings.items()
        if was.get(k) != v
    ]
    if saved.get("language") != now["language"]:
        words.append(f"the language ({saved.get('language')}, now {now['language']})")
    for k in sorted((set(saved) | set(now)) - {"settings", "language"}):
        if saved.get(k) != now.get(k):
            words.append(_KEY_WORDS.get(k, k))
    return words


def _continued(folder: Path, fresh: TuningState, tables: dict, optimizer, rng, report: Reporter) -> TuningState:
    """The run's state: the stopped run's in `folder` when it is this run (its tables and optimizer moments copied
    into `tables` and `optimizer`, its pair order into `rng`), else `fresh` — saying why, when there was one."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    def start_over(why: str) -> TuningState:
        log.warning("%s: the tuning starts over from step 0", why)
        report(0, fresh.steps, f"{why}: starting over")
        return fresh

    try:
        saved = tuning_checkpoint(folder)
        if saved is None:
            return fresh
        stored = load_file(folder / "tables.safetensors")
        moments = load_file(folder / "optimizer.safetensors")
        groups = json.loads((folder / "optimizer.json").read_text(encoding="utf-8"))
    except (TweetyError, OSError, ValueError, SafetensorError) as e:
        return start_over(f"the stopped tuning's checkpoint in {folder} cannot be read ({e})")
    changed = _changes(saved.key, fresh.key)
    if changed:
        return start_over(
            f"the tuning stopped at step {saved.step} of {saved.steps} had other settings — " + ", ".join(changed)
        )
    if set(stored) != set(tables) or any(stored[n].shape != t.shape for n, t in tables.items()):
        return start_over(f"the stopped tuning's checkpoint in {folder} does not fit these tables")
    state: dict[int, dict] = {}
    for name, value in moments.items():
        index, what = name.split(".", 1)
        state.setdefault(int(index), {})[what] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    with torch.no_grad():
        for name, t in tables.items():
            t.copy_(stored[name])
    if saved.rng is not None:
        version, internal, gauss = saved.rng
        rng.setstate((version, tuple(internal), gauss))
    log.info("continuing the tuning stopped at step %d of %d (%s)", saved.step, saved.steps, folder)
    report(saved.step, fresh.steps, f"continuing from step {saved.step} of {saved.steps}, where it stopped")
    return saved


def _save_checkpoint(folder: Path, run: TuningState, tables: dict, optimizer, rng) -> None:
    """The tables and the optimizer's moments (safetensors: no pickle), its settings and the run's state (JSON),
    replacing the folder's last checkpoint at once."""
    from safetensors.torch import save_file

    opt = optimizer.state_dict()
    moments = {f"{index}.{what}": value for index, values in opt["state"].items() for what, value in values.items()}
    run.rng = json.loads(json.dumps(rng.getstate()))  # tuples as lists, as read back
    with atomic_dir(folder) as tmp:
        save_file({name: t.detach() for name, t in tables.items()}, tmp / "tables.safetensors")
        save_file(moments, tmp / "optimizer.safetensors")
        (tmp / "optimizer.json").write_text(json.dumps(opt["param_groups"]), encoding="utf-8")
        (tmp / STATE_FILE).write_text(json.dumps(asdict(run)), encoding="utf-8")


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
