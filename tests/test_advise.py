"""`tweety advise`: the source model measured on the user's text before adapting, and the advice from it."""

from __future__ import annotations

import json

from conftest import DEMO, write_lines
from core.advise import EXTEND, KEEP, REPLACE, decide
from core.resources import read_text

# Ukrainian written for this test (a short everyday text): a Cyrillic language SmolLM2-135M never learnt.
UKRAINIAN = (
    "Сьогодні вранці ми пішли на ринок по овочі та фрукти. Продавчиня розповіла нам, що цього року врожай "
    "яблук дуже добрий, бо літо було тепле й дощове. Вдома бабуся спекла пиріг, і вся родина зібралася за "
    "великим столом. Діти сміялися, дідусь розповідав історії про своє дитинство в селі над річкою. "
    "Увечері ми гуляли парком, дивилися на зорі й говорили про плани на зиму.\n"
)


def test_decide_keeps_extends_or_replaces():
    assert decide(1.5, 0.27)[0] == KEEP  # Gemma 3 270M on Spanish
    assert decide(1.5, 0.45)[0] == EXTEND  # reads it, in many small tokens
    assert decide(2.2, 0.40)[0] == REPLACE  # SmolLM2-135M on Spanish
    assert decide(4.0, 0.9)[0] == REPLACE


def test_advise_replace_for_smollm2_on_spanish_and_on_ukrainian(tmp_path, capsys, source):
    from core.advise import advise
    from core.cli import main

    spanish = advise(*source, read_text(DEMO / "bible.heldout.es.gz"), max_bytes=3000)
    ukrainian = advise(*source, UKRAINIAN)
    assert spanish.choice == ukrainian.choice == REPLACE
    # per character, Ukrainian costs the English model more bits and about twice the tokens of Spanish
    assert ukrainian.bits_per_char > spanish.bits_per_char
    assert ukrainian.tokens_per_char > 1.5 * spanish.tokens_per_char
    text = write_lines(tmp_path / "uk.txt", UKRAINIAN.splitlines())
    assert main(["advise", "--target-text", str(text), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["choice"] == REPLACE and printed["chars"] == len(read_text(text))
