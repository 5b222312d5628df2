"""The Align & map page: alignment, the weighted mapping, initialisation, and the linguist's corrections."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt, Signal
from PySide6.QtWidgets import QComboBox, QFormLayout, QHBoxLayout, QInputDialog, QLineEdit, QTableView

from app.pages.widgets import TIPS, Fold, Page, fill_table, readable, table
from app.workers import Job
from core.errors import TweetyError, message_of
from core.resources import OverrideLine


# How a new token's embedding was made, in plain words (mapping.jsonl's origin labels), with a tooltip each.
ORIGIN_WORDS = {
    "alignment": ("from the parallel corpus", "Words aligned with this token in the translated sentence pairs"),
    "dictionary": ("from the dictionary", "The dictionary's translations of words containing this token"),
    "alignment+dictionary": ("from the parallel corpus and the dictionary", "Both kinds of evidence, weighted"),
    "identical": (
        "spelled the same",
        "Numbers, punctuation and names written the same way in both languages: the source model's own token",
    ),
    "fvt": (
        "guessed from spelling",
        "No translation evidence: the average of the source pieces that spell the token (fast vocabulary transfer)",
    ),
    "mean": ("no evidence", "Nothing to go on: the average of all source embeddings"),
    "special": ("special token", "Start, end and padding markers: the source model's own"),
    "override": ("your correction", "Set by your corrections (overrides.tsv)"),
    "kept": ("kept from the source model", "A source token kept with its own embedding (vocabulary extension)"),
}
MIN_WEIGHT = 0.01  # links lighter than this change nothing visible: not listed


def as_written(project, lines: list) -> list:
    """Override lines with `[piece]`s typed as the table shows them (▁ for a space, <0x..> for a byte) turned back
    into the tokenizers' own spelling (Ġ… for a byte-level tokenizer), which the overrides file needs."""
    import dataclasses

    def raw(text: str, tokenizer) -> str:
        if not (text.startswith("[") and text.endswith("]")):
            return text
        from core.tokenizer import is_byte_level

        try:
            tok = tokenizer()
        except (OSError, ValueError, TweetyError):  # no tokenizer yet: core says what is missing
            return text
        vocab, piece = tok.get_vocab(), text[1:-1]
        if piece in vocab:
            return text
        byte_level = is_byte_level(tok)  # spelled as the table shows it (MappingRows): <0xD1>, not Ñ
        match = next((p for p in vocab if readable(p, byte_level) == piece), None)
        return f"[{match}]" if match is not None else text

    return [
        dataclasses.replace(
            o, target=raw(o.target, project.target_tokenizer), source=raw(o.source, project.source_tokenizer)
        )
        for o in lines
    ]


def origin_words(label: str) -> str:
    return ORIGIN_WORDS.get(label, (label, ""))[0]


class MappingModel(QAbstractTableModel):
    """Rows of `mapping.jsonl`: one per target token, with its strongest source tokens."""

    HEADERS = ("ID", "Token", "Made", "From", "Source tokens it starts from (weight)")

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, str, str, str, str]] = []
        self.raw: list[dict] = []

    def set_rows(self, mapping: MappingRows) -> None:
        self.beginResetModel()
        self.raw = rows = mapping.rows
        target, source = mapping.byte_level
        self.rows = [
            (
                str(r["id"]),
                readable(r["token"], target),
                origin_words(r["origin"]),
                provenance(r),
                ", ".join(
                    f"{readable(piece, source)} ({weight:.2f})"
                    for piece, _id, weight in r["sources"][:5]
                    if weight >= MIN_WEIGHT
                ),
            )
            for r in rows
        ]
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()) -> int:
        return len(self.HEADERS)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if role == Qt.ItemDataRole.DisplayRole:
            return self.rows[index.row()][index.column()]
        if role == Qt.ItemDataRole.ToolTipRole and index.column() == 2:
            return ORIGIN_WORDS.get(self.raw[index.row()]["origin"], ("", ""))[1]
        if role == Qt.ItemDataRole.ToolTipRole and index.column() == 3:
            return provenance_tip(self.raw[index.row()])
        return None

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.HEADERS[section]
        return None


# The mapping's parts that are no translation resource (core.mapping's names) in the user's words, and what they are.
PART_WORDS = {
    "fallback": (
        "no translation resource",
        "fallback: made without translations — from the token's "
        "spelling, its bytes, or the source model's own special token (the Made column says "
        "which)",
    ),
    "override": ("your correction", "override: set by your corrections (overrides.tsv)"),
}


def shares(row: dict) -> list[tuple[str, float]]:
    """(part, share) of a token's weights, largest first: its resources' names, or core's `fallback`/`override`."""
    totals: dict[str, float] = {}
    for parts in row.get("from", []):
        for name, weight in parts.items():
            totals[name] = totals.get(name, 0.0) + weight
    total = sum(totals.values()) or 1.0
    return sorted(((name, w / total) for name, w in totals.items()), key=lambda kv: -kv[1])


def provenance(row: dict) -> str:
    """Which resources a token's weights came from, in words: “bible 70%, freedict 30%”, “bible” when it is the only
    one (not “bible 100%”), “no translation resource” (not “fallback 100%”); a share rounding to 0% or 100% beside
    another reads “<1%” or “>99%”."""
    found = shares(row)
    if len(found) == 1:
        return PART_WORDS.get(found[0][0], (found[0][0], ""))[0]

    def percent(share: float) -> str:
        n = round(100 * share)
        return "<1%" if n < 1 else ">99%" if n > 99 else f"{n}%"

    return ", ".join(f"{PART_WORDS.get(name, (name, ''))[0]} {percent(share)}" for name, share in found)


def provenance_tip(row: dict) -> str:
    """The From column's tooltip: every part's exact share, core's names explained."""
    return "\n".join(
        f"{name}: {share:.1%}" + (f" — {PART_WORDS[name][1]}" if name in PART_WORDS else "")
        for name, share in shares(row)
    )


@dataclass(frozen=True)
class MappingRows:
    """The rows of a project's mapping.jsonl, and whether its target and source pieces are written in the byte-level
    alphabet (None: not known), which `readable` needs to show a lone byte of a letter as a byte (SmolLM2 cuts `ё`
    into `Ñ` + `ĳ`, bytes 0xD1 0x91), not as the Latin-1 letter it looks like."""

    rows: list[dict] = field(default_factory=list)
    byte_level: tuple[bool | None, bool | None] = (None, None)


def read_mapping(project) -> MappingRows:
    from core.mapping import TABLE_FILE
    from core.tokenizer import is_byte_level

    with open(project.mapping_dir / TABLE_FILE, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]

    def byte_level(tokenizer) -> bool | None:
        try:
            return is_byte_level(tokenizer())
        except (OSError, ValueError, TweetyError):  # a tokenizer gone since: the table guesses per piece
            return None

    return MappingRows(rows, (byte_level(project.target_tokenizer), byte_level(project.source_tokenizer)))


class AlignPage(Page):
    key, title = "align", "Align & map"
    fills = True
    intro = (
        "Find which source pieces correspond to each new piece (alignment), turn that into a weighted "
        "mapping, and initialise the adapted model's embeddings from it."
    )
    mapping_shown = Signal()  # the project's mapping, read in the pool, is in the table

    def build(self) -> None:
        import importlib.util

        self._reading: Job | None = None  # the read whose rows the table will show (None: none)
        self._jobs: set[Job] = set()  # reads under way, kept alive until they end (the pool does not own them)
        self.aligner = QComboBox()
        self.aligner.addItem("Tweety's aligner (fast_align's model, fastest)", "torch")
        # Baselines, each measured worse (docs/results/alignment.md), offered when their optional package is here.
        if importlib.util.find_spec("systran_align") is not None:
            self.aligner.addItem("fast_align (baseline)", "fast_align")
        if importlib.util.find_spec("eflomal") is not None:
            self.aligner.addItem("eflomal (baseline, slower)", "eflomal")
        self.aligner.setToolTip(TIPS["align"])
        self.links = QComboBox()
        self.links.addItem("Most precise (recommended)", "auto")
        self.links.addItem("More links (baseline)", "grow-diag-final-and")
        self.links.setToolTip(
            "Alignment runs in both directions. Most precise keeps the links both directions agree "
            "on (intersection), which initialises best; More links also keeps neighbouring ones "
            "(grow-diag-final-and, the only choice fast_align offers)."
        )
        # The main path is one button: the defaults are what measured best, so other aligners and links — baselines
        # kept for comparisons — are folded under Advanced, as the Fine-tune page folds its numbers.
        self.advanced = Fold("Advanced", "Other aligners and links: baselines, measured worse than the defaults")
        form = QFormLayout(self.advanced.body)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Aligner", self.aligner)
        form.addRow("Links", self.links)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        self.layout_.addWidget(self.advanced)
        go = self.button("Align, map and initialise", self.go, TIPS["align"] + "\n\n" + TIPS["mapping"])
        self.layout_.addWidget(go, 0, Qt.AlignmentFlag.AlignLeft)
        self.coverage = table()
        self.coverage.setMaximumHeight(62)
        self.coverage.setToolTip("How each new token was initialised")
        self.layout_.addWidget(self.coverage)
        self.filter = QLineEdit(placeholderText="Filter tokens, e.g. ▁Dios")
        self.filter.setToolTip(TIPS["mapping"])
        self.model = MappingModel()
        self.proxy = QSortFilterProxyModel()
        self.proxy.setSourceModel(self.model)
        self.proxy.setFilterKeyColumn(1)
        self.proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.filter.textChanged.connect(self.proxy.setFilterFixedString)
        self.view = QTableView()
        self.view.setModel(self.proxy)
        self.view.verticalHeader().setVisible(False)
        self.view.horizontalHeader().setStretchLastSection(True)
        self.view.setMinimumHeight(260)
        self.layout_.addWidget(self.filter)
        self.layout_.addWidget(self.view, 1)
        edits = QHBoxLayout()
        for text, slot, tip in (
            (
                "Set sources…",
                self.set_sources,
                "Choose the source words the selected token's embedding comes from (replaces what was computed).",
            ),
            ("Remove a link…", self.remove_link, "Take a wrong source token out of the selected token's mix."),
        ):
            edits.addWidget(self.button(text, slot, tip + "\n\n" + TIPS["edit"]))
        edits.addStretch(1)
        self.layout_.addLayout(edits)

    def selected(self) -> dict | None:
        index = self.proxy.mapToSource(self.view.currentIndex())
        return self.model.raw[index.row()] if index.isValid() else None

    def set_sources(self) -> None:
        row = self.selected()
        if row is None:
            return self.ctx.show_warning("Select a token in the table first.")
        text, ok = QInputDialog.getText(
            self,
            "Set sources",
            f"Source words for {row['token']}, separated by commas\n"
            "(a word as in running text, or [piece] for exactly one source token):",
        )
        words = [w.strip() for w in text.split(",") if w.strip()] if ok else []
        if words:
            self.apply_overrides([OverrideLine(f"[{row['token']}]", w) for w in words])

    def remove_link(self) -> None:
        row = self.selected()
        if row is None or not row["sources"]:
            return self.ctx.show_warning("Select a token that has source tokens first.")
        items = [f"[{piece}]" for piece, _id, _weight in row["sources"]]
        item, ok = QInputDialog.getItem(self, "Remove a link", f"{row['token']} should not come from:", items, 0, False)
        if ok:
            self.apply_overrides([OverrideLine(f"[{row['token']}]", item, remove=True)])

    def apply_overrides(self, lines: list) -> None:
        """Record the corrections in the project's overrides file, then rebuild mapping and model from them. Both run
        in the pool: checking the lines needs the source tokenizer, which a reopened project has not loaded yet."""
        project = self.project
        if not self.confirm_rerun("map", "Rebuilding the mapping and the model"):
            return

        def fn(progress, cancel):
            try:
                project.add_overrides(as_written(project, lines))  # refuses lines naming no token before writing
            except OSError as e:
                raise TweetyError(message_of(e)) from e
            coverage = project.remap(progress=progress, cancel=cancel).coverage()
            return coverage, read_mapping(project)

        self.run(fn, self._done, "Applying your corrections")

    def go(self) -> None:
        from core.align import AlignSettings

        project = self.project
        if not self.confirm_rerun("align", "Aligning"):
            return
        settings = AlignSettings(method=self.aligner.currentData(), symmetrize=self.links.currentData())

        def fn(progress, cancel):
            project.align(settings, progress=progress, cancel=cancel)
            coverage = project.build_mapping(progress=progress, cancel=cancel).coverage()
            project.initialise(progress=progress, cancel=cancel)
            return coverage, read_mapping(project)

        self.run(fn, self._done, "Aligning, mapping and initialising")

    def _done(self, result) -> None:
        coverage, rows = result
        self.show_mapping(coverage, rows)
        self.ctx.stage_done()

    def show_mapping(self, coverage: dict, rows: MappingRows) -> None:
        from core.mapping import Origin

        labels = {o.label for o in Origin}
        coverage = {k: v for k, v in coverage.items() if v and k in labels}
        fill_table(self.coverage, [origin_words(k) for k in coverage], [list(coverage.values())])
        for c, key in enumerate(coverage):
            self.coverage.horizontalHeaderItem(c).setToolTip(ORIGIN_WORDS.get(key, ("", ""))[1])
        self.model.set_rows(rows)
        self.view.resizeColumnsToContents()

    def project_changed(self) -> None:
        chosen = self.project.state.settings.get("align", {})
        for combo, key in ((self.aligner, "method"), (self.links, "symmetrize")):
            if key in chosen and combo.findData(chosen[key]) >= 0:
                combo.setCurrentIndex(combo.findData(chosen[key]))
        # A project aligned with a baseline opens with its choices in view.
        self.advanced.set_open(self.aligner.currentIndex() > 0 or self.links.currentIndex() > 0)
        self.model.set_rows(MappingRows())
        self.coverage.clear()
        self._reading = None  # a read still under way is of the project before: its rows are not shown
        if "map" in self.project.state.stages:
            self.read_mapping_in_pool()

    def read_mapping_in_pool(self) -> None:
        """Fill the table from the project's mapping.jsonl, parsed in the pool: one JSON line per target token (32k
        for a big vocabulary) would freeze the window while a project opens."""
        project, summary = self.project, self.project.state.stages["map"].summary
        job = Job(lambda progress, cancel: read_mapping(project), "reading the mapping")

        def show(rows: MappingRows) -> None:
            if self._reading is job:  # still the project shown, and no newer read
                self._reading = None
                self.show_mapping(summary, rows)
                self.mapping_shown.emit()

        job.signals.finished.connect(show)
        job.signals.failed.connect(lambda message: self.ctx.log(f"The mapping could not be read: {message}"))
        job.signals.crashed.connect(lambda tb: self.ctx.log(f"The mapping could not be read:\n{tb}"))
        for signal in (job.signals.finished, job.signals.failed, job.signals.crashed):
            signal.connect(lambda *_: self._jobs.discard(job))
        self._reading = job
        self._jobs.add(job.start(self.ctx.pool))
