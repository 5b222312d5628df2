"""`tweety` command line: a thin layer over the core stage functions (the GUI calls the same ones)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict

from core import align, init, mapping, models, pipeline, resources, tokenizer
from core.errors import TweetyError
from core.evaluate import bits_per_byte
from core.jobs import Cancelled, Progress


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


def _add_parallel(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--parallel", nargs="+", metavar="FILE", required=required,
                   help="parallel corpus: SRC_FILE TGT_FILE (line-aligned), or one .tsv/.tmx file")


def _parallel(values: list[str] | None) -> tuple[str, str] | None:
    if not values:
        return None
    if len(values) > 2:
        raise TweetyError("--parallel takes one file (TSV/TMX) or two files (source, target)")
    return (values[0], values[1] if len(values) == 2 else "")


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
    _add_parallel(p)
    p.add_argument("--dictionary", help="bilingual dictionary (.tsv/.csv, dictd .index/.dict.dz, .tmx)")
    p.add_argument("--vocab-size", type=int, required=True, help="size of the new vocabulary (e.g. 16000)")
    p.add_argument("--tokenizer-model", choices=("unigram", "bpe"), default="unigram")
    p.add_argument("--init", choices=init.METHODS, default="transtok")
    p.add_argument("--seed", type=int, default=0)
    _add_mapping_options(p)
    p.add_argument("--out", required=True, help="output folder (new, empty, or an earlier Tweety output)")

    p = sub.add_parser("tokenizer", help="train the target tokenizer")
    _add_source(p)
    p.add_argument("--target-text", required=True)
    p.add_argument("--vocab-size", type=int, required=True)
    p.add_argument("--tokenizer-model", choices=("unigram", "bpe"), default="unigram")
    p.add_argument("--out", required=True)

    p = sub.add_parser("align", help="align a parallel corpus token by token")
    _add_source(p)
    p.add_argument("--tokenizer", required=True, help="target tokenizer folder")
    _add_parallel(p, required=True)
    p.add_argument("--out", required=True)

    p = sub.add_parser("map", help="build the target→source token mapping")
    _add_source(p)
    p.add_argument("--tokenizer", required=True, help="target tokenizer folder")
    p.add_argument("--alignment", help="folder written by `tweety align`")
    p.add_argument("--dictionary")
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
    return parser


def run(a: argparse.Namespace, bars: ProgressBars) -> None:
    kw = {"progress": bars}
    if a.command == "adapt":
        settings = pipeline.AdaptSettings(
            source_model=a.source_model, target_text=a.target_text, parallel=_parallel(a.parallel),
            dictionary=a.dictionary, out=a.out,
            tokenizer=tokenizer.TokenizerSettings(vocab_size=a.vocab_size, model_type=a.tokenizer_model),
            mapping=_mapping_settings(a), init=init.InitSettings(method=a.init, seed=a.seed))
        result = pipeline.adapt(settings, **kw)
        bars.close()
        print(f"Adapted model written to {result.out}")
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
        source_tok = _source_tokenizer(a.source_model)
        stats = align.align_corpus(corpus, source_tok, tokenizer.load_tokenizer(a.tokenizer), a.out, **kw)
        bars.close()
        print(json.dumps(asdict(stats), indent=2))
    elif a.command == "map":
        if not a.alignment and not a.dictionary:
            raise TweetyError("nothing to map from", fix="give --alignment DIR and/or --dictionary FILE")
        source_tok, target_tok = _source_tokenizer(a.source_model), tokenizer.load_tokenizer(a.tokenizer)
        m = mapping.build_mapping(
            source_tok, target_tok, alignment_counts=align.load_counts(a.alignment) if a.alignment else None,
            dictionary=resources.read_dictionary(a.dictionary) if a.dictionary else None,
            settings=_mapping_settings(a), **kw)
        m.save(a.out, target_tok, source_tok)
        bars.close()
        print(json.dumps(m.coverage(), indent=2))
    elif a.command == "init":
        model, source_tok = models.load_model(a.source_model)
        target_tok = tokenizer.load_tokenizer(a.tokenizer)
        m = init.mapping_for_method(a.init, mapping.Mapping.load(a.mapping), source_tok, target_tok)
        init.initialise(model, m, init.InitSettings(method=a.init, seed=a.seed), **kw)
        init.save_adapted(model, target_tok, a.out)
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


def _source_tokenizer(spec: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(models.resolve(spec))


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
        run(a, bars)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
