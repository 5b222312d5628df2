"""`tweety` command line: a thin layer over the core stage functions (the GUI calls the same ones)."""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import time
from dataclasses import asdict

from core import align, export, extend, finetune, init, mapping, models, pipeline, resources, runtime, tokenizer
from core.errors import TweetyError
from core.evaluate import bits_per_byte
from core.jobs import Cancelled, CancelToken, Progress


class ProgressBars:
    """Renders `Progress` events as one tqdm bar per stage on stderr (with rate and ETA)."""

    def __init__(self) -> None:
        self._bar = None
        self._stage = None

    def __call__(self, p: Progress) -> None:
        from tqdm import tqdm

        if p.stage != self._stage or (self._bar is not None and p.total is not None and self._bar.total != p.total):
            self.close()
            self._stage = p.stage
            self._bar = tqdm(total=p.total, desc=p.stage, unit="", leave=True, file=sys.stderr,
                             bar_format=None if p.total is not None else "{desc}: {postfix} [{elapsed}]")
        self._bar.n = p.done if p.total is not None else 0
        self._bar.set_postfix_str(p.message, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _add_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source-model", default=models.DEFAULT_MODEL,
                   help="`default` (embedded SmolLM2-135M-Instruct), a Hugging Face folder or a .gguf file")


def _add_tokenizer_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tokenizer-model", choices=("bpe", "unigram"), default=tokenizer.TokenizerSettings.model_type,
                   help="bpe (default) tokenizes identically in llama.cpp after export; unigram does not")


def _add_parallel(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--parallel", nargs="+", metavar="FILE", required=required,
                   help="parallel corpus: SRC_FILE TGT_FILE (line-aligned), or one .tsv/.tmx file")


def _add_resources(p: argparse.ArgumentParser) -> None:
    """Translation resources of `adapt`: each flag may repeat; weights pair up with their resources in order."""
    p.add_argument("--parallel", nargs="+", metavar="FILE", action="append",
                   help="parallel corpus: SRC_FILE TGT_FILE (line-aligned), or one .tsv/.tmx file; may repeat")
    p.add_argument("--parallel-weight", type=float, action="append", metavar="W",
                   help="weight of each --parallel in the mixture (default 1; give one per --parallel)")
    p.add_argument("--dictionary", action="append", metavar="FILE",
                   help="bilingual dictionary (.tsv/.csv, dictd .index/.dict.dz, .tmx); may repeat")
    p.add_argument("--dictionary-weight", type=float, action="append", metavar="W",
                   help="weight of each --dictionary (default 1; give one per --dictionary)")
    p.add_argument("--resources", metavar="FILE", help="a TOML/JSON list of resources with weights (see README)")
    p.add_argument("--overrides", metavar="FILE", help="mapping overrides, applied on top (see README)")


def _weights(items: list, weights: list[float] | None, flag: str) -> list[float]:
    if weights is None:
        return [1.0] * len(items)
    if len(weights) != len(items):
        raise TweetyError(f"{len(items)} --{flag} but {len(weights)} --{flag}-weight",
                          fix=f"give one --{flag}-weight per --{flag}, or none")
    return weights


def _resource_list(a: argparse.Namespace) -> list[resources.Resource]:
    out = [resources.Resource(resources.PARALLEL, tuple(filter(None, _parallel(files)))) for files in a.parallel or []]
    out = [resources.Resource(r.kind, r.files, w) for r, w in zip(out, _weights(out, a.parallel_weight, "parallel"))]
    out += [resources.Resource(resources.DICTIONARY, (f,), w) for f, w in
            zip(a.dictionary or [], _weights(a.dictionary or [], a.dictionary_weight, "dictionary"))]
    return out + (resources.read_resource_list(a.resources) if a.resources else [])


def _parallel(values: list[str] | None) -> tuple[str, str] | None:
    if not values:
        return None
    if len(values) > 2:
        raise TweetyError("--parallel takes one file (TSV/TMX) or two files (source, target)")
    return (values[0], values[1] if len(values) == 2 else "")


def _add_aligner(p: argparse.ArgumentParser) -> None:
    d = align.AlignSettings()
    p.add_argument("--aligner", choices=align.METHODS, default=d.method,
                   help="torch: fast_align's model on tensors (GPU when there is one; the fastest); fast_align: the "
                   "systran-align wheel; eflomal: needs `pip install eflomal`")
    p.add_argument("--symmetrize", choices=align.SYMMETRIZATIONS, default=d.symmetrize,
                   help="combine both directions: intersection (precise; auto's choice) or grow-diag-final-and (more "
                   "links; auto's choice for fast_align)")
    p.add_argument("--align-device", choices=("auto", "cpu", "cuda"), default=d.device,
                   help="torch aligner's device")


def _align_settings(a: argparse.Namespace) -> align.AlignSettings:
    return align.AlignSettings(method=a.aligner, symmetrize=a.symmetrize, device=a.align_device)


def _add_mapping_options(p: argparse.ArgumentParser) -> None:
    d = mapping.MappingSettings()
    p.add_argument("--min-pair-count", type=int, default=d.min_pair_count,
                   help="ignore token pairs aligned fewer times than this")
    p.add_argument("--min-token-count", type=int, default=d.min_token_count,
                   help="tokens with fewer alignment links get no alignment evidence")
    p.add_argument("--top-k", type=int, default=d.top_k, help="source tokens kept per target token")


def _mapping_settings(a: argparse.Namespace) -> mapping.MappingSettings:
    return mapping.MappingSettings(min_pair_count=a.min_pair_count, min_token_count=a.min_token_count, top_k=a.top_k)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tweety", description="Adapt a language model to a new language "
                                     "by trans-tokenization, and measure it.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("adapt", help="all steps: tokenizer, align, map, init")
    _add_source(p)
    p.add_argument("--target-text", required=True, help="target-language text, one sentence/paragraph per line")
    _add_resources(p)
    p.add_argument("--vocab-size", type=int, required=True, help="size of the new vocabulary (e.g. 16000)")
    _add_tokenizer_model(p)
    p.add_argument("--init", choices=init.METHODS, default="transtok")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--language", help="target language code, e.g. es (recorded, and written into exported GGUFs)")
    _add_aligner(p)
    _add_mapping_options(p)
    p.add_argument("--out", required=True, help="output folder (new, empty, or an earlier Tweety output)")

    p = sub.add_parser("extend", help="all steps, keeping the source vocabulary: add new target-language tokens")
    _add_source(p)
    p.add_argument("--target-text", required=True, help="target-language text, one sentence/paragraph per line")
    _add_parallel(p, required=True)
    p.add_argument("--dictionary", help="bilingual dictionary (.tsv/.csv, dictd .index/.dict.dz, .tmx)")
    p.add_argument("--new-tokens", type=int, default=extend.ExtensionSettings.new_tokens,
                   help="how many tokens to add (continued BPE training on the target text)")
    p.add_argument("--source-penalty", type=float, default=extend.ExtendSettings.source_penalty,
                   help="how many nats lower new tokens score in source-language text (0: none)")
    p.add_argument("--language", help="target language code, e.g. es (recorded, and written into exported GGUFs)")
    _add_aligner(p)
    _add_mapping_options(p)
    p.add_argument("--out", required=True, help="output folder (new, empty, or an earlier Tweety output)")

    p = sub.add_parser("tokenizer", help="train the target tokenizer")
    _add_source(p)
    p.add_argument("--target-text", required=True)
    p.add_argument("--vocab-size", type=int, required=True)
    _add_tokenizer_model(p)
    p.add_argument("--out", required=True)

    p = sub.add_parser("align", help="align a parallel corpus token by token")
    _add_source(p)
    p.add_argument("--tokenizer", required=True, help="target tokenizer folder")
    _add_parallel(p, required=True)
    _add_aligner(p)
    p.add_argument("--out", required=True)

    p = sub.add_parser("map", help="build the target→source token mapping")
    _add_source(p)
    p.add_argument("--tokenizer", required=True, help="target tokenizer folder")
    p.add_argument("--alignment", action="append", metavar="DIR",
                   help="folder written by `tweety align` (its cached link counts); may repeat")
    p.add_argument("--alignment-weight", type=float, action="append", metavar="W",
                   help="weight of each --alignment (default 1; give one per --alignment)")
    p.add_argument("--dictionary", action="append", metavar="FILE", help="bilingual dictionary; may repeat")
    p.add_argument("--dictionary-weight", type=float, action="append", metavar="W")
    p.add_argument("--overrides", metavar="FILE", help="mapping overrides, applied on top (see README)")
    _add_mapping_options(p)
    p.add_argument("--out", required=True)

    p = sub.add_parser("init", help="initialise the adapted model from a mapping")
    _add_source(p)
    p.add_argument("--tokenizer", required=True, help="target tokenizer folder")
    p.add_argument("--mapping", required=True, help="folder written by `tweety map`")
    p.add_argument("--init", choices=init.METHODS, default="transtok")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)

    p = sub.add_parser("eval", help="bits per byte of a model on held-out text")
    p.add_argument("--model", required=True, help="model folder (or `default`)")
    p.add_argument("--text", required=True)
    p.add_argument("--window", type=int, default=512, help="context window in tokens")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("finetune", help="train the new embeddings (and a few outer layers) on target text")
    d = finetune.FinetuneSettings()
    p.add_argument("--model", required=True, help="adapted model folder (from `tweety adapt` or `tweety init`)")
    p.add_argument("--text", required=True, help="target-language training text, one sentence/paragraph per line")
    p.add_argument("--heldout", help="held-out target text: bits per byte every --eval-every steps")
    p.add_argument("--stage", choices=finetune.STAGES, default=d.stage,
                   help="embeddings: embeddings and LM head only; outer-layers: also the first and last N layers")
    p.add_argument("--outer-layers", type=int, default=d.outer_layers, help="N for the outer-layers stage")
    p.add_argument("--steps", type=int, default=d.steps, help="optimizer steps")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate")
    p.add_argument("--schedule", choices=finetune.SCHEDULES, default=d.schedule)
    p.add_argument("--warmup", type=int, default=d.warmup_steps, help="warm-up steps")
    p.add_argument("--block-size", type=int, default=d.block_size, help="tokens per training sequence")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="sequences per micro-batch")
    p.add_argument("--grad-accum", type=int, default=d.grad_accum, help="micro-batches per optimizer step")
    p.add_argument("--eval-every", type=int, default=d.eval_every)
    p.add_argument("--eval-max-bytes", type=int, default=d.eval_max_bytes, help="cut held-out text (0: all)")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, help="auto (CUDA when present), cpu or cuda[:N]")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--out", required=True, help="output model folder (new, empty, or an earlier Tweety output)")
    p.add_argument("--nproc", type=int, help="train with N processes on this machine (one per GPU), started by "
                   "torchrun, trainable tensors sharded with FSDP; --batch-size is split between them (docs/cluster.md)")
    p.add_argument("--nnodes", type=int, default=1, help="machines in the job: run the same command on each")
    p.add_argument("--rdzv", metavar="HOST:PORT", help="where the machines of a multi-machine job meet (a free port "
                   "on one of them)")
    p.add_argument("--print-launch", nargs="?", const="", metavar="DIR", help="run nothing: write a job folder "
                   "(job.json, launch.sh, slurm.sbatch; default OUT-job) for a cluster and print the torchrun command")

    p = sub.add_parser("export", help="write an adapted model as a GGUF file for llama.cpp")
    p.add_argument("--model", required=True, help="adapted model folder")
    p.add_argument("--out", required=True, help="destination .gguf file")
    p.add_argument("--type", choices=export.TYPES, default=export.ExportSettings.type,
                   help="f32 (exact), f16 (half the size), q8_0 (a quarter, nearly lossless)")
    p.add_argument("--name", help="model name stored in the file (default: the folder's name)")
    p.add_argument("--language", action="append", default=[], help="language code stored in the file (repeatable)")
    p.add_argument("--force", action="store_true", help="replace the destination file if it exists")

    p = sub.add_parser("chat", help="chat with an exported GGUF (Ctrl-C stops a reply, Ctrl-D quits)")
    _add_runtime(p)
    p.add_argument("--system", help="system prompt")
    p.add_argument("--temperature", type=float, default=runtime.RuntimeSettings.temperature)

    p = sub.add_parser("hydra", help="build or change a Hydra: one body, a vocabulary table and head per language")
    hydra_sub = p.add_subparsers(dest="hydra_command", required=True)
    h = hydra_sub.add_parser("build", help="a new Hydra from the source model and adapted models")
    _add_source(h)
    h.add_argument("--source-language", default="en", help="language code of the source model (default en)")
    h.add_argument("--language", action="append", required=True, metavar="CODE=DIR",
                   help="an adapted model folder and its language code, e.g. es=adapted (repeatable)")
    h.add_argument("--examples", nargs=3, action="append", default=[], metavar=("CODE", "SOURCE_FILE", "TARGET_FILE"),
                   help="a parallel corpus (one line each side) whose short pairs make few-shot translation prompts "
                   "for language CODE (repeatable; advised: chrF 12.9 → 15.3 on the demo)")
    h.add_argument("--out", required=True, help="the new Hydra folder")
    h = hydra_sub.add_parser("add", help="add a language to a Hydra folder")
    h.add_argument("--hydra", required=True)
    h.add_argument("--language", required=True, metavar="CODE=DIR")
    h.add_argument("--examples", nargs=2, metavar=("SOURCE_FILE", "TARGET_FILE"),
                   help="a parallel corpus whose short pairs make few-shot translation prompts")
    h = hydra_sub.add_parser("finetune", help="train one language's table and head to translate into it")
    h.add_argument("--hydra", required=True)
    h.add_argument("--language", required=True, metavar="CODE")
    g = h.add_mutually_exclusive_group(required=True)
    g.add_argument("--parallel", nargs=2, metavar=("SOURCE_FILE", "TARGET_FILE"), help="real translation pairs")
    g.add_argument("--back-translate", metavar="TEXT_FILE",
                   help="target-language text only: the Hydra translates it into the source language and trains on "
                   "those synthetic pairs")
    h.add_argument("--lines", type=int, default=400, help="pairs (or lines) drawn at random from the file")
    h.add_argument("--steps", type=int, default=hydra_tuning("steps"))
    h.add_argument("--batch-size", type=int, default=hydra_tuning("batch_size"), help="pairs per step")
    h.add_argument("--lr", type=float, default=hydra_tuning("lr"))
    h.add_argument("--tied", action="store_true", help="keep one table for reading and writing (half the file; by "
                   "default the language gets a writing head of its own, which translated better)")
    h = hydra_sub.add_parser("remove", help="remove a language from a Hydra folder")
    h.add_argument("--hydra", required=True)
    h.add_argument("--language", required=True, metavar="CODE")
    h = hydra_sub.add_parser("export", help="one GGUF with every language's vocabulary (runs with core.hydra)")
    h.add_argument("--hydra", required=True)
    h.add_argument("--out", required=True, help="destination .gguf file")
    h.add_argument("--type", choices=export.TYPES, default="f32")
    h.add_argument("--force", action="store_true", help="replace the destination file if it exists")

    p = sub.add_parser("translate", help="translate text or a file with an exported GGUF or a Hydra folder")
    _add_runtime(p, hydra=True)
    p.add_argument("--max-tokens", type=int, default=256, help="most tokens per translated line (--hydra)")
    p.add_argument("--from", dest="source", required=True, help="source language (code or name)")
    p.add_argument("--to", dest="target", required=True, help="target language (code or name)")
    p.add_argument("text", nargs="?", help="text to translate (or use --input)")
    p.add_argument("--input", help="text file to translate line by line")
    p.add_argument("--output", help="where to write the translated file (default: INPUT.TO.txt)")
    return parser


def _add_runtime(p: argparse.ArgumentParser, hydra: bool = False) -> None:
    if hydra:  # translate: a GGUF, or a Hydra (core.hydra) that reads the source language and writes the target's
        g = p.add_mutually_exclusive_group(required=True)
        g.add_argument("--gguf", help="GGUF file written by `tweety export`")
        g.add_argument("--hydra", help="Hydra folder (core.hydra.save_hydra): zero-shot translation, the reply "
                       "written with the target language's embeddings and head")
    else:
        p.add_argument("--gguf", required=True, help="GGUF file written by `tweety export`")
    p.add_argument("--ctx", type=int, default=runtime.RuntimeSettings.n_ctx, help="context length in tokens")
    p.add_argument("--threads", type=int, help="CPU threads (default: all)")


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


@contextlib.contextmanager
def _ctrl_c_cancels(cancel: CancelToken):
    """The first Ctrl-C asks the stage to stop at its next safe point (fine-tuning: the end of a step, which it
    checkpoints); a second one interrupts at once."""
    def first(*_):
        cancel.cancel()
        print("\nstopping after this step (Ctrl-C again to abort at once)", file=sys.stderr)
        signal.signal(signal.SIGINT, previous)

    previous = signal.signal(signal.SIGINT, first)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run(a: argparse.Namespace, bars: ProgressBars) -> int:
    kw = {"progress": bars}
    if a.command == "adapt":
        settings = pipeline.AdaptSettings(
            source_model=a.source_model, target_text=a.target_text, resources=tuple(_resource_list(a)),
            overrides=a.overrides, out=a.out,
            tokenizer=tokenizer.TokenizerSettings(vocab_size=a.vocab_size, model_type=a.tokenizer_model),
            align=_align_settings(a), mapping=_mapping_settings(a), init=init.InitSettings(method=a.init, seed=a.seed),
            language=a.language)
        result = pipeline.adapt(settings, **kw)
        bars.close()
        print(f"Adapted model written to {result.out}")
        print("Coverage: " + ", ".join(f"{k} {v:,}" for k, v in result.coverage.items() if v))
        print("Times (s): " + ", ".join(f"{k} {v}" for k, v in result.seconds.items()))
    elif a.command == "extend":
        result = extend.extend_model(extend.ExtendSettings(
            source_model=a.source_model, target_text=a.target_text, parallel=_parallel(a.parallel),
            dictionary=a.dictionary, out=a.out, language=a.language,
            extend=extend.ExtensionSettings(new_tokens=a.new_tokens), align=_align_settings(a),
            mapping=_mapping_settings(a), source_penalty=a.source_penalty), **kw)
        bars.close()
        print(f"Extended model written to {result.out}: {result.extension.source_vocab:,} source tokens kept, "
              f"{result.extension.new_tokens:,} new")
        print("Coverage: " + ", ".join(f"{k} {v:,}" for k, v in result.coverage.items() if v))
        print("Times (s): " + ", ".join(f"{k} {v}" for k, v in result.seconds.items()))
    elif a.command == "tokenizer":
        _, source_tok = models.load_model(a.source_model)
        tokenizer.train_tokenizer(resources.read_lines(a.target_text), source_tok, a.out,
                                  tokenizer.TokenizerSettings(vocab_size=a.vocab_size, model_type=a.tokenizer_model),
                                  **kw)
        print(f"Tokenizer written to {a.out}")
    elif a.command == "align":
        corpus = pipeline.read_parallel_setting(_parallel(a.parallel))
        source_tok = models.load_tokenizer(a.source_model)
        stats = align.align_corpus(corpus, source_tok, tokenizer.load_tokenizer(a.tokenizer), a.out,
                                   _align_settings(a), **kw)
        bars.close()
        print(json.dumps(asdict(stats), indent=2))
    elif a.command == "map":
        if not a.alignment and not a.dictionary:
            raise TweetyError("nothing to map from", fix="give --alignment DIR and/or --dictionary FILE")
        source_tok, target_tok = models.load_tokenizer(a.source_model), tokenizer.load_tokenizer(a.tokenizer)
        named = resources.distinct_labels(
            [resources.Resource(resources.PARALLEL, (d,), w) for d, w in
             zip(a.alignment or [], _weights(a.alignment or [], a.alignment_weight, "alignment"))] +
            [resources.Resource(resources.DICTIONARY, (f,), w) for f, w in
             zip(a.dictionary or [], _weights(a.dictionary or [], a.dictionary_weight, "dictionary"))])
        evidence = [mapping.Evidence(r.label, mapping.ALIGNMENT_KIND, align.load_counts(r.files[0]), r.weight)
                    if r.kind == resources.PARALLEL else
                    mapping.dictionary_evidence(r.read(), source_tok, target_tok, name=r.label, weight=r.weight)
                    for r in named]
        m = mapping.build_mapping(
            source_tok, target_tok, evidence=evidence, settings=_mapping_settings(a),
            overrides=resources.read_overrides(a.overrides) if a.overrides else (), **kw)
        m.save(a.out, target_tok, source_tok)
        bars.close()
        print(json.dumps({"origins": m.coverage(), "resources": m.shares()}, indent=2))
    elif a.command == "init":
        source_tok, target_tok = models.load_tokenizer(a.source_model), tokenizer.load_tokenizer(a.tokenizer)
        m = init.mapping_for_method(a.init, mapping.Mapping.load(a.mapping), source_tok, target_tok)
        init.initialise_folder(models.resolve(a.source_model), m, target_tok, a.out,
                               init.InitSettings(method=a.init, seed=a.seed), **kw)
        print(f"Initialised model written to {a.out}")
    elif a.command == "eval":
        model, tok = models.load_model(a.model)
        result = bits_per_byte(model, tok, resources.read_text(a.text), window=a.window, **kw)
        bars.close()
        if a.json:
            print(json.dumps(asdict(result)))
        else:
            print(f"bits per byte {result.bits_per_byte:.4f}, token perplexity {result.token_ppl:.2f}, "
                  f"tokens per byte {result.tokens_per_byte:.4f}")
    elif a.command == "finetune":
        settings = finetune.FinetuneSettings(
            stage=a.stage, steps=a.steps, outer_layers=a.outer_layers, block_size=a.block_size,
            batch_size=a.batch_size, grad_accum=a.grad_accum, lr=a.lr, schedule=a.schedule, warmup_steps=a.warmup,
            eval_every=a.eval_every, eval_max_bytes=a.eval_max_bytes, checkpoint_every=a.checkpoint_every,
            seed=a.seed, device=a.device)
        from core import distributed

        launch = distributed.LaunchSettings(a.nproc or 1, a.nnodes, a.rdzv or "")
        if a.print_launch is not None:
            folder, command = distributed.write_job(a.print_launch or a.out.rstrip("/\\") + "-job", a.model, a.text,
                                                    a.heldout, a.out, settings, launch, resume=a.resume)
            machines = f" on each of the {launch.nnodes} machines" if launch.nnodes > 1 else ""
            print(f"Job folder written (job.json, launch.sh, slurm.sbatch); run {folder / 'launch.sh'}{machines}:")
            print(command)
            return 0
        cancel = CancelToken()
        try:
            with _ctrl_c_cancels(cancel):
                if a.nproc or a.nnodes > 1:
                    result = distributed.launch(a.model, a.text, a.heldout, a.out, settings, launch,
                                                resume=a.resume, cancel=cancel, **kw)
                else:
                    result = finetune.finetune(a.model, a.text, a.heldout, a.out, settings, resume=a.resume,
                                               cancel=cancel, **kw)
        except Cancelled:
            bars.close()
            print(f"stopped; the last finished step is checkpointed in {a.out} — add --resume to continue",
                  file=sys.stderr)
            return 130
        bars.close()
        if result.initial_bpb is not None:
            print(f"held-out bits per byte {result.initial_bpb:.4f} → {result.final_bpb:.4f}")
        print(f"{result.steps} steps, {result.tokens_per_s:,.0f} tokens/s; model written to {result.out} "
              f"(curve: {result.out}/{finetune.TRAINING}/curve.png)")
    elif a.command == "export":
        result = export.export_gguf(a.model, a.out, export.ExportSettings(
            type=a.type, name=a.name, languages=tuple(a.language), overwrite=a.force), **kw)
        bars.close()
        for w in result.warnings:
            print(f"warning: {w}", file=sys.stderr)
        print(f"Wrote {result.path} ({result.type}, {result.bytes / 1e6:,.1f} MB, {result.tensors} tensors, "
              f"{result.seconds:.1f} s)")
    elif a.command == "chat":
        llm, settings = _runtime(a, temperature=a.temperature)
        chat_loop(runtime.Chat(llm, settings, system=a.system))
    elif a.command == "hydra":
        _hydra(a, bars)
    elif a.command == "translate":
        if bool(a.text) == bool(a.input):
            raise TweetyError("give the text to translate, or --input FILE (not both)")
        if a.hydra:
            return _translate_hydra(a, bars)
        llm, _ = _runtime(a)
        if a.text:
            text = runtime.translate(llm, a.text, a.source, a.target)
            if not text:
                print("(no translation: the model ended its answer at once — a model fresh from adaptation often "
                      "needs fine-tuning first)", file=sys.stderr)
            print(text)
        else:
            return _translate_file(a, bars, lambda out, **kw: runtime.translate_file(
                llm, a.input, out, a.source, a.target, **kw))


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
        model = hydra.build_hydra(a.source_model, dict(map(_language_folder, a.language)),
                                  source_language=a.source_language, examples=examples)
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
        result = hydra.export_hydra_gguf(a.hydra, a.out, export.ExportSettings(type=a.type, overwrite=a.force),
                                         progress=bars)
        bars.close()
        print(f"Wrote {result.path} ({result.type}, {result.bytes / 1e6:,.1f} MB)")


def _hydra_finetune(a: argparse.Namespace, bars: ProgressBars) -> None:
    import random

    from core import hydra

    model = hydra.load_hydra(a.hydra, languages=[a.language])
    settings = hydra.HydraTuning(steps=a.steps, batch_size=a.batch_size, lr=a.lr, untie=not a.tied)
    cancel = CancelToken()
    with _ctrl_c_cancels(cancel):
        if a.parallel:
            corpus = resources.read_parallel(*a.parallel)
            pairs = list(zip(corpus.source, corpus.target))
            pairs = random.Random(0).sample(pairs, min(a.lines, len(pairs)))
        else:
            lines = [line for line in resources.read_lines(a.back_translate) if line.strip()]
            lines = random.Random(0).sample(lines, min(a.lines, len(lines)))
            pairs = hydra.back_translate(model, a.language, lines, progress=bars, cancel=cancel)
        losses = hydra.finetune_language(model, a.language, pairs, settings, progress=bars, cancel=cancel)
    bars.close()
    last = sum(losses[-10:]) / len(losses[-10:])
    hydra.save_language(a.hydra, model, a.language, tuned={
        "pairs": len(pairs), "from": "parallel" if a.parallel else "back-translation", "steps": a.steps,
        "untied": not a.tied, "first_loss": round(losses[0], 4), "last_loss": round(last, 4)})
    print(f"Tuned {a.language} on {len(pairs):,} pairs: loss {losses[0]:.2f} → {last:.2f} (mean of the last 10 "
          f"steps); written to {a.hydra}")


def _translate_hydra(a: argparse.Namespace, bars: ProgressBars) -> int:
    import torch

    from core import hydra

    if a.threads:
        torch.set_num_threads(a.threads)
    model = hydra.load_hydra(a.hydra, languages=[a.source, a.target])
    if a.text:
        text = hydra.translate(model, a.text, a.source, a.target, max_new_tokens=a.max_tokens)
        if not text:
            print("(no translation: the model ended its answer at once)", file=sys.stderr)
        print(text)
        return 0
    return _translate_file(a, bars, lambda out, **kw: hydra.translate_file(
        model, a.input, out, a.source, a.target, max_new_tokens=a.max_tokens, **kw))


def _translate_file(a: argparse.Namespace, bars: ProgressBars, translate_file) -> int:
    """--input: translate line by line; the first Ctrl-C stops after the current line, keeping the lines done."""
    out = a.output or f"{a.input}.{a.target}.txt"
    cancel = CancelToken()
    try:
        with _ctrl_c_cancels(cancel):
            n = translate_file(out, progress=bars, cancel=cancel)
    except Cancelled:
        bars.close()
        print("stopped; the lines done are kept — run the same command again to resume", file=sys.stderr)
        return 130
    bars.close()
    print(f"Translated {n:,} lines into {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    bars = ProgressBars()
    start = time.monotonic()
    try:
        code = run(a, bars)
    except TweetyError as e:
        bars.close()
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (Cancelled, KeyboardInterrupt):
        bars.close()
        print("cancelled; nothing was written", file=sys.stderr)
        return 130
    bars.close()
    logging.getLogger(__name__).info("done in %.1f s", time.monotonic() - start)
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
