"""LoRA adapters on a Hydra's body (`peft`), one per translation direction: what teaching a Hydra to translate
trains (core.hydra.tuning, `trains="lora"`).

Why the body and not the tables: on held-out English → German software strings, 150 steps of 4 pairs behind the
translation prompt (the memory's closest pairs as examples) took the Hydra from chrF 32.3 to 40.4 with LoRA on the
body, and *down* to 28.7 with the target language's tables (docs/results/translation.md, "What the tuning trains").
The body is every language's in a Hydra, so an adapter is kept apart from it (`Hydra.adapters`, saved beside the
body by core.hydra.store) and is on the body only while the Hydra translates in the direction it was trained for
(`use`): the base weights are never changed, and reading another language, or the other direction, is as before.
"""

from __future__ import annotations

from core.errors import TweetyError

# Every linear layer of the attention and the MLP (the names of the Llama, Mistral, Qwen and Gemma families).
MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
RANK, ALPHA = 16, 32  # ~4.9M parameters on SmolLM2-135M (19 MB in float32)
MARK = "lora_"  # in the name of every adapter parameter (peft's)


def direction(source: str, target: str) -> str:
    """The key of a direction's adapter ("en->de"), in `Hydra.adapters` and hydra.json."""
    return f"{source}->{target}"


def attach(hydra, key: str, weights: dict | None = None, *, seed: int = 0) -> dict:
    """Put an adapter on the body for direction `key` — a new one (its A matrices drawn from `seed`, so that a
    tuning is the same every time; its B matrices zero: the body computes exactly what it did until it is trained)
    or `weights` — and return its parameters by name, trainable."""
    import torch
    from peft import LoraConfig, LoraModel

    detach(hydra)
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=list(MODULES))
    with torch.random.fork_rng(devices=[]):  # the caller's random state stays as it was
        torch.manual_seed(seed)
        tuner = LoraModel(hydra.model.model, config, "default")
    params = {name: p for name, p in hydra.model.model.named_parameters() if MARK in name}
    if weights is not None:
        if set(weights) != set(params):
            detach_tuner(hydra, tuner)
            raise TweetyError(
                f"the {key} translation adapter does not fit this model's body",
                fix="teach the Hydra to translate again",
            )
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(weights[name])
    for p in params.values():
        p.requires_grad_(True)
    hydra.lora = (key, tuner)
    return params


def detach(hydra) -> None:
    """Take whatever adapter is on the body off it (the base layers back as they were)."""
    if hydra.lora is not None:
        detach_tuner(hydra, hydra.lora[1])


def detach_tuner(hydra, tuner) -> None:
    tuner.unload()
    hydra.lora = None


def use(hydra, source: str, target: str) -> None:
    """The body as translation from `source` into `target` needs it: with that direction's adapter when the Hydra
    has one, else bare."""
    key = direction(source, target)
    if hydra.lora is not None and hydra.lora[0] == key:
        return
    detach(hydra)
    if key in hydra.adapters:
        attach(hydra, key, hydra.adapters[key])


def weights_of(params: dict) -> dict:
    """Trained adapter parameters as plain tensors to keep (`Hydra.adapters[key]`)."""
    return {name: p.detach().clone().contiguous() for name, p in params.items()}
