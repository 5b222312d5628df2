"""What every translator shares: language names, the wording of a translation prompt, and translating a text file
line by line into an output that appears atomically and resumes after an interruption.

Both translators use it — the llama.cpp runtime (core.runtime, a GGUF model) and Hydra models (core.hydra, tables
swapped around one body) — so it sits below both: it imports only errors and jobs, never a model runtime, and a Hydra
translates without llama.cpp installed.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from core.errors import TweetyError
from core.jobs import Cancelled, CancelToken, ProgressFn, Reporter, atomic_file
from core.memory import terms

# Enough names for prompts to read naturally; any other value of --from/--to is used as written.
LANGUAGES = {
    "af": "Afrikaans",
    "ar": "Arabic",
    "bg": "Bulgarian",
    "ca": "Catalan",
    "cs": "Czech",
    "cy": "Welsh",
    "da": "Danish",
    "de": "German",
    "el": "Greek",
    "en": "English",
    "es": "Spanish",
    "et": "Estonian",
    "eu": "Basque",
    "fi": "Finnish",
    "fr": "French",
    "ga": "Irish",
    "gl": "Galician",
    "he": "Hebrew",
    "hi": "Hindi",
    "hr": "Croatian",
    "hu": "Hungarian",
    "id": "Indonesian",
    "is": "Icelandic",
    "it": "Italian",
    "ja": "Japanese",
    "ko": "Korean",
    "lt": "Lithuanian",
    "lv": "Latvian",
    "mt": "Maltese",
    "nl": "Dutch",
    "no": "Norwegian",
    "pl": "Polish",
    "pt": "Portuguese",
    "ro": "Romanian",
    "ru": "Russian",
    "sk": "Slovak",
    "sl": "Slovenian",
    "sv": "Swedish",
    "sw": "Swahili",
    "ta": "Tamil",
    "tr": "Turkish",
    "tt": "Tatar",
    "uk": "Ukrainian",
    "vi": "Vietnamese",
    "zh": "Chinese",
}


def language_name(code_or_name: str) -> str:
    return LANGUAGES.get(code_or_name.lower(), code_or_name)


COMMON_WORDS = 100  # a side's commonest words that `written_in` looks for
LEAST_WORDS = 3  # a shorter text (a name, a number) says nothing about its language


def common_words(lines: Iterable[str], n: int = COMMON_WORDS) -> frozenset[str]:
    """The `n` commonest words of a text (case-folded, as the memory indexes them): its function words first."""
    counts = Counter(word for line in lines for word in terms(line))
    return frozenset(word for word, _ in counts.most_common(n))


def written_in(text: str, common: Mapping[str, frozenset[str]]) -> str | None:
    """The language `text` is most likely written in, of the languages in `common` (each one's commonest words, e.g.
    each side of a parallel corpus); None for a text too short to tell, or when no language clearly wins.

    Why this check: the commonest words of a language (the, and, of / de, la, que) make up about half of any running
    text and are rarely words of another, so the share of a text's words among them tells two languages apart even
    in one short sentence — with no model and no data beyond the corpus the project already has. A word common on
    more than one side ("a", "no" in English and Spanish) tells nothing and is left out."""
    words = terms(text)
    if len(words) < LEAST_WORDS:
        return None
    own = {code: ws.difference(*(other for c, other in common.items() if c != code)) for code, ws in common.items()}
    shares = sorted(((sum(w in ws for w in words) / len(words), code) for code, ws in own.items()), reverse=True)
    if not shares:
        return None
    best, code = shares[0]
    runner_up = shares[1][0] if len(shares) > 1 else 0.0
    # A fifth of its words, and twice as many as any other language's: a stray common word does not decide.
    return code if best >= 0.2 and best >= 2 * runner_up else None


def translation_prompt(family: str, source: str, target: str, text: str) -> list[dict] | str:
    """Chat messages (instruct models) or a completion prompt (base models) asking for a translation. `family`:
    "tower" (TowerInstruct's own prompt), "chat" or "base"."""
    src, tgt = language_name(source), language_name(target)
    if family == "tower":  # the prompt TowerInstruct was trained with
        return [
            {"role": "user", "content": f"Translate the following text from {src} into {tgt}.\n{src}: {text}\n{tgt}:"}
        ]
    if family == "chat":
        return [
            {
                "role": "user",
                "content": f"Translate this {src} text into {tgt}. Reply with the translation only.\n\n{text}",
            }
        ]
    return f"{src}: {text}\n{tgt}:"


def few_shot_prompt(source: str, target: str, examples: list[tuple[str, str]], text: str) -> str:
    """A completion prompt of example pairs, then the text: `English: …\nSpanish: …\n\n` per pair, ending in
    `Spanish:`. Every translator gets its examples this way (a Hydra reads the same text, each side with its own
    language's table: core.hydra.prompt); the reply ends at its first line break."""
    src, tgt = language_name(source), language_name(target)
    shots = "".join(f"{src}: {_one_line(s)}\n{tgt}: {_one_line(t)}\n\n" for s, t in examples)
    return f"{shots}{src}: {_one_line(text)}\n{tgt}:"


def _one_line(text: str) -> str:
    # An example's own line breaks would read as the end of its reply.
    return " ".join(text.split())


def translate_lines_to_file(
    lines: list[str],
    translate_lines: Callable[[list[str]], list[str]],
    out_path: str | Path,
    *,
    key: str,
    batch_size: int = 1,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> int:
    """One line in, one line out (empty lines kept), into `out_path`, which appears atomically when every line is
    done; a run stopped by cancel, Ctrl-C or a crash resumes when started again with the same input, model and
    languages (see translate_lines_resumable). The partial file goes once the output is written. Returns lines
    done."""
    out_path = Path(out_path)
    partial = partial_for(out_path, overwrite=overwrite)
    done = translate_lines_resumable(
        lines, translate_lines, partial, key=key, batch_size=batch_size, progress=progress, cancel=cancel
    )
    with atomic_file(out_path) as tmp:
        tmp.write_text("\n".join(done) + "\n", encoding="utf-8")
    partial.unlink(missing_ok=True)
    return len(done)


def partial_for(out_path: Path, *, overwrite: bool = False) -> Path:
    """The hidden sibling `.NAME.partial` that logs a translation into `out_path` as it goes — after refusing an
    existing `out_path` unless `overwrite`, before any work is done."""
    if out_path.exists() and not overwrite:
        raise TweetyError(
            "the output file exists; Tweety Studio never overwrites your files",
            path=out_path,
            fix="choose another file name",
        )
    return out_path.with_name(f".{out_path.name}.partial")


def translate_lines_resumable(
    lines: list[str],
    translate_lines: Callable[[list[str]], list[str]],
    partial_path: Path,
    *,
    key: str,
    batch_size: int = 1,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> list[str]:
    """The translations of `lines`, one line in, one line out (an empty line gives an empty line). Each finished
    line is also appended to `partial_path`, headed by `key` (the model and languages) and the input's hash: a run
    stopped by cancel, Ctrl-C or a crash resumes from there when started again with the same lines and key
    (anything else starts afresh). The caller removes `partial_path` once it has written what it makes of the
    result. `translate_lines` takes up to `batch_size` lines at once."""
    header = json.dumps({"key": key, "input_sha256": hashlib.sha256("\n".join(lines).encode()).hexdigest()})
    done = _resumed(partial_path, header, len(lines))
    report = Reporter(progress, cancel, "Translating")
    if done:
        report(len(done), len(lines), f"resuming after line {len(done):,}")
    partial_path.parent.mkdir(parents=True, exist_ok=True)
    saved = len(done)  # lines safely in the partial file
    try:
        with open(partial_path, "w" if not done else "a", encoding="utf-8") as log_file:
            if not done:
                log_file.write(header + "\n")
            for i in range(len(done), len(lines), batch_size):
                batch = lines[i : i + batch_size]
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
                saved = len(done)
    except OSError:
        if not saved:  # a full disk before any line was kept: nothing to resume, nothing left behind
            partial_path.unlink(missing_ok=True)
        raise
    report(len(lines), len(lines), "done")
    return done


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
    partial.write_text("\n".join([header] + [json.dumps(t, ensure_ascii=False) for t in done]) + "\n", encoding="utf-8")
    return done
