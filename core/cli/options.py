"""What every `tweety` command shares: the command table's record, progress bars, Ctrl-C, and the option groups
(source model, resources, tokenizer, aligner, mapping) that `adapt`, `extend` and the stage commands all take."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core import align, dictionary, mapping, models, resources, tokenizer
from core.errors import TweetyError
from core.jobs import CancelToken, Eta, Progress
from core.layout import project_model


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, "ProgressBars"], int | None]


class ProgressBars:
    """Renders `Progress` events as one tqdm bar per stage on stderr, with the wizard's estimate (core.jobs.Eta: the
    rate of this phase after a warm-up) rather than tqdm's — which, on a bar that restarts for a new phase, divided
    the new phase's count by the whole stage's time."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._bar = None
        self._stage = None
        self._eta = Eta()
        self._clock = clock

    def __call__(self, p: Progress) -> None:
        from tqdm import tqdm

        if p.stage != self._stage or (self._bar is not None and p.total is not None and self._bar.total != p.total):
            self.close()
            self._stage = p.stage
            self._bar = tqdm(
                total=p.total,
                desc=p.stage,
                unit="",
                leave=True,
                file=sys.stderr,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt}{postfix}" if p.total is not None else "{desc}{postfix}",
            )  # tqdm opens the postfix with ", "
        now = self._clock()
        self._eta.update(p, now)
        self._bar.n = p.done if p.total is not None else 0
        self._bar.set_postfix_str(f"{self._eta.time(now)}{' — ' + p.message if p.message else ''}", refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@contextlib.contextmanager
def ctrl_c_cancels(cancel: CancelToken):
    """The first Ctrl-C asks the stage to stop at its next safe point (fine-tuning: the end of a step, which it
    checkpoints); a second one interrupts at once."""
    import signal

    def first(*_):
        cancel.cancel()
        print("\nstopping after this step (Ctrl-C again to abort at once)", file=sys.stderr)
        signal.signal(signal.SIGINT, previous)

    previous = signal.signal(signal.SIGINT, first)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def model_folder(spec: str) -> str | Path:
    """`--model`: a model folder, or a project folder (its fine-tuned model when there is one, else its adapted
    model)."""
    return project_model(spec) or spec


# --- option groups ---------------------------------------------------------------------------------------------------


def add_source(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--source-model",
        default=models.DEFAULT_MODEL,
        help="`default` (embedded SmolLM2-135M-Instruct), a Hugging Face folder or a .gguf file",
    )


def add_project(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--project",
        metavar="DIR",
        help=f"re-run {what} inside a project folder (from `tweety adapt`, "
        "`tweety extend` or the wizard), with its recorded inputs; later stages become stale",
    )


def add_baselines(p: argparse.ArgumentParser):
    """The group the help shows last, for experts: choices kept to compare against the defaults, each measured worse
    (docs/results: init-quality.md, alignment.md) — the wizard's main path offers none of them."""
    return p.add_argument_group(
        "advanced (baselines)", "measured worse than the defaults (docs/results); kept for comparisons"
    )


def add_tokenizer_model(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tokenizer-model",
        choices=("bpe", "unigram"),
        default=tokenizer.TokenizerSettings.model_type,
        help="bpe (default) tokenizes identically in llama.cpp after export; unigram does not",
    )


def add_parallel(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument(
        "--parallel",
        nargs="+",
        metavar="FILE",
        required=required,
        help="parallel corpus: SRC_FILE TGT_FILE (line-aligned), or one .tsv/.tmx file",
    )


def add_inputs(p: argparse.ArgumentParser):
    """Everything `adapt` and `extend` read: target text and translation resources (each flag may repeat; weights
    pair up with their resources in order), overrides, language, output. Returns the advanced (baselines) group, for
    the command's own baselines."""
    add_source(p)
    p.add_argument("--target-text", required=True, help="target-language text, one sentence/paragraph per line")
    p.add_argument(
        "--heldout-text",
        help="held-out target text for the project's fine-tuning and evaluation "
        "(default: the last 5%% of --target-text)",
    )
    p.add_argument(
        "--parallel",
        nargs="+",
        metavar="FILE",
        action="append",
        help="parallel corpus: SRC_FILE TGT_FILE (line-aligned), or one .tsv/.tmx file; may repeat",
    )
    p.add_argument(
        "--parallel-weight",
        type=float,
        action="append",
        metavar="W",
        help="weight of each --parallel in the mixture (default 1; give one per --parallel)",
    )
    p.add_argument(
        "--dictionary",
        action="append",
        metavar="FILE",
        help="bilingual dictionary (.tsv/.csv, dictd .index/.dict.dz, .tmx); may repeat",
    )
    p.add_argument(
        "--dictionary-weight",
        type=float,
        action="append",
        metavar="W",
        help="weight of each --dictionary (default 1; give one per --dictionary)",
    )
    p.add_argument("--resources", metavar="FILE", help="a TOML/JSON list of resources with weights (see README)")
    p.add_argument("--overrides", metavar="FILE", help="mapping overrides, applied on top (see README)")
    p.add_argument("--language", help="target language code, e.g. es (recorded, and written into exported GGUFs)")
    add_word_rules(p)
    p.add_argument(
        "--accept-licence",
        action="store_true",
        help="you have read and accept the source model's "
        "licence (asked for models with terms beyond an open-source licence: Gemma, Llama, Tower)",
    )
    add_mapping_options(p)
    p.add_argument(
        "--out",
        required=True,
        help="the project folder to create (new, empty, or an earlier Tweety "
        "output); the model is OUT/model, and the wizard opens OUT",
    )
    return add_aligner(p)


def add_word_rules(p: argparse.ArgumentParser) -> None:
    """How a dictionary's words are matched to the text's, where the language's own rules (chosen by --language) do
    not suit: its plural endings and cognates."""
    p.add_argument(
        "--plural-endings",
        metavar="LIST",
        help="a dictionary word + one of these endings is its plural "
        '(e.g. "s, es"; "none" for no plural rule; default: the language\'s own)',
    )
    p.add_argument(
        "--cognates",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a word the dictionary "
        "lacks takes the source word spelled like it (names, loanwords; default: the language's own choice)",
    )


def word_rules(a: argparse.Namespace) -> dict:
    """The word rules given on the command line, as `Inputs`/`AdaptSettings` fields (None: the language's own)."""
    endings = None if a.plural_endings is None else dictionary.parse_endings(a.plural_endings)
    return {"plural_endings": endings, "cognates": a.cognates}


def weights(items: list, given: list[float] | None, flag: str) -> list[float]:
    if given is None:
        return [1.0] * len(items)
    if len(given) != len(items):
        raise TweetyError(
            f"{len(items)} --{flag} but {len(given)} --{flag}-weight",
            fix=f"give one --{flag}-weight per --{flag}, or none",
        )
    return given


def parallel_files(values: list[str] | None) -> tuple[str, str] | None:
    if not values:
        return None
    if len(values) > 2:
        raise TweetyError("--parallel takes one file (TSV/TMX) or two files (source, target)")
    return (values[0], values[1] if len(values) == 2 else "")


def resource_list(a: argparse.Namespace) -> list[resources.Resource]:
    out = [
        resources.Resource(resources.PARALLEL, tuple(filter(None, parallel_files(files)))) for files in a.parallel or []
    ]
    out = [resources.Resource(r.kind, r.files, w) for r, w in zip(out, weights(out, a.parallel_weight, "parallel"))]
    out += [
        resources.Resource(resources.DICTIONARY, (f,), w)
        for f, w in zip(a.dictionary or [], weights(a.dictionary or [], a.dictionary_weight, "dictionary"))
    ]
    return out + (resources.read_resource_list(a.resources) if a.resources else [])


def add_aligner(p: argparse.ArgumentParser):
    """The aligner's options: its device, and under advanced (baselines) the other aligners and symmetrization.
    Returns that group."""
    d = align.AlignSettings()
    p.add_argument("--align-device", choices=("auto", "cpu", "cuda"), default=d.device, help="torch aligner's device")
    p = add_baselines(p)
    p.add_argument(
        "--aligner",
        choices=align.METHODS,
        default=d.method,
        help="torch: fast_align's model on tensors (GPU when there is one; the fastest); fast_align: the "
        "systran-align wheel, needs `pip install tweety-studio[fast-align]`; eflomal: needs `pip install "
        "eflomal`",
    )
    p.add_argument(
        "--symmetrize",
        choices=align.SYMMETRIZATIONS,
        default=d.symmetrize,
        help="combine both directions: intersection (precise; auto's choice) or grow-diag-final-and (more "
        "links; auto's choice for fast_align)",
    )
    return p


def align_settings(a: argparse.Namespace) -> align.AlignSettings:
    settings = align.AlignSettings(method=a.aligner, symmetrize=a.symmetrize, device=a.align_device)
    settings.check()  # before the tokenizer trains: an aligner that is not installed is said at once
    return settings


def add_mapping_options(p: argparse.ArgumentParser) -> None:
    d = mapping.MappingSettings()
    p.add_argument(
        "--min-pair-count",
        type=int,
        default=d.min_pair_count,
        help="ignore token pairs aligned fewer times than this (default: from the corpus's pair length, "
        "1 for short strings to 5 for long verses)",
    )
    p.add_argument(
        "--min-token-count",
        type=int,
        default=d.min_token_count,
        help="tokens with fewer alignment links get no alignment evidence (default: from the corpus's "
        "pair length, 2 to 20)",
    )
    p.add_argument("--top-k", type=int, default=d.top_k, help="source tokens kept per target token")
    p.add_argument(
        "--spelling-share",
        type=float,
        metavar="S",
        default=d.spelling_share,
        help="where the source model already reads the language: the share of an aligned token's start taken from "
        f"its spelling in the source's own tokens, the rest from the alignment; a token it spells in at most "
        f"{mapping.SPELLING_PIECES} tokens starts from that spelling alone (default: {mapping.SPELLING_SHARE} where "
        "the source model spells the target text compactly, else 0, off)",
    )


def mapping_settings(a: argparse.Namespace) -> mapping.MappingSettings:
    return mapping.MappingSettings(
        min_pair_count=a.min_pair_count,
        min_token_count=a.min_token_count,
        top_k=a.top_k,
        spelling_share=a.spelling_share,
    )


def need(a: argparse.Namespace, *names: str) -> None:
    """Stage commands take either --project or their own folders; say which are missing."""
    missing = [n for n in names if not getattr(a, n)]
    if missing:
        flags = " and ".join("--" + n.replace("_", "-") for n in missing)
        raise TweetyError(f"give {flags}, or --project DIR to run this stage inside a project")
