"""Initialisation: new embedding (and LM-head) rows as weighted averages of source rows.

One sparse × dense product per matrix — `E_target = M @ E_source` with M the mapping — on the GPU when there is one.
Baselines for comparison: `fvt` (each token from its own bytes' source tokens), `mean` (every row the average source
row) and `random` (normal noise with the source rows' standard deviation). All methods keep special tokens 1:1 so
that they differ only where the methods differ. Tied models stay tied.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from core.errors import TweetyError
from core.jobs import CancelToken, ProgressFn, Reporter, atomic_dir
from core.mapping import Mapping, Origin, fvt_mapping

log = logging.getLogger(__name__)

METHODS = ("transtok", "fvt", "mean", "random")


@dataclass(frozen=True)
class InitSettings:
    method: str = "transtok"
    seed: int = 0


def mapping_for_method(method: str, mapping: Mapping, source_tokenizer, target_tokenizer) -> Mapping:
    """The mapping each method initialises from: `transtok` the computed one, `fvt` every token from its own bytes,
    `mean`/`random` only the special-token rows (the rest is filled in `initialise`)."""
    if method not in METHODS:
        raise TweetyError(f"unknown initialisation {method!r}", fix=f"choose one of {', '.join(METHODS)}")
    if method == "transtok":
        return mapping
    if method == "fvt":
        return fvt_mapping(source_tokenizer, target_tokenizer)
    keep = (mapping.origin == Origin.SPECIAL).astype(np.float32)
    origin = np.where(mapping.origin == Origin.SPECIAL, Origin.SPECIAL, Origin.MEAN)
    return Mapping(sp.csr_matrix(sp.diags(keep) @ mapping.matrix), origin)


def weighted_rows(mapping: sp.csr_matrix, source_rows, device=None):
    """M @ E as one torch sparse CSR × dense product; rows with no weights come out as the mean source row."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    m = sp.csr_matrix(mapping, dtype=np.float32)  # a copy: canonical form (sorted, no duplicates) is required
    m.sum_duplicates()
    m.sort_indices()
    csr = torch.sparse_csr_tensor(torch.from_numpy(m.indptr.astype(np.int64)),
                                  torch.from_numpy(m.indices.astype(np.int64)),
                                  torch.from_numpy(m.data.astype(np.float32)), size=m.shape, device=device,
                                  check_invariants=True)
    dense = source_rows.detach().to(device=device, dtype=torch.float32)
    out = csr @ dense
    empty = torch.from_numpy(np.diff(m.indptr) == 0).to(device)
    out[empty] = dense.mean(dim=0)
    return out


def initialise(model, mapping: Mapping, settings: InitSettings = InitSettings(), *,
               progress: ProgressFn | None = None, cancel: CancelToken | None = None):
    """Replace `model`'s embeddings (and untied LM head) in place for the target vocabulary of `mapping`
    (from `mapping_for_method`); `random` then overwrites every non-special row with noise."""
    import torch

    if settings.method not in METHODS:
        raise TweetyError(f"unknown initialisation {settings.method!r}", fix=f"choose one of {', '.join(METHODS)}")
    report = Reporter(progress, cancel, "Initialising embeddings")
    source_embeddings = model.get_input_embeddings().weight
    vt, vs = mapping.matrix.shape
    if vs != source_embeddings.shape[0]:
        raise TweetyError(f"the mapping is for a source vocabulary of {vs:,} tokens, but the model has "
                          f"{source_embeddings.shape[0]:,}", fix="build the mapping with this source model")
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    report(0, 2, "input embeddings")
    new_in = weighted_rows(mapping.matrix, source_embeddings)
    new_out = None
    if not tied:
        report(1, 2, "output head")
        new_out = weighted_rows(mapping.matrix, model.get_output_embeddings().weight)
    if settings.method == "random":
        g = torch.Generator().manual_seed(settings.seed)
        fill = torch.from_numpy(mapping.origin != Origin.SPECIAL)
        for new, old in ((new_in, source_embeddings), (new_out, None if tied else model.get_output_embeddings().weight)):
            if new is None:
                continue
            noise = torch.randn(int(fill.sum()), new.shape[1], generator=g) * old.detach().float().std()
            new[fill.to(new.device)] = noise.to(new.device)
    dtype = source_embeddings.dtype
    embed = torch.nn.Embedding(vt, new_in.shape[1])
    embed.weight.data = new_in.to("cpu", dtype)
    model.set_input_embeddings(embed)
    if tied:
        model.get_output_embeddings().weight = embed.weight
    else:
        head = torch.nn.Linear(new_in.shape[1], vt, bias=False)
        head.weight.data = new_out.to("cpu", dtype)
        model.set_output_embeddings(head)
    model.config.vocab_size = vt
    report(2, 2, f"{vt:,} rows")
    return model


def save_adapted(model, target_tokenizer, out_dir: str | Path) -> Path:
    """Save an HF model folder (safetensors) with the target tokenizer, atomically."""
    with atomic_dir(out_dir) as tmp:
        write_adapted(model, target_tokenizer, tmp)
    return Path(out_dir)


def write_adapted(model, target_tokenizer, folder: Path) -> None:
    """Write model + target tokenizer into `folder`, with the special-token ids in the config updated."""
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(target_tokenizer, name)
        setattr(model.config, name, value)
        if getattr(model, "generation_config", None) is not None:
            setattr(model.generation_config, name, value)
    model.save_pretrained(folder)
    target_tokenizer.save_pretrained(folder)
    sp_model = Path(target_tokenizer.name_or_path) / "tokenizer.model"
    if sp_model.exists():  # kept for GGUF export (SentencePiece vocabulary)
        (folder / "tokenizer.model").write_bytes(sp_model.read_bytes())
