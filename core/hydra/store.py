"""A Hydra on disk: building one from adapted folders, saving, loading, and adding or removing a language in place.

A Hydra folder is the source model as a plain Hugging Face folder (`config.json`, `model.safetensors`: the body and
the source language's tables; transformers loads it as is) plus `languages/<code>.safetensors` (each other
language's `embed_tokens`, and `lm_head` when untied), `tokenizers/<code>/` (every language's tokenizer) and
`hydra.json` (the list), and `adapters/<source>-<target>.safetensors` for each direction it was taught to translate
(core.hydra.lora; listed in `hydra.json` under "adapters"). Adding a language writes its two entries then
`hydra.json`, so an interrupted add leaves the folder as it was.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from core import models
from core.errors import TweetyError
import core.hydra.lora as lora
from core.hydra.model import EMBED, HEAD, Hydra, Language
from core.jobs import atomic_dir, atomic_file
from core.resources import read_json

HYDRA_FILE = "hydra.json"
FORMAT = 1
# Config keys that must agree between the source model and an adapted folder (the body's shape and arithmetic).
_BODY_CONFIG = (
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "rms_norm_eps",
    "rope_theta",
    "rope_parameters",
    "rope_scaling",
    "hidden_act",
    "attention_bias",
    "mlp_bias",
)


# ---- reading an adapted folder ---------------------------------------------------------------------------------------
def read_language(
    hydra: Hydra, code: str, adapted_folder: str | Path, examples: list[tuple[str, str]] = ()
) -> Language:
    """`adapted_folder`'s tables and tokenizer as language `code` of `hydra`, after checking that its body is the
    Hydra's (config, then every body tensor bit for bit). Does not add it (Hydra.add does)."""
    import torch
    from transformers import AutoTokenizer

    folder = Path(adapted_folder)
    hydra.check_free(code, folder)  # before reading hundreds of MB
    _check_config(hydra.model.config.to_dict(), folder)
    tensors = _read_weights(folder)
    body = {k: v for k, v in hydra.model.state_dict().items() if k not in (EMBED, HEAD)}
    names = set(tensors) - {EMBED, HEAD}
    missing, extra = sorted(set(body) - names), sorted(names - set(body))
    if missing or extra:
        what = f"lacks {missing[0]!r}" if missing else f"has an extra tensor {extra[0]!r}"
        raise TweetyError(
            f"the adapted model's body differs from the Hydra's: it {what}",
            path=folder,
            fix="add only models adapted from this Hydra's source model",
        )
    for name in _body_order(body):  # layer order, so the first difference named is the first in the model
        theirs, ours = tensors[name](), body[name]
        if theirs.shape != ours.shape or not torch.equal(theirs.to(ours.dtype), ours):
            raise TweetyError(
                f"the adapted model's body differs from the Hydra's, first at {name!r}",
                path=folder,
                fix="add only models adapted from this Hydra's source model, with "
                "the body frozen (fine-tune stage `embeddings`, not `outer-layers`)",
            )
    if EMBED not in tensors:
        raise TweetyError(
            f"the adapted model has no embedding table ({EMBED})", path=folder, fix="re-run the adaptation"
        )
    dtype = body[next(iter(body))].dtype
    embeddings = tensors[EMBED]().to(dtype)
    head = tensors[HEAD]().to(dtype) if HEAD in tensors else embeddings
    if embeddings.shape[1] != hydra.model.config.hidden_size or head.shape != embeddings.shape:
        raise TweetyError(
            f"the adapted tables are {tuple(embeddings.shape)} and {tuple(head.shape)}, not "
            f"vocabulary × {hydra.model.config.hidden_size}",
            path=folder,
            fix="re-run the adaptation",
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as e:
        raise TweetyError(
            f"the adapted model has no usable tokenizer ({e})", path=folder, fix="the folder needs tokenizer.json"
        ) from None
    if len(tokenizer) > embeddings.shape[0]:
        raise TweetyError(
            f"the tokenizer has {len(tokenizer):,} tokens but the table {embeddings.shape[0]:,} rows",
            path=folder,
            fix="the tokenizer does not belong to this model; re-run the adaptation",
        )
    return Language(
        code, tokenizer, embeddings, head, str(folder.resolve()), tuple((str(s), str(t)) for s, t in examples)
    )


def _body_order(body: dict) -> list[str]:
    import re

    def key(name: str):
        m = re.search(r"\.layers\.(\d+)\.", name)
        return (int(m.group(1)) if m else (-1 if "embed" in name else 10**9), name)

    return sorted(body, key=key)


def _check_config(ours: dict, folder: Path) -> None:
    path = folder / "config.json"
    theirs = read_json(
        path,
        "this folder has no config.json, so it is not an adapted model",
        fix="choose the folder written by `tweety adapt`, `init` or `finetune`",
    )
    for key in _BODY_CONFIG:
        a, b = ours.get(key), theirs.get(key)
        if a is None or b is None:
            continue  # written by another transformers version (≥ 5 keeps rope_theta in rope_parameters, …)
        if a != b and not (isinstance(a, float) and isinstance(b, float) and abs(a - b) <= 1e-6 * abs(a)):
            raise TweetyError(
                f"the adapted model's body differs from the Hydra's: config {key} is {b!r}, not {a!r}",
                path=path,
                fix="add only models adapted from this Hydra's source model",
            )


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


# ---- building, saving, loading, adding and removing ------------------------------------------------------------------
def build_hydra(
    source,
    languages: dict[str, str | Path],
    *,
    source_language: str = "en",
    examples: dict[str, list[tuple[str, str]]] | None = None,
) -> Hydra:
    """A Hydra from `source` (a model spec for core.models.load_model, or a loaded (model, tokenizer)) and adapted
    folders by language code, e.g. {"es": "demo-output/model-finetuned"}; `examples` by language code (see
    `choose_examples`)."""
    from core.models import load_model

    model, tokenizer = load_model(source) if isinstance(source, (str, Path)) else source
    hydra = Hydra(model, source_language, tokenizer)
    for code, folder in languages.items():
        hydra.add(read_language(hydra, code, folder, (examples or {}).get(code, ())))
    return hydra


def save_hydra(hydra: Hydra, out_dir: str | Path) -> Path:
    """Write the whole Hydra as one folder, atomically."""
    from safetensors.torch import save_file

    lora.detach(hydra)  # the body's own weights, not an adapter's layers
    with atomic_dir(out_dir) as tmp:
        hydra.model.save_pretrained(tmp)
        entries = {}
        for code, lang in hydra.languages.items():
            entries[code] = _write_language(tmp, lang, source=code == hydra.source_language)
        adapters = {}
        for key, weights in hydra.adapters.items():
            path = Path("adapters") / f"{key.replace('->', '-')}.safetensors"
            (tmp / path).parent.mkdir(exist_ok=True)
            save_file(weights, str(tmp / path), metadata={"direction": key})
            adapters[key] = {
                "weights": path.as_posix(),
                "rank": lora.RANK,
                "alpha": lora.ALPHA,
                "modules": list(lora.MODULES),
            }
        _write_config(tmp, hydra.source_language, entries, adapters)
    return Path(out_dir)


def add_language(
    hydra_dir: str | Path, code: str, adapted_folder: str | Path, examples: list[tuple[str, str]] = ()
) -> None:
    """Add a language to a saved Hydra folder in place (its files first, `hydra.json` last)."""
    hydra_dir = Path(hydra_dir)
    config = read_config(hydra_dir)
    hydra = load_hydra(hydra_dir, languages=[config["source"]])
    if code in config["languages"]:
        raise TweetyError(
            f"the Hydra already has a language {code!r}",
            path=hydra_dir,
            fix="remove it first, or choose another language code",
        )
    language = hydra.add(read_language(hydra, code, adapted_folder, examples))
    config["languages"][code] = _write_language(hydra_dir, language, source=False)
    _write_config(hydra_dir, config["source"], config["languages"], config.get("adapters"))


def remove_language(hydra_dir: str | Path, code: str) -> None:
    """Remove a language from a saved Hydra folder in place (`hydra.json` first, then its files)."""
    hydra_dir = Path(hydra_dir)
    config = read_config(hydra_dir)
    if code == config["source"]:
        raise TweetyError(
            f"{code!r} is the source language: its tables are the source model's own",
            path=hydra_dir,
            fix="remove another language",
        )
    entry = config["languages"].pop(code, None)
    if entry is None:
        raise TweetyError(
            f"the Hydra has no language {code!r}",
            path=hydra_dir / HYDRA_FILE,
            fix=f"it has {', '.join(config['languages'])}",
        )
    adapters = config.get("adapters") or {}
    gone = [key for key in adapters if code in key.split("->")]  # its directions' adapters go with it
    _write_config(
        hydra_dir, config["source"], config["languages"], {k: v for k, v in adapters.items() if k not in gone}
    )
    (hydra_dir / entry["weights"]).unlink(missing_ok=True)
    shutil.rmtree(hydra_dir / entry["tokenizer"], ignore_errors=True)
    for key in gone:
        (hydra_dir / adapters[key]["weights"]).unlink(missing_ok=True)


def save_language(hydra_dir: str | Path, hydra: Hydra, code: str, **notes) -> None:
    """Write `hydra`'s tables for `code` back into its saved folder (after `finetune_language`), with `notes` (e.g.
    how it was tuned) in `hydra.json`."""
    hydra_dir = Path(hydra_dir)
    config = read_config(hydra_dir)
    config["languages"][code] = {**_write_language(hydra_dir, hydra.language(code), source=False), **notes}
    _write_config(hydra_dir, config["source"], config["languages"], config.get("adapters"))


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
    return {
        "tokenizer": tokenizer_dir.as_posix(),
        "weights": weights.as_posix(),
        "vocab_size": lang.vocab_size,
        "tied": lang.tied,
        "origin": lang.origin,
        "examples": [list(pair) for pair in lang.examples],
    }


def _write_config(folder: Path, source: str, entries: dict, adapters: dict | None = None) -> None:
    config = {"format": FORMAT, "source": source, "languages": entries, **({"adapters": adapters} if adapters else {})}
    with atomic_file(folder / HYDRA_FILE) as tmp:
        tmp.write_text(json.dumps(config, indent=1) + "\n")


def read_config(folder: Path) -> dict:
    """`hydra.json` of a saved Hydra folder, checked (a TweetyError when it is missing or of another format)."""
    path = folder / HYDRA_FILE
    config = read_json(
        path, "this folder is not a Hydra (no hydra.json)", fix="choose a folder written by core.hydra.save_hydra"
    )
    if config.get("format") != FORMAT or config.get("source") not in config.get("languages", {}):
        raise TweetyError(
            f"hydra.json has an unknown format {config.get('format')!r}",
            path=path,
            fix="save the Hydra again with this version of Tweety Studio",
        )
    return config


def load_hydra(folder: str | Path, *, languages: list[str] | None = None, dtype=None) -> Hydra:
    """Load a Hydra folder (all languages, or only `languages`; the source language always)."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    config = read_config(folder)
    source = config["source"]
    unknown = sorted(set(languages or ()) - set(config["languages"]))
    if unknown:  # before the weights are read
        raise TweetyError(
            f"the Hydra has no language {unknown[0]!r}",
            path=folder / HYDRA_FILE,
            fix=f"it has {', '.join(config['languages'])}",
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype or torch.float32)
    except (OSError, ValueError) as e:
        raise TweetyError(
            f"cannot load the Hydra's body ({e})", path=folder, fix="check model.safetensors is complete"
        ) from None
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
        hydra.languages[code] = Language(
            code,
            tokenizer,
            embeddings,
            head,
            entry.get("origin", ""),
            tuple(tuple(pair) for pair in entry.get("examples", ())),
        )
    for key, entry in (config.get("adapters") or {}).items():
        if set(key.split("->")) <= set(hydra.languages):
            path = folder / entry["weights"]
            try:
                hydra.adapters[key] = load_file(str(path))
            except Exception as e:  # as for a language's tables
                raise TweetyError(
                    f"cannot read the {key} translation adapter ({e})",
                    path=path,
                    fix="teach the Hydra to translate again",
                ) from None
    return hydra
