"""The Chat & Translate page: the exported model (llama.cpp) or the Hydra, on this computer; with a parallel corpus,
the translation memory's closest match and whole files translated by the project's best translator
(app.pages.translation)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QSizePolicy,
    QVBoxLayout,
)

from app.pages.hydra import HydraTuningBox
from app.pages.translation import SOURCE_LANGUAGE, FileTranslation, MemoryMatch, direction_words
from app.pages.widgets import FileRow, Note, Page, red, spin
from app.workers import TextRelay
from core.jobs import Cancelled
from core.models import DEFAULT_MODEL

WEIGHTS = {".safetensors", ".bin", ".pt", ".pth"}  # files whose change means another model
# What translates a text: the project's best translator (its memory and corpus words, or whichever measured best), the
# loaded GGUF file, or the Hydra.
PROJECT, MODEL, HYDRA = "project", "model", "hydra"
TRANSLATORS = {
    PROJECT: "the project's best translator",
    MODEL: "the loaded model",
    HYDRA: "the Hydra (no exported file needed)",
}
EXPECTATIONS = (
    "<b>What to expect:</b> the built-in model is small (135 million parameters): it writes words and "
    "phrases of the new language, but its sentences wander and its translations are rough. For real use, "
    "adapt a bigger source model (1–8 billion parameters) and fine-tune longer on a GPU."
)


class ChatPage(Page):
    key, title = "chat", "Chat & Translate"
    intro = (
        "Try the exported model: chat with it, or translate a text — with it, or with the Hydra (the source "
        "model reading, the new vocabulary writing). Everything runs on this computer."
    )
    max_tokens = 256  # longest reply; tests use fewer
    fills = True

    def build(self) -> None:
        from core.runtime import RuntimeSettings, default_threads

        self.llm = None
        self.chat = None
        self.card_info = None  # core.models.ModelCard of the loaded file (core.runtime.model_card)
        self._hydra = None  # (key, core.hydra.Hydra) built on first use
        row = QHBoxLayout()
        self.file = FileRow("open", "exported .gguf file", "GGUF models (*.gguf)")
        row.addWidget(self.file, 1)
        row.addWidget(self.button("Load model", self.load))
        self.layout_.addLayout(row)
        self.card = QLabel("No model loaded.")
        self.card.setWordWrap(True)
        self.layout_.addWidget(self.card)
        self.expectations = QLabel(EXPECTATIONS)
        self.expectations.setWordWrap(True)
        self.expectations.setStyleSheet("color: #555;")
        self.expectations.setVisible(False)
        self.layout_.addWidget(self.expectations)

        knobs = QHBoxLayout()
        self.threads = spin(
            1,
            max(64, default_threads()),
            default_threads(),
            "CPU threads for generation. Default: physical cores minus one — with every core busy, "
            "anything else running (the window, another job) slows generation down many times.",
        )
        self.reply_tokens = spin(
            8, 4096, self.max_tokens, "Longest reply, in tokens; a reply usually ends by itself at the end of its turn"
        )
        self.repetition = QCheckBox("Repetition control")
        self.repetition.setChecked(True)
        self.repetition.setToolTip(
            f"Penalise words already written (×{RuntimeSettings.repeat_penalty}) and stop a "
            "reply that starts going round in circles. Small models loop without it."
        )
        for label, widget in (("Threads", self.threads), ("Longest reply", self.reply_tokens)):
            knobs.addWidget(QLabel(label))
            knobs.addWidget(widget)
        knobs.addWidget(self.repetition)
        self.speed = QLabel()
        knobs.addWidget(self.speed, 1)
        self.layout_.addLayout(knobs)
        self.threads.valueChanged.connect(lambda _n: self._threads_changed())

        chat = QGroupBox("Chat")
        col = QVBoxLayout(chat)
        self.transcript = QPlainTextEdit(readOnly=True)
        self.input = QLineEdit(placeholderText="Type a message and press Enter")
        self.input.returnPressed.connect(self.send)
        send_row = QHBoxLayout()
        send_row.addWidget(self.input, 1)
        send_row.addWidget(self.button("Send", self.send))
        send_row.addWidget(self.button("Stop", self.ctx.cancel_job, "Stop the reply being written"))
        col.addWidget(self.transcript)
        col.addLayout(send_row)

        box = QGroupBox("Translate")
        grid = QVBoxLayout(box)
        langs = QHBoxLayout()
        self.direction = QComboBox()
        self.direction.setMinimumWidth(200)
        self.direction.setToolTip(
            "The translation directions this model has: a Hydra translates between the source "
            "model's language and the new one, both ways; an exported file, between its source "
            "model's language and the languages stored in it."
        )
        # The user's pick: `activated` comes from the user alone (a click on an entry, a key), never from a rebuild.
        self._picked: str | None = None  # "es>en", kept through every rebuild of the list and shown when offered
        self.direction.activated.connect(lambda _i: setattr(self, "_picked", self.direction.currentData()))
        langs.addWidget(QLabel("Direction"))
        langs.addWidget(self.direction)
        langs.addWidget(self.button("Translate", self.translate))
        self.file_translation = FileTranslation(self.ctx, self.project_direction)
        langs.addWidget(self.file_translation.button)
        langs.addStretch(1)
        self.translator = QComboBox()
        self.translator.setToolTip(
            "The project's best translator: the one that scored best on the project's held-out "
            "pairs (Evaluate › Translation), else its translation memory with the words its "
            "corpus aligns — no model needed.\nThe loaded model: the exported file, asked to "
            "translate.\nThe Hydra: the source model's body reads the text with its own "
            "vocabulary and writes with the adapted model's (zero-shot translation), either way "
            "round; it needs a model whose body fine-tuning left untouched (what trains: "
            "embeddings)."
        )
        self.translator.currentIndexChanged.connect(lambda _i: self.update_directions())
        self._project_translator: tuple | None = None  # (key, name, translate lines) made on first use
        self.direction_note = Note()
        self.language_warning = red(Note())  # the text looks written in the language it is to be translated into
        self.language_warning.hide()
        self.text_in = QPlainTextEdit(placeholderText="Text to translate")
        self.text_out = QPlainTextEdit(readOnly=True, placeholderText="Translation")
        for edit in (self.text_in, self.text_out):
            edit.setMinimumHeight(44)
            # side by side: their width comes from the box, which must not push the Chat box aside
            edit.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Expanding)
        grid.addLayout(langs)
        grid.addWidget(self.language_warning)  # under the Translate button it is about
        using = QHBoxLayout()
        using.addWidget(QLabel("Translate with"))
        using.addWidget(self.translator)
        using.addStretch(1)
        grid.addLayout(using)
        grid.addWidget(self.direction_note)
        texts = QHBoxLayout()  # side by side, as translators read them
        texts.addWidget(self.text_in)
        texts.addWidget(self.text_out)
        grid.addLayout(texts)
        self.memory_match = MemoryMatch(self.ctx)
        self.memory_match.looked_up.connect(self._check_language)
        grid.addWidget(self.memory_match)
        grid.addWidget(self.file_translation)
        self.hydra_box = HydraTuningBox(self.ctx)
        split = QHBoxLayout()
        # Translate the wider: its sentences (the hint, the memory's match, a file's result) wrap in it, and in two
        # fifths of the page at 1280×800 they took more lines than its height had; a chat wraps in any width.
        split.addWidget(chat, 2)
        split.addWidget(box, 3)
        self.layout_.addLayout(split, 1)
        self.layout_.addWidget(self.hydra_box)
        self.relay = TextRelay()
        self._sink: QPlainTextEdit = self.transcript
        self.relay.text.connect(self._append)
        self._offer_translators()

    # -- what the page offers --
    def directions(self) -> list[tuple[str, str]]:
        """(from, to) pairs the chosen translator has: the Hydra's source language and the project's language both
        ways; for a loaded file, its source language and the languages it names (core.runtime.translation_directions).
        """
        from dataclasses import replace

        from core.runtime import translation_directions

        if self.using() in (HYDRA, PROJECT):
            code = self.project.state.language if self.project is not None else None
            return [(SOURCE_LANGUAGE, code), (code, SOURCE_LANGUAGE)] if code and code != SOURCE_LANGUAGE else []
        if self.card_info is None:
            return []
        card = self.card_info
        if not card.languages and self.project is not None and self.project.state.language:
            card = replace(card, languages=(self.project.state.language,))
        return translation_directions(card, SOURCE_LANGUAGE)

    def update_directions(self) -> None:
        """The list follows the translator (the Hydra or the loaded file); the direction shown is the one the user
        picked whenever it is offered. Kept as the one shown instead, a list without it (the Hydra's before the
        project has a language code) lost it, and the next list showed its first entry as if picked."""
        offered = self.directions()
        if offered != self.offered():
            self.direction.clear()
            for src, tgt in offered:
                self.direction.addItem(direction_words(src, tgt), f"{src}>{tgt}")
        if self._picked is not None and (i := self.direction.findData(self._picked)) >= 0:
            self.direction.setCurrentIndex(i)
        using = self.using()
        self.direction_note.setVisible(not (self.direction.count() and using == HYDRA))
        if self.direction.count():
            self.direction_note.setText(
                ""
                if using == HYDRA
                else "It translates with the project's translation memory and the words its corpus aligns, or with "
                "whichever translator scored best on the project's held-out pairs (Evaluate › Translation)."
                if using == PROJECT
                else "The prompt asks the model itself to translate; a model adapted from a small source model often "
                "answers badly — the project's best translator measured better."
            )
        elif using in (HYDRA, PROJECT):
            self.direction_note.setText(
                f"{TRANSLATORS[using][0].upper()}{TRANSLATORS[using][1:]} needs the "
                "project's language code (Language & data page)."
            )
        else:
            self.direction_note.setText("Load a model to see the directions it translates.")

    def using(self) -> str:
        """What translates: PROJECT, MODEL or HYDRA."""
        return self.translator.currentData() or MODEL

    def use(self, key: str) -> None:
        self.translator.setCurrentIndex(self.translator.findData(key))

    def _offer_translators(self) -> None:
        """The project's best translator is offered (and chosen) when the project has a parallel corpus: it measured
        better than every model a CPU runs (docs/results/translation.md)."""
        corpus = (
            self.project is not None
            and self.project.state.inputs is not None
            and bool(self.project.state.inputs.parallel)
        )
        keys = [key for key in TRANSLATORS if key != PROJECT or corpus]
        if keys == [self.translator.itemData(i) for i in range(self.translator.count())]:
            return  # as offered: the user's choice stays
        self.translator.blockSignals(True)
        self.translator.clear()
        for key in keys:
            self.translator.addItem(TRANSLATORS[key], key)
        self.translator.blockSignals(False)
        self.use(PROJECT if corpus else MODEL)
        self.update_directions()

    def offered(self) -> list[tuple[str, str]]:
        """The directions the Direction box offers, as (from, to)."""
        return [tuple(self.direction.itemData(i).split(">")) for i in range(self.direction.count())]

    def chosen_direction(self) -> tuple[str, str] | None:
        data = self.direction.currentData()
        return tuple(data.split(">")) if data else None

    def project_direction(self) -> tuple[str, str]:
        """The project's own translation direction (its translation memory's) for the memory and for files: the
        chosen one when it is one of the project's, else the source language → the project's language."""
        code = self.project.state.language or ""
        chosen = self.chosen_direction()
        return chosen if chosen and code in chosen else (SOURCE_LANGUAGE, code)

    def set_direction(self, src: str, tgt: str) -> None:
        i = self.direction.findData(f"{src}>{tgt}")
        if i < 0:
            raise ValueError(f"no direction {src}→{tgt} offered")
        self._picked = f"{src}>{tgt}"
        self.direction.setCurrentIndex(i)

    def project_changed(self) -> None:
        self.hydra_box.show_project(self.project)
        self.memory_match.reset()
        self.language_warning.hide()
        self._picked = None  # another project, other directions
        self._project_translator = None
        self._offer_translators()
        self.file_translation.show_project(self.project)
        record = self.project.state.stages.get("export")
        self.file.set_path(record.summary.get("file", "") if record else "")  # never another project's file
        self._show_expectations()
        self.update_directions()

    def offer_model_file(self, path: str) -> None:
        """A GGUF file was just exported: the one to load."""
        self.file.set_path(path)

    def shown(self) -> None:
        if not self.hydra_box.language.text() and self.project is not None:
            self.hydra_box.language.setText(self.project.state.language or "")
        self.file_translation.show_project(self.project)
        self._show_expectations()
        self._offer_translators()  # the project may have its corpus since
        self.update_directions()

    def _show_expectations(self) -> None:
        tiny = (self.project is not None and self.project.state.source_model == DEFAULT_MODEL) or (
            self.card_info is not None and self.card_info.source_model == DEFAULT_MODEL
        )
        self.expectations.setVisible(tiny)

    def _threads_changed(self) -> None:
        if self.llm is not None:
            self.speed.setText("Threads changed: load the model again to use them.")

    # -- running --
    def load(self) -> None:
        from core.runtime import load, model_card

        path, settings = self.file.path, self.runtime_settings()

        def fn(progress, cancel):
            llm = load(path, settings)
            return llm, model_card(llm)

        self.run(fn, self._loaded, "Loading model")

    def runtime_settings(self):
        from core.runtime import RuntimeSettings

        return RuntimeSettings(
            threads=self.threads.value(),
            max_tokens=self.reply_tokens.value(),
            repeat_penalty=RuntimeSettings.repeat_penalty if self.repetition.isChecked() else 1.0,
        )

    def _loaded(self, result) -> None:
        from core.runtime import Chat

        self.llm, card = result
        self.card_info = card
        self.chat = Chat(self.llm, self.runtime_settings())
        self.card.setText(
            f"Loaded <b>{Path(self.file.path).name}</b> · vocabulary {card.vocab_size:,} · context "
            f"{card.context:,} tokens · languages: {', '.join(card.languages) or 'not stored'} · "
            f"{self.threads.value()} thread{'s' if self.threads.value() > 1 else ''}"
        )
        self._show_expectations()
        self.update_directions()

    def _append(self, text: str) -> None:
        self._sink.moveCursor(self._sink.textCursor().MoveOperation.End)
        self._sink.insertPlainText(text)

    def _ready(self) -> bool:
        if self.chat is None:
            self.ctx.show_warning("Load a model first.")
        return self.chat is not None

    def _streaming(self, stage: str, limit: int, stats, progress, *, count: bool):
        """`on_text` for a generation: streams the text to the page and reports tokens and tokens/s (the window's
        status line and this page's speed label). `count`: the generator does not count tokens itself (the Hydra)."""
        from core.jobs import Progress

        emit = self.relay.text.emit

        def on_text(text: str) -> None:
            if count:
                stats.count()
            emit(text)
            progress(
                Progress(
                    stage,
                    stats.tokens,
                    None,
                    f"{stats.tokens} tokens · {stats.tokens_per_s:.1f} tokens/s",
                    {"tokens": stats.tokens, "tokens_per_s": stats.tokens_per_s, "limit": limit},
                )
            )

        return on_text

    def _show_speed(self, p) -> None:
        if p.metrics and "tokens_per_s" in p.metrics:
            self.speed.setText(f"{p.metrics['tokens']:.0f} tokens · {p.metrics['tokens_per_s']:.1f} tokens/s")

    def _finished(self, stats) -> None:
        why = {
            "stop": "end of turn",
            "length": "length limit",
            "repeat": "it began to repeat itself",
            "cancelled": "stopped",
        }.get(stats.finish, stats.finish)
        self.speed.setText(
            f"{stats.tokens} tokens in {stats.seconds:.1f} s · {stats.tokens_per_s:.1f} tokens/s"
            + (f" · ended: {why}" if why else "")
        )

    def send(self) -> None:
        from core.runtime import GenerationStats

        text = self.input.text().strip()
        if not text or not self._ready() or not self.idle():  # idle: a running job may be streaming into _sink
            return
        self.input.clear()
        self._sink = self.transcript
        self.transcript.appendPlainText(f"You: {text}\nModel: ")
        chat, stats = self.chat, GenerationStats()
        chat.settings = self.runtime_settings()

        def fn(progress, cancel):
            on_text = self._streaming("Chatting", chat.settings.max_tokens, stats, progress, count=False)
            reply = chat.send(text, on_text=on_text, cancel=cancel, stats=stats)
            if cancel.cancelled:  # the reply so far stays in the conversation, but the job says so
                raise Cancelled()
            return reply

        self._start(fn, "Chatting", stats, on_end=lambda: self.transcript.appendPlainText(""))

    def _start(self, fn, name: str, stats, on_end=None) -> None:
        def ended() -> None:
            self._finished(stats)
            if on_end is not None:
                on_end()

        job = self.run(fn, lambda _out: None, name, on_end=ended)
        if job is not None:
            job.signals.progress.connect(self._show_speed)

    def translate(self) -> None:
        from core.runtime import GenerationStats, translate

        text = self.text_in.toPlainText().strip()
        self.language_warning.hide()  # about the text translated before; the lookup tells about this one
        if text and self.project is not None:  # beside any translation, in the pool: no model needed
            self.memory_match.look_up(self.project, text, *self.project_direction())
        if not text or (self.using() == MODEL and not self._ready()) or not self.idle():
            return
        if self.chosen_direction() is None:
            self.ctx.show_warning(self.direction_note.text() or "No translation direction to choose from.")
            return
        src, tgt = self.chosen_direction()
        self._sink = self.text_out
        self.text_out.clear()
        llm, stats, limit = self.llm, GenerationStats(), self.reply_tokens.value()
        penalty = self.runtime_settings().repeat_penalty
        if self.using() == HYDRA:
            fn, on_end = self._hydra_job(text, src, tgt, stats)
            self._start(fn, "Translating with the Hydra", stats, on_end=on_end)
            return
        if self.using() == PROJECT:
            self._translate_with_project(text, src, tgt)
            return

        def fn(progress, cancel):
            on_text = self._streaming("Translating", limit, stats, progress, count=False)
            return unless_cancelled(
                lambda cancel: translate(
                    llm,
                    text,
                    src,
                    tgt,
                    max_tokens=limit,
                    on_text=on_text,
                    cancel=cancel,
                    repeat_penalty=penalty,
                    stats=stats,
                )
            )(progress, cancel)

        self._start(fn, "Translating", stats)

    def _check_language(self, text: str, words: dict) -> None:
        """A text that looks written in the language it is to be translated into (core.translation.written_in, from
        the translation memory's commonest words of each side) is said beside the button; it is still translated —
        the guess may be wrong, and the user decides."""
        from core.translation import language_name, written_in

        chosen = self.chosen_direction()
        if chosen is None or text != self.text_in.toPlainText().strip():  # no direction, or another text since
            return
        src, tgt = chosen
        if src != tgt and written_in(text, words) == tgt:
            self.language_warning.setText(
                f"This text looks like {language_name(tgt)} already — the language it is "
                f"to be translated into. To translate it the other way, choose "
                f"{direction_words(tgt, src)}."
            )
            self.language_warning.show()

    def _translate_with_project(self, text: str, src: str, tgt: str) -> None:
        """Line by line with the project's best translator (core.translating.ready_translator), made once per
        project, direction and translation measurement; the note says which translator it was."""
        import json

        from core import translating

        project = self.project
        record = project.state.stages.get(translating.TRANSLATION)
        key = (str(project.folder), src, tgt, json.dumps(asdict(record), default=str) if record else "")
        made = self._project_translator if self._project_translator and self._project_translator[0] == key else None

        def fn(progress, cancel):
            name, translate = (
                made[1:] if made else translating.ready_translator(project, src, tgt, progress=progress, cancel=cancel)
            )
            lines = text.splitlines()
            out = translate([line for line in lines if line.strip()])
            return name, translate, "\n".join(out.pop(0) if line.strip() else "" for line in lines)

        def show(result) -> None:
            name, translate, translation = result
            self._project_translator = (key, name, translate)
            self.text_out.setPlainText(translation)
            self.direction_note.setText(f"Translated by: {name} (the project's best translator).")

        self.run(fn, show, "Translating")

    def _hydra_job(self, text: str, src: str, tgt: str, stats):
        """(job function, on_end): the Hydra (the source language and the project's) is built once per model and
        kept for the next translation, either way round — handed over on the GUI thread when the job ends, even a
        cancelled one."""
        from core import hydra

        project, max_tokens, threads = self.project, self.reply_tokens.value(), self.threads.value()
        language = tgt if src == SOURCE_LANGUAGE else src
        key = hydra_key(project, SOURCE_LANGUAGE, language)
        cached = self._hydra[1] if self._hydra is not None and self._hydra[0] == key else None
        built: dict = {}

        def fn(progress, cancel):
            import torch

            built["model"] = model = cached if cached is not None else project.hydra(SOURCE_LANGUAGE, language)
            on_text = self._streaming("Translating with the Hydra", max_tokens, stats, progress, count=True)
            before = torch.get_num_threads()
            torch.set_num_threads(threads)  # token by token: spinning threads on a busy machine stall (see runtime)
            try:
                return unless_cancelled(
                    lambda cancel: hydra.translate(
                        model, text, src, tgt, max_new_tokens=max_tokens, on_text=on_text, cancel=cancel
                    )
                )(progress, cancel)
            finally:
                torch.set_num_threads(before)

        def on_end() -> None:
            if "model" in built:
                self._hydra = (key, built["model"])

        return fn, on_end


def unless_cancelled(translate):
    """A job function from `translate(cancel)`: generation stops early and returns the text so far when cancelled
    (a chat keeps it), but a cut-short translation is not a translation — the job ends as cancelled, not done."""
    from core.jobs import Cancelled

    def fn(progress, cancel):
        text = translate(cancel)
        if cancel.cancelled:
            raise Cancelled()
        return text

    return fn


def hydra_key(project, src: str, tgt: str) -> tuple:
    """What a built Hydra depends on, so that a re-initialised, re-tuned or tuned Hydra is never served from the
    cache: the final model's folder, its weight files' sizes and mtime_ns, the tuned Hydra's files, the project's
    records of the stages that write them, and the language pair."""
    import json

    def files(folder: Path) -> tuple:
        if not folder.is_dir():
            return ()
        return tuple(
            sorted(
                (str(p.relative_to(folder)), st.st_size, st.st_mtime_ns)
                for p in folder.rglob("*")
                if p.suffix in WEIGHTS
                for st in (p.stat(),)
            )
        )

    stages = project.state.stages
    records = json.dumps(
        {k: asdict(stages[k]) for k in ("init", "finetune", "hydra") if k in stages}, sort_keys=True, default=str
    )
    folder = Path(project.final_model_dir)
    return str(folder), files(folder), files(Path(project.hydra_dir)), records, src, tgt
