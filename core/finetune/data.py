"""Training text → training blocks: the text tokenized once and packed into full blocks that each open with the
document-start token (the windows the bits-per-byte evaluation reads; no padding anywhere), and the order in which the
run draws them (a function of the seed and the position only, so a resumed run draws what an uninterrupted one would).

Part of the text is trained as conversations (`chat_share` of its passages): a model fine-tuned on raw text alone
never sees a chat turn end, and none of its replies ended by itself (0 of 20 short Spanish prompts after the demo's
fine-tune; docs/results/chat.md). A passage becomes user and assistant turns rendered with the model's own chat
template — exactly what llama.cpp renders at chat time, the template's default system prompt included — so each turn
is followed by the template's end-of-turn token; 13 to 16 of the 20 replies then end by themselves. Every token is
trained: leaving the template's preamble or the prompts out of the targets, or one-line replies, measured no better.
"""

from __future__ import annotations

import random
from pathlib import Path

from core.errors import TweetyError
from core.jobs import Reporter

PIECE_LINES = 32  # raw text is tokenized in pieces of this many lines
PASSAGE_LINES = 4  # a conversation is made of this many consecutive lines


def pack_blocks(
    tokenizer,
    lines: list[str],
    block_size: int,
    *,
    chat_share: float = 0.0,
    seed: int = 0,
    path: str | Path = "",
    report: Reporter | None = None,
):
    """All text as one token stream cut into full blocks of `block_size`, each opened by the document-start token
    (the remainder shorter than a block is dropped); `chat_share` of its passages as conversations (see the module).
    Returns a LongTensor [blocks, block_size]."""
    import torch

    from core.evaluate import document_start_id
    from core.tokenizer import encode_many

    start = document_start_id(tokenizer)
    # Pieces of 32 lines, 8 pieces per tokenizer call (see encode_many). A newline at a piece's end is tokenized on
    # its own rather than merged with what follows: harmless for training.
    pieces = training_pieces(tokenizer, lines, chat_share, seed)
    ids = [i for piece in encode_many(tokenizer, pieces, report, batch=8) for i in piece]
    step = block_size - 1
    n = len(ids) // step
    if n == 0:
        raise TweetyError(
            f"the training text is shorter than one block ({len(ids):,} tokens; a block holds {step:,} text tokens)",
            path=path or None,
            fix="add more target-language text or lower the block size",
        )
    blocks = torch.tensor(ids[: n * step], dtype=torch.long).view(n, step)
    return torch.cat([torch.full((n, 1), start, dtype=torch.long), blocks], dim=1)


def training_pieces(tokenizer, lines: list[str], chat_share: float, seed: int) -> list[str]:
    """The text to tokenize, in order: raw pieces of up to PIECE_LINES lines, and — for `chat_share` of the
    passages of PASSAGE_LINES lines, drawn with `seed` — the passage as a conversation in the tokenizer's chat
    template. A tokenizer without a chat template (a base model) gets raw text only."""
    passages = range(0, len(lines), PASSAGE_LINES)
    chosen = (
        set(random.Random(seed).sample(range(len(passages)), round(chat_share * len(passages))))
        if getattr(tokenizer, "chat_template", None)
        else set()
    )
    pieces: list[str] = []
    raw: list[str] = []

    def flush() -> None:
        if raw:
            pieces.append("\n".join(raw) + "\n")
            raw.clear()

    for k, first in enumerate(passages):
        passage = lines[first : first + PASSAGE_LINES]
        said = [line.strip() for line in passage if line.strip()]
        if k in chosen and len(said) >= 2:
            flush()
            pieces.append(tokenizer.apply_chat_template(conversation(said, k), tokenize=False))
        else:
            raw.extend(passage)
            if len(raw) >= PIECE_LINES:
                flush()
    flush()
    return pieces


def conversation(said: list[str], k: int) -> list[dict]:
    """A passage's lines as chat turns: a line, then the rest of the passage as the reply (even k), or two
    exchanges of a line each (odd k, when the passage has four lines) — both shapes, so that a reply is seen to
    end before another user turn as well as at the end of the conversation."""
    if k % 2 and len(said) >= 4:
        turns = [said[0], said[1], said[2], " ".join(said[3:])]
    else:
        turns = [said[0], " ".join(said[1:])]
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": text} for i, text in enumerate(turns)]


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
