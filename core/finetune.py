"""Short fine-tuning that finishes an adaptation: the new embeddings and LM head first, then a few outer layers.

Stages (the paper's recipe): `embeddings` trains the input embeddings and the LM head (one matrix when tied) with the
body frozen; `outer-layers` also trains the first and last N transformer layers and the final norm. The optimizer only
ever sees trainable parameters, so a 7B body costs no optimizer memory.

Target text is tokenized once and packed into full blocks that start with the document-start token — the same
windows the bits-per-byte evaluation reads, and no padding anywhere. The block order is a function of (seed, step),
so a resumed run draws exactly the batches an uninterrupted one would; with the optimizer moments and the step
restored from the checkpoint, its loss curve is the same.

Output folder (`out/`): a normal Hugging Face model once finished (config.json written last), and `out/training/`
with `log.csv`, `log.json`, `curve.png` and `checkpoint/` (trainable tensors + optimizer state as safetensors, and
`state.json`; replaced atomically). A cancelled run checkpoints the last finished step before it stops.

The same loop runs as one of N processes when `torchrun` starts it (WORLD_SIZE > 1; `core.distributed` builds the
launch): FSDP shards the trainable tensors and their optimizer state across the ranks (the frozen body is replicated,
it needs no gradients), each rank trains on its slice of the global batch BlockOrder draws for the step, and FSDP
averages the gradients — so N processes take the steps one process would. Rank 0 alone reports progress and writes
logs, checkpoints (full tensors, gathered from every rank: any number of processes can resume them) and the model;
a cancel seen by any rank stops every rank after the same step.
"""
from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from core.errors import TweetyError
from core.jobs import (MARKER, Cancelled, CancelToken, ProgressFn, Reporter, atomic_dir, atomic_file,
                       check_output_dir, unprivate)

log = logging.getLogger(__name__)

STAGES = ("embeddings", "outer-layers")
SCHEDULES = ("cosine", "linear")
TRAINING = "training"  # sub-folder of the output with logs and the checkpoint


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
    eval_max_bytes: int = 50_000  # held-out text is cut to this many bytes (0: all)
    checkpoint_every: int = 100
    seed: int = 0
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
        if not self.lr > 0:
            problems.append("the learning rate must be positive")
        if problems:
            raise TweetyError("bad fine-tuning settings: " + "; ".join(problems), fix="change the settings")


@dataclass(frozen=True)
class StepRecord:
    """One optimizer step of the curve (`heldout_bpb` only on evaluation steps)."""
    step: int
    loss: float
    lr: float
    tokens: int  # training tokens seen so far
    seconds: float  # training time so far (evaluation, checkpoints and pauses excluded)
    tokens_per_s: float
    heldout_bpb: float | None = None


@dataclass
class RunState:
    """What `state.json` holds: enough to resume exactly and to refuse resuming something else."""
    settings: dict
    model: str
    text_sha256: str
    heldout_sha256: str | None
    step: int = 0
    seconds: float = 0.0
    initial_bpb: float | None = None
    finished: bool = False
    curve: list[StepRecord] = field(default_factory=list)

    @staticmethod
    def load(path: Path) -> RunState:
        try:
            data = json.loads(path.read_text())
            data["curve"] = [StepRecord(**r) for r in data["curve"]]
            return RunState(**data)
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise TweetyError(f"the checkpoint state is damaged ({e})", path=path,
                              fix="start the fine-tuning again in a new folder") from None


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


# --- data -----------------------------------------------------------------------------------------------------------

def pack_blocks(tokenizer, lines: list[str], block_size: int, *, path: str | Path = "",
                report: Reporter | None = None):
    """All text as one token stream cut into full blocks of `block_size`, each opened by the document-start token
    (the remainder shorter than a block is dropped). Returns a LongTensor [blocks, block_size]."""
    import torch

    from core.evaluate import document_start_id
    from core.tokenizer import encode_many

    start = document_start_id(tokenizer)
    # The text in pieces of 32 lines, 8 pieces per tokenizer call (see encode_many). A newline at a piece's end is
    # tokenized on its own rather than merged with what follows: harmless for training.
    pieces = ["\n".join(lines[j:j + 32]) + "\n" for j in range(0, len(lines), 32)]
    ids = [i for piece in encode_many(tokenizer, pieces, report, batch=8) for i in piece]
    step = block_size - 1
    n = len(ids) // step
    if n == 0:
        raise TweetyError(f"the training text is shorter than one block ({len(ids):,} tokens; a block holds "
                          f"{step:,} text tokens)", path=path or None,
                          fix="add more target-language text or lower the block size")
    blocks = torch.tensor(ids[:n * step], dtype=torch.long).view(n, step)
    return torch.cat([torch.full((n, 1), start, dtype=torch.long), blocks], dim=1)


class BlockOrder:
    """Sequence k of the run is block `perm(epoch)[k % n]`, epoch = k // n, perm seeded by (seed, epoch): batches
    depend on the step only, which is what makes resuming exact."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self._epoch, self._perm = n, seed, -1, None

    def indices(self, first: int, count: int):
        import torch

        out = []
        for k in range(first, first + count):
            epoch = k // self.n
            if epoch != self._epoch:
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g)
            out.append(int(self._perm[k % self.n]))
        return out


def learning_rate(s: FinetuneSettings, step: int) -> float:
    """Linear warm-up over `warmup_steps`, then cosine (to min_lr_ratio × lr) or linear (to 0) decay."""
    if step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    span = max(1, s.steps - s.warmup_steps)
    t = min(1.0, (step - s.warmup_steps) / span)
    if s.schedule == "linear":
        return s.lr * (1 - t)
    return s.lr * (s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


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

def finetune(model_dir: str | Path, text: str | Path, heldout: str | Path | None, out_dir: str | Path,
             settings: FinetuneSettings = FinetuneSettings(), *, resume: bool = False,
             progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> FinetuneResult:
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


def _finetune(model_dir: Path, text, heldout, out: Path, settings: FinetuneSettings, resume: bool,
              progress: ProgressFn | None, cancel: CancelToken | None, ranks: Ranks) -> FinetuneResult:
    import torch

    from core import resources
    from core.evaluate import bits_per_byte
    from core.models import load_model

    if settings.batch_size % ranks.world:
        raise TweetyError(f"the batch size ({settings.batch_size}) must be a multiple of the number of training "
                          f"processes ({ranks.world})", fix="change the batch size or the number of processes")
    # Ranks > 0 never report; with several ranks a cancel is honoured only once all ranks agree on it (see
    # Ranks.step_done), never by one rank alone in the middle of a collective.
    if ranks.rank:
        progress = None
    local_cancel = cancel if ranks.world == 1 else None
    ckpt = checkpoint_dir(out)
    lines = resources.read_lines(text)
    heldout_text = resources.head_bytes(resources.read_text(heldout), settings.eval_max_bytes) if heldout else None
    state = RunState(asdict(settings), str(Path(model_dir).resolve()), resources.sha256_file(text),
                     resources.sha256_file(heldout) if heldout else None)
    if resume:
        state = ranks.on_rank0(lambda: _resumable(out, state))
    else:
        ranks.on_rank0(lambda: _fresh_output(out))

    report = Reporter(progress, local_cancel, "Fine-tuning")
    report(0, None, "loading the model")
    device = ranks.device
    model, tokenizer = load_model(model_dir, dtype="auto")
    stored = {name: p.dtype for name, p in model.named_parameters()}
    names = set(trainable_names(model, settings))
    for name, p in model.named_parameters():
        p.requires_grad_(name in names)
        if name in names or device == "cpu":  # trainable weights train in float32; CPU has no bf16 autocast here
            p.data = p.data.float()
    model.to(device)
    optimizer_state = _load_checkpoint(ckpt, model, names) if state.step else None
    ranks.shard(model, names)
    params = [p for name, p in model.named_parameters() if name in names]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, betas=(0.9, 0.95), weight_decay=settings.weight_decay,
                                  fused=True)
    if optimizer_state:
        optimizer.load_state_dict(ranks.shard_like(optimizer_state, params))

    blocks = pack_blocks(tokenizer, lines, settings.block_size, path=text,
                         report=Reporter(progress, local_cancel, "Preparing text"))
    order = BlockOrder(len(blocks), settings.seed)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda")
                else contextlib.nullcontext())

    def evaluate() -> float | None:
        if not heldout_text:
            return None
        with autocast:
            bpb = bits_per_byte(model, tokenizer, heldout_text, progress=None, cancel=local_cancel).bits_per_byte
        model.train()
        return bpb

    resumed_from = state.step
    log.info("fine-tuning %s: %d blocks of %d tokens, %d trainable tensors (%s parameters) on %s (rank %d of %d)",
             model_dir, len(blocks), settings.block_size, len(params), f"{sum(p.numel() for p in params):,}", device,
             ranks.rank, ranks.world)
    if state.initial_bpb is None:
        report(0, settings.steps, "evaluating before training")
        state.initial_bpb = evaluate()
        if state.initial_bpb is not None:
            report(0, settings.steps, f"held-out {state.initial_bpb:.3f} bits/byte before training",
                   {"step": 0, "heldout_bpb": state.initial_bpb})
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
                with autocast:
                    logits = model(input_ids=x).logits
                # Targets shifted left and the last position ignored: the logits are used as they are, no copy of
                # a [batch, block-1, vocab] slice.
                targets = torch.nn.functional.pad(x[:, 1:], (0, 1), value=-100)
                loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                                                         ignore_index=-100)
                (loss / settings.grad_accum).backward()
                loss_sum += loss.detach()
            if settings.clip:
                torch.nn.utils.clip_grad_norm_(params, settings.clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            # One device sync per step; with several ranks also the one all-reduce of the loss and the cancel flag.
            loss_value, stop = ranks.step_done(loss_sum / settings.grad_accum, cancel)
            dt = time.monotonic() - t0
            # The step is complete (and recorded) before anything that can be cancelled, so a checkpoint taken on
            # cancel is always at a step boundary.
            state.step += 1
            state.seconds += dt
            session_steps, session_seconds = session_steps + 1, session_seconds + dt
            record = StepRecord(state.step, round(loss_value, 5), lr, state.step * tokens_per_step,
                                round(state.seconds, 3), round(session_steps * tokens_per_step / session_seconds, 1))
            state.curve.append(record)
            if state.step % settings.eval_every == 0 or state.step == settings.steps:
                report(state.step, settings.steps, "evaluating held-out text")
                bpb = evaluate()
                if bpb is not None:
                    record = state.curve[-1] = replace(record, heldout_bpb=round(bpb, 5))
            if state.step % settings.checkpoint_every == 0 and state.step < settings.steps:
                _save_checkpoint(ckpt, model, optimizer, names, state, ranks)
            wall = (time.monotonic() - session_start) / session_steps
            eta = wall * (settings.steps - state.step)
            report(state.step, settings.steps, _message(record),
                   {k: v for k, v in asdict(record).items() if v is not None} | {"eta_s": eta})
            if stop:
                raise Cancelled()
    except Cancelled:
        if state.step > resumed_from:
            _save_checkpoint(ckpt, model, optimizer, names, state, ranks)
        raise
    state.finished = True
    trained = _save_checkpoint(ckpt, model, optimizer, names, state, ranks)
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
    return FinetuneResult(out, state.step, state.initial_bpb, bpbs[-1] if bpbs else None, state.seconds,
                          state.step * tokens_per_step / state.seconds if state.seconds else 0.0, resumed_from,
                          state.curve)


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


def checkpoint_dir(out: str | Path) -> Path:
    return Path(out) / TRAINING / "checkpoint"


def checkpoint_state(out: str | Path) -> RunState | None:
    """The state of the run checkpointed in the output folder `out`, or None when there is none."""
    path = checkpoint_dir(out) / "state.json"
    return RunState.load(path) if path.exists() else None


def _fresh_output(out: Path) -> None:
    """A new run may take an empty folder or one of ours — but never throw away an unfinished run's checkpoint."""
    check_output_dir(out)
    s = checkpoint_state(out)
    if s is not None:
        if not s.finished:
            raise TweetyError(f"this folder holds an unfinished fine-tuning run (step {s.step} of "
                              f"{s.settings['steps']})", path=out,
                              fix="resume it, or choose another output folder")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("written by Tweety Studio; safe to replace\n")


def _resumable(out: Path, fresh: RunState) -> RunState:
    saved = checkpoint_state(out)
    if saved is None:
        raise TweetyError("there is no fine-tuning run to resume in this folder", path=out,
                          fix="start a new run (without resume)")
    changed = [k for k in fresh.settings if k != "steps" and saved.settings.get(k) != fresh.settings[k]]
    if saved.model != fresh.model:
        changed.append(f"model ({saved.model})")
    if saved.text_sha256 != fresh.text_sha256 or saved.heldout_sha256 != fresh.heldout_sha256:
        changed.append("training or held-out text")
    if changed:
        raise TweetyError("the checkpoint was made with different " + ", ".join(changed),
                          path=checkpoint_dir(out) / "state.json",
                          fix="resume with the same model, files and settings (only the number of steps may change)")
    if saved.step >= fresh.settings["steps"]:
        raise TweetyError(f"the run already has {saved.step} steps", path=out, fix="ask for more steps to continue")
    saved.settings, saved.finished = fresh.settings, False
    return saved


# --- several processes -------------------------------------------------------------------------------------------

@dataclass
class Ranks:
    """This process's place in a `torchrun` launch. A plain run is world 1, where every method does nothing (or the
    single-process thing), so the training loop has one path."""
    rank: int = 0
    world: int = 1
    device: str = "cpu"
    owns_group: bool = False  # we started the process group, so we end it

    @staticmethod
    def join(device: str) -> Ranks:
        """Join the process group `torchrun` describes in the environment (WORLD_SIZE, RANK, LOCAL_RANK,
        MASTER_ADDR/PORT): gloo on the CPU, NCCL on GPUs, one GPU per local rank."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return Ranks(device=device)
        import torch
        import torch.distributed as dist

        if device.startswith("cuda"):
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(device)
        owns = not dist.is_initialized()
        if owns:
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        return Ranks(dist.get_rank(), dist.get_world_size(), device, owns)

    def leave(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()

    def shard(self, model, names: set[str]) -> None:
        """FSDP2 (`fully_shard`) over the trainable tensors only: each rank keeps 1/world of them, of their gradients
        and of the optimizer moments (the optimizer is built on the shards). The frozen body is left out
        (`ignored_params`): it is replicated, as it needs neither gradients nor optimizer state. A tied head is the
        embedding parameter itself, so FSDP shards it once and gathers it for both uses."""
        if self.world == 1:
            return
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(self.device.split(":")[0], (self.world,))
        fully_shard(model, mesh=mesh, ignored_params={p for n, p in model.named_parameters() if n not in names})
        # FSDP allocates the gathered (unsharded) tensors at the first gather. Held-out evaluation runs under
        # torch.inference_mode, and the first gather would happen there (before the first step): tensors allocated
        # in inference mode cannot be saved for backward later. One gather now, outside it, allocates them normally.
        model.unshard()
        model.reshard()

    def shard_like(self, optimizer_state: dict, params: list) -> dict:
        """A full optimizer state dict (from a checkpoint) cut like the sharded parameters: each moment becomes a
        DTensor placed as its parameter (every rank holds the full tensor, so no communication)."""
        if self.world == 1:
            return optimizer_state
        from torch.distributed.tensor import distribute_tensor

        state = {}
        for index, values in optimizer_state["state"].items():
            p = params[index]
            state[index] = {k: distribute_tensor(v.to(self.device), p.device_mesh, p.placements, src_data_rank=None)
                            if v.shape == p.shape else v for k, v in values.items()}
        return {"state": state, "param_groups": optimizer_state["param_groups"]}

    def sync_gradients(self, model, last_micro_batch: bool) -> None:
        """Gradients are averaged across ranks once per step, after the last micro-batch (accumulated unsharded until
        then), not after each one."""
        if self.world > 1:
            model.set_requires_gradient_sync(last_micro_batch)

    def gather(self, tensor):
        """The whole of a possibly sharded tensor, on the CPU, on rank 0 (None on the others, which only take part:
        every rank calls it)."""
        from torch.distributed.tensor import DTensor

        if isinstance(tensor, DTensor):
            tensor = tensor.full_tensor()
        return tensor.detach().cpu().contiguous() if self.rank == 0 else None

    def step_done(self, loss, cancel: CancelToken | None) -> tuple[float, bool]:
        """(mean loss over the ranks, stop?) after a step. With several ranks: one all-reduce of the rank's loss and
        its cancel flag, so every rank stops after the same step once any rank was asked to (torchrun hands a
        SIGTERM/SIGINT to each worker; core.distributed turns it into a cancel)."""
        if self.world == 1:
            return float(loss), False  # the Reporter honours cancel itself
        import torch
        import torch.distributed as dist

        both = torch.stack([loss.float(), torch.tensor(float(cancel is not None and cancel.cancelled),
                                                       device=loss.device)])
        dist.all_reduce(both)
        return float(both[0]) / self.world, bool(both[1] > 0)

    def on_rank0(self, fn):
        """Run `fn` (preparing or checking the output folder) on rank 0 only; every rank gets its result — or raises
        its TweetyError, so a refused run stops all ranks at once with the same message."""
        if self.world == 1:
            return fn()
        import torch.distributed as dist

        box = [None]
        if self.rank == 0:
            try:
                box[0] = ("ok", fn())
            except TweetyError as e:
                box[0] = ("error", (e.what, str(e.path) if e.path is not None else None, e.line, e.fix))
        dist.broadcast_object_list(box, src=0)
        kind, value = box[0]
        if kind == "error":
            what, path, line, fix = value
            raise TweetyError(what, path=path, line=line, fix=fix)
        return value

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


# --- checkpoints and outputs ----------------------------------------------------------------------------------------

def _save_checkpoint(ckpt: Path, model, optimizer, names: set[str], state: RunState, ranks: Ranks) -> dict:
    """Trainable tensors, optimizer state (both safetensors) and `state.json`, replacing the last checkpoint at once.
    Logs are refreshed at the same time. Every rank calls it (the full tensors are gathered from all of them); rank 0
    writes. Returns the full trainable tensors (on the CPU; on rank 0 only)."""
    from safetensors.torch import save_file

    params = dict(model.named_parameters())
    opt = optimizer.state_dict()
    tensors = {}
    for index, values in opt["state"].items():
        for key, value in values.items():
            tensors[f"{index}.{key}"] = ranks.gather(value)
    weights = {n: ranks.gather(params[n]) for n in sorted(names)}
    if ranks.rank == 0:
        with atomic_dir(ckpt) as tmp:
            save_file(weights, tmp / "trainable.safetensors")
            save_file(tensors, tmp / "optimizer.safetensors")
            (tmp / "optimizer.json").write_text(json.dumps(opt["param_groups"]))
            (tmp / "state.json").write_text(json.dumps(asdict(state), indent=1))
        write_logs(ckpt.parent, state)
    ranks.barrier()  # no rank runs ahead of a checkpoint it may have to resume from
    return weights


def _load_checkpoint(ckpt: Path, model, names: set[str]) -> dict:
    """Copy the checkpoint's trainable tensors into the (not yet sharded) model; return the optimizer state dict
    (full tensors, for `Ranks.shard_like`)."""
    import torch
    from safetensors.torch import load_file

    try:
        weights = load_file(ckpt / "trainable.safetensors")
        flat = load_file(ckpt / "optimizer.safetensors")
        groups = json.loads((ckpt / "optimizer.json").read_text())
    except (OSError, ValueError) as e:
        raise TweetyError(f"the checkpoint is damaged ({e})", path=ckpt, fix="start again in a new folder") from None
    if set(weights) != names:
        raise TweetyError("the checkpoint's tensors do not match this model", path=ckpt,
                          fix="resume with the model the run started from")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
    opt_state: dict[int, dict] = {}
    for key, value in flat.items():
        index, name = key.split(".", 1)
        opt_state.setdefault(int(index), {})[name] = value
    return {"state": opt_state, "param_groups": groups}


def write_logs(folder: Path, state: RunState) -> None:
    """`log.csv` and `log.json` (the curve), and `curve.png` (loss and held-out BPB against steps)."""
    columns = list(StepRecord.__dataclass_fields__)
    with atomic_file(folder / "log.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in state.curve:
            w.writerow(["" if getattr(r, c) is None else getattr(r, c) for c in columns])
    with atomic_file(folder / "log.json") as tmp:
        tmp.write_text(json.dumps({"settings": state.settings, "initial_bpb": state.initial_bpb,
                                   "curve": [asdict(r) for r in state.curve]}, indent=1))
    with atomic_file(folder / "curve.png") as tmp:
        plot_curve(state, tmp)


def plot_curve(state: RunState, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no Qt
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), dpi=100)
    ax = fig.add_subplot()
    steps = [r.step for r in state.curve]
    ax.plot(steps, [r.loss for r in state.curve], color="#4c72b0", lw=1, label="training loss (nats/token)")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (nats/token)", color="#4c72b0")
    evals = [(r.step, r.heldout_bpb) for r in state.curve if r.heldout_bpb is not None]
    if state.initial_bpb is not None:
        evals.insert(0, (0, state.initial_bpb))
    if evals:
        ax2 = ax.twinx()
        ax2.plot(*zip(*evals), "o-", color="#dd8452", label="held-out bits per byte")
        ax2.set_ylabel("held-out bits per byte", color="#dd8452")
    fig.suptitle(f"Fine-tuning ({state.settings['stage']} stage)")
    fig.tight_layout()
    fig.savefig(path, format="png")


def _write_model(model, tokenizer, model_dir: Path, out: Path, settings: FinetuneSettings) -> None:
    """Save the model next to `training/`: each file moved into place, config.json last, so the folder only looks
    like a model once it is complete. Provenance (project.json) is carried over with the fine-tuning added."""
    from core.init import write_adapted
    from core.project import PROJECT_FILE

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
