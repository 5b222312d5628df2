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
from core.tokenizer import adds_bos


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
    if adds_bos(tokenizer):
        return tokenizer.bos_token_id
    vocab = tokenizer.get_vocab()
    for name in ("<|endoftext|>", "</s>"):
        if name in vocab:
            return vocab[name]
    if tokenizer.eos_token_id is None:
        raise TweetyError("the tokenizer has neither BOS nor EOS token", fix="use a tokenizer with special tokens")
    return tokenizer.eos_token_id


def bits_per_byte(
    model,
    tokenizer,
    text: str,
    *,
    window: int = 512,
    batch_size: int = 8,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    stage: str = "Evaluating",
) -> EvalResult:
    import torch

    if not text.strip():
        raise TweetyError("the evaluation text is empty", fix="choose a held-out file with text in it")
    report = Reporter(progress, cancel, stage)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    start = document_start_id(tokenizer)
    step = window - 1
    chunks = [[start] + ids[i : i + step] for i in range(0, len(ids), step)]
    device = next(model.parameters()).device
    total = 0.0
    model.eval()
    with torch.inference_mode():
        for b in range(0, len(chunks), batch_size):
            report(b, len(chunks), f"window {b + 1:,} of {len(chunks):,} ({len(ids):,} tokens)")
            batch = chunks[b : b + batch_size]
            width = max(map(len, batch))
            x = torch.zeros(len(batch), width, dtype=torch.long)
            mask = torch.zeros(len(batch), width, dtype=torch.long)
            for k, c in enumerate(batch):
                x[k, : len(c)] = torch.tensor(c)
                mask[k, : len(c)] = 1
            x, mask = x.to(device), mask.to(device)
            logits = model(input_ids=x, attention_mask=mask).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            nll = -logp.gather(-1, x[:, 1:, None]).squeeze(-1)
            total += float((nll * mask[:, 1:]).sum())
    report(len(chunks), len(chunks), "done")
    n_bytes = len(text.encode("utf-8"))
    return EvalResult(
        bits_per_byte=total / math.log(2) / n_bytes,
        token_ppl=math.exp(total / len(ids)),
        tokens_per_byte=len(ids) / n_bytes,
        tokens=len(ids),
        bytes=n_bytes,
        nll_nats=total,
    )


# --- saying what the numbers mean ------------------------------------------------------------------------------------

SAMPLE_BYTES = 16_000  # the Evaluate page's default: a fixed sample (the held-out text's first 16 kB), ≤ 2 min for
# the demo project's three models on 2 CPU cores; the whole held-out text is one click away
BPB_VS_PERPLEXITY = (
    "Bits per byte measure surprise per byte of text, so models with different tokenizers compare "
    "fairly; token perplexity is per token, and a tokenizer with fewer, longer tokens has more to "
    "guess per token — its perplexity can rise while bits per byte fall."
)


def verdict(results: dict[str, dict], sample: str = "", language: str = "") -> str:
    """One plain sentence on an evaluation (`Project.evaluate`'s results: "source model", "adapted model" and maybe
    "fine-tuned model", each with bits_per_byte and tokens_per_byte): does the adapted model read the language better
    or worse than the source model, by how much, and with how many fewer tokens. `sample` names the text measured,
    `language` the language it is in."""
    source = results.get("source model")
    name = "fine-tuned model" if "fine-tuned model" in results else "adapted model"
    ours = results.get(name)
    if not source or not ours:
        return ""
    gain = (source["bits_per_byte"] - ours["bits_per_byte"]) / source["bits_per_byte"]
    fewer = 1 - ours["tokens_per_byte"] / source["tokens_per_byte"]
    who = "Your fine-tuned model" if name == "fine-tuned model" else "Your adapted model (not fine-tuned yet)"
    what = language or "this text"
    if abs(gain) < 0.005:
        how = f"reads {what} as well as the source model"
    elif gain > 0:
        how = f"reads {what} {gain:.0%} better than the source model"
    else:
        how = f"reads {what} {-gain:.0%} worse than the source model"
    tokens = (
        f"with {fewer:.0%} fewer tokens"
        if fewer >= 0.005
        else f"with {-fewer:.0%} more tokens"
        if fewer <= -0.005
        else "with as many tokens"
    )
    where = f" on {sample}" if sample else ""
    numbers = f" ({ours['bits_per_byte']:.3f} against {source['bits_per_byte']:.3f} bits per byte{where})"
    advice = ""
    if gain < 0:
        advice = (
            " Fine-tuning (longer, or on a GPU) usually closes the gap."
            if name == "adapted model"
            else " Train longer, or on more text, to close the gap."
        )
    return f"{who} {how}{numbers}, {tokens}.{advice}"


class OverallProgress:
    """A progress function for several evaluations in a row (one per model): each `bits_per_byte` call reports its
    own 0…100 %; this turns them into one fraction over all models, named ("model 2 of 3: adapted model")."""

    def __init__(self, progress: ProgressFn | None, names: list[str], stage: str = "Evaluating"):
        self.progress, self.names, self.stage = progress, names, stage
        self.index = -1

    def __call__(self, p) -> None:
        from core.jobs import Progress

        if p.done == 0 or self.index < 0:  # each evaluation starts with its first window
            self.index = min(self.index + 1, len(self.names) - 1)
        if self.progress is None:
            return
        n = len(self.names)
        inner = min(1.0, p.done / p.total) if p.total else 0.0
        self.progress(
            Progress(
                self.stage,
                self.index + inner,
                n,
                f"model {self.index + 1} of {n}: {self.names[self.index]} · {p.message}",
            )
        )


def prompts_from(text: str, k: int = 3, words: int = 6) -> list[str]:
    """`k` opening phrases (the first `words` words of lines long enough), spread over the text: what the sample
    continuations start from."""
    lines = [line.strip() for line in text.splitlines() if len(line.split()) >= 2 * words]
    picks = [lines[j * len(lines) // k] for j in range(k)] if len(lines) >= k else lines
    return [" ".join(line.split()[:words]) for line in picks]


def continuations(
    model,
    tokenizer,
    prompts: list[str],
    *,
    max_new_tokens: int = 24,
    threads: int | None = None,
    cancel: CancelToken | None = None,
) -> list[str]:
    """Greedy continuations of `prompts` (no 3-gram repeated: small models loop), the prompt left out. Token by token
    generation runs on `threads` torch threads (default: physical cores minus one): like llama.cpp's, torch's
    threads spin, and on a busy 2-core machine 2 threads took 40 s where 1 took 4 s."""
    import torch

    from core.runtime import default_threads

    out = []
    model.eval()
    start = document_start_id(tokenizer)
    before = torch.get_num_threads()
    torch.set_num_threads(threads or default_threads())
    try:
        for prompt in prompts:
            out.append(_continue(model, tokenizer, start, prompt, max_new_tokens, cancel))
    finally:
        torch.set_num_threads(before)
    return out


def _continue(model, tokenizer, start: int, prompt: str, max_new_tokens: int, cancel: CancelToken | None) -> str:
    """One greedy continuation's first line."""
    import torch

    if cancel is not None:
        cancel.check()
    ids = torch.tensor([[start] + tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    with torch.inference_mode():
        new = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            no_repeat_ngram_size=3,
            pad_token_id=start,
        )[0, ids.shape[1] :]
    return tokenizer.decode(new, skip_special_tokens=True).strip().split("\n")[0].strip()
