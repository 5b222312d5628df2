"""The commands that use an adapted model: `export` (GGUF), `chat`, `translate`, and `hydra` (build, add, tune,
remove, export a Hydra)."""

from __future__ import annotations

import argparse
import sys

from core import export, resources, runtime, stages
from core.cli.options import Command, ProgressBars, add_source, ctrl_c_cancels, model_folder
from core.errors import TweetyError
from core.jobs import Cancelled, CancelToken


def _export_arguments(p: argparse.ArgumentParser) -> None:
    from core.handoff import LMSTUDIO_PUBLISHER

    p.add_argument("--model", required=True, help="adapted model folder, or a project folder (its final model)")
    p.add_argument(
        "--out", help="destination .gguf file (required unless --lmstudio; with --lmstudio only its name counts)"
    )
    p.add_argument(
        "--type",
        choices=export.TYPES,
        default=export.ExportSettings.type,
        help="f32 (exact), f16 (half the size), q8_0 (a quarter, nearly lossless)",
    )
    p.add_argument("--name", help="model name stored in the file (default: the folder's name)")
    p.add_argument("--language", action="append", default=[], help="language code stored in the file (repeatable)")
    p.add_argument(
        "--ollama",
        action="store_true",
        help="also write an Ollama Modelfile beside the file (the model's "
        "chat template as Ollama's TEMPLATE) and print the `ollama create` command",
    )
    p.add_argument(
        "--lmstudio",
        metavar="DIR",
        help=f"put the file into LM Studio's models folder DIR, as "
        f"DIR/{LMSTUDIO_PUBLISHER}/MODEL/FILE.gguf (LM Studio's default folder: ~/.lmstudio/models)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace the destination file, and a README.md or Modelfile beside it, if they exist",
    )


def _export(a: argparse.Namespace, bars: ProgressBars) -> None:
    from dataclasses import replace
    from pathlib import Path

    from core import handoff

    model = model_folder(a.model)
    named = Path(a.model) if (Path(a.model) / "project.json").is_file() else model
    if not a.out and not a.lmstudio:
        raise TweetyError("say where the file goes: --out FILE.gguf, or --lmstudio DIR (LM Studio's models folder)")
    facts = handoff.folder_facts(named, a.name)
    given = handoff.HandOff(
        ollama=a.ollama, lmstudio=a.lmstudio, system=handoff.translation_system(facts.source_name, facts.language)
    )
    out = handoff.destination(a.out or f"{facts.name}-{a.type}.gguf", facts.name, given)
    handoff.check_destination(out, given, a.force)  # before a byte is written
    stages.check_space_for_gguf(model, out, a.type)
    result = export.export_gguf(
        model,
        out,
        export.ExportSettings(type=a.type, name=a.name, languages=tuple(a.language), overwrite=a.force),
        progress=bars,
    )
    bars.close()
    done = handoff.hand_off(
        result.path, replace(facts, language=facts.language or next(iter(a.language), "")), given, overwrite=a.force
    )
    for w in [*result.warnings, *done.warnings]:
        print(f"warning: {w}", file=sys.stderr)
    print(
        f"Wrote {result.path} ({result.type}, {result.bytes / 1e6:,.1f} MB, {result.tensors} tensors, "
        f"{result.seconds:.1f} s) and its model card {done.card}"
    )
    if a.lmstudio:
        print(f"LM Studio lists it under My Models as {result.path.parent.parent.name}/{result.path.parent.name}")
    if done.ollama_command:
        print(f"Ollama Modelfile: {done.modelfile}\nCreate the Ollama model with:\n  {done.ollama_command}")


def _chat_arguments(p: argparse.ArgumentParser) -> None:
    _add_runtime(p)
    p.add_argument("--system", help="system prompt")
    p.add_argument("--temperature", type=float, default=runtime.RuntimeSettings.temperature)


def _chat(a: argparse.Namespace, bars: ProgressBars) -> None:
    llm, settings = _runtime(a, temperature=a.temperature)
    chat_loop(runtime.Chat(llm, settings, system=a.system))


def _hydra_arguments(p: argparse.ArgumentParser) -> None:
    hydra_sub = p.add_subparsers(dest="hydra_command", required=True)
    h = hydra_sub.add_parser("build", help="a new Hydra from the source model and adapted models")
    add_source(h)
    h.add_argument("--source-language", default="en", help="language code of the source model (default en)")
    h.add_argument(
        "--language",
        action="append",
        required=True,
        metavar="CODE=DIR",
        help="an adapted model folder and its language code, e.g. es=adapted (repeatable)",
    )
    h.add_argument(
        "--examples",
        nargs=3,
        action="append",
        default=[],
        metavar=("CODE", "SOURCE_FILE", "TARGET_FILE"),
        help="a parallel corpus (one line each side) whose short pairs make few-shot translation prompts "
        "for language CODE (repeatable; advised: chrF 12.9 → 15.3 on the demo)",
    )
    h.add_argument("--out", required=True, help="the new Hydra folder")
    h = hydra_sub.add_parser("add", help="add a language to a Hydra folder")
    h.add_argument("--hydra", required=True)
    h.add_argument("--language", required=True, metavar="CODE=DIR")
    h.add_argument(
        "--examples",
        nargs=2,
        metavar=("SOURCE_FILE", "TARGET_FILE"),
        help="a parallel corpus whose short pairs make few-shot translation prompts",
    )
    h = hydra_sub.add_parser("finetune", help="train one language's table and head to translate into it")
    h.add_argument("--hydra", required=True)
    h.add_argument("--language", required=True, metavar="CODE")
    g = h.add_mutually_exclusive_group(required=True)
    g.add_argument("--parallel", nargs=2, metavar=("SOURCE_FILE", "TARGET_FILE"), help="real translation pairs")
    g.add_argument(
        "--back-translate",
        metavar="TEXT_FILE",
        help="target-language text only: the Hydra translates it into the source language and trains on "
        "those synthetic pairs",
    )
    h.add_argument("--lines", type=int, default=400, help="pairs (or lines) drawn at random from the file")
    h.add_argument("--steps", type=int, default=hydra_tuning("steps"))
    h.add_argument("--batch-size", type=int, default=hydra_tuning("batch_size"), help="pairs per step")
    h.add_argument("--lr", type=float, default=hydra_tuning("lr"))
    h.add_argument(
        "--tied",
        action="store_true",
        help="keep one table for reading and writing (half the file; by "
        "default the language gets a writing head of its own, which translated better)",
    )
    h = hydra_sub.add_parser("remove", help="remove a language from a Hydra folder")
    h.add_argument("--hydra", required=True)
    h.add_argument("--language", required=True, metavar="CODE")
    h = hydra_sub.add_parser("export", help="one GGUF with every language's vocabulary (runs with core.hydra)")
    h.add_argument("--hydra", required=True)
    h.add_argument("--out", required=True, help="destination .gguf file")
    h.add_argument("--type", choices=export.TYPES, default="f32")
    h.add_argument("--force", action="store_true", help="replace the destination file if it exists")


def _translate_arguments(p: argparse.ArgumentParser) -> None:
    _add_runtime(p, hydra=True)
    p.add_argument("--max-tokens", type=int, default=256, help="most tokens per translated line (--hydra)")
    p.add_argument("--from", dest="source", required=True, help="source language (code or name)")
    p.add_argument("--to", dest="target", required=True, help="target language (code or name)")
    p.add_argument("text", nargs="?", help="text to translate (or use --input)")
    p.add_argument("--input", help="text file to translate line by line")
    p.add_argument("--output", help="where to write the translated file (default: INPUT.TO.txt)")


def _translate(a: argparse.Namespace, bars: ProgressBars) -> int:
    if bool(a.text) == bool(a.input):
        raise TweetyError("give the text to translate, or --input FILE (not both)")
    if a.model:
        return _translate_project(a, bars)
    if a.hydra:
        return _translate_hydra(a, bars)
    llm, _ = _runtime(a)
    if a.text:
        text = runtime.translate(llm, a.text, a.source, a.target)
        if not text:
            print(
                "(no translation: the model ended its answer at once — a model fresh from adaptation often "
                "needs fine-tuning first)",
                file=sys.stderr,
            )
        print(text)
        return 0
    return _translate_file(
        a, bars, lambda out, **kw: runtime.translate_file(llm, a.input, out, a.source, a.target, **kw)
    )


def _add_runtime(p: argparse.ArgumentParser, hydra: bool = False) -> None:
    if hydra:  # translate: a GGUF, or a Hydra (core.hydra) that reads the source language and writes the target's
        g = p.add_mutually_exclusive_group(required=True)
        g.add_argument("--gguf", help="GGUF file written by `tweety export`")
        g.add_argument(
            "--hydra",
            help="Hydra folder (core.hydra.save_hydra): zero-shot translation, the reply "
            "written with the target language's embeddings and head",
        )
        g.add_argument(
            "--model",
            metavar="PROJECT",
            help="project folder: its translation memory and its best "
            "translator (measured on its held-out pairs); --input may be a .txt or a gettext .po/.pot",
        )
    else:
        p.add_argument("--gguf", required=True, help="GGUF file written by `tweety export`")
    p.add_argument("--ctx", type=int, default=runtime.RuntimeSettings.n_ctx, help="context length in tokens")
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads (default: physical cores minus one: on a busy machine more threads are slower)",
    )


def _runtime(a: argparse.Namespace, **kw):
    settings = runtime.RuntimeSettings(n_ctx=a.ctx, threads=a.threads, **kw)
    return runtime.load(a.gguf, settings), settings


def chat_loop(chat: runtime.Chat) -> None:
    """Interactive chat on the terminal: replies stream; Ctrl-C stops a reply, Ctrl-C or Ctrl-D at the prompt quits."""
    print("Chat started. /reset forgets the conversation; Ctrl-C stops a reply; Ctrl-D quits.", file=sys.stderr)
    while True:
        try:
            text = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return
        if not sys.stdin.isatty():  # a piped question: show it, as a terminal would have
            print(text, file=sys.stderr)
        if text in ("/quit", "/exit"):
            return
        if text == "/reset":
            chat.reset()
            continue
        if not text:
            continue
        print("model> ", end="", flush=True)
        try:
            chat.send(text, on_text=lambda t: print(t, end="", flush=True))
        except KeyboardInterrupt:
            print(" [stopped]", end="")
        print()


def _language_folder(value: str) -> tuple[str, str]:
    code, sep, folder = value.partition("=")
    if not sep or not code or not folder:
        raise TweetyError(f"--language {value!r} should be CODE=FOLDER", fix="e.g. --language es=adapted-es")
    return code, folder


def hydra_tuning(name: str):
    from core.hydra import HydraTuning

    return getattr(HydraTuning, name)


def _hydra(a: argparse.Namespace, bars: ProgressBars) -> None:
    from core import hydra

    if a.hydra_command == "build":
        examples = {code: hydra.corpus_examples(src, tgt) for code, src, tgt in a.examples}
        model = hydra.build_hydra(
            a.source_model,
            dict(map(_language_folder, a.language)),
            source_language=a.source_language,
            examples=examples,
        )
        hydra.save_hydra(model, a.out)
        print(f"Hydra with {', '.join(model.languages)} written to {a.out}")
    elif a.hydra_command == "add":
        examples = hydra.corpus_examples(*a.examples) if a.examples else ()
        hydra.add_language(a.hydra, *_language_folder(a.language), examples)
        print(f"Added {a.language.partition('=')[0]} to {a.hydra}")
    elif a.hydra_command == "finetune":
        _hydra_finetune(a, bars)
    elif a.hydra_command == "remove":
        hydra.remove_language(a.hydra, a.language)
        print(f"Removed {a.language} from {a.hydra}")
    else:
        result = hydra.export_hydra_gguf(
            a.hydra, a.out, export.ExportSettings(type=a.type, overwrite=a.force), progress=bars
        )
        bars.close()
        print(f"Wrote {result.path} ({result.type}, {result.bytes / 1e6:,.1f} MB)")


def _hydra_finetune(a: argparse.Namespace, bars: ProgressBars) -> None:
    from core import hydra

    model = hydra.load_hydra(a.hydra, languages=[a.language])
    settings = hydra.HydraTuning(steps=a.steps, batch_size=a.batch_size, lr=a.lr, untie=not a.tied)
    cancel = CancelToken()
    with ctrl_c_cancels(cancel):
        pairs = stages.hydra_pairs(
            model,
            a.language,
            lines=a.lines,
            back_translate=a.back_translate,
            parallel=resources.Resource(resources.PARALLEL, tuple(a.parallel)) if a.parallel else None,
            progress=bars,
            cancel=cancel,
        )
        losses = hydra.finetune_language(model, a.language, pairs, settings, progress=bars, cancel=cancel)
    bars.close()
    last = sum(losses[-10:]) / len(losses[-10:])
    hydra.save_language(
        a.hydra,
        model,
        a.language,
        tuned={
            "pairs": len(pairs),
            "from": "parallel" if a.parallel else "back-translation",
            "steps": a.steps,
            "untied": not a.tied,
            "first_loss": round(losses[0], 4),
            "last_loss": round(last, 4),
        },
    )
    print(
        f"Tuned {a.language} on {len(pairs):,} pairs: loss {losses[0]:.2f} → {last:.2f} (mean of the last 10 "
        f"steps); written to {a.hydra}"
    )


def _translate_hydra(a: argparse.Namespace, bars: ProgressBars) -> int:
    import torch

    from core import hydra

    torch.set_num_threads(a.threads or runtime.default_threads())
    model = hydra.load_hydra(a.hydra, languages=[a.source, a.target])
    if a.text:
        text = hydra.translate(model, a.text, a.source, a.target, max_new_tokens=a.max_tokens)
        if not text:
            print("(no translation: the model ended its answer at once)", file=sys.stderr)
        print(text)
        return 0
    return _translate_file(
        a,
        bars,
        lambda out, **kw: hydra.translate_file(
            model, a.input, out, a.source, a.target, max_new_tokens=a.max_tokens, **kw
        ),
    )


def _translate_project(a: argparse.Namespace, bars: ProgressBars) -> int:
    from core import translating
    from core.project import Project

    project = Project.open(a.model)
    if a.text:
        cancel = CancelToken()
        with ctrl_c_cancels(cancel):
            name, translate = translating.translator(project, a.source, a.target, progress=bars, cancel=cancel)
            bars.close()
            print(translate([a.text])[0])
        print(f"(translated by: {name})", file=sys.stderr)
        return 0
    used = []

    def translate_file(out, **kw):
        name, n = translating.translate_file(project, a.input, out, a.source, a.target, **kw)
        used.append(name)
        return n

    code = _translate_file(a, bars, translate_file)
    if used:
        print(f"(translated by: {used[0]})", file=sys.stderr)
    return code


def _translate_file(a: argparse.Namespace, bars: ProgressBars, translate_file) -> int:
    """--input: translate line by line; the first Ctrl-C stops after the current line, keeping the lines done."""
    out = a.output or f"{a.input}.{a.target}.txt"
    cancel = CancelToken()
    try:
        with ctrl_c_cancels(cancel):
            n = translate_file(out, progress=bars, cancel=cancel)
    except Cancelled:
        bars.close()
        print("stopped; the lines done are kept — run the same command again to resume", file=sys.stderr)
        return 130
    bars.close()
    print(f"Translated {n:,} lines into {out}")
    return 0


COMMANDS = [
    Command("export", "write an adapted model as a GGUF file for llama.cpp", _export_arguments, _export),
    Command("chat", "chat with an exported GGUF (Ctrl-C stops a reply, Ctrl-D quits)", _chat_arguments, _chat),
    Command(
        "hydra", "build or change a Hydra: one body, a vocabulary table and head per language", _hydra_arguments, _hydra
    ),
    Command(
        "translate",
        "translate text or a file with an exported GGUF or a Hydra folder",
        _translate_arguments,
        _translate,
    ),
]
