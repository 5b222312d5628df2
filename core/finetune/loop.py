"""The fine-tuning run, one straight path: settings → output folder → model → data → optimizer → steps
(evaluate, checkpoint, report) → model written next to its `training/` folder.

Stages (the paper's recipe): `embeddings` trains the input embeddings and the LM head (one matrix when tied) with the
body frozen; `outer-layers` also trains the first and last N transformer layers and the final norm. The optimizer only
ever sees trainable parameters, so a 7B body costs no optimizer memory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from core.calibrate import calibrate
from core.errors import TweetyError
from core.finetune.checkpoint import (
    RunState,
    StepRecord,
    checkpoint_dir,
    fresh_output,
    load_checkpoint,
    resumable_state,
    save_checkpoint,
)
from core.finetune.data import BlockOrder, pack_blocks
from core.finetune.ranks import Ranks
from core.finetune.settings import FinetuneSettings, learning_rate
from core.jobs import Cancelled, CancelToken, ProgressFn, Reporter, unprivate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneResult:
    out: Path
    steps: int
    initial_bpb: float | None
    final_bpb: float | None
    seconds: float
    tokens_per_s: float
    resumed_from: int  # the step the run continued from (0: a fresh run)
    curve: list[StepRecord]


# --- which parameters train -----------------------------------------------------------------------------------------


def trainable_names(model, settings: FinetuneSettings) -> list[str]:
    """Parameter names the stage trains (a tied head is the embedding matrix itself, named once)."""
    layers = model.config.num_hidden_layers
    n = settings.outer_layers if settings.stage == "outer-layers" else 0
    outer = {i for i in range(layers) if i < n or i >= layers - n}

    def trains(name: str) -> bool:
        parts = name.split(".")
        if "embed_tokens" in parts or "lm_head" in parts:
            return True
        if "layers" in parts:
            return int(parts[parts.index("layers") + 1]) in outer
        return bool(n) and parts[-2:] == ["norm", "weight"]  # the final norm, between the last layer and the head

    return [name for name, _ in model.named_parameters() if trains(name)]


# --- the run --------------------------------------------------------------------------------------------------------


def finetune(
    model_dir: str | Path,
    text: str | Path,
    heldout: str | Path | None,
    out_dir: str | Path,
    settings: FinetuneSettings = FinetuneSettings(),
    *,
    resume: bool = False,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> FinetuneResult:
    """Fine-tune the model in `model_dir` on the target text file `text`, evaluating on `heldout`; write `out_dir`.

    `resume=True` continues the unfinished (or finished, with more steps) run in `out_dir` from its checkpoint; its
    settings must match except for `steps`. Under `torchrun` (WORLD_SIZE > 1) every rank calls this with the same
    arguments; `batch_size` is the global micro-batch, split evenly across the ranks."""
    settings.check()
    ranks = Ranks.join(_device(settings.device))
    try:
        return _finetune(Path(model_dir), text, heldout, Path(out_dir), settings, resume, progress, cancel, ranks)
    finally:
        ranks.leave()


def _finetune(
    model_dir: Path,
    text,
    heldout,
    out: Path,
    settings: FinetuneSettings,
    resume: bool,
    progress: ProgressFn | None,
    cancel: CancelToken | None,
    ranks: Ranks,
) -> FinetuneResult:
    import torch

    from core import resources
    from core.evaluate import bits_per_byte
    from core.models import load_model

    if settings.batch_size % ranks.world:
        raise TweetyError(
            f"the batch size ({settings.batch_size}) must be a multiple of the number of training "
            f"processes ({ranks.world})",
            fix="change the batch size or the number of processes",
        )
    # Ranks > 0 never report; with several ranks a cancel is honoured only once all ranks agree on it (see
    # Ranks.step_done), never by one rank alone in the middle of a collective.
    if ranks.rank:
        progress = None
    local_cancel = cancel if ranks.world == 1 else None
    ckpt = checkpoint_dir(out)
    lines = resources.read_lines(text)
    heldout_text = resources.head_bytes(resources.read_text(heldout), settings.eval_max_bytes) if heldout else None
    state = RunState(
        asdict(settings),
        str(Path(model_dir).resolve()),
        resources.sha256_file(text),
        resources.sha256_file(heldout) if heldout else None,
    )
    if resume:
        state = ranks.on_rank0(lambda: resumable_state(out, state))
    else:
        ranks.on_rank0(lambda: fresh_output(out))

    report = Reporter(progress, local_cancel, "Fine-tuning")
    report(0, 4, "loading the model")
    device = ranks.device
    model, tokenizer = load_model(model_dir, dtype="auto")
    stored = {name: p.dtype for name, p in model.named_parameters()}
    names = set(trainable_names(model, settings))
    for name, p in model.named_parameters():
        p.requires_grad_(name in names)
        if name in names or device == "cpu":  # trainable weights train in float32; CPU has no bf16 autocast here
            p.data = p.data.float()
    model.to(device)
    optimizer_state = load_checkpoint(ckpt, model, names) if state.step else None
    ranks.shard(model, names)
    params = [p for name, p in model.named_parameters() if name in names]
    rows = AbsentRows.of(model, names) if settings.absent_rows_stay and ranks.world == 1 else None
    optimizer = torch.optim.AdamW(
        params, lr=settings.lr, betas=(0.9, 0.95), weight_decay=settings.weight_decay, fused=True
    )
    if optimizer_state:
        optimizer.load_state_dict(ranks.shard_like(optimizer_state, params))

    report(1, 4, "reading text")
    blocks = pack_blocks(
        tokenizer,
        lines,
        settings.block_size,
        chat_share=settings.chat_share,
        seed=settings.seed,
        path=text,
        report=Reporter(progress, local_cancel, "Fine-tuning: reading text"),
    )
    order = BlockOrder(len(blocks), settings.seed)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else contextlib.nullcontext()

    def evaluate() -> float | None:
        if not heldout_text:
            return None
        with autocast:
            bpb = bits_per_byte(
                model,
                tokenizer,
                heldout_text,
                progress=progress,
                cancel=local_cancel,
                stage="Fine-tuning: measuring held-out text",
            ).bits_per_byte
        model.train()
        return bpb

    resumed_from = state.step
    log.info(
        "fine-tuning %s: %d blocks of %d tokens, %d trainable tensors (%s parameters) on %s (rank %d of %d)",
        model_dir,
        len(blocks),
        settings.block_size,
        len(params),
        f"{sum(p.numel() for p in params):,}",
        device,
        ranks.rank,
        ranks.world,
    )
    # The held-out measure before training (the curve's step 0) costs as much as several steps; a fresh single-process
    # run takes it after its first step, from a copy of the trainable weights as they were, so that training is seen
    # to start at once (the first step came ~100 s after Start when it was measured first).
    before_training = None
    if state.initial_bpb is None and heldout_text:
        if state.step == 0 and ranks.world == 1:
            before_training = {name: p.detach().clone() for name, p in model.named_parameters() if name in names}
        else:
            report(2, 4, f"measuring held-out text ({len(heldout_text):,} characters) before training")
            state.initial_bpb = evaluate()
            report(
                0,
                settings.steps,
                f"held-out {state.initial_bpb:.3f} bits/byte before training",
                {"step": 0, "heldout_bpb": state.initial_bpb},
            )
    report(3, 4, "first step")
    tokens_per_step = settings.batch_size * settings.grad_accum * settings.block_size
    mine = slice(ranks.rank * settings.batch_size // ranks.world, (ranks.rank + 1) * settings.batch_size // ranks.world)
    session_start, session_steps, session_seconds = time.monotonic(), 0, 0.0
    model.train()
    try:
        while state.step < settings.steps:
            report.check()  # blocks while paused; raises on cancel (at a step boundary: the state is consistent)
            t0 = time.monotonic()
            lr = learning_rate(settings, state.step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = torch.zeros((), device=device)
            for micro in range(settings.grad_accum):
                ranks.sync_gradients(model, micro == settings.grad_accum - 1)
                first = (state.step * settings.grad_accum + micro) * settings.batch_size
                x = blocks[order.indices(first, settings.batch_size)[mine]].to(device, non_blocking=True)
                if rows is not None:
                    rows.seen(x)
                with autocast:
                    logits = model(input_ids=x).logits
                # Targets shifted left and the last position ignored: the logits are used as they are, no copy of
                # a [batch, block-1, vocab] slice.
                targets = torch.nn.functional.pad(x[:, 1:], (0, 1), value=-100)
                loss = torch.nn.functional.cross_entropy(
                    logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100
                )
                (loss / settings.grad_accum).backward()
                loss_sum += loss.detach()
            if rows is not None:
                rows.drop_gradients()
            if settings.clip:
                torch.nn.utils.clip_grad_norm_(params, settings.clip)
            optimizer.step()
            if rows is not None:
                rows.restore()
            optimizer.zero_grad(set_to_none=True)
            # One device sync per step; with several ranks also the one all-reduce of the loss and the cancel flag.
            loss_value, stop = ranks.step_done(loss_sum / settings.grad_accum, cancel)
            dt = time.monotonic() - t0
            # The step is complete (and recorded) before anything that can be cancelled, so a checkpoint taken on
            # cancel is always at a step boundary.
            state.step += 1
            state.seconds += dt
            session_steps, session_seconds = session_steps + 1, session_seconds + dt
            record = StepRecord(
                state.step,
                round(loss_value, 5),
                lr,
                state.step * tokens_per_step,
                round(state.seconds, 3),
                round(session_steps * tokens_per_step / session_seconds, 1),
            )
            state.curve.append(record)
            if state.step % settings.eval_every == 0 or state.step == settings.steps:
                report(
                    state.step, settings.steps, f"step {state.step:,} of {settings.steps:,}: measuring held-out text"
                )
                bpb = evaluate()
                if bpb is not None:
                    record = state.curve[-1] = replace(record, heldout_bpb=round(bpb, 5))
            if state.step % settings.checkpoint_every == 0 and state.step < settings.steps:
                save_checkpoint(ckpt, model, optimizer, names, state, ranks)
            wall = (time.monotonic() - session_start) / session_steps
            eta = wall * (settings.steps - state.step)
            report(
                state.step,
                settings.steps,
                f"step {state.step:,} of {settings.steps:,} · {_message(record)}",
                {k: v for k, v in asdict(record).items() if v is not None} | {"eta_s": eta},
            )
            if before_training is not None:  # after the first step is shown (see before_training)
                report(state.step, settings.steps, "measuring held-out text before training (as the weights were)")
                state.initial_bpb = _evaluate_with(model, before_training, evaluate)
                before_training = None
                report(
                    state.step,
                    settings.steps,
                    f"held-out {state.initial_bpb:.3f} bits/byte before training",
                    {"step": 0, "heldout_bpb": state.initial_bpb},
                )
            if stop:
                raise Cancelled()
    except Cancelled:
        if state.step > resumed_from:
            save_checkpoint(ckpt, model, optimizer, names, state, ranks)
        raise
    state.finished = True
    trained = save_checkpoint(ckpt, model, optimizer, names, state, ranks)
    final_bpb = None
    if settings.calibration and ranks.world == 1:
        # The checkpoint keeps the weights as trained (a resumed run trains on from them); the model written is
        # calibrated, and its held-out figure is the one reported as final.
        with autocast:
            calibrate(
                model,
                tokenizer,
                "\n".join(lines),
                settings.calibration,
                report=Reporter(progress, local_cancel, "Fine-tuning: calibrating frequencies"),
            )
        final_bpb = evaluate()
    if ranks.world > 1:
        # A sharded model cannot save itself (save_pretrained does not gather FSDP shards): rank 0 writes a fresh
        # copy of the model with the trained tensors put in, which is what the single-process branch writes.
        del model, optimizer, params
        if ranks.rank == 0:
            model, _ = load_model(model_dir, dtype="auto")
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if name in trained:
                        p.copy_(trained[name])
    else:
        for name, p in model.named_parameters():  # back to the dtypes on disk: frozen weights are saved untouched
            p.data = p.data.to("cpu", stored[name])
    if ranks.rank == 0:
        _write_model(model, tokenizer, model_dir, out, settings)
    ranks.barrier()  # every rank returns once the model is written
    bpbs = [r.heldout_bpb for r in state.curve if r.heldout_bpb is not None]
    return FinetuneResult(
        out,
        state.step,
        state.initial_bpb,
        final_bpb if final_bpb is not None else bpbs[-1] if bpbs else None,
        state.seconds,
        state.step * tokens_per_step / state.seconds if state.seconds else 0.0,
        resumed_from,
        state.curve,
    )


class AbsentRows:
    """The vocabulary rows (embeddings, head) of the tokens a step's sequences do not hold, kept as they were: their
    gradients dropped before the step, their values put back after it (Adam's momentum would still move them)."""

    def __init__(self, matrices: list):
        import torch

        self.matrices = matrices
        self.present = torch.zeros(matrices[0].shape[0], dtype=torch.bool, device=matrices[0].device)
        self.kept: list = []

    @staticmethod
    def of(model, names: set[str]) -> AbsentRows | None:
        vocab = model.get_input_embeddings().weight.shape[0]
        matrices = [p for name, p in model.named_parameters() if name in names and p.dim() == 2 and len(p) == vocab]
        return AbsentRows(matrices) if matrices else None

    def seen(self, ids) -> None:
        self.present[ids.flatten()] = True

    def drop_gradients(self) -> None:
        absent = ~self.present
        for p in self.matrices:
            if p.grad is not None:
                p.grad[absent] = 0
        self.kept = [(absent, p.detach()[absent].clone()) for p in self.matrices]

    def restore(self) -> None:
        import torch

        with torch.no_grad():
            for p, (absent, rows) in zip(self.matrices, self.kept):
                p[absent] = rows
        self.kept = []
        self.present.zero_()


def _evaluate_with(model, weights: dict, evaluate) -> float | None:
    """`evaluate()` with `weights` (name → tensor) put into the model for the time of it; the model's own come back
    exactly afterwards."""
    import torch

    params = dict(model.named_parameters())
    with torch.no_grad():
        current = {name: params[name].detach().clone() for name in weights}
        for name, w in weights.items():
            params[name].copy_(w)
        try:
            return evaluate()
        finally:
            for name, w in current.items():
                params[name].copy_(w)


def _message(r: StepRecord) -> str:
    bpb = f" · held-out {r.heldout_bpb:.3f} bits/byte" if r.heldout_bpb is not None else ""
    return f"loss {r.loss:.3f}{bpb} · {r.tokens_per_s:,.0f} tokens/s"


def _device(choice: str) -> str:
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise TweetyError("no CUDA GPU is available", fix="choose the CPU (device auto or cpu)")
    return choice


def _write_model(model, tokenizer, model_dir: Path, out: Path, settings: FinetuneSettings) -> None:
    """Save the model next to `training/`: each file moved into place, config.json last, so the folder only looks
    like a model once it is complete. Provenance (project.json) is carried over with the fine-tuning added."""
    from core.init import write_adapted
    from core.layout import PROJECT_FILE

    tmp = Path(tempfile.mkdtemp(prefix=".model.", suffix=".tmp", dir=out))
    try:
        write_adapted(model, tokenizer, tmp)
        unprivate(tmp)
        provenance = model_dir / PROJECT_FILE
        if provenance.exists():
            data = json.loads(provenance.read_text())
            data.setdefault("settings", {})["finetune"] = asdict(settings)
            (tmp / PROJECT_FILE).write_text(json.dumps(data, indent=2, ensure_ascii=False))
        files = sorted(tmp.iterdir(), key=lambda f: f.name == "config.json")
        for f in files:
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
