"""A Hydra as one GGUF file with a merged vocabulary, and greedy generation from it with llama.cpp.

llama.cpp knows one vocabulary per model, so a Hydra is exported with every language's rows stacked (the source
language first, each other language at an offset) and run with our own tokenization — llama.cpp takes token ids as
they are — and a logits processor that allows only the output language's rows.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from core import models
from core.errors import TweetyError
from core.hydra.model import EMBED, HEAD, Segment
from core.hydra.store import read_config
from core.jobs import CancelToken, ProgressFn

log = logging.getLogger(__name__)

GGUF_LAYOUT_KEY = "tweety.hydra.languages"


def export_hydra_gguf(
    hydra_dir: str | Path,
    out_file: str | Path,
    settings=None,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
):
    """Write a saved Hydra folder as one GGUF with a merged vocabulary (core.export's writer, tables stacked)."""
    import re
    import time

    from core import export
    from core.jobs import Reporter

    start = time.monotonic()
    settings = settings or export.ExportSettings(type="f32")
    folder, out_file = Path(hydra_dir), Path(out_file)
    if out_file.exists() and not settings.overwrite:
        raise TweetyError(
            "the destination file exists; Tweety Studio never overwrites your files",
            path=out_file,
            fix="choose another file name (or confirm replacing it)",
        )
    config = read_config(folder)
    if config.get("adapters"):
        log.warning(
            "the Hydra's translation adapters (%s) are not in the GGUF: it translates as before it was "
            "taught to translate",
            ", ".join(config["adapters"]),
        )
    model_config = json.loads((folder / "config.json").read_text())
    available = models.safetensors_headers(models.weight_files(folder))
    codes = [config["source"]] + [c for c in config["languages"] if c != config["source"]]
    tables, pieces, layout, offset = [], [], {}, 0
    seen: set[str] = set()
    for code in codes:
        entry = config["languages"][code]
        if code == config["source"]:
            embed = available[EMBED]
            head = available.get(HEAD, embed)
        else:
            stored = models.safetensors_headers([folder / entry["weights"]])
            embed, head = stored["embed_tokens"], stored.get("lm_head", stored["embed_tokens"])
        tables.append((embed, head))
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(folder / entry["tokenizer"])
        special = set(tok.all_special_ids)
        n = embed.shape[0]
        names = tok.convert_ids_to_tokens(list(range(min(len(tok), n))))
        for i in range(n):
            piece = names[i] if i < len(names) and names[i] is not None else f"[{code}:{i}]"
            kind = 3 if i in special else 6 if re.fullmatch(r"<0x[0-9A-F]{2}>", piece) else 1
            if piece in seen:  # llama.cpp maps piece → id; keep every piece unique (we never tokenize there)
                piece = f"{piece}[{code}]"
            seen.add(piece)
            pieces.append((piece, 0.0, kind))
        layout[code] = {"offset": offset, "size": n}
        offset += n
    tied = all(e is h for e, h in tables)
    body = {k: v for k, v in available.items() if k not in (EMBED, HEAD)}
    first_embed, first_head = tables[0]
    tensors = export.tensor_plan(
        model_config, {**body, EMBED: first_embed, **({} if tied else {HEAD: first_head})}, tied, folder
    )

    stacked = {"token_embd.weight": [e for e, _ in tables[1:]], "output.weight": [h for _, h in tables[1:]]}
    tensors = [replace(t, more_rows=tuple(stacked[t.gguf_name])) if t.gguf_name in stacked else t for t in tensors]
    source_tok = AutoTokenizer.from_pretrained(folder / config["languages"][config["source"]]["tokenizer"])
    special_ids = {
        name: getattr(source_tok, f"{name}_token_id")
        for name in ("bos", "eos", "pad")
        if getattr(source_tok, f"{name}_token_id") is not None
    }
    plan = export.Plan(
        {**model_config, "vocab_size": offset},
        tensors,
        pieces,
        True,
        False,
        special_ids,
        False,
        None,
        {GGUF_LAYOUT_KEY: json.dumps(layout)},
    )
    report = Reporter(progress, cancel, "Exporting Hydra GGUF")
    return export.write_plan(plan, folder, out_file, settings, report, start)


def gguf_layout(llm) -> dict[str, dict[str, int]]:
    """{language: {"offset", "size"}} of a Hydra GGUF loaded with core.runtime.load."""
    raw = llm.metadata.get(GGUF_LAYOUT_KEY)
    if raw is None:
        raise TweetyError(
            "this GGUF is not a Hydra (no merged-vocabulary layout)",
            path=llm.model_path,
            fix="export it with core.hydra.export_hydra_gguf",
        )
    return json.loads(raw)


def generate_gguf(
    llm,
    segments: list[Segment],
    language: str,
    *,
    max_new_tokens: int = 256,
    stop_ids: set[int] = frozenset(),
    cancel: CancelToken | None = None,
) -> list[int]:
    """Greedy generation with llama.cpp on a Hydra GGUF: ids in, ids out, in `language`'s own vocabulary."""
    import numpy as np

    layout = gguf_layout(llm)
    if language not in layout:
        raise TweetyError(
            f"the Hydra GGUF has no language {language!r}", path=llm.model_path, fix=f"it has {', '.join(layout)}"
        )
    ids = [layout[s.language]["offset"] + i for s in segments for i in s.ids]
    lo = layout[language]["offset"]
    hi = lo + layout[language]["size"]

    def only_language(_, scores):
        masked = np.full_like(scores, -np.inf)
        masked[lo:hi] = scores[lo:hi]
        return masked

    out: list[int] = []
    for token in llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0, logits_processor=[only_language]):
        token -= lo
        if token in stop_ids or len(out) >= max_new_tokens or (cancel is not None and cancel.cancelled):
            break
        out.append(token)
        if len(out) >= max_new_tokens:
            break
    return out
