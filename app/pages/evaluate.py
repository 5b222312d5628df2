"""The Evaluate page: bits per byte of the source, initialised and fine-tuned models on held-out text, a plain verdict
and a few sample continuations side by side; and, on its Translation tab, the project's translators measured on
held-out pairs (app.pages.translation)."""

from __future__ import annotations

from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QTabWidget, QVBoxLayout, QWidget

from app.pages.translation import MeasureBox, missing
from app.pages.widgets import TIPS, Page, fill_table, table
from core.evaluate import BPB_VS_PERPLEXITY, SAMPLE_BYTES


class EvaluatePage(Page):
    key, title = "evaluate", "Evaluate"
    intro = (
        "Compare the source model (with its own tokenizer), the adapted model as initialised and, once "
        "fine-tuned, the fine-tuned model on held-out text in the new language — text none of them trained on."
    )
    max_bytes = SAMPLE_BYTES  # the default sample; tests use a smaller one
    samples = 3  # sample continuations shown side by side
    fills = True

    def build(self) -> None:
        self.tabs = QTabWidget()
        reading = QWidget()
        self.tabs.addTab(reading, "Reading the language")
        self.translation = MeasureBox(self.ctx)
        self.tabs.addTab(self.translation, "Translation")
        self.layout_.addWidget(self.tabs, 1)
        col = QVBoxLayout(reading)
        row = QHBoxLayout()
        row.addWidget(self.button("Run evaluation", self.go, TIPS["bpb"]))
        self.full = QCheckBox("All held-out text (slower)")
        self.full.setToolTip(
            "By default the first 16 kB of the held-out text are measured — the same sample every "
            "time, about 2 minutes for three small models on 2 CPU cores. Tick for all of it."
        )
        row.addWidget(self.full)
        row.addStretch(1)
        col.addLayout(row)
        self.sample = QLabel()
        col.addWidget(self.sample)
        self.results = table()
        self.results.setMaximumHeight(150)
        self.results.setToolTip(TIPS["bpb"] + "\n\n" + TIPS["tpb"])
        col.addWidget(self.results)
        self.verdict = QLabel()
        self.verdict.setWordWrap(True)
        self.verdict.setStyleSheet("font-size: 14px; font-weight: bold;")
        col.addWidget(self.verdict)
        explain = QLabel(BPB_VS_PERPLEXITY)
        explain.setWordWrap(True)
        explain.setStyleSheet("color: #555;")
        col.addWidget(explain)
        col.addWidget(QLabel("<b>How each model continues the same openings</b> (held-out text, greedy):"))
        self.continuations = table()
        self.continuations.setMinimumHeight(140)
        self.continuations.setWordWrap(True)
        col.addWidget(self.continuations)

    def go(self) -> None:
        from core import resources
        from core.evaluate import OverallProgress, continuations, prompts_from
        from core.models import load_model

        project, max_bytes, k = self.project, 0 if self.full.isChecked() else self.max_bytes, self.samples
        names = ["source model", "adapted model"] + (["fine-tuned model"] if "finetune" in project.state.stages else [])

        def fn(progress, cancel):
            results = project.evaluate(max_bytes=max_bytes, progress=OverallProgress(progress, names), cancel=cancel)
            progress_text = resources.head_bytes(resources.read_text(project.texts()[1]), max_bytes)
            prompts = prompts_from(progress_text, k)
            from core.jobs import Progress

            progress(Progress("Evaluating", len(names), len(names) + 1, "writing sample continuations"))
            source = continuations(*project.source(), prompts, cancel=cancel)
            adapted = continuations(*load_model(project.final_model_dir), prompts, cancel=cancel)
            return results, list(zip(prompts, source, adapted))

        self.run(fn, self._done, "Evaluating")

    def _done(self, result) -> None:
        results, samples = result
        self.show_results(results)
        self.show_continuations(samples)
        self.ctx.stage_done()

    def show_results(self, results: dict) -> None:
        from core.evaluate import verdict

        metrics = (
            ("Bits per byte (lower is better)", "bits_per_byte"),
            ("Tokens per byte (fewer: shorter text)", "tokens_per_byte"),
            ("Token perplexity", "token_ppl"),
            ("Bytes evaluated", "bytes"),
        )
        fill_table(
            self.results, ["Metric", *results], [[label, *(r[key] for r in results.values())] for label, key in metrics]
        )
        self.results.item(0, 0).setToolTip(TIPS["bpb"])
        self.results.item(1, 0).setToolTip(TIPS["tpb"])
        self.results.item(2, 0).setToolTip(BPB_VS_PERPLEXITY)
        n = next(iter(results.values()))["bytes"]
        sample = f"the first {n:,} bytes of the held-out text"
        self.sample.setText(f"Measured on {sample} (the same sample for every model).")
        inputs = self.project.state.inputs if self.project is not None else None
        self.verdict.setText(verdict(results, sample, inputs.language_name if inputs else ""))

    def show_continuations(self, samples: list[tuple[str, str, str]]) -> None:
        fill_table(
            self.continuations,
            ["Opening", "Source model", "Your model"],
            [[prompt, f"… {a}", f"… {b}"] for prompt, a, b in samples],
        )
        self.continuations.resizeRowsToContents()

    def project_changed(self) -> None:
        self.shown()
        record = self.project.state.stages.get("evaluate")
        self.continuations.clear()
        self.continuations.setRowCount(0)
        if record:
            self.show_results(record.summary)
        else:
            self.results.clear()
            self.verdict.clear()
            self.sample.clear()

    def shown(self) -> None:
        """The Translation tab follows the project: enabled with a parallel corpus, its last measurement shown (a
        Hydra taught since has none)."""
        why = missing(self.project)
        self.tabs.setTabEnabled(1, not why)
        self.tabs.setTabToolTip(1, why or "How well each translator translates held-out pairs (chrF)")
        self.translation.show_project(self.project)
