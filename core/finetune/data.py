"""Training text → training blocks: the text tokenized once and packed into full blocks that each open with the
document-start token (the windows the bits-per-byte evaluation reads; no padding anywhere), and the order in which the
run draws them (a function of the seed and the position only, so a resumed run draws what an uninterrupted one would).
"""
from __future__ import annotations

from pathlib import Path

from core.errors import TweetyError
from core.jobs import Reporter


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
