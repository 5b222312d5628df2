"""A Hydra in memory: one transformer body, and per language an embedding table and an LM head swapped around it.

Forward passes read a prompt made of segments, each in one language's vocabulary and read with that language's table;
generation writes with one language's head and reads back what it wrote with the same language's table. Reading and
checking an adapted model's folder (`read_language`) is core.hydra.store's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.errors import TweetyError
from core.jobs import CancelToken

EMBED = "model.embed_tokens.weight"  # the Hugging Face names of the two vocabulary tables
HEAD = "lm_head.weight"

TextFn = Callable[[str], None]


@dataclass(frozen=True)
class Language:
    """One language's vocabulary: its tokenizer and tables (`head` is `embeddings` itself when tied)."""

    code: str
    tokenizer: object
    embeddings: object  # torch.Tensor [vocab, hidden]
    head: object  # torch.Tensor [vocab, hidden]
    origin: str = ""  # the adapted folder it came from ("" for the source language)
    examples: tuple[tuple[str, str], ...] = ()  # (source-language text, this language's text): translation prompts

    @property
    def tied(self) -> bool:
        return self.head is self.embeddings

    @property
    def vocab_size(self) -> int:
        return int(self.embeddings.shape[0])


@dataclass(frozen=True)
class Segment:
    """A run of token ids in one language's vocabulary (read with that language's embeddings)."""

    language: str
    ids: tuple[int, ...]


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    seed: int = 0
    stop_strings: tuple[str, ...] = ()  # cut the text at the first of these (translations stop at "\n")
    no_repeat_ngram: int = 0  # > 0: never repeat an n-gram of the reply (a small model's greedy loops)


@dataclass(frozen=True)
class Generation:
    ids: list[int]  # in the output language's vocabulary, stop token excluded
    text: str
    finish: str  # "stop" | "length" | "cancelled"


class Hydra:
    """A source model's body with swappable per-language embedding tables and LM heads."""

    def __init__(self, model, source_language: str, source_tokenizer):
        self.model = model.eval()
        self.source_language = source_language
        self.languages: dict[str, Language] = {}
        # Translation adapters by direction ("en->de": LoRA weights by parameter name) and the one on the body now
        # (its direction and peft tuner), both core.hydra.lora's.
        self.adapters: dict[str, dict] = {}
        self.lora: tuple[str, object] | None = None
        embeddings, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
        # Gemma's embedding layer multiplies its rows by √hidden and Gemma 2 soft-caps its logits: the body is fed
        # and read around those layers, so the Hydra does both itself (both None for the other families).
        self.embed_scale = getattr(model.get_input_embeddings(), "embed_scale", None)
        self.softcap = getattr(model.config, "final_logit_softcapping", None)
        self.languages[source_language] = Language(
            source_language, source_tokenizer, embeddings, embeddings if head is embeddings else head
        )

    # ---- building -------------------------------------------------------------------------------------------------
    def add(self, language: Language) -> Language:
        """Add a language's tables, as core.hydra.store.read_language reads and checks them from an adapted folder
        (the store knows folders; the Hydra in memory knows none)."""
        self.check_free(language.code, language.origin)
        self.languages[language.code] = language
        return language

    def check_free(self, code: str, where: str | Path = "") -> None:
        if code in self.languages:
            raise TweetyError(
                f"the Hydra already has a language {code!r}",
                path=Path(where) if where else None,
                fix="remove it first, or choose another language code",
            )

    def remove_language(self, code: str) -> None:
        if code == self.source_language:
            raise TweetyError(
                f"{code!r} is the source language: its tables are the source model's own", fix="remove another language"
            )
        self.language(code)
        del self.languages[code]

    def examples(self, source: str, target: str) -> list[tuple[str, str]]:
        """Example pairs (text in `source`, text in `target`) for a translation prompt: a language's own examples
        pair it with the Hydra's source language, in either direction; other directions have none."""
        if source == self.source_language:
            return list(self.language(target).examples)
        if target == self.source_language:
            return [(t, s) for s, t in self.language(source).examples]
        return []

    def language(self, code: str) -> Language:
        """The language `code`, or a TweetyError naming the languages the Hydra has."""
        if code not in self.languages:
            raise TweetyError(
                f"the Hydra has no language {code!r} (it has {', '.join(self.languages)})",
                fix="use one of its language codes, or add the language first",
            )
        return self.languages[code]

    # ---- forward --------------------------------------------------------------------------------------------------
    def segment(self, language: str, text: str) -> Segment:
        """`text` tokenized by `language`'s tokenizer (no special tokens added)."""
        tok = self.language(language).tokenizer
        return Segment(language, tuple(tok(text, add_special_tokens=False)["input_ids"]))

    def embed(self, segments: list[Segment]):
        """[1, T, hidden]: each segment's rows from its own language's table."""
        import torch

        parts = []
        for s in segments:
            table = self.language(s.language).embeddings
            if s.ids and max(s.ids) >= table.shape[0]:
                raise TweetyError(
                    f"token id {max(s.ids)} is outside the {s.language!r} vocabulary ({table.shape[0]:,} tokens)",
                    fix="tokenize each segment with its own language",
                )
            parts.append(self.rows(torch.tensor(s.ids, dtype=torch.long), table))
        return torch.cat(parts).unsqueeze(0)

    def rows(self, ids, table):
        """The body's input for `ids` read with `table` (what the model's own embedding layer would give)."""
        import torch.nn.functional as F

        rows = F.embedding(ids, table)
        return rows if self.embed_scale is None else rows * self.embed_scale.to(rows.dtype)

    def project(self, hidden, head):
        """Next-token logits of `hidden` through `head` (what the model's own LM head would give)."""
        import torch
        import torch.nn.functional as F

        logits = F.linear(hidden, head)
        return logits if not self.softcap else torch.tanh(logits / self.softcap) * self.softcap

    def new_cache(self):
        """An empty KV cache for `hidden` (the model's own DynamicCache, filled in place)."""
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    def hidden(self, inputs_embeds, cache=None, attention_mask=None, position_ids=None):
        """The body (every layer and the final norm) on `inputs_embeds`, continuing the KV cache `cache` (which
        grows in place) when one is given. A batch of left-padded rows passes its mask and positions."""
        import inspect

        # transformers 5.24 renamed `past_key_values` to `cache` (the old name warns until 5.40).
        name = "cache" if "cache" in inspect.signature(self.model.model.forward).parameters else "past_key_values"
        out = self.model.model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=cache is not None,
            **{name: cache},
        )
        return out.last_hidden_state

    def logits(self, segments: list[Segment], language: str):
        """[T, vocab of `language`]: next-token logits at every position, from `language`'s head only."""
        import torch

        with torch.no_grad():
            h = self.hidden(self.embed(segments))
            return self.project(h[0], self.language(language).head)

    # ---- generation -----------------------------------------------------------------------------------------------
    def stop_ids(self, language: str) -> set[int]:
        """End of turn / end of text in `language`'s vocabulary."""
        tok = self.language(language).tokenizer
        ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
        for token in ("<|im_end|>", "<|endoftext|>", "</s>"):
            i = tok.convert_tokens_to_ids(token)
            if isinstance(i, int) and i != tok.unk_token_id:
                ids.add(i)
        return ids

    def generate(
        self,
        segments: list[Segment],
        language: str,
        settings: GenerationSettings = GenerationSettings(),
        *,
        stop_ids: set[int] | None = None,
        on_text: TextFn | None = None,
        cancel: CancelToken | None = None,
    ) -> Generation:
        """Continue `segments` in `language`: each token chosen from `language`'s head and fed back through
        `language`'s embeddings, with the KV cache. Text streams through `on_text`; a set cancel token stops before
        the next token, keeping what was generated."""
        return self.generate_batch([segments], language, settings, stop_ids=stop_ids, on_text=on_text, cancel=cancel)[0]

    def generate_batch(
        self,
        prompts: list[list[Segment]],
        language: str,
        settings: GenerationSettings = GenerationSettings(),
        *,
        stop_ids: set[int] | None = None,
        limits: list[int] | None = None,
        on_text: TextFn | None = None,
        cancel: CancelToken | None = None,
    ) -> list[Generation]:
        """`generate` for several prompts at once (left-padded; a finished row leaves the batch), each reply at most
        `limits[i]` tokens (default: settings.max_new_tokens). `on_text` streams the first row's text."""
        import torch

        lang = self.language(language)
        stops = self.stop_ids(language) if stop_ids is None else set(stop_ids)
        g = torch.Generator().manual_seed(settings.seed)
        replies = [
            _Reply(lang.tokenizer, settings, limit, on_text if i == 0 else None)
            for i, limit in enumerate(limits or [settings.max_new_tokens] * len(prompts))
        ]
        rows = [self.embed(p)[0] for p in prompts]
        width = max(len(r) for r in rows)
        embeds = torch.zeros(len(rows), width, rows[0].shape[1], dtype=rows[0].dtype)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):
            embeds[i, width - len(r) :], mask[i, width - len(r) :] = r, 1
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        active = [i for i, r in enumerate(replies) if r.limit > 0]
        embeds, mask, positions = embeds[active], mask[active], positions[active]
        cache = self.new_cache()
        with torch.no_grad():
            while active:
                if cancel is not None and cancel.cancelled:
                    for i in active:
                        replies[i].finish = "cancelled"
                    break
                h = self.hidden(embeds, cache, mask if len(rows) > 1 else None, positions)
                logits = self.project(h[:, -1], lang.head)
                tokens, keep = [], []
                for k, i in enumerate(active):
                    reply = replies[i]
                    row = logits[k]
                    if settings.no_repeat_ngram:
                        row[_repeats(reply.ids, settings.no_repeat_ngram)] = float("-inf")
                    token = _choose(row, settings, g)
                    if not reply.add(token, token in stops):
                        keep.append(k)
                        tokens.append(token)
                if len(keep) < len(active):
                    active = [active[k] for k in keep]
                    if not active:
                        break
                    cache.batch_select_indices(torch.tensor(keep))
                    mask, positions = mask[keep], positions[keep]
                embeds = self.rows(torch.tensor(tokens).unsqueeze(1), lang.embeddings)
                mask = torch.cat([mask, torch.ones(len(active), 1, dtype=torch.long)], 1)
                positions = positions[:, -1:] + 1
        return [r.result() for r in replies]


class _Reply:
    """One reply being generated: its ids, its decoded text, where it stops, and what was streamed of it."""

    def __init__(self, tokenizer, settings: GenerationSettings, limit: int, on_text: TextFn | None):
        self.tokenizer, self.settings, self.limit, self.on_text = tokenizer, settings, limit, on_text
        self.ids: list[int] = []
        self.text, self.sent, self.finish = "", 0, "length"

    def add(self, token: int, is_stop: bool) -> bool:
        """Take the next token; True when the reply is finished."""
        if is_stop:
            self.finish = "stop"
            return True
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        # Stop strings count only after the first visible character (a reply may open with a newline).
        start = len(text) - len(text.lstrip())
        cut = min((i for i in (text.find(s, start) for s in self.settings.stop_strings if s) if i >= 0), default=-1)
        if cut >= 0:
            text, self.finish = text[:cut], "stop"
        self.text = text
        # Hold back an incomplete UTF-8 character (a byte token's half) until it is whole.
        ready = len(text) if self.finish == "stop" else len(text.rstrip("\ufffd"))
        if self.on_text is not None and ready > self.sent:
            self.on_text(text[self.sent : ready])
        self.sent = max(self.sent, ready)
        return self.finish == "stop" or len(self.ids) >= self.limit

    def result(self) -> Generation:
        return Generation(self.ids, self.text[: self.sent] if self.finish == "cancelled" else self.text, self.finish)


def _repeats(ids: list[int], n: int) -> list[int]:
    """Tokens that would repeat an n-gram already in `ids` (no_repeat_ngram: a greedy small model's loops)."""
    if len(ids) < n:
        return []
    tail = ids[len(ids) - n + 1 :]
    return [ids[j + n - 1] for j in range(len(ids) - n + 1) if ids[j : j + n - 1] == tail]


def _choose(logits, settings: GenerationSettings, generator) -> int:
    import torch

    if settings.temperature <= 0:
        return int(torch.argmax(logits))
    logits = logits.float() / settings.temperature
    if settings.top_k > 0:
        kth = torch.topk(logits, min(settings.top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if settings.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True, stable=True)  # ties: the lowest id, as argmax
        # Keep the smallest set whose mass reaches top_p (the first token always stays).
        drop = torch.cumsum(sorted_probs, 0) - sorted_probs >= settings.top_p
        sorted_probs[drop] = 0
        probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
    return int(torch.multinomial(probs / probs.sum(), 1, generator=generator))
