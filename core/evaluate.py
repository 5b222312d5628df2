"""Evaluation: bits per byte on held-out text, comparable across tokenizers.

bits_per_byte = total negative log-likelihood of the text (nats) / ln 2 / its UTF-8 bytes. The text is tokenized in
one piece and cut into fixed windows; each window starts with the same document-start token (which is not scored),
so every text token is predicted exactly once whatever the tokenizer — a tokenizer cannot look better by making
fewer, longer predictions count for less.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from core.errors import TweetyError
from core.jobs import CancelToken, ProgressFn, Reporter


@dataclass(frozen=True)
class EvalResult:
    bits_per_byte: float
    token_ppl: float
    tokens_per_byte: float
    tokens: int
    bytes: int
    nll_nats: float


def document_start_id(tokenizer) -> int:
    """The token each window starts with: the BOS a Llama-style tokenizer adds itself, else the end-of-text token
    (what GPT-style models see between documents), else EOS."""
    bos = tokenizer.bos_token_id
    if bos is not None and tokenizer("a")["input_ids"][:1] == [bos]:
        return bos
    vocab = tokenizer.get_vocab()
    for name in ("<|endoftext|>", "</s>"):
        if name in vocab:
            return vocab[name]
    if tokenizer.eos_token_id is None:
        raise TweetyError("the tokenizer has neither BOS nor EOS token", fix="use a tokenizer with special tokens")
    return tokenizer.eos_token_id


def bits_per_byte(model, tokenizer, text: str, *, window: int = 512, batch_size: int = 8,
                  progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> EvalResult:
    import torch

    if not text.strip():
        raise TweetyError("the evaluation text is empty", fix="choose a held-out file with text in it")
    report = Reporter(progress, cancel, "Evaluating")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    start = document_start_id(tokenizer)
    step = window - 1
    chunks = [[start] + ids[i:i + step] for i in range(0, len(ids), step)]
    device = next(model.parameters()).device
    total = 0.0
    model.eval()
    with torch.inference_mode():
        for b in range(0, len(chunks), batch_size):
            report(b, len(chunks), f"{len(ids):,} tokens")
            batch = chunks[b:b + batch_size]
            width = max(map(len, batch))
            x = torch.zeros(len(batch), width, dtype=torch.long)
            mask = torch.zeros(len(batch), width, dtype=torch.long)
            for k, c in enumerate(batch):
                x[k, :len(c)] = torch.tensor(c)
                mask[k, :len(c)] = 1
            x, mask = x.to(device), mask.to(device)
            logits = model(input_ids=x, attention_mask=mask).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            nll = -logp.gather(-1, x[:, 1:, None]).squeeze(-1)
            total += float((nll * mask[:, 1:]).sum())
    report(len(chunks), len(chunks), "done")
    n_bytes = len(text.encode("utf-8"))
    return EvalResult(bits_per_byte=total / math.log(2) / n_bytes, token_ppl=math.exp(total / len(ids)),
                      tokens_per_byte=len(ids) / n_bytes, tokens=len(ids), bytes=n_bytes, nll_nats=total)
