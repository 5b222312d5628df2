"""A run's `training/` folder: the checkpoint (trainable tensors and optimizer state as safetensors, `state.json`;
replaced atomically) that a stopped run resumes from exactly, and the logs (`log.csv`, `log.json`, `curve.png`).

`state.json` may have been written by another version of Tweety Studio: keys this version does not know are dropped,
keys it lacks take their defaults (a setting added since then counts as its default when checking that a resume
uses the same settings); a state without what resuming needs (the model, the texts' hashes, the settings) is refused
with a TweetyError saying so.
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import TweetyError
from core.finetune.settings import FinetuneSettings, known_fields, required_fields
from core.jobs import MARKER, atomic_dir, atomic_file, check_output_dir

if TYPE_CHECKING:
    from core.finetune.ranks import Ranks

TRAINING = "training"  # sub-folder of the output with logs and the checkpoint


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
        """Read `state.json`, tolerant of another version's keys (see the module); what cannot be resumed is a
        TweetyError."""
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise TweetyError(
                f"the checkpoint state is damaged ({e})", path=path, fix="start the fine-tuning again in a new folder"
            ) from None
        curve = data.get("curve", []) if isinstance(data, dict) else None
        if not isinstance(curve, list) or not all(isinstance(r, dict) for r in curve):
            raise TweetyError(
                "the checkpoint state is damaged (not a run's state)",
                path=path,
                fix="start the fine-tuning again in a new folder",
            )
        missing = [name for name in required_fields(RunState) if name not in data] + sorted(
            {name for r in curve for name in required_fields(StepRecord) if name not in r}
        )
        if missing or not isinstance(data["settings"], dict):
            lacks = f"it lacks {', '.join(missing)}" if missing else "its settings are not a table"
            raise TweetyError(
                f"the checkpoint was written by another version of Tweety Studio ({lacks}), so this "
                "version cannot resume it",
                path=path,
                fix="start the fine-tuning again (in a new folder, or without resume)",
            )
        try:
            return RunState(
                **{**known_fields(RunState, data), "curve": [StepRecord(**known_fields(StepRecord, r)) for r in curve]}
            )
        except TypeError as e:  # cannot happen with the checks above; kept a plain message if it ever does
            raise TweetyError(
                f"the checkpoint state is damaged ({e})", path=path, fix="start the fine-tuning again in a new folder"
            ) from None


def checkpoint_dir(out: str | Path) -> Path:
    return Path(out) / TRAINING / "checkpoint"


def checkpoint_state(out: str | Path) -> RunState | None:
    """The state of the run checkpointed in the output folder `out`, or None when there is none."""
    path = checkpoint_dir(out) / "state.json"
    return RunState.load(path) if path.exists() else None


def fresh_output(out: Path) -> None:
    """A new run may take an empty folder or one of ours — but never throw away an unfinished run's checkpoint."""
    check_output_dir(out)
    s = checkpoint_state(out)
    if s is not None:
        if not s.finished:
            raise TweetyError(
                f"this folder holds an unfinished fine-tuning run (step {s.step} of {s.settings.get('steps', '?')})",
                path=out,
                fix="resume it, or choose another output folder",
            )
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("written by Tweety Studio; safe to replace\n")


def resumable_state(out: Path, fresh: RunState) -> RunState:
    saved = checkpoint_state(out)
    if saved is None:
        raise TweetyError(
            "there is no fine-tuning run to resume in this folder", path=out, fix="start a new run (without resume)"
        )
    # A setting the checkpoint's version did not have ran at its default (what that version did).
    defaults = asdict(FinetuneSettings())
    changed = [
        k for k in fresh.settings if k != "steps" and saved.settings.get(k, defaults.get(k)) != fresh.settings[k]
    ]
    if saved.model != fresh.model:
        changed.append(f"model ({saved.model})")
    if saved.text_sha256 != fresh.text_sha256 or saved.heldout_sha256 != fresh.heldout_sha256:
        changed.append("training or held-out text")
    if changed:
        raise TweetyError(
            "the checkpoint was made with different " + ", ".join(changed),
            path=checkpoint_dir(out) / "state.json",
            fix="resume with the same model, files and settings (only the number of steps may change)",
        )
    # A run stopped after its last checkpoint but before its model was written (the closing calibration comes in
    # between; config.json is written last) resumes to write it.
    steps, written = fresh.settings["steps"], (out / "config.json").exists()
    if saved.step > steps or (saved.step == steps and written):
        raise TweetyError(f"the run already has {saved.step} steps", path=out, fix="ask for more steps to continue")
    saved.settings, saved.finished = fresh.settings, False
    return saved


def save_checkpoint(ckpt: Path, model, optimizer, names: set[str], state: RunState, ranks: Ranks) -> dict:
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


def load_checkpoint(ckpt: Path, model, names: set[str]) -> dict:
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
        raise TweetyError(
            "the checkpoint's tensors do not match this model",
            path=ckpt,
            fix="resume with the model the run started from",
        )
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
        tmp.write_text(
            json.dumps(
                {
                    "settings": state.settings,
                    "initial_bpb": state.initial_bpb,
                    "curve": [asdict(r) for r in state.curve],
                },
                indent=1,
            )
        )
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
    fig.suptitle(f"Fine-tuning ({state.settings.get('stage', 'embeddings')} stage)")
    fig.tight_layout()
    fig.savefig(path, format="png")
