"""The adaptation commands: `adapt` and `extend` (every stage into a new project folder), the stage commands
(`tokenizer`, `align`, `map`, `init`: on loose folders, or inside a project with `--project`), `eval`, `finetune`."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from core import align, calibrate, extend, finetune, init, models, pipeline, resources, stages, tokenizer
from core.cli.options import (
    Command,
    ProgressBars,
    add_aligner,
    add_baselines,
    add_inputs,
    add_mapping_options,
    add_word_rules,
    add_parallel,
    add_project,
    add_source,
    add_tokenizer_model,
    align_settings,
    ctrl_c_cancels,
    mapping_settings,
    model_folder,
    need,
    parallel_files,
    resource_list,
    weights,
    word_rules,
)
from core.errors import TweetyError
from core.evaluate import bits_per_byte
from core.jobs import Cancelled, CancelToken
from core.layout import EXTEND, REPLACE, Inputs, ProjectState
from core.project import Project


def _adapt_arguments(p: argparse.ArgumentParser) -> None:
    baselines = add_inputs(p)
    p.add_argument("--vocab-size", type=int, required=True, help="size of the new vocabulary (e.g. 16000)")
    _add_init(baselines, skips_alignment=True)
    add_tokenizer_model(baselines)


def _add_init(p, skips_alignment: bool = False) -> None:
    p.add_argument(
        "--init",
        choices=init.METHODS,
        default="transtok",
        help="transtok: trans-tokenization (the "
        "default); fvt (from each token's spelling), mean, random: baselines that use no translation"
        + (" (and skip the alignment)" if skips_alignment else ""),
    )
    p.add_argument("--seed", type=int, default=0, help="random: the seed of its rows")
    p.add_argument(
        "--calibration",
        type=float,
        metavar="SHARE",
        help="how far the new tokens' predicted frequencies move toward their frequencies in the target text: "
        f"0 off, 1 all the way (default {calibrate.SHARE} for transtok, 0 for the baselines)",
    )


def _extend_arguments(p: argparse.ArgumentParser) -> None:
    add_inputs(p)
    d = extend.ExtensionSettings()
    p.add_argument(
        "--new-tokens",
        type=int,
        default=d.new_tokens,
        help="how many tokens to add (continued BPE training on the target text)",
    )
    p.add_argument(
        "--source-penalty",
        type=float,
        default=d.source_penalty,
        help="how many nats lower new tokens score in source-language text (0: none)",
    )


def _licence(a: argparse.Namespace) -> dict | None:
    """The licence guardrail (as in the wizard): terms beyond an open-source licence are shown and must be accepted
    before the model is adapted; the acceptance is recorded in the project. Read from the header: no conversion."""
    licence = models.model_card(a.source_model).licence
    if licence is None or not licence.must_accept:
        return None
    where = f" (its text: {licence.text})" if licence.text else ""
    if not a.accept_licence:
        raise TweetyError(
            f"this source model is under the {licence.name}, {licence.url}{where}; it must be read and "
            "accepted before the model is adapted",
            fix="add --accept-licence once you have read and accepted it",
        )
    return {"name": licence.name, "url": licence.url, "text": str(licence.text or ""), "accepted": True}


def _run_pipeline(a: argparse.Namespace, bars: ProgressBars, vocabulary: str) -> None:
    licence = _licence(a)
    common = dict(
        source_model=a.source_model,
        target_text=a.target_text,
        heldout_text=a.heldout_text,
        resources=tuple(resource_list(a)),
        overrides=a.overrides,
        out=a.out,
        language=a.language,
        **word_rules(a),
        vocabulary=vocabulary,
        align=align_settings(a),
        mapping=mapping_settings(a),
    )
    if vocabulary == EXTEND:
        settings = pipeline.AdaptSettings(
            **common, extension=extend.ExtensionSettings(new_tokens=a.new_tokens, source_penalty=a.source_penalty)
        )
    else:
        settings = pipeline.AdaptSettings(
            **common,
            tokenizer=tokenizer.TokenizerSettings(vocab_size=a.vocab_size, model_type=a.tokenizer_model),
            init=init.InitSettings(method=a.init, seed=a.seed, calibration=a.calibration),
        )
    result = pipeline.adapt(settings, progress=bars)
    bars.close()
    if licence:
        result.project.state.settings["licence"] = {"model": str(a.source_model), **licence}
        result.project.save()
    if vocabulary == EXTEND:
        stats = result.project.state.stages["tokenizer"].summary
        print(
            f"Extended model written to {result.model}: {stats['source_vocab']:,} source tokens kept, "
            f"{stats['new_tokens']:,} new"
        )
    else:
        print(f"Adapted model written to {result.model}")
        _warn(result.project.state.stages["tokenizer"].summary)
    print(f"Project folder {result.out}: open it in Tweety Studio, or re-run a stage with --project {result.out}")
    print("Coverage: " + ", ".join(f"{k} {v:,}" for k, v in result.coverage.items() if v))
    print("Times (s): " + ", ".join(f"{k} {v}" for k, v in result.seconds.items()))


def _tokenizer_arguments(p: argparse.ArgumentParser) -> None:
    add_project(p, "the tokenizer")
    add_source(p)
    p.add_argument("--target-text")
    p.add_argument("--vocab-size", type=int)
    p.add_argument("--out")
    add_tokenizer_model(add_baselines(p))


def _tokenizer(a: argparse.Namespace, bars: ProgressBars) -> None:
    if a.project:
        project = Project.open(a.project)
        recorded = project.state.settings_of(tokenizer.TokenizerSettings, "tokenizer")
        settings = tokenizer.TokenizerSettings(
            vocab_size=a.vocab_size or recorded.vocab_size, model_type=a.tokenizer_model
        )
        tok = project.train_tokenizer(settings if project.state.vocabulary == REPLACE else None, progress=bars)
        bars.close()
        print(f"Tokenizer of {len(tok):,} tokens written to {project.tokenizer_dir}")
        _warn(project.state.stages["tokenizer"].summary)
        return
    need(a, "target_text", "vocab_size", "out")
    source_tok = models.load_tokenizer(a.source_model)
    tokenizer.train_tokenizer(
        resources.read_lines(a.target_text),
        source_tok,
        a.out,
        tokenizer.TokenizerSettings(vocab_size=a.vocab_size, model_type=a.tokenizer_model),
        path=a.target_text,
        progress=bars,
    )
    bars.close()
    size = len(tokenizer.load_tokenizer(a.out))
    print(f"Tokenizer of {size:,} tokens written to {a.out}")
    _warn({"warning": tokenizer.smaller_than_asked(a.vocab_size, size)})


def _warn(summary: dict) -> None:
    """A stage record's warning (a vocabulary smaller than asked), as its own line: the command still succeeded."""
    if summary.get("warning"):
        print(f"warning: {summary['warning']}", file=sys.stderr)


def _align_arguments(p: argparse.ArgumentParser) -> None:
    add_project(p, "the alignment")
    add_source(p)
    p.add_argument("--tokenizer", help="target tokenizer folder")
    add_parallel(p)
    add_aligner(p)
    p.add_argument("--out")


def _align(a: argparse.Namespace, bars: ProgressBars) -> None:
    if a.project:
        summary = Project.open(a.project).align(align_settings(a), progress=bars).summary
    else:
        need(a, "tokenizer", "parallel", "out")
        source, target = parallel_files(a.parallel)
        summary = asdict(
            align.align_corpus(
                resources.read_parallel(source, target or None),
                models.load_tokenizer(a.source_model),
                tokenizer.load_tokenizer(a.tokenizer),
                a.out,
                align_settings(a),
                progress=bars,
            )
        )
    bars.close()
    print(json.dumps(summary, indent=2))


def _map_arguments(p: argparse.ArgumentParser) -> None:
    add_project(p, "the mapping (its overrides: PROJECT/overrides.tsv)")
    add_source(p)
    p.add_argument("--tokenizer", help="target tokenizer folder")
    p.add_argument(
        "--alignment",
        action="append",
        metavar="DIR",
        help="folder written by `tweety align` (its cached link counts); may repeat",
    )
    p.add_argument(
        "--alignment-weight",
        type=float,
        action="append",
        metavar="W",
        help="weight of each --alignment (default 1; give one per --alignment)",
    )
    p.add_argument("--dictionary", action="append", metavar="FILE", help="bilingual dictionary; may repeat")
    p.add_argument("--dictionary-weight", type=float, action="append", metavar="W")
    p.add_argument(
        "--language",
        default="",
        help="target language code, e.g. ru: a dictionary is read with its "
        "rules (plural endings, stemmer); a project uses its own",
    )
    add_word_rules(p)
    p.add_argument("--overrides", metavar="FILE", help="mapping overrides, applied on top (see README)")
    add_mapping_options(p)
    p.add_argument("--out")


def _map(a: argparse.Namespace, bars: ProgressBars) -> None:
    if a.project:
        if (
            a.alignment
            or a.dictionary
            or a.overrides
            or a.tokenizer
            or any(v is not None for v in word_rules(a).values())
        ):
            raise TweetyError(
                "with --project the mapping uses the project's resources, word rules and its overrides.tsv",
                fix="leave out --alignment/--dictionary/--overrides/--tokenizer/"
                "--plural-endings/--cognates, or edit PROJECT/overrides.tsv",
            )
        m = Project.open(a.project).build_mapping(mapping_settings(a), progress=bars)
    else:
        need(a, "tokenizer", "out")
        if not a.alignment and not a.dictionary:
            raise TweetyError("nothing to map from", fix="give --alignment DIR and/or --dictionary FILE")
        source_tok, target_tok = models.load_tokenizer(a.source_model), tokenizer.load_tokenizer(a.tokenizer)
        named = resources.distinct_labels(
            [
                resources.Resource(resources.PARALLEL, (d,), w)
                for d, w in zip(a.alignment or [], weights(a.alignment or [], a.alignment_weight, "alignment"))
            ]
            + [
                resources.Resource(resources.DICTIONARY, (f,), w)
                for f, w in zip(a.dictionary or [], weights(a.dictionary or [], a.dictionary_weight, "dictionary"))
            ]
        )
        # A parallel "resource" here is the folder `tweety align` wrote: its cached link counts.
        found = stages.evidence_of(
            named, lambda r: r.files[0], source_tok, target_tok, rules=stages.word_rules(a.language, **word_rules(a))
        )
        overrides = resources.read_overrides(a.overrides) if a.overrides else []
        m = stages.write_mapping(
            a.out, found, overrides, REPLACE, source_tok, target_tok, mapping_settings(a), progress=bars
        )
    bars.close()
    print(json.dumps({"origins": m.coverage(), "resources": m.shares()}, indent=2))


def _init_arguments(p: argparse.ArgumentParser) -> None:
    add_project(p, "the initialisation (into PROJECT/model)")
    add_source(p)
    p.add_argument("--tokenizer", help="target tokenizer folder")
    p.add_argument("--mapping", help="folder written by `tweety map`")
    p.add_argument("--out")
    p.add_argument(
        "--target-text",
        help="the target text the new tokens' frequencies are calibrated on (without it, they are not calibrated)",
    )
    _add_init(add_baselines(p))


def _init(a: argparse.Namespace, bars: ProgressBars) -> None:
    settings = init.InitSettings(method=a.init, seed=a.seed, calibration=a.calibration)
    if a.project:
        out = Project.open(a.project).initialise(settings, progress=bars)
    else:
        need(a, "tokenizer", "mapping", "out")
        source_tok, target_tok = models.load_tokenizer(a.source_model), tokenizer.load_tokenizer(a.tokenizer)
        # The folders' provenance, as a project's model carries it: the source model and the settings.
        inputs = Inputs(target_text=a.target_text) if a.target_text else None
        state = ProjectState(source_model=str(a.source_model), settings={"init": asdict(settings)}, inputs=inputs)
        stages.initialise_folder(a.out, a.mapping, state, source_tok, target_tok, settings, progress=bars)
        out = a.out
    print(f"Initialised model written to {out}")


def _eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model folder, project folder (its final model) or `default`")
    p.add_argument("--text", help="held-out text: bits per byte (required unless --translation)")
    p.add_argument(
        "--translation",
        action="store_true",
        help="a project's translators (copy, dictionary, "
        "translation memory, each model) measured in chrF on its held-out pairs",
    )
    p.add_argument("--from", dest="source", default="en", help="with --translation: source language (default en)")
    p.add_argument("--to", dest="target", help="with --translation: target language (default: the project's)")
    p.add_argument("--pairs", type=int, default=200, help="with --translation: held-out pairs measured (0: all)")
    p.add_argument("--window", type=int, default=512, help="context window in tokens")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _eval(a: argparse.Namespace, bars: ProgressBars) -> None:
    if a.translation:
        return _eval_translation(a, bars)
    if not a.text:
        raise TweetyError("give the held-out text to measure on (--text FILE), or --translation for a project")
    model, tok = models.load_model(model_folder(a.model))
    result = bits_per_byte(model, tok, resources.read_text(a.text), window=a.window, progress=bars)
    bars.close()
    if a.json:
        print(json.dumps(asdict(result)))
    else:
        print(
            f"bits per byte {result.bits_per_byte:.4f}, token perplexity {result.token_ppl:.2f}, "
            f"tokens per byte {result.tokens_per_byte:.4f}"
        )


def _eval_translation(a: argparse.Namespace, bars: ProgressBars) -> None:
    from core import translating
    from core.project import Project

    project = Project.open(a.model)
    target = a.target or project.state.language
    if not target:
        raise TweetyError(
            "the project records no language code", fix="say which language it translates into, e.g. --to es"
        )
    cancel = CancelToken()
    with ctrl_c_cancels(cancel):
        result = translating.evaluate(project, a.source, target, limit=a.pairs, progress=bars, cancel=cancel)
    bars.close()
    if a.json:
        print(
            json.dumps(
                {
                    "best": result.best,
                    "pairs": result.pairs,
                    "scores": {n: asdict(s) for n, s in result.scores.items()},
                },
                ensure_ascii=False,
            )
        )
        return
    print(f"Translation {a.source} → {target} on {result.pairs:,} held-out pairs (chrF, higher is better):")
    for name, s in sorted(result.scores.items(), key=lambda kv: -kv[1].chrf):
        print(f"  {name:<16} {s.chrf:6.1f}   {s.seconds_per_line:.2f} s a line")
    print(result.verdict)
    for i, line in enumerate(result.sources):
        print(f"\n{a.source}: {line}\nreference: {result.references[i]}")
        for name, s in result.scores.items():
            if name != "copy" and i < len(s.samples):
                print(f"{name}: {s.samples[i]}")


def _advise_arguments(p: argparse.ArgumentParser) -> None:
    add_source(p)
    p.add_argument("--target-text", required=True, help="text in your language (its first 12 kB are measured)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _advise(a: argparse.Namespace, bars: ProgressBars) -> None:
    from core.advise import advise

    model, tok = models.load_model(a.source_model)
    advice = advise(model, tok, resources.read_text(a.target_text), progress=bars)
    bars.close()
    if a.json:
        print(json.dumps(asdict(advice), ensure_ascii=False))
        return
    print(f"Advice: {advice.choice.upper()} — {advice.reason}.")
    print(
        f"Measured on {advice.chars:,} characters in {advice.seconds:.0f} s: {advice.bits_per_char:.2f} bits and "
        f"{advice.tokens_per_char:.2f} tokens a character ({advice.bits_per_byte:.3f} bits per byte)."
    )


def _finetune_arguments(p: argparse.ArgumentParser) -> None:
    d = finetune.FinetuneSettings()
    p.add_argument("--model", required=True, help="adapted model folder, or a project folder (its final model)")
    p.add_argument(
        "--text", help="target-language training text, one sentence/paragraph per line (not for --stage translation)"
    )
    p.add_argument("--heldout", help="held-out target text: bits per byte every --eval-every steps")
    p.add_argument(
        "--stage",
        choices=(*finetune.STAGES, "translation"),
        default=d.stage,
        help="embeddings: embeddings and LM head only; outer-layers: also the first and last N layers; "
        "translation: a project's Hydra taught to translate (a LoRA adapter on its body), on its memory's "
        "pairs behind the prompt translation uses",
    )
    p.add_argument(
        "--pairs",
        nargs=2,
        metavar=("SOURCE_FILE", "TARGET_FILE"),
        help="--stage translation: train "
        "on these pairs (default: the project's parallel corpora, held-out pairs left out)",
    )
    p.add_argument("--outer-layers", type=int, default=d.outer_layers, help="N for the outer-layers stage")
    p.add_argument("--steps", type=int, default=d.steps, help="optimizer steps")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate")
    p.add_argument("--schedule", choices=finetune.SCHEDULES, default=d.schedule)
    p.add_argument("--warmup", type=int, default=d.warmup_steps, help="warm-up steps")
    p.add_argument("--block-size", type=int, default=d.block_size, help="tokens per training sequence")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="sequences per micro-batch")
    p.add_argument("--grad-accum", type=int, default=d.grad_accum, help="micro-batches per optimizer step")
    p.add_argument(
        "--chat-share",
        type=float,
        default=d.chat_share,
        help="share of the text's passages trained "
        "as chat turns in the model's own template, so that chat replies end by themselves (0: raw text "
        "only)",
    )
    p.add_argument(
        "--calibration",
        type=float,
        default=d.calibration,
        metavar="SHARE",
        help="after the last step, move each token's predicted frequency this far toward its frequency in the "
        "training text (0: off; one process only)",
    )
    p.add_argument("--eval-every", type=int, default=d.eval_every)
    p.add_argument("--eval-max-bytes", type=int, default=d.eval_max_bytes, help="cut held-out text (0: all)")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, help="auto (CUDA when present), cpu or cuda[:N]")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument(
        "--out",
        help="output model folder (new, empty, or an earlier Tweety output; not for --stage "
        "translation, which writes into the project)",
    )
    p.add_argument(
        "--nproc",
        type=int,
        help="train with N processes on this machine (one per GPU), started by "
        "torchrun, trainable tensors sharded with FSDP; --batch-size is split between them "
        "(docs/cluster.md)",
    )
    p.add_argument("--nnodes", type=int, default=1, help="machines in the job: run the same command on each")
    p.add_argument(
        "--rdzv",
        metavar="HOST:PORT",
        help="where the machines of a multi-machine job meet (a free port on one of them)",
    )
    p.add_argument(
        "--print-launch",
        nargs="?",
        const="",
        metavar="DIR",
        help="run nothing: write a job folder "
        "(job.json, launch.sh, slurm.sbatch; default OUT-job) for a cluster and print the torchrun command",
    )


def _finetune(a: argparse.Namespace, bars: ProgressBars) -> int:
    from core import distributed

    if a.stage == "translation":
        return _finetune_translation(a, bars)
    if not a.text or not a.out:
        raise TweetyError("fine-tuning needs the training text (--text FILE) and an output folder (--out DIR)")

    settings = finetune.FinetuneSettings(
        stage=a.stage,
        steps=a.steps,
        outer_layers=a.outer_layers,
        block_size=a.block_size,
        batch_size=a.batch_size,
        grad_accum=a.grad_accum,
        lr=a.lr,
        schedule=a.schedule,
        warmup_steps=a.warmup,
        eval_every=a.eval_every,
        eval_max_bytes=a.eval_max_bytes,
        checkpoint_every=a.checkpoint_every,
        chat_share=a.chat_share,
        calibration=a.calibration,
        seed=a.seed,
        device=a.device,
    )
    model = model_folder(a.model)
    launch = distributed.LaunchSettings(a.nproc or 1, a.nnodes, a.rdzv or "")
    if a.print_launch is not None:
        folder, command = distributed.write_job(
            a.print_launch or a.out.rstrip("/\\") + "-job",
            model,
            a.text,
            a.heldout,
            a.out,
            settings,
            launch,
            resume=a.resume,
        )
        machines = f" on each of the {launch.nnodes} machines" if launch.nnodes > 1 else ""
        print(f"Job folder written (job.json, launch.sh, slurm.sbatch); run {folder / 'launch.sh'}{machines}:")
        print(command)
        return 0
    if not a.resume:
        stages.check_space_for_finetuning(model, a.out)
    cancel = CancelToken()
    try:
        with ctrl_c_cancels(cancel), stages.finetuning_output(a.out, a.resume):
            if a.nproc or a.nnodes > 1:
                result = distributed.launch(
                    model, a.text, a.heldout, a.out, settings, launch, resume=a.resume, cancel=cancel, progress=bars
                )
            else:
                result = finetune.finetune(
                    model, a.text, a.heldout, a.out, settings, resume=a.resume, cancel=cancel, progress=bars
                )
    except Cancelled:
        bars.close()
        print(f"stopped; the last finished step is checkpointed in {a.out} — add --resume to continue", file=sys.stderr)
        return 130
    bars.close()
    if result.initial_bpb is not None:
        sample = f" (its first {settings.eval_max_bytes:,} bytes)" if settings.eval_max_bytes else ""
        print(f"held-out bits per byte{sample} {result.initial_bpb:.4f} → {result.final_bpb:.4f}")
    print(
        f"{result.steps} steps, {result.tokens_per_s:,.0f} tokens/s; model written to {result.out} "
        f"(curve: {result.out}/{finetune.TRAINING}/curve.png)"
    )
    return 0


COMMANDS = [
    Command(
        "adapt",
        "all steps into a project folder: tokenizer, align, map, init",
        _adapt_arguments,
        lambda a, bars: _run_pipeline(a, bars, REPLACE),
    ),
    Command(
        "extend",
        "all steps, keeping the source vocabulary: add new target-language tokens",
        _extend_arguments,
        lambda a, bars: _run_pipeline(a, bars, EXTEND),
    ),
    Command("tokenizer", "train the target tokenizer", _tokenizer_arguments, _tokenizer),
    Command("align", "align a parallel corpus token by token", _align_arguments, _align),
    Command("map", "build the target→source token mapping", _map_arguments, _map),
    Command("init", "initialise the adapted model from a mapping", _init_arguments, _init),
    Command(
        "advise",
        "before adapting: does the source model already read your language? keep, extend or replace",
        _advise_arguments,
        _advise,
    ),
    Command("eval", "bits per byte of a model on held-out text", _eval_arguments, _eval),
    Command(
        "finetune", "train the new embeddings (and a few outer layers) on target text", _finetune_arguments, _finetune
    ),
]


def _finetune_translation(a: argparse.Namespace, bars: ProgressBars) -> int:
    from core import translating

    project = Project.open(a.model)
    cancel = CancelToken()
    try:
        with ctrl_c_cancels(cancel):
            losses = translating.tune(
                project, steps=a.steps, pairs_files=tuple(a.pairs) if a.pairs else None, progress=bars, cancel=cancel
            )
    except Cancelled:
        bars.close()
        print("stopped; the project's translator is as it was", file=sys.stderr)
        return 130
    bars.close()
    last = losses[-10:]
    print(
        f"Taught to translate: loss {losses[0]:.2f} → {sum(last) / len(last):.2f} (mean of the last 10 steps); "
        f"kept in {project.hydra_dir}. Measure it with: tweety eval --model {a.model} --translation"
    )
    return 0
