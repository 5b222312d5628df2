"""Initialisation: new embedding (and LM-head) rows as weighted averages of source rows.

One sparse × dense product per matrix — `E_target = M @ E_source` with M the mapping — on the GPU when there is one.
`initialise_folder` writes the adapted model straight from the source model's safetensors without loading the model:
every other tensor is copied byte for byte (stored dtype kept, one buffer at a time), so a 7B model needs little
more memory than its embedding table, and an edit → re-initialise round trip takes seconds.
Baselines for comparison: `fvt` (each token from its own bytes' source tokens), `mean` (every row the average source
row) and `random` (normal noise with the source rows' standard deviation). All methods keep special tokens 1:1 so
that they differ only where the methods differ. Tied models stay tied; an untied head gets its own rows, the same
mapping applied to the source head's rows (not a copy of the new embeddings).
"""

from __future__ import annotations

import json
import logging
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from core import calibrate
from core.errors import TweetyError
from core.jobs import CancelToken, ProgressFn, Reporter, atomic_dir
from core.mapping import Mapping, Origin, fvt_mapping
from core.models import family, load_model, safetensors_headers, tied_embeddings, weight_files

log = logging.getLogger(__name__)

METHODS = ("transtok", "fvt", "mean", "random")


@dataclass(frozen=True)
class InitSettings:
    method: str = "transtok"
    seed: int = 0
    # How far the new tokens' predicted frequencies move toward the target text's (core.calibrate; 0: off). None:
    # the default share for trans-tokenization, none for the baselines, which stay the methods as published.
    calibration: float | None = None

    @property
    def calibration_share(self) -> float:
        if self.calibration is not None:
            return self.calibration
        return calibrate.SHARE if self.method == "transtok" else 0.0


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
    csr = torch.sparse_csr_tensor(
        torch.from_numpy(m.indptr.astype(np.int64)),
        torch.from_numpy(m.indices.astype(np.int64)),
        torch.from_numpy(m.data.astype(np.float32)),
        size=m.shape,
        device=device,
        check_invariants=True,
    )
    dense = source_rows.detach().to(device=device, dtype=torch.float32)
    out = csr @ dense
    empty = torch.from_numpy(np.diff(m.indptr) == 0).to(device)
    out[empty] = dense.mean(dim=0)
    return out


def new_rows(mapping: Mapping, settings: InitSettings, embeddings, head=None, report: Reporter | None = None):
    """(input embedding rows, head rows or None) of the target vocabulary from the source rows; `random` then
    overwrites every non-special row with noise of the source rows' spread."""
    import torch

    if settings.method not in METHODS:
        raise TweetyError(f"unknown initialisation {settings.method!r}", fix=f"choose one of {', '.join(METHODS)}")
    vs = mapping.matrix.shape[1]
    if vs != embeddings.shape[0]:
        raise TweetyError(
            f"the mapping is for a source vocabulary of {vs:,} tokens, but the model has {embeddings.shape[0]:,}",
            fix="build the mapping with this source model",
        )
    out = []
    for i, rows in enumerate((embeddings, head)):
        if report is not None:
            report(i, 2, ("input embeddings", "output head")[i])
        out.append(None if rows is None else weighted_rows(mapping.matrix, rows))
    if settings.method == "random":
        g = torch.Generator().manual_seed(settings.seed)
        fill = torch.from_numpy(mapping.origin != Origin.SPECIAL)
        for new, old in zip(out, (embeddings, head)):
            if new is not None:
                noise = torch.randn(int(fill.sum()), new.shape[1], generator=g) * old.detach().float().std()
                new[fill.to(new.device)] = noise.to(new.device)
    return out[0], out[1]


def initialise(
    model,
    mapping: Mapping,
    settings: InitSettings = InitSettings(),
    *,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
):
    """Replace `model`'s embeddings (and untied LM head) in place for the target vocabulary of `mapping`
    (from `mapping_for_method`)."""
    import torch

    report = Reporter(progress, cancel, "Initialising embeddings")
    embed = model.get_input_embeddings()
    source_embeddings = embed.weight
    vt = mapping.matrix.shape[0]
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    new_in, new_out = new_rows(
        mapping, settings, source_embeddings, None if tied else model.get_output_embeddings().weight, report
    )
    dtype = source_embeddings.dtype
    # The modules are kept and given new weights (as transformers' resize_token_embeddings does): Gemma 3's
    # embedding module also scales by √hidden, which a plain nn.Embedding would drop.
    embed.weight = torch.nn.Parameter(new_in.to("cpu", dtype))
    embed.num_embeddings = vt
    embed.padding_idx = None  # the source's padding id names another token in the target vocabulary
    head = model.get_output_embeddings()
    if tied:
        head.weight = embed.weight
    else:
        head.weight = torch.nn.Parameter(new_out.to("cpu", dtype))
    head.out_features = vt
    model.config.vocab_size = vt
    report(2, 2, f"{vt:,} rows")
    return model


def save_adapted(model, target_tokenizer, out_dir: str | Path) -> Path:
    """Save an HF model folder (safetensors) with the target tokenizer, atomically."""
    with atomic_dir(out_dir) as tmp:
        write_adapted(model, target_tokenizer, tmp)
    return Path(out_dir)


SPECIAL_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")


def write_adapted(model, target_tokenizer, folder: Path) -> None:
    """Write model + target tokenizer into `folder`, with the special-token ids in the config updated."""
    for name in SPECIAL_IDS:
        value = getattr(target_tokenizer, name)
        setattr(model.config, name, value)
        if getattr(model, "generation_config", None) is not None:
            setattr(model.generation_config, name, value)
    model.save_pretrained(folder)
    write_tokenizer(target_tokenizer, folder)


def write_tokenizer(target_tokenizer, folder: Path) -> None:
    target_tokenizer.save_pretrained(folder)
    sp_model = Path(target_tokenizer.name_or_path) / "tokenizer.model"
    if sp_model.exists():  # kept for GGUF export (SentencePiece vocabulary)
        (folder / "tokenizer.model").write_bytes(sp_model.read_bytes())


# --- streaming: from the source folder's safetensors to the adapted folder, without loading the model -------------

EMBEDDINGS, HEAD = "model.embed_tokens.weight", "lm_head.weight"  # every supported family's (core.models.Family)
INDEX_FILE = "model.safetensors.index.json"


def _write_safetensors(path: Path, stored: dict, computed: dict, report: Reporter) -> int:
    """Write the tensors of `stored` (name → `StoredTensor`, one file's) in their order: computed ones from memory,
    every other one copied byte for byte. Returns the size of the tensor data."""
    import torch

    names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
    header, offset, blobs = {}, 0, {}
    for name, s in stored.items():
        dtype = s.dtype
        if name in computed:
            t = computed[name].contiguous()
            blobs[name] = t.view(torch.uint8).reshape(-1).numpy()
            dtype, shape, size = names[t.dtype], list(t.shape), t.numel() * t.element_size()
        else:
            shape, size = list(s.shape), s.end - s.start
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data must start 8-byte aligned
    with open(next(iter(stored.values())).file, "rb") as src, open(path, "wb") as out:
        out.write(struct.pack("<Q", len(raw)) + raw)
        for name, s in stored.items():
            if name in computed:
                out.write(memoryview(blobs[name]))
                continue
            report.check()
            src.seek(s.start)
            left = s.end - s.start
            while left:
                chunk = src.read(min(left, 64 << 20))
                out.write(chunk)
                left -= len(chunk)
    return offset


def initialise_folder(
    source_folder: str | Path,
    mapping: Mapping,
    target_tokenizer,
    out_dir: str | Path,
    settings: InitSettings = InitSettings(),
    *,
    text: str | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> Path:
    """Write the adapted model into `out_dir` (atomically) from a Hugging Face source folder with safetensors
    weights (one file or shards with an index), without loading the model. Same tensors as `initialise` followed
    by `save_adapted`, except that the stored dtype is kept (bf16 stays bf16). With the target `text`, the new rows
    are then calibrated on it (`settings.calibration_share`; this loads the written model once)."""
    with atomic_dir(out_dir) as tmp:
        write_initialised(
            source_folder, mapping, target_tokenizer, tmp, settings, text=text, progress=progress, cancel=cancel
        )
    return Path(out_dir)


def write_initialised(
    source_folder: str | Path,
    mapping: Mapping,
    target_tokenizer,
    folder: Path,
    settings: InitSettings = InitSettings(),
    *,
    text: str | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> None:
    """`initialise_folder` into an existing (temporary) folder."""
    from safetensors import safe_open

    report = Reporter(progress, cancel, "Initialising embeddings")
    source_folder = Path(source_folder)
    config = json.loads((source_folder / "config.json").read_text())
    names = family(config, source_folder / "config.json")
    embeddings_name, head_name = names.embeddings, names.head
    index_path = source_folder / INDEX_FILE
    stored = {
        f: dict(sorted(safetensors_headers([f]).items(), key=lambda kv: kv[1].start))
        for f in weight_files(source_folder)
    }
    where = {name: f for f, tensors in stored.items() for name in tensors}
    tied = tied_embeddings(config)
    if embeddings_name not in where or not (tied or head_name in where):
        raise TweetyError(
            f"the weights lack {embeddings_name if embeddings_name not in where else head_name}",
            path=source_folder,
            fix="copy the complete model folder",
        )

    def source(name: str):
        with safe_open(str(where[name]), "pt") as f:
            return f.get_tensor(name)

    embeddings = source(embeddings_name)
    dtype = embeddings.dtype
    new_in, new_out = new_rows(mapping, settings, embeddings, None if tied else source(head_name), report)
    del embeddings
    computed = {embeddings_name: new_in.to("cpu", dtype)}
    if head_name in where:  # a tied checkpoint may store the head too: it stays equal to the embeddings
        computed[head_name] = computed[embeddings_name] if tied else new_out.to("cpu", dtype)
    del new_in, new_out
    report(2, 2, "writing the model")

    def write_weights() -> int:
        total = 0
        for f, tensors in stored.items():
            if computed.keys() & tensors.keys():
                (folder / f.name).unlink(missing_ok=True)  # a new file: the calibration's model may still map the old
                total += _write_safetensors(folder / f.name, tensors, computed, report)
            elif not (folder / f.name).exists():  # a shard of body layers only: the very same file
                report.check()
                shutil.copyfile(f, folder / f.name)
                total += sum(t.end - t.start for t in tensors.values())
            else:
                total += sum(t.end - t.start for t in tensors.values())
        return total

    total = write_weights()
    if index_path.exists():
        index = json.loads(index_path.read_text())
        index.setdefault("metadata", {})["total_size"] = total
        (folder / INDEX_FILE).write_text(json.dumps(index, indent=2))
    config["vocab_size"] = mapping.matrix.shape[0]
    generation = source_folder / "generation_config.json"
    generation = json.loads(generation.read_text()) if generation.exists() else None
    for name in SPECIAL_IDS:
        config[name] = getattr(target_tokenizer, name)
        if generation is not None:
            generation[name] = config[name]
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    if generation is not None:
        (folder / "generation_config.json").write_text(json.dumps(generation, indent=2))
    write_tokenizer(target_tokenizer, folder)
    share = settings.calibration_share
    if share and text:
        model = load_model(folder)[0]  # float32 on the CPU: what the stages run on; a GPU when there is one
        model.to(calibrate.device())
        offsets = calibrate.frequency_offsets(
            model, target_tokenizer, text, share, report=Reporter(progress, cancel, "Calibrating frequencies")
        )
        del model
        row = head_name if not tied else embeddings_name
        computed[row] = (computed[row].float() + offsets).to(dtype)
        if tied and head_name in computed:
            computed[head_name] = computed[embeddings_name]
        write_weights()
