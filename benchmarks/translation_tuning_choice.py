"""What teaching a project's Hydra to translate should train, chosen by chrF gained per minute of tuning on a CPU:
the target language's tables (embeddings + an untied head: what `tweety finetune --stage translation` trains), LoRA
adapters on the body (`peft`), LoRA and the tables together, or the body's outer layers (first and last two and the
final norm) with the tables.

Every variant starts from the same adapted project (a `tweety adapt` folder that replaced the vocabulary), draws the
same pairs in the same order behind the same prompt (core.translating.tuning_data: memory pairs, each with its
closest other pairs as examples; the loss on the reply, core.hydra.reply_loss) with the same schedule (warm-up, then
cosine), and is then measured on the project's held-out pairs: the Hydra with each line's closest memory pairs as
examples (exact matches only from the memory, so every line is the model's own). The body is every language's in a
Hydra: a variant that changes it changes how the source language reads too, and it would need its own file beside
the tables — a cost the table's chrF does not show.
Usage: python benchmarks/translation_tuning_choice.py --project P [--steps 150] [--batch-size 4] [--pairs 150]
       [--variants untuned,tables,lora,lora+tables,outer+tables] [--tables-lr 3e-3] [--body-lr 3e-4] [--threads 2]
       [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from common import ROOT  # noqa: F401  (puts the checkout on the path)

from core import translating
from core import translators as T
from core.finetune import FinetuneSettings, learning_rate
from core.hydra import HydraTuning, lora, reply_loss
from core.project import Project

BODY_LR = 3e-4  # LoRA adapters and outer layers (--body-lr)


def trainable(hydra, code: str, variant: str, tables_lr: float, body_lr: float) -> list[dict]:
    """The optimizer's parameter groups for `variant`; the tables swapped into the Hydra as parameters when they
    train (the head untied, as the product does)."""
    import torch

    for p in hydra.model.parameters():
        p.requires_grad_(False)
    groups = []
    if "tables" in variant:
        lang = hydra.language(code)
        embeddings = torch.nn.Parameter(lang.embeddings.detach().float().clone())
        head = torch.nn.Parameter(lang.head.detach().float().clone())
        hydra.languages[code] = replace(lang, embeddings=embeddings, head=head)
        groups.append({"params": [embeddings, head], "lr": tables_lr})
    if "lora" in variant:
        from peft import LoraConfig, inject_adapter_in_model

        inject_adapter_in_model(
            LoraConfig(r=lora.RANK, lora_alpha=lora.ALPHA, lora_dropout=0.0, target_modules=list(lora.MODULES)),
            hydra.model.model,
        )
        adapter = [p for name, p in hydra.model.named_parameters() if lora.MARK in name]
        groups.append({"params": adapter, "lr": body_lr})
    if "outer" in variant:
        layers = hydra.model.model.layers
        body = [p for i, layer in enumerate(layers) if i < 2 or i >= len(layers) - 2 for p in layer.parameters()]
        body += list(hydra.model.model.norm.parameters())
        groups.append({"params": body, "lr": body_lr})
    for group in groups:
        for p in group["params"]:
            p.requires_grad_(True)
        group["base_lr"] = group["lr"]
    return groups


def tune(hydra, code: str, data: translating.TuningData, groups: list[dict], steps: int, batch_size: int) -> list:
    import torch

    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.95), weight_decay=0.0)
    params = [p for g in groups for p in g["params"]]
    schedule = FinetuneSettings(steps=steps, lr=1.0, warmup_steps=HydraTuning.warmup_steps)
    losses = []
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * learning_rate(schedule, step)
        batch = data.pairs[step * batch_size : (step + 1) * batch_size]
        loss = reply_loss(hydra, code, batch, data.examples_of)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if (step + 1) % 25 == 0:
            print(f"    step {step + 1}: loss {sum(losses[-25:]) / 25:.3f}", flush=True)
    return losses


def main() -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--project", required=True, help="a `tweety adapt` folder that replaced the vocabulary")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--pairs", type=int, default=150, help="held-out pairs measured")
    p.add_argument("--variants", default="untuned,tables,lora,lora+tables,outer+tables")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tables-lr", type=float, default=HydraTuning.lr, help="default: the product's")
    p.add_argument("--body-lr", type=float, default=BODY_LR)
    p.add_argument("--json", help="also write the figures to this file")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    project = Project.open(a.project)
    code = project.state.language
    data = translating.tuning_data(project, steps=a.steps, batch_size=a.batch_size)
    split = translating.split(project)
    sources, references = split.heldout_source[: a.pairs], split.heldout_target[: a.pairs]
    rows = {}
    for variant in a.variants.split(","):
        print(f"{variant}:", flush=True)
        torch.manual_seed(0)
        project = Project.open(a.project)  # its source model loaded afresh: LoRA and outer layers change the body
        hydra = project.hydra(target_language=code)
        start = time.monotonic()
        groups = trainable(hydra, code, variant, a.tables_lr, a.body_lr) if variant != "untuned" else []
        losses = tune(hydra, code, data, groups, a.steps, a.batch_size) if groups else []
        minutes = (time.monotonic() - start) / 60
        hydra.model.eval()
        translate = T.with_memory(data.memory, T.hydra_model(hydra, "en", code), near=None, fallback=T.copy)
        with torch.no_grad():
            score = T.measure({variant: translate}, sources, references)[variant]
        rows[variant] = {
            "minutes": round(minutes, 2),
            "chrf": score.chrf,
            "s_per_line": score.seconds_per_line,
            "first_loss": losses[0] if losses else None,
            "last_loss": sum(losses[-25:]) / len(losses[-25:]) if losses else None,
            "samples": score.samples,
        }
        print(
            f"  {variant}: chrF {score.chrf:.1f} after {minutes:.1f} min of tuning "
            f"({score.seconds_per_line:.2f} s a line)",
            flush=True,
        )
    base = rows.get("untuned", {}).get("chrf", 0.0)
    print(
        f"\n{len(sources)} held-out pairs of {a.project}, {a.steps} steps × {a.batch_size} pairs, "
        f"{a.threads} threads, {time.strftime('%Y-%m-%d %H:%M')}\n"
    )
    print("| trains | minutes | last loss | chrF | chrF gained a minute |\n|---|---:|---:|---:|---:|")
    for variant, r in rows.items():
        gain = f"{(r['chrf'] - base) / r['minutes']:.2f}" if r["minutes"] > 0.01 else "–"
        loss = f"{r['last_loss']:.3f}" if r["last_loss"] is not None else "–"
        print(f"| {variant} | {r['minutes']:.1f} | {loss} | {r['chrf']:.1f} | {gain} |")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
