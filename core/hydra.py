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
from dataclasses import dataclass, field
from pathlib import Path

from core import models
from core.errors import TweetyError
from core.jobs import CancelToken, ProgressFn, atomic_dir, atomic_file
from core.runtime import translate_lines_to_file, translation_prompt
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
    def add_language(self, code: str, adapted_folder: str | Path) -> Language:
        """Take `adapted_folder`'s embedding table and head, after checking that its body is this Hydra's."""
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
        language = Language(code, tokenizer, embeddings, head, str(folder.resolve()))
        self.languages[code] = language
        return language

    def remove_language(self, code: str) -> None:
        if code == self.source_language:
            raise TweetyError(f"{code!r} is the source language: its tables are the source model's own",
                              fix="remove another language")
        self._language(code)
        del self.languages[code]

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

    def hidden(self, inputs_embeds, cache=None):
        """The body (every layer and the final norm) on `inputs_embeds`, continuing the KV cache `cache` (which
        grows in place) when one is given."""
        import inspect

        # transformers 5.24 renamed `past_key_values` to `cache` (the old name warns until 5.40).
        name = "cache" if "cache" in inspect.signature(self.model.model.forward).parameters else "past_key_values"
        out = self.model.model(inputs_embeds=inputs_embeds, use_cache=cache is not None, **{name: cache})
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
        import torch
        import torch.nn.functional as F

        lang = self._language(language)
        stops = self.stop_ids(language) if stop_ids is None else set(stop_ids)
        g = torch.Generator().manual_seed(settings.seed)
        ids: list[int] = []
        text, sent, finish = "", 0, "length"
        cache, embeds = self.new_cache(), self.embed(segments)
        with torch.no_grad():
            for _ in range(settings.max_new_tokens):
                if cancel is not None and cancel.cancelled:
                    finish = "cancelled"
                    break
                h = self.hidden(embeds, cache)
                logits = F.linear(h[0, -1], lang.head)
                token = _choose(logits, settings, g)
                if token in stops:
                    finish = "stop"
                    break
                ids.append(token)
                text = lang.tokenizer.decode(ids, skip_special_tokens=True)
                # Stop strings count only after the first visible character (a reply may open with a newline).
                start = len(text) - len(text.lstrip())
                cut = min((i for i in (text.find(s, start) for s in settings.stop_strings if s) if i >= 0),
                          default=-1)
                if cut >= 0:
                    text, finish = text[:cut], "stop"
                # Hold back an incomplete UTF-8 character (a byte token's half) until it is whole.
                ready = len(text) if finish == "stop" else len(text.rstrip("\ufffd"))
                if on_text is not None and ready > sent:
                    on_text(text[sent:ready])
                sent = max(sent, ready)
                if finish == "stop":
                    break
                embeds = F.embedding(torch.tensor([[token]]), lang.embeddings)
        return Generation(ids, text[:sent] if finish == "cancelled" else text, finish)


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
def build_hydra(source, languages: dict[str, str | Path], *, source_language: str = "en") -> Hydra:
    """A Hydra from `source` (a model spec for core.models.load_model, or a loaded (model, tokenizer)) and adapted
    folders by language code, e.g. {"es": "demo-output/model-finetuned"}."""
    from core.models import load_model

    model, tokenizer = load_model(source) if isinstance(source, (str, Path)) else source
    hydra = Hydra(model, source_language, tokenizer)
    for code, folder in languages.items():
        hydra.add_language(code, folder)
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


def add_language(hydra_dir: str | Path, code: str, adapted_folder: str | Path) -> None:
    """Add a language to a saved Hydra folder in place (its files first, `hydra.json` last)."""
    hydra_dir = Path(hydra_dir)
    config = _read_config(hydra_dir)
    hydra = load_hydra(hydra_dir, languages=[config["source"]])
    if code in config["languages"]:
        raise TweetyError(f"the Hydra already has a language {code!r}", path=hydra_dir,
                          fix="remove it first, or choose another language code")
    language = hydra.add_language(code, adapted_folder)
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
            "tied": lang.tied, "origin": lang.origin}


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
        hydra.languages[code] = Language(code, tokenizer, embeddings, head, entry.get("origin", ""))
    return hydra


# ---- translation -----------------------------------------------------------------------------------------------------
_PLACEHOLDER = "\u0000TEXT\u0000"


@dataclass(frozen=True)
class TranslationPrompt:
    segments: list[Segment] = field(default_factory=list)
    stop_strings: tuple[str, ...] = ()


def translation_segments(hydra: Hydra, text: str, source: str, target: str) -> TranslationPrompt:
    """The source model's own chat template (or a plain `English: … / Spanish:` prompt for a model without one),
    tokenized in the source language; only the text to translate is in its own language `source`."""
    hydra._language(source), hydra._language(target)
    base = hydra.languages[hydra.source_language].tokenizer
    template = base.chat_template if isinstance(getattr(base, "chat_template", None), str) else None
    if template:
        messages = translation_prompt("chat", source, target, _PLACEHOLDER)
        rendered = base.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        rendered = translation_prompt("base", source, target, _PLACEHOLDER)
    before, after = rendered.split(_PLACEHOLDER)
    bos = [base.bos_token_id] if not template and base.bos_token_id is not None else []
    if source == hydra.source_language:  # one segment: tokenized exactly as the model saw such prompts in training
        segments = [Segment(source, tuple(bos + base(before + text + after, add_special_tokens=False)["input_ids"]))]
    else:  # the text read with its own language's table, between the source-language instruction and reply header
        segments = [Segment(hydra.source_language, tuple(bos + base(before, add_special_tokens=False)["input_ids"])),
                    hydra.segment(source, text),
                    Segment(hydra.source_language, tuple(base(after, add_special_tokens=False)["input_ids"]))]
    # One line in, one line out: a model adapted by trans-tokenization rarely learnt to end its turn in the new
    # language (it goes on with "more verses"), so the reply ends at its first line break.
    return TranslationPrompt(segments, ("\n",))


def translate(hydra: Hydra, text: str, source: str, target: str, *, max_new_tokens: int = 256,
              on_text: TextFn | None = None, cancel: CancelToken | None = None) -> str:
    """Greedy zero-shot translation of one text: the prompt read in the source language, the reply written with
    `target`'s head and embeddings."""
    prompt = translation_segments(hydra, text, source, target)
    settings = GenerationSettings(max_new_tokens=max_new_tokens, stop_strings=prompt.stop_strings)
    return hydra.generate(prompt.segments, target, settings, on_text=on_text, cancel=cancel).text.strip()


def translate_file(hydra: Hydra, in_path: str | Path, out_path: str | Path, source: str, target: str, *,
                   max_new_tokens: int = 256, overwrite: bool = False, progress: ProgressFn | None = None,
                   cancel: CancelToken | None = None) -> int:
    """Translate a text file line by line into `out_path` (atomic, resumable: see runtime.translate_lines_to_file)."""
    identity = hashlib.sha256(json.dumps(
        {"hydra": sorted((c, lang.origin, lang.vocab_size) for c, lang in hydra.languages.items()),
         "model": getattr(hydra.model.config, "_name_or_path", "")}).encode()).hexdigest()
    return translate_lines_to_file(
        read_lines(in_path), lambda line: translate(hydra, line, source, target, max_new_tokens=max_new_tokens,
                                                    cancel=cancel), out_path,
        key=f"hydra {identity} {source}->{target} {max_new_tokens}", overwrite=overwrite, progress=progress, cancel=cancel)



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
    from dataclasses import replace

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
