"""Generation speed of the local runtime (llama.cpp) with 1, N−1 and N threads (N: physical cores) while another
process keeps one core busy — the situation of the wizard, where the window, a preview or another job runs beside
generation. llama.cpp's threads spin while they wait for each other, so a thread that shares its core with the busy
process stalls every token; the runtime's default (core.runtime.default_threads: N−1, at least 1) should be the best
row of the table.

Chat: one reply (`Chat.send`, greedy, the end-of-turn/length rules of the runtime); translation: `runtime.translate`
of one verse. tokens/s counts generated tokens from the first to the last (prompt reading excluded); "wall" is the
whole call.

Usage: python benchmarks/generation.py [--gguf FILE] [--tokens 48] [--repeats 2] [--no-busy]
(default model: the built-in SmolLM2-135M-Instruct GGUF)
"""

from __future__ import annotations

import argparse
import multiprocessing
import time

from common import ROOT  # noqa: F401 - puts the checkout on sys.path

from core import runtime

VERSE = "And God said, Let there be light: and there was light."
QUESTION = "Write three sentences about the sea."


def keep_one_core_busy(stop) -> None:
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


def measure(gguf: str, threads: int, tokens: int, repeats: int) -> dict[str, float]:
    llm = runtime.load(gguf, runtime.RuntimeSettings(n_ctx=512, threads=threads, seed=0))
    chat_rates, chat_wall, tr_rates, tr_wall = [], [], [], []
    for _ in range(repeats):
        chat = runtime.Chat(llm, runtime.RuntimeSettings(max_tokens=tokens, temperature=0.0, threads=threads))
        stats = runtime.GenerationStats()
        start = time.monotonic()
        chat.send(QUESTION, stats=stats)
        chat_wall.append(time.monotonic() - start)
        chat_rates.append(stats.tokens_per_s)
        stats = runtime.GenerationStats()
        start = time.monotonic()
        runtime.translate(llm, VERSE, "en", "es", max_tokens=tokens, stats=stats)
        tr_wall.append(time.monotonic() - start)
        tr_rates.append(stats.tokens_per_s)
    del llm
    return {
        "chat": max(chat_rates),
        "chat_wall": min(chat_wall),
        "translate": max(tr_rates),
        "translate_wall": min(tr_wall),
    }


def main() -> None:
    from core.models import default_gguf

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gguf", help="GGUF file (default: the built-in SmolLM2-135M-Instruct)")
    p.add_argument("--tokens", type=int, default=48, help="longest reply, tokens")
    p.add_argument("--repeats", type=int, default=2, help="runs per setting (the best is kept)")
    p.add_argument("--no-busy", action="store_true", help="do not start the process that keeps one core busy")
    a = p.parse_args()
    gguf = a.gguf or str(default_gguf())
    n = runtime.physical_cores()
    default = runtime.default_threads()
    settings = sorted({1, max(1, n - 1), n})
    stop = multiprocessing.Event()
    busy = None if a.no_busy else multiprocessing.Process(target=keep_one_core_busy, args=(stop,), daemon=True)
    if busy:
        busy.start()
    print(
        f"{n} physical cores; default threads {default}; {'one core kept busy' if busy else 'idle machine'}; "
        f"{a.tokens} tokens, best of {a.repeats}"
    )
    rows = {}
    try:
        for threads in settings:
            rows[threads] = measure(gguf, threads, a.tokens, a.repeats)
    finally:
        stop.set()
        if busy:
            busy.join(5)
    print("\n| threads | chat tokens/s | chat wall s | translation tokens/s | translation wall s |")
    print("|---:|---:|---:|---:|---:|")
    for threads, r in rows.items():
        mark = " (default)" if threads == default else ""
        print(
            f"| {threads}{mark} | {r['chat']:.1f} | {r['chat_wall']:.2f} | {r['translate']:.1f} | "
            f"{r['translate_wall']:.2f} |"
        )
    best_chat = max(rows, key=lambda t: rows[t]["chat"])
    best_tr = max(rows, key=lambda t: rows[t]["translate"])
    verdict = (
        "the default is the best"
        if default in (best_chat, best_tr) and best_chat == best_tr == default
        else f"best: chat {best_chat} threads, translation {best_tr} threads"
    )
    print(f"\n{verdict}")


if __name__ == "__main__":
    main()
