"""Training text → training blocks: the text tokenized once and packed into full blocks that each open with the
document-start token (the windows the bits-per-byte evaluation reads; no padding anywhere), and the order in which the
run draws them (a function of the seed and the position only, so a resumed run draws what an uninterrupted one would).

Part of the text is trained as conversations (`chat_share` of its passages): a model fine-tuned on raw text alone
never sees a chat turn end, and its replies ran on until the length limit (0 of 10 short questions answered by
themselves after the default fine-tune, issue 32). A passage becomes user and assistant turns rendered with the
model's own chat template — exactly what llama.cpp renders at chat time, the template's default system prompt
included — so each turn is followed by the template's end-of-turn token. The template's preamble is not trained on:
with it as targets, the model learnt to write SmolLM2's English default system prompt as a reply ("…helpful AI
trained by Hugging Face", 3 of 20 replies). Training on the replies alone (the usual instruction-tuning mask) ended
fewer replies by themselves (9 of 20, against 16 of 20 with every turn trained: docs/results/chat.md) — each user
turn's end is an end-of-turn token to learn too.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from core.errors import TweetyError
from core.jobs import Reporter

PIECE_LINES = 32  # raw text is tokenized in pieces of this many lines
PASSAGE_LINES = 4  # a conversation is made of this many consecutive lines
Piece = tuple[str, bool]  # text, and whether its tokens are training targets (a conversation's prompt parts are not)


@dataclass(frozen=True)
class Blocks:
    """Training blocks: `ids` [blocks, block_size] token ids, `trained` [blocks, block_size] whether each token is a
    target (False for the prompt parts of conversations and the document-start token)."""
    ids: object  # torch.LongTensor
    trained: object  # torch.BoolTensor

    def __len__(self) -> int:
        return len(self.ids)

    def targets(self, index):
        """The next-token targets of blocks `index`: ids shifted left, -100 (ignored) where nothing is trained and
        at the last position."""
        import torch

        ids, trained = self.ids[index], self.trained[index]
        shifted = ids[:, 1:].masked_fill(~trained[:, 1:], -100)
        return torch.nn.functional.pad(shifted, (0, 1), value=-100)


def pack_blocks(tokenizer, lines: list[str], block_size: int, *, chat_share: float = 0.0, seed: int = 0,
                path: str | Path = "", report: Reporter | None = None) -> Blocks:
    """All text as one token stream cut into full blocks of `block_size`, each opened by the document-start token
    (the remainder shorter than a block is dropped); `chat_share` of its passages as conversations (see the
    module)."""
    import torch

    from core.evaluate import document_start_id
    from core.tokenizer import encode_many

    start = document_start_id(tokenizer)
    # Pieces of 32 lines, 8 pieces per tokenizer call (see encode_many). A newline at a piece's end is tokenized on
    # its own rather than merged with what follows: harmless for training.
    pieces = training_pieces(tokenizer, lines, chat_share, seed)
    encoded = encode_many(tokenizer, [text for text, _ in pieces], report, batch=8)
    ids = [i for piece in encoded for i in piece]
    trained = [t for piece, (_, t) in zip(encoded, pieces) for _ in piece]
    step = block_size - 1
    n = len(ids) // step
    if n == 0:
        raise TweetyError(f"the training text is shorter than one block ({len(ids):,} tokens; a block holds "
                          f"{step:,} text tokens)", path=path or None,
                          fix="add more target-language text or lower the block size")
    blocks = torch.tensor(ids[:n * step], dtype=torch.long).view(n, step)
    targets = torch.tensor(trained[:n * step], dtype=torch.bool).view(n, step)
    return Blocks(torch.cat([torch.full((n, 1), start, dtype=torch.long), blocks], dim=1),
                  torch.cat([torch.zeros((n, 1), dtype=torch.bool), targets], dim=1))


def training_pieces(tokenizer, lines: list[str], chat_share: float, seed: int) -> list[Piece]:
    """The text to tokenize, in order: raw pieces of up to PIECE_LINES lines, and — for `chat_share` of the
    passages of PASSAGE_LINES lines, drawn with `seed` — the passage as a conversation (`chat_pieces`). A tokenizer
    without a chat template (a base model) gets raw text only."""
    passages = range(0, len(lines), PASSAGE_LINES)
    chosen = (set(random.Random(seed).sample(range(len(passages)), round(chat_share * len(passages))))
              if getattr(tokenizer, "chat_template", None) else set())
    pieces: list[Piece] = []
    raw: list[str] = []

    def flush() -> None:
        if raw:
            pieces.append(("\n".join(raw) + "\n", True))
            raw.clear()

    for k, first in enumerate(passages):
        passage = lines[first:first + PASSAGE_LINES]
        said = [line.strip() for line in passage if line.strip()]
        if k in chosen and len(said) >= 2:
            flush()
            pieces.extend(chat_pieces(tokenizer, conversation(said, k)))
        else:
            raw.extend(passage)
            if len(raw) >= PIECE_LINES:
                flush()
    flush()
    return pieces


def chat_pieces(tokenizer, messages: list[dict]) -> list[Piece]:
    """A conversation rendered with the tokenizer's chat template: its preamble (the template's text before the
    first user message — SmolLM2's English default system prompt and the user header) untrained, the rest trained:
    the turns, their end-of-turn tokens and the headers between them. The preamble is the common beginning of two
    renderings that differ only in the first user message, whatever the template."""
    def render(first: str) -> str:
        return tokenizer.apply_chat_template([{**messages[0], "content": first}, *messages[1:]], tokenize=False)

    whole, other = render(messages[0]["content"]), render("\x00")
    cut = next((i for i, (a, b) in enumerate(zip(whole, other)) if a != b), 0)
    return [(whole[:cut], False), (whole[cut:], True)] if cut else [(whole, True)]


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
