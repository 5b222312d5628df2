"""The Source model page: which existing model the new language is grafted onto.

Every choice shows the model's card first (family, size, vocabulary, licence — from the GGUF header or config.json,
in well under a second, nothing converted). A model whose licence asks more than a permissive open-source licence
(Gemma Terms of Use, TowerInstruct's CC BY-NC) is used only once the user has accepted it; the acceptance is kept in
the project (project.json: settings.licence)."""

from __future__ import annotations

from datetime import datetime, timezone

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QButtonGroup, QComboBox, QHBoxLayout, QLabel, QRadioButton

from app.pages.widgets import TIPS, FileRow, Page
from core.errors import TweetyError
from core.models import DEFAULT_MODEL, ModelCard, installed_models, model_card


def card_html(card: ModelCard) -> str:
    """A model card in plain words (the wizard's, also used by the self-test)."""
    licence = card.licence
    if licence is None:
        terms = "not stated in the model's files — check it before you share the adapted model"
    else:
        terms = f"<b>{licence.name}</b>"
        if licence.url:
            terms += f" (<a href='{licence.url}'>{licence.url}</a>)"
        if licence.must_accept:
            terms += " — you will be asked to accept it before the model is used"
    size = f"{card.parameters / 1e6:,.0f} M parameters" if card.parameters else "size unknown"
    share = (
        f", {card.embedding_parameters / max(card.parameters, 1):.0%} of them the vocabulary table that "
        "adaptation replaces"
        if card.parameters and card.hidden_size
        else ""
    )
    return (
        f"<b>{card.name}</b><br>Family: {card.family} &nbsp; {size}{share}<br>"
        f"Vocabulary: {card.vocab_size:,} tokens &nbsp; File size: {card.file_bytes / 1e6:,.0f} MB<br>"
        f"Licence: {terms}"
    )


class SourcePage(Page):
    key, title = "source", "Source model"
    intro = (
        "The existing language model whose knowledge is transferred to the new language. The installed models "
        "are ready to use (SmolLM2-135M is small and fast); Llama, Mistral, Qwen2/3 and Gemma 2/3 (text) models "
        "work too, as a Hugging Face folder or a GGUF file."
    )
    KINDS = ("Installed model", "Hugging Face model folder", "GGUF file")

    def build(self) -> None:
        self.installed = installed_models()
        self.group = QButtonGroup(self)
        for i, text in enumerate(self.KINDS):
            radio = QRadioButton(text)
            self.group.addButton(radio, i)
            self.layout_.addWidget(radio)
            if i == 0:
                self.models = QComboBox()
                for card in self.installed:
                    self.models.addItem(f"{card.name} — {card.family}, {card.parameters / 1e6:,.0f} M", card.spec)
                self.models.setToolTip("Models installed with Tweety Studio (the Gemma extra adds Gemma 3 270M)")
                self.models.currentIndexChanged.connect(self.show_card)
                self.layout_.addWidget(self.models)
        self.group.button(0).setChecked(True)
        self.file = FileRow("dir", "model folder or .gguf file")
        self.file.changed.connect(self.show_card)
        self.group.idToggled.connect(self._kind_changed)
        self.layout_.addWidget(self.file)
        self.card = QLabel()
        self.card.setTextFormat(Qt.TextFormat.RichText)
        self.card.setOpenExternalLinks(True)
        self.card.setWordWrap(True)
        self.layout_.addWidget(self.card)
        row = QHBoxLayout()
        row.addWidget(
            self.button(
                "Inspect",
                self.inspect,
                "Read the model's configuration (layers, hidden size; "
                "a GGUF file is converted once, which takes a minute)",
            )
        )
        row.addWidget(self.button("Use this model", self.use, "Changing the model clears every finished stage"))
        row.addStretch(1)
        self.layout_.addLayout(row)
        self.info = QLabel()
        self.info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.layout_.addWidget(self.info)
        self._kind_changed()

    def _kind_changed(self, *_args) -> None:
        kind = self.group.checkedId()
        self.models.setEnabled(kind == 0)
        self.file.setEnabled(kind != 0)
        self.file.mode = "dir" if kind == 1 else "open"
        self.file.filter = "GGUF models (*.gguf)"
        self.show_card()

    def spec(self) -> str:
        if self.group.checkedId() == 0:
            return self.models.currentData() or DEFAULT_MODEL
        return self.file.path

    def current_card(self) -> ModelCard | None:
        """The card of the chosen model (None, after saying why on the page, when it cannot be read)."""
        spec = self.spec()
        if not spec:
            self.card.setText("Choose a model folder or a .gguf file.")
            return None
        known = next((c for c in self.installed if c.spec == spec), None)
        if known is not None:
            return known
        try:  # a header or config.json read: fast enough for the GUI thread
            return model_card(spec)
        except TweetyError as e:
            self.card.setText(f"<span style='color:#b00020'>{e}</span>")
            return None

    def show_card(self, *_args) -> None:
        card = self.current_card()
        if card is not None:
            self.card.setText(card_html(card))

    def project_changed(self) -> None:
        spec = self.project.state.source_model
        index = self.models.findData(spec)
        kind = 0 if index >= 0 else 2 if spec.endswith(".gguf") else 1
        if index >= 0:
            self.models.setCurrentIndex(index)
        self.group.button(kind).setChecked(True)
        self.file.set_path("" if kind == 0 else spec)

    def inspect(self) -> None:
        spec = self.spec()
        self.show_card()

        def fn(progress, cancel):
            import torch

            from core.models import resolve

            device = f"CUDA ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "CPU"
            return model_card(resolve(spec)), device  # the Hugging Face folder's card: layers, tied tables

        self.run(fn, self._show_info, "Inspecting model")

    def _show_info(self, result) -> None:
        info, device = result
        self.info.setText(
            f"Type: <b>{info.model_type}</b> &nbsp; Layers: {info.layers} &nbsp; Hidden size: "
            f"{info.hidden_size} &nbsp; Vocabulary: {info.vocab_size:,} &nbsp; Parameters: "
            f"{info.parameters / 1e6:,.0f} M &nbsp; "
            f"{'One table' if info.tied_embeddings else 'Separate tables'} for reading and writing<br>"
            f"Runs on: {device}"
        )
        self.info.setToolTip(TIPS["tied"])

    def accepted_licence(self, card: ModelCard | None) -> bool:
        """The licence guardrail: True when the model's licence needs no acceptance, was accepted for this model in
        this project before, or the user accepts it now (recorded in the project)."""
        if card is None or card.licence is None or not card.licence.must_accept:
            return True
        licence = card.licence
        recorded = self.project.state.settings.get("licence") or {}
        if recorded.get("model") == card.spec and recorded.get("name") == licence.name:
            return True
        # The terms themselves, to read before answering (a file path told nothing).
        terms = licence.terms()
        if not self.ctx.confirm(
            f"{card.name} is licensed under the {licence.name}.<br>{licence.url}<br><br>"
            "Adapting it and sharing or exporting the result are bound by these terms. Do you "
            "accept them?",
            details=terms,
        ):
            # Back to the model the project uses: a declined Gemma left shown as chosen read as if it were in use.
            current = self.project.state.source_model
            self.project_changed()
            self.info.setText(f"Terms not accepted: the project keeps using {self.card_name(current)}.")
            self.ctx.log(f"Licence not accepted: {card.name} was not selected")
            return False
        self._accepted = {
            "model": card.spec,
            "name": licence.name,
            "url": licence.url,
            "text": str(licence.text) if licence.text else None,
            "accepted": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        return True

    def card_name(self, spec: str) -> str:
        return next((c.name for c in self.installed if c.spec == spec), spec)

    def use(self) -> None:
        spec = self.spec()
        changing = spec != self.project.state.source_model
        # Another model clears every stage (their folders become stale): never while a job may be reading them.
        if changing and not self.idle():
            return
        card = self.current_card()
        self._accepted = None
        if not self.accepted_licence(card):
            return
        if (
            changing
            and self.project.finished
            and not self.ctx.confirm("Changing the source model discards every finished stage. Continue?")
        ):
            return
        self.project.set_source_model(spec)
        if self._accepted is not None:
            self.project.state.settings["licence"] = self._accepted
            self.project.save()
            self.ctx.log(f"Licence accepted: {self._accepted['name']}")
        self.ctx.log(f"Source model: {spec}")
        self.ctx.stage_done()
