"""Running an exported GGUF locally with llama-cpp-python: chat, greedy completion and translation (text or file).

llama-cpp-python is imported lazily, so the rest of Tweety Studio works without it; a missing install is a clear
`TweetyError`. Generation streams text through an `on_text` callback and stops at the next token once the cancel token
is set, keeping what was generated so far.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import TweetyError
from core.jobs import Cancelled, CancelToken, ProgressFn, Reporter, atomic_file
from core.resources import read_lines

TextFn = Callable[[str], None]

# Enough names for prompts to read naturally; any other value of --from/--to is used as written.
LANGUAGES = {
    "af": "Afrikaans", "ar": "Arabic", "bg": "Bulgarian", "ca": "Catalan", "cs": "Czech", "cy": "Welsh",
    "da": "Danish", "de": "German", "el": "Greek", "en": "English", "es": "Spanish", "et": "Estonian",
    "eu": "Basque", "fi": "Finnish", "fr": "French", "ga": "Irish", "gl": "Galician", "he": "Hebrew", "hi": "Hindi",
    "hr": "Croatian", "hu": "Hungarian", "id": "Indonesian", "is": "Icelandic", "it": "Italian", "ja": "Japanese",
    "ko": "Korean", "lt": "Lithuanian", "lv": "Latvian", "mt": "Maltese", "nl": "Dutch", "no": "Norwegian",
    "pl": "Polish", "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "sk": "Slovak", "sl": "Slovenian",
    "sv": "Swedish", "sw": "Swahili", "ta": "Tamil", "tr": "Turkish", "tt": "Tatar", "uk": "Ukrainian",
    "vi": "Vietnamese", "zh": "Chinese",
}


def language_name(code_or_name: str) -> str:
    return LANGUAGES.get(code_or_name.lower(), code_or_name)


@dataclass(frozen=True)
class RuntimeSettings:
    n_ctx: int = 2048
    threads: int | None = None  # default: every core
    exact: bool = False  # F32 KV cache and every position's logits kept (parity checks), slower and bigger
    temperature: float = 0.7
    top_p: float = 0.9
    max_tokens: int = 512
    seed: int = 0


@dataclass(frozen=True)
class ModelCard:
    """What the chat window shows about a loaded GGUF."""
    name: str
    languages: list[str]
    family: str  # "tower" | "chat" | "base": picks the translation prompt
    vocab_size: int
    context: int
    source_model: str | None


def load(path: str | Path, settings: RuntimeSettings = RuntimeSettings()):
    """A `llama_cpp.Llama` for the GGUF at `path`."""
    try:
        import llama_cpp
    except ImportError:
        raise TweetyError("the local runtime (llama-cpp-python) is not installed",
                          fix="run `make demo` once, or see README › Installing the runtime") from None
    path = Path(path)
    if not path.is_file():
        raise TweetyError("GGUF file not found", path=path, fix="export a model first (`tweety export`)")
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise TweetyError("not a GGUF file", path=path, fix="choose a .gguf file written by `tweety export`")
    kw = {"type_k": 0, "type_v": 0, "logits_all": True} if settings.exact else {}
    try:
        return llama_cpp.Llama(str(path), n_ctx=settings.n_ctx, n_threads=settings.threads or os.cpu_count(),
                               seed=settings.seed, verbose=False, **kw)
    except (ValueError, RuntimeError) as e:
        raise TweetyError(f"llama.cpp cannot load this file ({e})", path=path,
                          fix="re-export it; only Llama-architecture GGUF files are supported") from None


def model_card(llm) -> ModelCard:
    md = llm.metadata  # llama.cpp leaves arrays out of it; general.languages is read from the file itself
    name = md.get("general.name", "model")
    template = md.get("tokenizer.chat_template")
    family = "tower" if "tower" in name.lower() else "chat" if template else "base"
    return ModelCard(name, _languages(llm.model_path), family, llm.n_vocab(), llm.n_ctx(),
                     md.get("tweety.source_model"))


def _languages(path: str) -> list[str]:
    import gguf

    field = gguf.GGUFReader(path).fields.get("general.languages")
    return list(field.contents()) if field is not None else []


def _stream(chunks: Iterable[dict], key: Callable[[dict], str | None], on_text: TextFn | None,
            cancel: CancelToken | None) -> str:
    """Collect streamed text, forwarding each piece; on cancel stop reading (closing the generator stops llama.cpp)."""
    out = []
    for chunk in chunks:
        if cancel is not None and cancel.cancelled:
            chunks.close()
            break
        text = key(chunk) or ""
        if text:
            out.append(text)
            if on_text is not None:
                on_text(text)
    return "".join(out)


def complete(llm, prompt: str | list[int], *, max_tokens: int = 32, temperature: float = 0.0,
             stop: list[str] | None = None, on_text: TextFn | None = None, cancel: CancelToken | None = None) -> str:
    """Continue `prompt` (text, or token ids exactly as given); temperature 0 is greedy."""
    chunks = llm.create_completion(prompt, max_tokens=max_tokens, temperature=temperature, top_k=1 if
                                   temperature == 0 else 40, stop=stop or [], stream=True)
    return _stream(chunks, lambda c: c["choices"][0]["text"], on_text, cancel)


@dataclass
class Chat:
    """A conversation with the model; the GGUF's chat template is applied by llama-cpp-python."""
    llm: object
    settings: RuntimeSettings = RuntimeSettings()
    system: str | None = None
    history: list[dict] = field(default_factory=list)

    def send(self, text: str, *, on_text: TextFn | None = None, cancel: CancelToken | None = None) -> str:
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + self.history + [
            {"role": "user", "content": text}]
        chunks = self.llm.create_chat_completion(messages, stream=True, temperature=self.settings.temperature,
                                                 top_p=self.settings.top_p, max_tokens=self.settings.max_tokens)
        reply = _stream(chunks, lambda c: c["choices"][0]["delta"].get("content"), on_text, cancel)
        self.history += [{"role": "user", "content": text}, {"role": "assistant", "content": reply}]
        return reply

    def reset(self) -> None:
        self.history.clear()


def translation_prompt(family: str, source: str, target: str, text: str) -> list[dict] | str:
    """Chat messages (instruct models) or a completion prompt (base models) asking for a translation."""
    src, tgt = language_name(source), language_name(target)
    if family == "tower":  # the prompt TowerInstruct was trained with
        return [{"role": "user", "content": f"Translate the following text from {src} into {tgt}.\n"
                                            f"{src}: {text}\n{tgt}:"}]
    if family == "chat":
        return [{"role": "user", "content": f"Translate this {src} text into {tgt}. Reply with the translation "
                                            f"only.\n\n{text}"}]
    return f"{src}: {text}\n{tgt}:"


def translate(llm, text: str, source: str, target: str, *, max_tokens: int = 256, on_text: TextFn | None = None,
              cancel: CancelToken | None = None) -> str:
    """Greedy translation of one text (one line or paragraph)."""
    prompt = translation_prompt(model_card(llm).family, source, target, text)
    if isinstance(prompt, str):
        return complete(llm, prompt, max_tokens=max_tokens, stop=["\n"], on_text=on_text, cancel=cancel).strip()
    chunks = llm.create_chat_completion(prompt, stream=True, temperature=0.0, top_k=1, max_tokens=max_tokens)
    return _stream(chunks, lambda c: c["choices"][0]["delta"].get("content"), on_text, cancel).strip()


def translate_file(llm, in_path: str | Path, out_path: str | Path, source: str, target: str, *,
                   overwrite: bool = False, progress: ProgressFn | None = None,
                   cancel: CancelToken | None = None) -> int:
    """Translate a text file line by line (empty lines kept) into `out_path`, written atomically; an interrupted run
    resumes where it stopped (see `translate_lines_to_file`). Returns lines done."""
    def translate_lines(lines: list[str]) -> list[str]:
        return [translate(llm, line, source, target, cancel=cancel) if line.strip() else "" for line in lines]

    return translate_lines_to_file(read_lines(in_path), translate_lines, out_path,
                                   key=f"gguf {Path(llm.model_path).resolve()} {source}->{target}",
                                   overwrite=overwrite, progress=progress, cancel=cancel)


def translate_lines_to_file(lines: list[str], translate_lines: Callable[[list[str]], list[str]],
                            out_path: str | Path, *, key: str, batch_size: int = 1, overwrite: bool = False,
                            progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> int:
    """One line in, one line out (empty lines kept), into `out_path`, which appears atomically when every line is
    done. Each finished line is also appended to a hidden sibling `.NAME.partial`, headed by `key` (the model and
    languages) and the input's hash: a run stopped by cancel, Ctrl-C or a crash resumes from there when started again
    with the same input, model and languages (anything else starts afresh). The partial file goes once the output
    is written. `translate_lines` takes up to `batch_size` lines at once. Used by the GGUF runtime and by Hydra
    models (core.hydra)."""
    out_path = Path(out_path)
    if out_path.exists() and not overwrite:
        raise TweetyError("the output file exists; Tweety Studio never overwrites your files", path=out_path,
                          fix="choose another file name")
    partial = out_path.with_name(f".{out_path.name}.partial")
    header = json.dumps({"key": key, "input_sha256": hashlib.sha256("\n".join(lines).encode()).hexdigest()})
    done = _resumed(partial, header, len(lines))
    report = Reporter(progress, cancel, "Translating")
    if done:
        report(len(done), len(lines), f"resuming after line {len(done):,}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(partial, "w" if not done else "a", encoding="utf-8") as log_file:
        if not done:
            log_file.write(header + "\n")
        for i in range(len(done), len(lines), batch_size):
            batch = lines[i:i + batch_size]
            report(i, len(lines), f"line {i + 1:,} of {len(lines):,}")
            texts = translate_lines(batch)
            if cancel is not None and cancel.cancelled:  # lines cut short by cancel are not translations
                raise Cancelled()
            for line, text in zip(batch, texts):
                # One line in, one line out: a translation's own line breaks would shift every later line.
                text = " ".join(text.split()) if line.strip() else ""
                done.append(text)
                log_file.write(json.dumps(text, ensure_ascii=False) + "\n")
            log_file.flush()
    report(len(lines), len(lines), "done")
    with atomic_file(out_path) as tmp:
        tmp.write_text("\n".join(done) + "\n", encoding="utf-8")
    partial.unlink(missing_ok=True)
    return len(done)


def _resumed(partial: Path, header: str, n_lines: int) -> list[str]:
    """The lines already translated by an earlier run of the same job (a torn last line is dropped)."""
    try:
        first, *rest = partial.read_text(encoding="utf-8").split("\n")
    except (FileNotFoundError, ValueError, UnicodeDecodeError):
        return []
    if first != header:
        return []
    done = []
    for row in rest[:n_lines]:
        try:
            text = json.loads(row)
        except json.JSONDecodeError:
            break
        if not isinstance(text, str):
            break
        done.append(text)
    # Rewrite without a torn tail, so appending continues from a clean line.
    partial.write_text("\n".join([header] + [json.dumps(t, ensure_ascii=False) for t in done]) + "\n",
                       encoding="utf-8")
    return done
