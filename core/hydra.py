"""Hydra models: one transformer body, one embedding table and LM head per language.

Trans-tokenization changes only a model's vocabulary tables; the body is the source model's, untouched. So the tables
of several adapted models can be swapped around one shared body: read a prompt with the source language's
embeddings and write with the target language's head (and read back what was written with the target language's
embeddings), and the model translates into a language it was never trained to translate into — zero-shot, from its
instruction-following in the source language.

A Hydra folder is the source model as a plain Hugging Face folder (`config.json`, `model.safetensors`: the body and
the source language's tables; transformers loads it as is) plus `languages/<code>.safetensors` (each other
language's `embed_tokens`, and `lm_head` when untied), `tokenizers/<code>/` (every language's tokenizer) and
`hydra.json` (the list). Adding a language writes its two entries then `hydra.json`, so an interrupted add leaves
the folder as it was.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from core import models
from core.errors import TweetyError
from core.jobs import CancelToken, ProgressFn, atomic_dir, atomic_file
from core.runtime import language_name, translate_lines_to_file, translation_prompt
from core.resources import read_json, read_lines

log = logging.getLogger(__name__)

HYDRA_FILE = "hydra.json"
FORMAT = 1
EMBED = "model.embed_tokens.weight"  # the Hugging Face names of the two vocabulary tables
HEAD = "lm_head.weight"
# Config keys that must agree between the source model and an adapted folder (the body's shape and arithmetic).
_BODY_CONFIG = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "rms_norm_eps", "rope_theta", "rope_parameters", "rope_scaling",
                "hidden_act", "attention_bias", "mlp_bias")

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
        embeddings, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
        self.languages[source_language] = Language(source_language, source_tokenizer, embeddings,
                                                   embeddings if head is embeddings else head)

    # ---- building -------------------------------------------------------------------------------------------------
    def add_language(self, code: str, adapted_folder: str | Path,
                     examples: list[tuple[str, str]] = ()) -> Language:
        """Take `adapted_folder`'s embedding table and head, after checking that its body is this Hydra's.
        `examples`: pairs (source-language text, text in `code`) for few-shot translation prompts."""
        import torch
        from transformers import AutoTokenizer

        folder = Path(adapted_folder)
        if code in self.languages:
            raise TweetyError(f"the Hydra already has a language {code!r}", path=folder,
                              fix="remove it first, or choose another language code")
        _check_config(self.model.config.to_dict(), folder)
        tensors = _read_weights(folder)
        body = {k: v for k, v in self.model.state_dict().items() if k not in (EMBED, HEAD)}
        names = set(tensors) - {EMBED, HEAD}
        missing, extra = sorted(set(body) - names), sorted(names - set(body))
        if missing or extra:
            what = f"lacks {missing[0]!r}" if missing else f"has an extra tensor {extra[0]!r}"
            raise TweetyError(f"the adapted model's body differs from the Hydra's: it {what}", path=folder,
                              fix="add only models adapted from this Hydra's source model")
        for name in _body_order(body):  # layer order, so the first difference named is the first in the model
            theirs, ours = tensors[name](), body[name]
            if theirs.shape != ours.shape or not torch.equal(theirs.to(ours.dtype), ours):
                raise TweetyError(f"the adapted model's body differs from the Hydra's, first at {name!r}",
                                  path=folder, fix="add only models adapted from this Hydra's source model, with "
                                  "the body frozen (fine-tune stage `embeddings`, not `outer-layers`)")
        if EMBED not in tensors:
            raise TweetyError(f"the adapted model has no embedding table ({EMBED})", path=folder,
                              fix="re-run the adaptation")
        dtype = body[next(iter(body))].dtype
        embeddings = tensors[EMBED]().to(dtype)
        head = tensors[HEAD]().to(dtype) if HEAD in tensors else embeddings
        if embeddings.shape[1] != self.model.config.hidden_size or head.shape != embeddings.shape:
            raise TweetyError(f"the adapted tables are {tuple(embeddings.shape)} and {tuple(head.shape)}, not "
                              f"vocabulary × {self.model.config.hidden_size}", path=folder, fix="re-run the adaptation")
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder)
        except (OSError, ValueError) as e:
            raise TweetyError(f"the adapted model has no usable tokenizer ({e})", path=folder,
                              fix="the folder needs tokenizer.json") from None
        if len(tokenizer) > embeddings.shape[0]:
            raise TweetyError(f"the tokenizer has {len(tokenizer):,} tokens but the table {embeddings.shape[0]:,} rows",
                              path=folder, fix="the tokenizer does not belong to this model; re-run the adaptation")
        language = Language(code, tokenizer, embeddings, head, str(folder.resolve()),
                            tuple((str(s), str(t)) for s, t in examples))
        self.languages[code] = language
        return language

    def remove_language(self, code: str) -> None:
        if code == self.source_language:
            raise TweetyError(f"{code!r} is the source language: its tables are the source model's own",
                              fix="remove another language")
        self._language(code)
        del self.languages[code]

    def examples(self, source: str, target: str) -> list[tuple[str, str]]:
        """Example pairs (text in `source`, text in `target`) for a translation prompt: a language's own examples
        pair it with the Hydra's source language, in either direction; other directions have none."""
        if source == self.source_language:
            return list(self._language(target).examples)
        if target == self.source_language:
            return [(t, s) for s, t in self._language(source).examples]
        return []

    def _language(self, code: str) -> Language:
        if code not in self.languages:
            raise TweetyError(f"the Hydra has no language {code!r} (it has {', '.join(self.languages)})",
                              fix="use one of its language codes, or add the language first")
        return self.languages[code]

    # ---- forward --------------------------------------------------------------------------------------------------
    def segment(self, language: str, text: str) -> Segment:
        """`text` tokenized by `language`'s tokenizer (no special tokens added)."""
        tok = self._language(language).tokenizer
        return Segment(language, tuple(tok(text, add_special_tokens=False)["input_ids"]))

    def embed(self, segments: list[Segment]):
        """[1, T, hidden]: each segment's rows from its own language's table."""
        import torch
        import torch.nn.functional as F

        parts = []
        for s in segments:
            table = self._language(s.language).embeddings
            if s.ids and max(s.ids) >= table.shape[0]:
                raise TweetyError(f"token id {max(s.ids)} is outside the {s.language!r} vocabulary "
                                  f"({table.shape[0]:,} tokens)", fix="tokenize each segment with its own language")
            parts.append(F.embedding(torch.tensor(s.ids, dtype=torch.long), table))
        return torch.cat(parts).unsqueeze(0)

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
        out = self.model.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                               use_cache=cache is not None, **{name: cache})
        return out.last_hidden_state

    def logits(self, segments: list[Segment], language: str):
        """[T, vocab of `language`]: next-token logits at every position, from `language`'s head only."""
        import torch
        import torch.nn.functional as F

        with torch.no_grad():
            h = self.hidden(self.embed(segments))
            return F.linear(h[0], self._language(language).head)

    # ---- generation -----------------------------------------------------------------------------------------------
    def stop_ids(self, language: str) -> set[int]:
        """End of turn / end of text in `language`'s vocabulary."""
        tok = self._language(language).tokenizer
        ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
        for token in ("<|im_end|>", "<|endoftext|>", "</s>"):
            i = tok.convert_tokens_to_ids(token)
            if isinstance(i, int) and i != tok.unk_token_id:
                ids.add(i)
        return ids

    def generate(self, segments: list[Segment], language: str, settings: GenerationSettings = GenerationSettings(),
                 *, stop_ids: set[int] | None = None, on_text: TextFn | None = None,
                 cancel: CancelToken | None = None) -> Generation:
        """Continue `segments` in `language`: each token chosen from `language`'s head and fed back through
        `language`'s embeddings, with the KV cache. Text streams through `on_text`; a set cancel token stops before
        the next token, keeping what was generated."""
        return self.generate_batch([segments], language, settings, stop_ids=stop_ids, on_text=on_text,
                                   cancel=cancel)[0]

    def generate_batch(self, prompts: list[list[Segment]], language: str,
                       settings: GenerationSettings = GenerationSettings(), *, stop_ids: set[int] | None = None,
                       limits: list[int] | None = None, on_text: TextFn | None = None,
                       cancel: CancelToken | None = None) -> list[Generation]:
        """`generate` for several prompts at once (left-padded; a finished row leaves the batch), each reply at most
        `limits[i]` tokens (default: settings.max_new_tokens). `on_text` streams the first row's text."""
        import torch
        import torch.nn.functional as F

        lang = self._language(language)
        stops = self.stop_ids(language) if stop_ids is None else set(stop_ids)
        g = torch.Generator().manual_seed(settings.seed)
        replies = [_Reply(lang.tokenizer, settings, limit, on_text if i == 0 else None)
                   for i, limit in enumerate(limits or [settings.max_new_tokens] * len(prompts))]
        rows = [self.embed(p)[0] for p in prompts]
        width = max(len(r) for r in rows)
        embeds = torch.zeros(len(rows), width, rows[0].shape[1], dtype=rows[0].dtype)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):
            embeds[i, width - len(r):], mask[i, width - len(r):] = r, 1
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
                logits = F.linear(h[:, -1], lang.head)
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
                embeds = F.embedding(torch.tensor(tokens).unsqueeze(1), lang.embeddings)
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
            self.on_text(text[self.sent:ready])
        self.sent = max(self.sent, ready)
        return self.finish == "stop" or len(self.ids) >= self.limit

    def result(self) -> Generation:
        return Generation(self.ids, self.text[:self.sent] if self.finish == "cancelled" else self.text, self.finish)


def _repeats(ids: list[int], n: int) -> list[int]:
    """Tokens that would repeat an n-gram already in `ids` (no_repeat_ngram: a greedy small model's loops)."""
    if len(ids) < n:
        return []
    tail = ids[len(ids) - n + 1:]
    return [ids[j + n - 1] for j in range(len(ids) - n + 1) if ids[j:j + n - 1] == tail]


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


def _body_order(body: dict) -> list[str]:
    import re

    def key(name: str):
        m = re.search(r"\.layers\.(\d+)\.", name)
        return (int(m.group(1)) if m else (-1 if "embed" in name else 10 ** 9), name)
    return sorted(body, key=key)


def _check_config(ours: dict, folder: Path) -> None:
    path = folder / "config.json"
    theirs = read_json(path, "this folder has no config.json, so it is not an adapted model",
                       fix="choose the folder written by `tweety adapt`, `init` or `finetune`")
    for key in _BODY_CONFIG:
        a, b = ours.get(key), theirs.get(key)
        if a is None or b is None:
            continue  # written by another transformers version (≥ 5 keeps rope_theta in rope_parameters, …)
        if a != b and not (isinstance(a, float) and isinstance(b, float) and abs(a - b) <= 1e-6 * abs(a)):
            raise TweetyError(f"the adapted model's body differs from the Hydra's: config {key} is {b!r}, not {a!r}",
                              path=path, fix="add only models adapted from this Hydra's source model")


def _read_weights(folder: Path) -> dict[str, Callable]:
    """Tensor name → loader, over the folder's safetensors files (read lazily: one tensor at a time)."""
    from safetensors import safe_open

    out = {}
    for f in models.weight_files(folder):
        try:
            handle = safe_open(str(f), framework="pt")
        except Exception as e:  # safetensors raises its own SafetensorError for damaged headers
            raise TweetyError(f"the weights file is damaged ({e})", path=f, fix="re-run the adaptation") from None
        for name in handle.keys():
            out[name] = (lambda h, n: lambda: h.get_tensor(n))(handle, name)
    return out


# ---- building, saving, loading ---------------------------------------------------------------------------------------
def build_hydra(source, languages: dict[str, str | Path], *, source_language: str = "en",
                examples: dict[str, list[tuple[str, str]]] | None = None) -> Hydra:
    """A Hydra from `source` (a model spec for core.models.load_model, or a loaded (model, tokenizer)) and adapted
    folders by language code, e.g. {"es": "demo-output/model-finetuned"}; `examples` by language code (see
    `choose_examples`)."""
    from core.models import load_model

    model, tokenizer = load_model(source) if isinstance(source, (str, Path)) else source
    hydra = Hydra(model, source_language, tokenizer)
    for code, folder in languages.items():
        hydra.add_language(code, folder, (examples or {}).get(code, ()))
    return hydra


def save_hydra(hydra: Hydra, out_dir: str | Path) -> Path:
    """Write the whole Hydra as one folder, atomically."""
    with atomic_dir(out_dir) as tmp:
        hydra.model.save_pretrained(tmp)
        entries = {}
        for code, lang in hydra.languages.items():
            entries[code] = _write_language(tmp, lang, source=code == hydra.source_language)
        _write_config(tmp, hydra.source_language, entries)
    return Path(out_dir)


def add_language(hydra_dir: str | Path, code: str, adapted_folder: str | Path,
                 examples: list[tuple[str, str]] = ()) -> None:
    """Add a language to a saved Hydra folder in place (its files first, `hydra.json` last)."""
    hydra_dir = Path(hydra_dir)
    config = _read_config(hydra_dir)
    hydra = load_hydra(hydra_dir, languages=[config["source"]])
    if code in config["languages"]:
        raise TweetyError(f"the Hydra already has a language {code!r}", path=hydra_dir,
                          fix="remove it first, or choose another language code")
    language = hydra.add_language(code, adapted_folder, examples)
    config["languages"][code] = _write_language(hydra_dir, language, source=False)
    _write_config(hydra_dir, config["source"], config["languages"])


def remove_language(hydra_dir: str | Path, code: str) -> None:
    """Remove a language from a saved Hydra folder in place (`hydra.json` first, then its files)."""
    hydra_dir = Path(hydra_dir)
    config = _read_config(hydra_dir)
    if code == config["source"]:
        raise TweetyError(f"{code!r} is the source language: its tables are the source model's own", path=hydra_dir,
                          fix="remove another language")
    entry = config["languages"].pop(code, None)
    if entry is None:
        raise TweetyError(f"the Hydra has no language {code!r}", path=hydra_dir / HYDRA_FILE,
                          fix=f"it has {', '.join(config['languages'])}")
    _write_config(hydra_dir, config["source"], config["languages"])
    (hydra_dir / entry["weights"]).unlink(missing_ok=True)
    shutil.rmtree(hydra_dir / entry["tokenizer"], ignore_errors=True)


def save_language(hydra_dir: str | Path, hydra: Hydra, code: str, **notes) -> None:
    """Write `hydra`'s tables for `code` back into its saved folder (after `finetune_language`), with `notes` (e.g.
    how it was tuned) in `hydra.json`."""
    hydra_dir = Path(hydra_dir)
    config = _read_config(hydra_dir)
    config["languages"][code] = {**_write_language(hydra_dir, hydra._language(code), source=False), **notes}
    _write_config(hydra_dir, config["source"], config["languages"])


def _write_language(folder: Path, lang: Language, *, source: bool) -> dict:
    from safetensors.torch import save_file

    tokenizer_dir = Path("tokenizers") / lang.code
    if (folder / tokenizer_dir).exists():
        shutil.rmtree(folder / tokenizer_dir)
    lang.tokenizer.save_pretrained(folder / tokenizer_dir)
    if source:
        weights = Path("model.safetensors")  # the source tables live in the source model's own file
    else:
        weights = Path("languages") / f"{lang.code}.safetensors"
        tensors = {"embed_tokens": lang.embeddings.detach().contiguous()}
        if not lang.tied:
            tensors["lm_head"] = lang.head.detach().contiguous()
        (folder / weights).parent.mkdir(exist_ok=True)
        with atomic_file(folder / weights) as tmp:
            save_file(tensors, str(tmp), metadata={"language": lang.code})
    return {"tokenizer": tokenizer_dir.as_posix(), "weights": weights.as_posix(), "vocab_size": lang.vocab_size,
            "tied": lang.tied, "origin": lang.origin, "examples": [list(pair) for pair in lang.examples]}


def _write_config(folder: Path, source: str, entries: dict) -> None:
    with atomic_file(folder / HYDRA_FILE) as tmp:
        tmp.write_text(json.dumps({"format": FORMAT, "source": source, "languages": entries}, indent=1) + "\n")


def _read_config(folder: Path) -> dict:
    path = folder / HYDRA_FILE
    config = read_json(path, "this folder is not a Hydra (no hydra.json)",
                       fix="choose a folder written by core.hydra.save_hydra")
    if config.get("format") != FORMAT or config.get("source") not in config.get("languages", {}):
        raise TweetyError(f"hydra.json has an unknown format {config.get('format')!r}", path=path,
                          fix="save the Hydra again with this version of Tweety Studio")
    return config


def load_hydra(folder: str | Path, *, languages: list[str] | None = None, dtype=None) -> Hydra:
    """Load a Hydra folder (all languages, or only `languages`; the source language always)."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    config = _read_config(folder)
    source = config["source"]
    unknown = sorted(set(languages or ()) - set(config["languages"]))
    if unknown:  # before the weights are read
        raise TweetyError(f"the Hydra has no language {unknown[0]!r}", path=folder / HYDRA_FILE,
                          fix=f"it has {', '.join(config['languages'])}")
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype or torch.float32)
    except (OSError, ValueError) as e:
        raise TweetyError(f"cannot load the Hydra's body ({e})", path=folder,
                          fix="check model.safetensors is complete") from None
    hydra = Hydra(model, source, AutoTokenizer.from_pretrained(folder / config["languages"][source]["tokenizer"]))
    wanted = set(languages or config["languages"]) | {source}
    for code, entry in config["languages"].items():
        if code == source or code not in wanted:
            continue
        path = folder / entry["weights"]
        try:
            tensors = load_file(str(path))
        except Exception as e:  # safetensors raises its own SafetensorError; a missing file is FileNotFoundError
            raise TweetyError(f"cannot read language {code!r} ({e})", path=path, fix="add the language again") from None
        dtype_ = model.get_input_embeddings().weight.dtype
        embeddings = tensors["embed_tokens"].to(dtype_)
        head = tensors["lm_head"].to(dtype_) if "lm_head" in tensors else embeddings
        tokenizer = AutoTokenizer.from_pretrained(folder / entry["tokenizer"])
        hydra.languages[code] = Language(code, tokenizer, embeddings, head, entry.get("origin", ""),
                                         tuple(tuple(pair) for pair in entry.get("examples", ())))
    return hydra


# ---- translation -----------------------------------------------------------------------------------------------------
_PLACEHOLDER = "\u0000TEXT\u0000"
EXAMPLES = 3  # example pairs in a translation prompt (chosen by `choose_examples`)
NO_REPEAT = 4  # a translation never repeats a 4-gram of itself: 135M models loop ("de los hijos de los hijos …")


@dataclass(frozen=True)
class TranslationPrompt:
    segments: list[Segment] = field(default_factory=list)
    stop_strings: tuple[str, ...] = ()


def choose_examples(source_lines: list[str], target_lines: list[str], k: int = EXAMPLES) -> list[tuple[str, str]]:
    """`k` short pairs spread over a parallel corpus (the same ones every time), for a translation prompt."""
    fit = [i for i, (s, t) in enumerate(zip(source_lines, target_lines)) if 20 <= len(s) <= 100 and 20 <= len(t) <= 120]
    picks = [fit[j * len(fit) // k] for j in range(k)] if fit else []
    return [(source_lines[i], target_lines[i]) for i in picks]


def corpus_examples(source_path: str | Path, target_path: str | Path | None = None) -> list[tuple[str, str]]:
    """`choose_examples` from a parallel corpus file pair (or one TSV/TMX file: core.resources.read_parallel)."""
    from core.resources import read_parallel

    corpus = read_parallel(source_path, target_path)
    return choose_examples(corpus.source, corpus.target)


def translation_segments(hydra: Hydra, text: str, source: str, target: str,
                         examples: list[tuple[str, str]] | None = None) -> TranslationPrompt:
    """The translation prompt, tokenized in the source language; only texts in another language are read with their
    own language's table. With example pairs (`examples`, or by default the Hydra's own for this direction) it is a
    few-shot `English: … / Spanish: …` prompt: the examples' target side, read with the target language's table,
    shows the body what to write, and a small model follows it better than an instruction (chrF 12.9 → 15.3 on 500
    demo verses at 135M). Without examples: the source model's chat template (or a plain `English: … / Spanish:`
    prompt)."""
    hydra._language(source), hydra._language(target)
    base_code = hydra.source_language
    base = hydra.languages[base_code].tokenizer
    src, tgt = language_name(source), language_name(target)
    examples = hydra.examples(source, target) if examples is None else examples
    template = base.chat_template if isinstance(getattr(base, "chat_template", None), str) else None
    parts: list[tuple[str, str]] = []
    if examples:
        for s, t in examples:
            parts += [(base_code, f"{src}: "), (source, s), (base_code, f"\n{tgt}:"), (target, f" {t}"),
                      (base_code, "\n\n")]
        parts += [(base_code, f"{src}: "), (source, text), (base_code, f"\n{tgt}:")]
    else:
        if template:
            messages = translation_prompt("chat", source, target, _PLACEHOLDER)
            rendered = base.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            rendered = translation_prompt("base", source, target, _PLACEHOLDER)
        before, after = rendered.split(_PLACEHOLDER)
        parts = [(base_code, before), (source, text), (base_code, after)]
    merged: list[tuple[str, str]] = []
    for code, piece in parts:  # one segment per run of one language: tokenized as the model saw such text
        if merged and merged[-1][0] == code:
            merged[-1] = (code, merged[-1][1] + piece)
        else:
            merged.append((code, piece))
    segments = [hydra.segment(code, piece) for code, piece in merged]
    if not template and base.bos_token_id is not None:
        segments[0] = Segment(base_code, (base.bos_token_id, *segments[0].ids))
    # One line in, one line out: a model adapted by trans-tokenization rarely learnt to end its turn in the new
    # language (it goes on with "more verses"), so the reply ends at its first line break.
    return TranslationPrompt(segments, ("\n",))


def _limit(hydra: Hydra, text: str, source: str, max_new_tokens: int) -> int:
    """Reply length: at most twice the text's own tokens (+16), so a reply that never ends stops early."""
    return min(max_new_tokens, 2 * len(hydra.segment(source, text).ids) + 16)


def translate(hydra: Hydra, text: str, source: str, target: str, *, max_new_tokens: int = 256,
              examples: list[tuple[str, str]] | None = None, on_text: TextFn | None = None,
              cancel: CancelToken | None = None) -> str:
    """Greedy zero-shot translation of one text: the prompt read in the source language, the reply written with
    `target`'s head and embeddings."""
    prompt = translation_segments(hydra, text, source, target, examples)
    settings = GenerationSettings(max_new_tokens=_limit(hydra, text, source, max_new_tokens),
                                  stop_strings=prompt.stop_strings, no_repeat_ngram=NO_REPEAT)
    return hydra.generate(prompt.segments, target, settings, on_text=on_text, cancel=cancel).text.strip()


def translate_batch(hydra: Hydra, texts: list[str], source: str, target: str, *, max_new_tokens: int = 256,
                    examples: list[tuple[str, str]] | None = None, batch_size: int = 8,
                    cancel: CancelToken | None = None) -> list[str]:
    """`translate` for many texts, `batch_size` at a time (texts of similar length together); empty texts stay
    empty. Greedy replies equal `translate`'s up to float rounding in the padded batch."""
    out = [""] * len(texts)
    todo = sorted((i for i, t in enumerate(texts) if t.strip()), key=lambda i: len(texts[i]))
    settings = GenerationSettings(stop_strings=("\n",), no_repeat_ngram=NO_REPEAT)
    for start in range(0, len(todo), batch_size):
        group = todo[start:start + batch_size]
        prompts = [translation_segments(hydra, texts[i], source, target, examples).segments for i in group]
        limits = [_limit(hydra, texts[i], source, max_new_tokens) for i in group]
        replies = hydra.generate_batch(prompts, target, settings, limits=limits, cancel=cancel)
        for i, reply in zip(group, replies):
            out[i] = reply.text.strip()
    return out


def translate_file(hydra: Hydra, in_path: str | Path, out_path: str | Path, source: str, target: str, *,
                   max_new_tokens: int = 256, batch_size: int = 8, overwrite: bool = False,
                   progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> int:
    """Translate a text file line by line into `out_path` (atomic, resumable: see runtime.translate_lines_to_file),
    `batch_size` lines at a time."""
    identity = hashlib.sha256(json.dumps(
        # The head's sum tells a tuned language (core.hydra.finetune_language) from the same one before tuning.
        {"hydra": sorted((c, lang.origin, lang.vocab_size, lang.examples,
                          round(float(lang.head.detach().float().sum()), 3)) for c, lang in hydra.languages.items()),
         "model": getattr(hydra.model.config, "_name_or_path", "")}).encode()).hexdigest()
    return translate_lines_to_file(
        read_lines(in_path), lambda lines: translate_batch(hydra, lines, source, target, max_new_tokens=max_new_tokens,
                                                           batch_size=batch_size, cancel=cancel), out_path,
        key=f"hydra {identity} {source}->{target} {max_new_tokens}", batch_size=batch_size, overwrite=overwrite,
        progress=progress, cancel=cancel)


# ---- a Hydra's own fine-tune: one language's tables on translation pairs ---------------------------------------------
@dataclass(frozen=True)
class HydraTuning:
    steps: int = 200
    batch_size: int = 4  # pairs per optimizer step
    lr: float = 3e-3  # chrF 23.8 against 20.7 at 1e-3 (200 verses, 400 steps of 8 real pairs, untied)
    warmup_steps: int = 20
    seed: int = 0
    # A tied language gets a reading table and a writing head of its own: reading back what was written (and keeping
    # the body's place in the text) and choosing the next word are different jobs for one vector (chrF 17.4 tied,
    # 20.7 untied: benchmarks/translate_chrf.py, 200 verses, 400 steps of 8 real pairs).
    untie: bool = True


def back_translate(hydra: Hydra, code: str, lines: list[str], *, batch_size: int = 8,
                   progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> list[tuple[str, str]]:
    """Synthetic pairs (source-language text, line) for target-language `lines` only: each line translated into the
    Hydra's source language by the Hydra itself (read with `code`'s table, written with the source head)."""
    from core.jobs import Reporter

    report = Reporter(progress, cancel, "Back-translating")
    pairs = []
    for start in range(0, len(lines), batch_size):
        report(start, len(lines), f"line {start + 1:,} of {len(lines):,}")
        batch = lines[start:start + batch_size]
        out = translate_batch(hydra, batch, code, hydra.source_language, batch_size=batch_size, cancel=cancel)
        pairs += [(s, t) for s, t in zip(out, batch) if s and t.strip()]
    report(len(lines), len(lines), f"{len(pairs):,} pairs")
    return pairs


def finetune_language(hydra: Hydra, code: str, pairs: list[tuple[str, str]], settings: HydraTuning = HydraTuning(),
                      *, progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> list[float]:
    """Train `code`'s embedding table and head (nothing else: the body stays every language's; a tied language
    gets a head of its own unless `settings.untie` is off) to write the second text of each pair when prompted to
    translate the first (in the Hydra's source language) — the prompt `translate` uses, the loss on the reply and
    its closing line break only. Pairs come from a parallel corpus or from `back_translate` (target-language text
    only). The Hydra's tables are replaced when training ends; a cancel leaves them as they were. Returns the loss
    of each step."""
    import random

    import torch

    from core.finetune import FinetuneSettings, learning_rate
    from core.jobs import Reporter

    lang = hydra._language(code)
    if code == hydra.source_language:
        raise TweetyError(f"{code!r} is the source language: its tables are the body's own",
                          fix="tune another language")
    if not pairs:
        raise TweetyError("there are no translation pairs to train on", fix="give a parallel corpus or target text")
    report = Reporter(progress, cancel, f"Tuning {code}")
    embeddings = torch.nn.Parameter(lang.embeddings.detach().float().clone())
    tied = lang.tied and not settings.untie
    head = embeddings if tied else torch.nn.Parameter(lang.head.detach().float().clone())
    params = [embeddings] if tied else [embeddings, head]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, betas=(0.9, 0.95), weight_decay=0.0)
    schedule = FinetuneSettings(steps=settings.steps, lr=settings.lr, warmup_steps=settings.warmup_steps)
    for p in hydra.model.parameters():
        p.requires_grad_(False)
    rng = random.Random(settings.seed)
    order: list[int] = []
    losses: list[float] = []
    hydra.languages[code] = replace(lang, embeddings=embeddings, head=head)
    try:
        for step in range(settings.steps):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(schedule, step)
            batch = []
            for _ in range(settings.batch_size):
                if not order:
                    order = rng.sample(range(len(pairs)), len(pairs))
                batch.append(pairs[order.pop()])
            loss = _reply_loss(hydra, code, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            report(step + 1, settings.steps, f"step {step + 1} of {settings.steps}, loss {losses[-1]:.3f}",
                   {"step": step + 1, "loss": losses[-1]})
    except BaseException:
        hydra.languages[code] = lang
        raise
    dtype = lang.embeddings.dtype
    tuned_embeddings = embeddings.detach().to(dtype)
    hydra.languages[code] = replace(lang, embeddings=tuned_embeddings,
                                    head=tuned_embeddings if tied else head.detach().to(dtype))
    return losses


def _reply_loss(hydra: Hydra, code: str, batch: list[tuple[str, str]]):
    """Mean over the pairs of each reply's mean cross-entropy after the translation prompt. The prompt's shared
    opening (the example pairs) is read once, without gradient, into a KV cache the pairs share; the rest of each
    prompt and its reply run as one right-padded batch (on 2 CPU cores, 4–8 pairs a step: about twice the pairs per
    second of one whole prompt at a time). So the examples' rows learn only where they are replies, not where they
    are read."""
    import torch
    import torch.nn.functional as F

    prompts, replies = [], []
    for source_text, target_text in batch:
        prompts.append(translation_segments(hydra, source_text, hydra.source_language, code).segments)
        replies.append(hydra.segment(code, f" {target_text.strip()}\n"))
    flat = [[(s.language, i) for s in p for i in s.ids] for p in prompts]
    shared = min(len(f) for f in flat) - 1  # each prompt keeps its last token: it predicts the reply's first
    for f in flat[1:]:
        shared = next((k for k in range(shared) if f[k] != flat[0][k]), shared)
    cache = hydra.new_cache()
    if shared:
        with torch.no_grad():
            hydra.hidden(hydra.embed(_segments(flat[0][:shared])), cache)
        cache.batch_repeat_interleave(len(batch))
    rows, targets, where, weights = [], [], [], []
    for i, (f, reply) in enumerate(zip(flat, replies)):
        rows.append(hydra.embed(_segments(f[shared:]) + [reply])[0])
        n, end = len(reply.ids), len(rows[-1])
        targets += reply.ids
        where += [(i, t) for t in range(end - n - 1, end - 1)]  # the positions that predict the reply's tokens
        weights += [1 / (n * len(batch))] * n
    width = max(len(r) for r in rows)
    embeds = torch.stack([F.pad(r, (0, 0, 0, width - len(r))) for r in rows])
    mask = torch.tensor([[1] * (shared + len(r)) + [0] * (width - len(r)) for r in rows])
    positions = torch.arange(shared, shared + width).expand(len(rows), -1)
    h = hydra.hidden(embeds, cache, mask if len(rows) > 1 else None, positions)
    b, t = torch.tensor(where).T
    logits = F.linear(h[b, t], hydra._language(code).head)
    per_token = F.cross_entropy(logits.float(), torch.tensor(targets), reduction="none")
    return (per_token * torch.tensor(weights)).sum()


def _segments(tokens: list[tuple[str, int]]) -> list[Segment]:
    """(language, id) tokens back into segments, one per run of one language."""
    from itertools import groupby

    return [Segment(language, tuple(i for _, i in run)) for language, run in groupby(tokens, key=lambda t: t[0])]


# ---- GGUF: one file, a merged vocabulary ------------------------------------------------------------------------------
# llama.cpp knows one vocabulary per model, so a Hydra is exported with every language's rows stacked (the source
# language first, each other language at an offset) and run with our own tokenization — llama.cpp takes token ids as
# they are — and a logits processor that allows only the output language's rows.
GGUF_LAYOUT_KEY = "tweety.hydra.languages"


def export_hydra_gguf(hydra_dir: str | Path, out_file: str | Path, settings=None, *,
                      progress: ProgressFn | None = None, cancel: CancelToken | None = None):
    """Write a saved Hydra folder as one GGUF with a merged vocabulary (core.export's writer, tables stacked)."""
    import re
    import time

    from core import export
    from core.jobs import Reporter

    start = time.monotonic()
    settings = settings or export.ExportSettings(type="f32")
    folder, out_file = Path(hydra_dir), Path(out_file)
    if out_file.exists() and not settings.overwrite:
        raise TweetyError("the destination file exists; Tweety Studio never overwrites your files", path=out_file,
                          fix="choose another file name (or confirm replacing it)")
    config = _read_config(folder)
    model_config = json.loads((folder / "config.json").read_text())
    available = models.safetensors_headers(models.weight_files(folder))
    codes = [config["source"]] + [c for c in config["languages"] if c != config["source"]]
    tables, pieces, layout, offset = [], [], {}, 0
    seen: set[str] = set()
    for code in codes:
        entry = config["languages"][code]
        if code == config["source"]:
            embed = available[EMBED]
            head = available.get(HEAD, embed)
        else:
            stored = models.safetensors_headers([folder / entry["weights"]])
            embed, head = stored["embed_tokens"], stored.get("lm_head", stored["embed_tokens"])
        tables.append((embed, head))
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(folder / entry["tokenizer"])
        special = set(tok.all_special_ids)
        n = embed.shape[0]
        names = tok.convert_ids_to_tokens(list(range(min(len(tok), n))))
        for i in range(n):
            piece = names[i] if i < len(names) and names[i] is not None else f"[{code}:{i}]"
            kind = 3 if i in special else 6 if re.fullmatch(r"<0x[0-9A-F]{2}>", piece) else 1
            if piece in seen:  # llama.cpp maps piece → id; keep every piece unique (we never tokenize there)
                piece = f"{piece}[{code}]"
            seen.add(piece)
            pieces.append((piece, 0.0, kind))
        layout[code] = {"offset": offset, "size": n}
        offset += n
    tied = all(e is h for e, h in tables)
    body = {k: v for k, v in available.items() if k not in (EMBED, HEAD)}
    first_embed, first_head = tables[0]
    tensors = export._tensor_plan(model_config, {**body, EMBED: first_embed, **({} if tied else {HEAD: first_head})},
                                  tied, folder)

    stacked = {"token_embd.weight": [e for e, _ in tables[1:]], "output.weight": [h for _, h in tables[1:]]}
    tensors = [replace(t, more_rows=tuple(stacked[t.gguf_name])) if t.gguf_name in stacked else t for t in tensors]
    source_tok = AutoTokenizer.from_pretrained(folder / config["languages"][config["source"]]["tokenizer"])
    special_ids = {name: getattr(source_tok, f"{name}_token_id") for name in ("bos", "eos", "pad")
                   if getattr(source_tok, f"{name}_token_id") is not None}
    plan = export._Plan({**model_config, "vocab_size": offset}, tensors, pieces, True, False, special_ids, False,
                        None, {GGUF_LAYOUT_KEY: json.dumps(layout)})
    report = Reporter(progress, cancel, "Exporting Hydra GGUF")
    return export.write_plan(plan, folder, out_file, settings, report, start)


def gguf_layout(llm) -> dict[str, dict[str, int]]:
    """{language: {"offset", "size"}} of a Hydra GGUF loaded with core.runtime.load."""
    raw = llm.metadata.get(GGUF_LAYOUT_KEY)
    if raw is None:
        raise TweetyError("this GGUF is not a Hydra (no merged-vocabulary layout)", path=llm.model_path,
                          fix="export it with core.hydra.export_hydra_gguf")
    return json.loads(raw)


def generate_gguf(llm, segments: list[Segment], language: str, *, max_new_tokens: int = 256,
                  stop_ids: set[int] = frozenset(), cancel: CancelToken | None = None) -> list[int]:
    """Greedy generation with llama.cpp on a Hydra GGUF: ids in, ids out, in `language`'s own vocabulary."""
    import numpy as np

    layout = gguf_layout(llm)
    if language not in layout:
        raise TweetyError(f"the Hydra GGUF has no language {language!r}", path=llm.model_path,
                          fix=f"it has {', '.join(layout)}")
    ids = [layout[s.language]["offset"] + i for s in segments for i in s.ids]
    lo = layout[language]["offset"]
    hi = lo + layout[language]["size"]

    def only_language(_, scores):
        masked = np.full_like(scores, -np.inf)
        masked[lo:hi] = scores[lo:hi]
        return masked

    out: list[int] = []
    for token in llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0, logits_processor=[only_language]):
        token -= lo
        if token in stop_ids or len(out) >= max_new_tokens or (cancel is not None and cancel.cancelled):
            break
        out.append(token)
        if len(out) >= max_new_tokens:
            break
    return out
