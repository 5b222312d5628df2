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

The package reads bottom to top: `settings` (FinetuneSettings, the learning-rate schedule), `data` (text → blocks,
their order), `ranks` (everything that differs with several processes), `checkpoint` (the `training/` folder: resume
state, checkpoints, logs), `loop` (the run). Everything public is importable from `core.finetune` itself.
"""

from core.finetune.checkpoint import (
    TRAINING,
    RunState,
    StepRecord,
    checkpoint_dir,
    checkpoint_state,
    fresh_output,
    load_checkpoint,
    plot_curve,
    resumable_state,
    save_checkpoint,
    write_logs,
)
from core.finetune.data import BlockOrder, pack_blocks, training_pieces
from core.finetune.loop import FinetuneResult, finetune, trainable_names
from core.finetune.ranks import Ranks
from core.finetune.settings import (
    CPU_TOKENS_PER_S_135M,
    EVAL_TOKENS_PER_S_135M,
    GPU_TOKENS_PER_S_135M,
    PRESETS,
    SCHEDULES,
    STAGES,
    FinetuneSettings,
    estimate_seconds,
    known_fields,
    learning_rate,
    required_fields,
)

__all__ = [
    "CPU_TOKENS_PER_S_135M",
    "EVAL_TOKENS_PER_S_135M",
    "GPU_TOKENS_PER_S_135M",
    "PRESETS",
    "estimate_seconds",
    "SCHEDULES",
    "STAGES",
    "TRAINING",
    "BlockOrder",
    "FinetuneResult",
    "FinetuneSettings",
    "Ranks",
    "RunState",
    "StepRecord",
    "checkpoint_dir",
    "checkpoint_state",
    "finetune",
    "fresh_output",
    "known_fields",
    "learning_rate",
    "load_checkpoint",
    "pack_blocks",
    "plot_curve",
    "required_fields",
    "resumable_state",
    "save_checkpoint",
    "trainable_names",
    "training_pieces",
    "write_logs",
]
