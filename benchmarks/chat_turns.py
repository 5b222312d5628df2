"""Does the chat end its turn? Twenty fixed short prompts in the target language, each sent alone through llama.cpp
with the GGUF's own chat template (greedy, no repeat penalty, no loop guard, at most 200 tokens): the share of replies
that end with the model's end-of-turn token before the length limit, and their mean length (docs/results/chat.md).
`--chat-page`: the same prompts as the wizard's Chat page sends them instead (core.runtime.Chat with the page's
default settings: temperature 0.7, top-p 0.9, repeat penalty 1.15, at most 256 tokens, its stop strings and loop
guard), each prompt with `--seeds` seeds; a reply the loop guard cuts counts as not ended.

    python benchmarks/chat_turns.py --model demo-output/spanish-finetuned [--model OTHER …] [--prompts FILE]
                                    [--chat-page --seeds 3]

A model folder is exported to a q8_0 GGUF first (into --out); a .gguf is used as it is.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from common import ROOT  # noqa: F401  (puts the checkout on sys.path)

from core import export, resources, runtime

# Everyday questions and requests a Spanish speaker would type first; none is Bible text.
SPANISH = (
    "Hola, ¿cómo estás?",
    "¿Quién eres?",
    "Cuéntame algo sobre tu familia.",
    "¿Qué hora es?",
    "¿Dónde está la estación de tren?",
    "Dame tres consejos para dormir mejor.",
    "¿Cuál es la capital de Francia?",
    "Escribe una frase sobre el mar.",
    "¿Qué comiste hoy?",
    "¿Por qué el cielo es azul?",
    "Explica qué es un árbol.",
    "¿Te gusta la música?",
    "Resume esta idea: el agua es necesaria para la vida.",
    "¿Cómo se llama tu perro?",
    "Dime una palabra que rime con casa.",
    "¿Qué día es mañana?",
    "Escribe un saludo para un amigo.",
    "¿Cuántos días tiene una semana?",
    "¿Qué es la paz?",
    "Gracias por tu ayuda.",
)
MAX_TOKENS = 200


@dataclass
class Reply:
    prompt: str
    text: str
    tokens: int
    ended: bool  # the model ended its turn itself (finish_reason "stop"), not the length limit
    finish: str = ""  # --chat-page: "stop", "length" or "repeat" (the loop guard cut it)


@dataclass
class Summary:
    model: str
    ended: int
    prompts: int
    mean_tokens: float
    seconds: float
    replies: list[Reply]


def ask(gguf: Path, prompts: list[str]) -> Summary:
    llm = runtime.load(gguf)
    start, replies = time.monotonic(), []
    for prompt in prompts:
        out = llm.create_chat_completion(
            [{"role": "user", "content": prompt}], temperature=0.0, top_k=1, max_tokens=MAX_TOKENS, repeat_penalty=1.0
        )
        choice = out["choices"][0]
        replies.append(
            Reply(
                prompt,
                choice["message"]["content"] or "",
                out["usage"]["completion_tokens"],
                choice["finish_reason"] == "stop",
            )
        )
    ended = sum(r.ended for r in replies)
    return Summary(
        str(gguf),
        ended,
        len(prompts),
        sum(r.tokens for r in replies) / len(prompts),
        round(time.monotonic() - start, 1),
        replies,
    )


def ask_as_chat_page(gguf: Path, prompts: list[str], seeds: int) -> Summary:
    """Each prompt alone in a fresh conversation, through the Chat page's own code path and default settings."""
    llm = runtime.load(gguf)
    start, replies = time.monotonic(), []
    for seed in range(seeds):
        for prompt in prompts:
            stats = runtime.GenerationStats()
            text = runtime.Chat(llm, runtime.RuntimeSettings(seed=seed)).send(prompt, stats=stats)
            replies.append(Reply(prompt, text, stats.tokens, stats.finish == "stop", stats.finish))
    ended = sum(r.ended for r in replies)
    return Summary(
        str(gguf),
        ended,
        len(replies),
        sum(r.tokens for r in replies) / len(replies),
        round(time.monotonic() - start, 1),
        replies,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, help="model folder, project folder or .gguf")
    ap.add_argument("--prompts", help="one prompt a line (default: the 20 Spanish prompts above)")
    ap.add_argument("--out", default="demo-output/chat-turns", help="where model folders are exported")
    ap.add_argument("--json", help="write every reply here")
    ap.add_argument("--chat-page", action="store_true", help="sample as the Chat page does (see above)")
    ap.add_argument("--seeds", type=int, default=3, help="--chat-page: seeds per prompt")
    a = ap.parse_args()
    prompts = resources.read_lines(a.prompts) if a.prompts else list(SPANISH)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    summaries = []
    for model in a.model:
        gguf = Path(model)
        if gguf.suffix != ".gguf":
            from core.cli.options import model_folder

            folder = model_folder(model)
            gguf = out / f"{Path(model).name}.q8_0.gguf"
            export.export_gguf(folder, gguf, export.ExportSettings(type="q8_0", overwrite=True))
        s = ask_as_chat_page(gguf, prompts, a.seeds) if a.chat_page else ask(gguf, prompts)
        summaries.append(s)
        print(
            f"{model}: {s.ended} of {s.prompts} replies end by themselves ({100 * s.ended / s.prompts:.0f}%), "
            f"{s.mean_tokens:.0f} tokens on average, {s.seconds:.0f} s",
            flush=True,
        )
        if a.chat_page:
            cut = sum(r.finish == "repeat" for r in s.replies)
            print(f"  {cut} cut by the loop guard, {s.prompts - s.ended - cut} by the length limit")
        for r in s.replies[:3]:
            print(f"  {r.prompt!r} → {r.text[:120]!r}{'' if r.ended else ' …'}")
    if a.json:
        Path(a.json).write_text(json.dumps([asdict(s) for s in summaries], indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
