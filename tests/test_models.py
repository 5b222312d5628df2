"""core.models: the one model card and the one parameter count, the same whichever file the model comes as."""

from __future__ import annotations

from core import models


def test_one_parameter_count_for_the_gguf_and_its_folder():
    """The built-in model's GGUF header and its converted folder's safetensors headers count the same parameters
    (SmolLM2-135M: 134.5M, its output layer tied), and the folder's card says what Inspect shows."""
    gguf, folder = models.default_gguf(), models.resolve(models.DEFAULT_MODEL)
    count = models.parameter_count(gguf)
    assert 134e6 < count < 135e6 and models.parameter_count(folder) == count
    card, inspected = models.model_card(models.DEFAULT_MODEL), models.model_card(folder)
    assert card.parameters == inspected.parameters == count and card.spec == models.DEFAULT_MODEL
    assert (inspected.model_type, inspected.layers, inspected.hidden_size, inspected.tied_embeddings) == (
        "llama",
        30,
        576,
        True,
    )
    assert card.layers == 30 and card.family == inspected.family == "Llama"
