"""The Fine-tune page: train the new embeddings here (pause, resume) or prepare a cluster job; and teach the Hydra to
translate (app.pages.translation)."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
)

from dataclasses import asdict

from app.pages.translation import TeachBox
from app.pages.widgets import STAGE_WORDS, TIPS, Fold, Page, spin
from app.workers import Job
from core.errors import TweetyError, message_of

# A preset's time is the page's estimate of its settings (`_update_estimate`), never written here: a label saying
# “about 5 min” beside an estimate saying “about 6 min” left a user wondering which to believe.
PRESET_LABELS = (("Quick look", "quick"), ("Good — GPU", "gpu"), ("Custom", "custom"))
SHOWN = {"stage", "outer_layers", "steps", "lr", "batch_size", "block_size"}  # the settings the page has fields for


def preset_of(settings) -> str:
    from core.finetune import PRESETS

    return next((key for key, preset in PRESETS.items() if preset == settings), "custom")


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} hours"


def training_device() -> str:
    """What training runs on, in words. Imports torch (seconds, the first time): call it in the pool."""
    import torch

    return (
        f"GPU ({torch.cuda.get_device_name(0)}, bf16)"
        if torch.cuda.is_available()
        else "CPU — works, but a GPU is many times faster for more than a few hundred steps"
    )


def model_scale(project) -> float:
    """How many times the built-in 135M model the project's adapted model is (core.models.parameter_count, from its
    weights' headers), 1 when unknown: training time grows with it."""
    from core.models import parameter_count

    try:
        return max(0.1, parameter_count(project.model_dir) / 135e6)
    except (OSError, TweetyError):  # not initialised yet
        return 1.0


class FineTunePage(Page):
    key, title = "finetune", "Fine-tune"
    intro = (
        "Optional, and where most of the gain is: train the new embeddings on your target text so the model "
        "really reads the language. Held-out bits per byte should fall as it trains. Pause or stop at any "
        "time: a stopped run resumes where it left off."
    )
    fills = True
    device_shown = Signal()  # the training device, found in the pool, is on the page

    def build(self) -> None:
        import pyqtgraph as pg
        from PySide6.QtWidgets import QSizePolicy

        from core.finetune import FinetuneSettings

        d = FinetuneSettings()
        form = QFormLayout()
        self.preset = QComboBox()
        for label, key in PRESET_LABELS:
            self.preset.addItem(label, key)
        self.preset.setToolTip(
            "Quick look: a short run on this computer's processor, enough to see the held-out "
            "curve fall. Good — GPU: a run worth keeping, practical on a graphics card. Custom: "
            "your own numbers."
        )
        self.stage = QComboBox()
        self.stage.addItem("Embeddings and output layer", "embeddings")
        self.stage.addItem("Embeddings, output layer and outer transformer layers", "outer-layers")
        self.stage.setToolTip(TIPS["stage"])
        self.outer = spin(
            1,
            64,
            d.outer_layers,
            "How many of the first and of the last transformer layers train in the outer-layers stage",
        )
        self.stage.currentIndexChanged.connect(lambda _i: self.outer.setEnabled(self.stage.currentIndex() == 1))
        self.outer.setEnabled(False)
        self.steps = spin(1, 1_000_000, d.steps, TIPS["steps"])
        self.lr = QDoubleSpinBox(decimals=5, minimum=1e-5, maximum=0.1, singleStep=1e-4, value=d.lr)
        self.lr.setToolTip(
            "Learning rate: how big each training step is. The default suits the embeddings stage; "
            "use a smaller one (e.g. 0.0002) when transformer layers train too."
        )
        self.batch = spin(1, 1024, d.batch_size, "Sequences per step. Larger batches use more memory.")
        self.block = spin(16, 8192, d.block_size, "Tokens per training sequence")
        # The main path: a preset, what trains, how long, and what that costs. The numbers behind a preset and the
        # cluster job are folded under Advanced: a first user meets no learning rate nor torchrun rendezvous.
        form.addRow("Preset", self.preset)
        form.addRow("What trains", self.stage)
        form.addRow("Steps", self.steps)
        self.device = QLabel()
        self._device_job: Job | None = None  # finding the device: torch is imported in the pool, never here
        form.addRow("Trains on", self.device)
        self.estimate = QLabel()
        self.estimate.setToolTip(
            "From the tokens the run reads and the speed measured on this computer (a finished "
            "run of this project) or, before any run, a typical speed for the model's size"
        )
        form.addRow("Estimate", self.estimate)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        from core.runtime import default_threads

        self.threads = spin(
            1,
            256,
            default_threads(),
            "CPU threads for training. Default: physical cores minus one "
            "— with every core busy, anything else running (the window, "
            "another program) can slow training down several times "
            "(one step: 3 s with 1 thread, 21 s with 2 on a busy 2-core "
            "machine).",
        )
        self.advanced = Fold(
            "Advanced", "Learning rate, batch and sequence sizes, CPU threads, and training on a cluster"
        )
        numbers = QFormLayout()
        numbers.addRow("Outer layers", self.outer)
        numbers.addRow("Learning rate", self.lr)
        numbers.addRow("Batch size", self.batch)
        numbers.addRow("Sequence length", self.block)
        numbers.addRow("CPU threads", self.threads)
        numbers.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        folded = QHBoxLayout(self.advanced.body)  # side by side: opened, the page still fits the window's height
        folded.setContentsMargins(0, 0, 0, 0)
        folded.addLayout(numbers)
        main = QVBoxLayout()
        main.addLayout(form)
        main.addWidget(self.advanced)
        top = QHBoxLayout()
        top.addLayout(main, 3)
        self.layout_.addLayout(top)
        cluster = QGroupBox("Or train on a cluster (torchrun: several GPUs or machines)")
        cluster_form = QFormLayout(cluster)
        self.nproc = spin(
            1,
            64,
            1,
            "Training processes per machine: one per GPU. The batch size is split between all "
            "processes, so it must be a multiple of their number.",
        )
        self.nnodes = spin(1, 1024, 1, "Machines in the job; each runs the job's launch.sh (or use its SLURM script)")
        self.rdzv = QLineEdit(placeholderText="HOST:PORT where the machines meet, e.g. node1:29500")
        self.nnodes.valueChanged.connect(lambda n: self.rdzv.setEnabled(n > 1))
        self.rdzv.setEnabled(False)
        self.job_info = QLabel(wordWrap=True, textInteractionFlags=Qt.TextInteractionFlag.TextSelectableByMouse)
        cluster_form.addRow("Processes per machine", self.nproc)
        cluster_form.addRow("Machines", self.nnodes)
        cluster_form.addRow("Rendezvous", self.rdzv)
        prepare = self.button(
            "Prepare a cluster job",
            self.prepare_cluster_job,
            "Write job.json, launch.sh and "
            "slurm.sbatch into the project's cluster-job folder; nothing runs here (docs/cluster.md)",
        )
        prepare.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)  # not the form's full width
        elsewhere = self.button(
            "Use a model trained elsewhere…",
            self.choose_trained_elsewhere,
            "Choose the output folder of this project's cluster job (or of a run on another "
            "machine): Evaluate, Export and Chat then use that model",
        )
        elsewhere.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        buttons = QHBoxLayout()
        buttons.addWidget(prepare)
        buttons.addWidget(elsewhere)
        buttons.addStretch(1)
        cluster_form.addRow(buttons)
        cluster_form.addRow(self.job_info)
        cluster_form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        self.rdzv.setMinimumWidth(220)
        row = QHBoxLayout()
        self.start_button = self.button(
            "Start", self.start, "Start a new run on this machine (from the initialised model)"
        )
        self.resume_button = self.button("Resume", self.resume, "Continue the stopped run from its last step")
        self.pause_button = self.button("Pause", self.toggle_pause, "Pause training (the Cancel button stops it)")
        self.pause_button.setEnabled(False)
        self.resume_button.setEnabled(False)
        for b in (self.start_button, self.resume_button, self.pause_button):
            row.addWidget(b)
        self.status = QLabel()
        self.status.setWordWrap(True)
        row.addWidget(self.status, 1)
        self.layout_.addLayout(row)
        folded.addWidget(cluster, 1)
        self.teach = TeachBox(self.ctx)
        right = QVBoxLayout()
        right.addWidget(self.teach)
        right.addStretch(1)
        top.addLayout(right, 2)

        pg.setConfigOptions(antialias=True, background="w", foreground="#333")
        plots = pg.GraphicsLayoutWidget()
        self.loss_plot = plots.addPlot(title="Training loss")
        self.bpb_plot = plots.addPlot(
            title=f"Held-out bits per byte, first {d.eval_max_bytes // 1000} kB (lower is better)"
        )
        for plot in (self.loss_plot, self.bpb_plot):
            plot.setLabel("bottom", "step")
            plot.showGrid(x=True, y=True, alpha=0.3)
        self.loss_curve = self.loss_plot.plot(pen=pg.mkPen("#4c72b0", width=1.5))
        self.bpb_curve = self.bpb_plot.plot(
            pen=pg.mkPen("#dd8452", width=2), symbol="o", symbolSize=6, symbolBrush="#dd8452"
        )
        plots.setToolTip(TIPS["bpb"])
        plots.setMinimumHeight(180)  # room for the Advanced settings opened, in an 800-pixel-high window
        self.layout_.addWidget(plots, 1)
        self.bpb_plot.getAxis("bottom").enableAutoSIPrefix(False)
        self.loss_plot.getAxis("bottom").enableAutoSIPrefix(False)
        self.job = None
        self.points: dict[str, list[tuple[float, float]]] = {"loss": [], "bpb": []}
        self._applying = False
        self.preset.currentIndexChanged.connect(lambda _i: self._apply_preset())
        for box in (self.steps, self.batch, self.block, self.outer):
            box.valueChanged.connect(self._edited)
        self.lr.valueChanged.connect(self._edited)
        self.stage.currentIndexChanged.connect(self._edited)
        self._apply_preset()

    # -- presets and the estimate --
    def _apply_preset(self) -> None:
        from core.finetune import PRESETS

        key = self.preset.currentData()
        if key in PRESETS:
            self.show_settings(PRESETS[key], preset=key)
        self._update_estimate()

    def show_settings(self, s, preset: str = "custom") -> None:
        """Put settings (a FinetuneSettings) into the fields, and the matching preset into the preset box."""
        self._applying = True
        try:
            self.stage.setCurrentIndex(max(0, self.stage.findData(s.stage)))
            self.outer.setValue(s.outer_layers)
            self.steps.setValue(s.steps)
            self.lr.setValue(s.lr)
            self.batch.setValue(s.batch_size)
            self.block.setValue(s.block_size)
            self._extra = {k: v for k, v in asdict(s).items() if k not in SHOWN}
            self.preset.setCurrentIndex(self.preset.findData(preset))
        finally:
            self._applying = False
        self._update_estimate()

    def _edited(self, *_args) -> None:
        if self._applying:
            return
        from core.finetune import PRESETS

        key = self.preset.currentData()
        if key in PRESETS and self.settings() != PRESETS[key]:
            self._applying = True
            self.preset.setCurrentIndex(self.preset.findData("custom"))
            self._applying = False
        self._update_estimate()

    def _update_estimate(self) -> None:
        """The estimate of the fields' run, and each preset's own in its label: one computation for both."""
        from core.finetune import PRESETS

        settings = self.settings()
        seconds, rate, measured = self.estimate_of(settings)
        tokens = settings.steps * settings.batch_size * settings.grad_accum * settings.block_size
        self.estimate.setText(
            f"about {format_duration(seconds)} on this computer ({tokens:,} tokens at "
            f"{rate:,.0f} tokens/s, {'measured in this project' if measured else 'typical'})"
        )
        for label, key in PRESET_LABELS:
            if key in PRESETS:
                self.preset.setItemText(
                    self.preset.findData(key),
                    f"{label} — about {format_duration(self.estimate_of(PRESETS[key])[0])} on this computer",
                )

    def estimate_of(self, settings) -> tuple[float, float, bool]:
        """(seconds, training tokens per second, that speed measured here?) of a run with these settings."""
        from core.finetune import estimate_seconds
        from core.finetune.settings import heldout_tokens

        rate, measured = self.training_speed(settings)
        return estimate_seconds(settings, rate, heldout_tokens(settings)), rate, measured

    def training_speed(self, settings) -> tuple[float, bool]:
        """(training tokens per second, measured here?): the last run of this project on this computer, else a
        typical speed for the device and the model's size."""
        import sys

        from core.finetune import CPU_TOKENS_PER_S_135M, GPU_TOKENS_PER_S_135M

        torch = sys.modules.get("torch")  # not imported here for this: the window opens before torch is loaded

        project = self.project
        if project is not None:
            record = project.state.stages.get("finetune")
            speed = record.summary.get("tokens_per_s") if record else None
            if speed:
                return float(speed), True
        base = GPU_TOKENS_PER_S_135M if torch is not None and torch.cuda.is_available() else CPU_TOKENS_PER_S_135M
        scale = model_scale(project) if project is not None else 1.0
        if settings.stage == "outer-layers":
            scale *= 1.3
        return base / scale, False

    def settings(self, steps_only_from_run: dict | None = None):
        from core.finetune import FinetuneSettings

        if steps_only_from_run:  # resuming: the run's own settings, only the number of steps may change
            return FinetuneSettings.from_dict({**steps_only_from_run, "steps": self.steps.value()})
        return FinetuneSettings(
            **{
                **getattr(self, "_extra", {}),
                **dict(
                    stage=self.stage.currentData(),
                    outer_layers=self.outer.value(),
                    steps=self.steps.value(),
                    lr=self.lr.value(),
                    batch_size=self.batch.value(),
                    block_size=self.block.value(),
                ),
            }
        )

    def start(self) -> None:
        if not self.idle():  # before anything is discarded: the running job may be reading the previous run
            return
        run = self.project.finetune_checkpoint()
        if (
            run
            and not run.finished
            and not self.ctx.confirm(
                f"A stopped run (step {run.step} of {run.settings['steps']}) would be discarded. Start over?"
            )
        ):
            return
        if (
            (not run or run.finished)
            and "finetune" in self.project.state.stages
            and not self.ctx.confirm(
                "Starting again replaces the fine-tuned model"
                + (
                    f" and discards {', '.join(STAGE_WORDS[s] for s in self.project.stale_after('finetune'))}"
                    if self.project.stale_after("finetune")
                    else ""
                )
                + ". Continue?"
            )
        ):
            return
        self.project.discard_finetune()
        self._go(self.settings(), resume=False)

    def resume(self) -> None:
        run = self.project.finetune_checkpoint()
        if run is None:
            return
        self._go(self.settings(run.settings), resume=True)

    def prepare_cluster_job(self) -> None:
        """The project's fine-tuning as a job folder for torchrun (core.distributed.write_job): the stopped run's
        own settings when there is one (the job resumes it), else the page's. Its checkpoint and model land in the
        project's finetuned/ folder, where this page shows them."""
        from core import distributed

        run = self.project.finetune_checkpoint()
        resume = run is not None and not run.finished
        settings = self.settings(run.settings) if resume else self.settings()
        launch = distributed.LaunchSettings(self.nproc.value(), self.nnodes.value(), self.rdzv.text().strip())
        try:
            train, held = self.project.texts()
            folder, command = distributed.write_job(
                self.project.folder / "cluster-job",
                self.project.model_dir,
                train,
                held,
                self.project.finetune_dir,
                settings,
                launch,
                resume=resume,
            )
        except (OSError, TweetyError) as e:  # a cluster-job folder where one may not write
            self.ctx.show_warning(message_of(e))
            return
        where = f"on each of the {launch.nnodes} machines" if launch.nnodes > 1 else "on the machine"
        self.job_info.setText(
            f"{'Resuming job' if resume else 'Job'} written to {folder}. Run launch.sh {where}, "
            "or submit slurm.sbatch with sbatch."
        )
        self.ctx.log(f"Cluster job written to {folder}: {command}")

    def _go(self, settings, *, resume: bool) -> None:
        project, threads = self.project, self.threads.value()
        self._plot_run(project.finetune_checkpoint() if resume else None)

        def fn(progress, cancel):
            import torch

            before = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                return project.finetune(settings, resume=resume, progress=progress, cancel=cancel)
            finally:
                torch.set_num_threads(before)

        self.job = self.run(fn, self._done, "Fine-tuning", on_end=self._ended)
        if self.job is not None:
            self.job.signals.progress.connect(self._progress)
            self.pause_button.setEnabled(True)
            for b in (self.start_button, self.resume_button):
                b.setEnabled(False)

    def toggle_pause(self) -> None:
        token = self.job.token
        if token.paused:
            token.resume()
            self.pause_button.setText("Pause")
            self.ctx.log("Fine-tuning: continued")
        else:
            token.pause()
            self.pause_button.setText("Continue")
            self.status.setText(self.status.text() + " — pausing after this step")
            self.ctx.log("Fine-tuning: paused")

    def _progress(self, p) -> None:
        m = p.metrics
        if not m or self.job is None:  # (a report queued behind the job's end says nothing new)
            return
        if "loss" in m:
            self.points["loss"].append((m["step"], m["loss"]))
        if "heldout_bpb" in m:
            self.points["bpb"].append((m["step"], m["heldout_bpb"]))
        self._redraw()
        if "loss" in m:
            bpb = self.points["bpb"][-1][1] if self.points["bpb"] else None
            self.status.setText(
                f"Step {m['step']:,} of {p.total:,.0f} · loss {m['loss']:.3f}"
                + (f" · held-out {bpb:.3f} bits/byte" if bpb is not None else "")
                + f" · {m['tokens_per_s']:,.0f} tokens/s"
            )

    def _redraw(self) -> None:
        steps = self.steps.value()
        for key, curve, plot in (("loss", self.loss_curve, self.loss_plot), ("bpb", self.bpb_curve, self.bpb_plot)):
            xs, ys = zip(*sorted(self.points[key])) if self.points[key] else ((), ())
            curve.setData(list(xs), list(ys))
            # Sensible axes from the first point: steps 0…the run's length, values with a margin around them.
            plot.setXRange(0, max([steps, *xs]), padding=0.02)
            if ys:
                low, high = min(ys), max(ys)
                margin = max(0.05, 0.1 * (high - low))
                plot.setYRange(low - margin, high + margin, padding=0)

    def _plot_run(self, run) -> None:
        self.points = {"loss": [], "bpb": []}
        if run is not None:
            if run.initial_bpb is not None:
                self.points["bpb"].append((0, run.initial_bpb))
            for r in run.curve:
                self.points["loss"].append((r.step, r.loss))
                if r.heldout_bpb is not None:
                    self.points["bpb"].append((r.step, r.heldout_bpb))
        self._redraw()

    def _done(self, result) -> None:
        self.ctx.stage_done()

    def _ended(self) -> None:
        self.job = None
        self.pause_button.setText("Pause")
        self.pause_button.setEnabled(False)
        self.start_button.setEnabled(True)
        self._show_state()
        self._update_estimate()  # the run's own speed, from now on

    def choose_trained_elsewhere(self) -> None:
        from PySide6.QtWidgets import QFileDialog

        folder = QFileDialog.getExistingDirectory(
            self, "The fine-tuned model's folder (the cluster job's output)", str(self.project.finetune_dir)
        )
        if folder:
            self.use_trained_elsewhere(folder)

    def use_trained_elsewhere(self, folder: str) -> None:
        """Record a model fine-tuned elsewhere as the project's fine-tuned model (core checks it is this project's)."""
        if not self.idle():  # a running job may be reading the current fine-tuned model
            return
        try:
            used = self.project.record_finetuned(folder)
        except (OSError, TweetyError) as e:
            self.ctx.show_warning(message_of(e))
            return
        self.ctx.log(f"Fine-tuned model: {used} (trained elsewhere)")
        self._plot_run(self.project.finetune_checkpoint())
        self._show_state()
        self.ctx.stage_done()

    def _show_state(self) -> None:
        record = self.project.state.stages.get("finetune")
        elsewhere = record.summary.get("trained elsewhere") if record else None
        if elsewhere:
            self.resume_button.setEnabled(False)
            self.status.setText(f"Using the model trained elsewhere: {elsewhere}. Evaluate and Export use it.")
            return
        run = self.project.finetune_checkpoint()
        self.resume_button.setEnabled(run is not None)
        if run is None:
            self.status.setText("Not fine-tuned yet: the Evaluate and Export pages use the initialised model.")
        elif not run.finished:
            self.status.setText(
                f"Stopped at step {run.step:,} of {run.settings['steps']:,}. Resume continues from there."
            )
        else:
            # The model written is calibrated after the last step (FinetuneSettings.calibration): its figure is the
            # recorded one; the curve's last point is the trained weights' before it.
            bpbs = [r.heldout_bpb for r in run.curve if r.heldout_bpb is not None]
            final = record.summary.get("final_bpb") if record and record.summary.get("steps") == run.step else None
            final = final if final is not None else bpbs[-1] if bpbs else None
            # Said, so that the figure and the chart's last point do not seem to disagree.
            calibrated = (
                f" (the chart's last point {bpbs[-1]:.3f}, then calibrated to the text's word frequencies)"
                if bpbs and final is not None and round(final, 3) != round(bpbs[-1], 3)
                else ""
            )
            self.status.setText(
                f"Done: {run.step:,} steps; held-out bits per byte {run.initial_bpb:.3f} → "
                f"{final:.3f}{calibrated}. Resume with more steps to train further."
                if final is not None and run.initial_bpb is not None
                else f"Done: {run.step:,} steps."
            )

    def project_changed(self) -> None:
        self.teach.show_project(self.project)
        if self.job is not None:
            return
        from core.finetune import FinetuneSettings

        run = self.project.finetune_checkpoint()
        saved = run.settings if run is not None else self.project.state.settings.get("finetune")
        if saved:  # the fields show the run the project has, not the defaults
            settings = FinetuneSettings.from_dict(saved)
            self.show_settings(settings, preset=preset_of(settings))
        self._plot_run(run)
        self._show_state()

    def shown(self) -> None:
        self.teach.show_project(self.project)
        self._update_estimate()
        if self._device_job is None:  # once: the device does not change while the wizard runs
            self.device.setText("finding out…")
            self._device_job = Job(lambda progress, cancel: training_device(), "finding the training device")
            self._device_job.signals.finished.connect(self._show_device)
            self._device_job.signals.crashed.connect(lambda tb: self.ctx.log(f"No training device found:\n{tb}"))
            self._device_job.start(self.ctx.pool)

    def _show_device(self, text: str) -> None:
        self.device.setText(text)
        self._update_estimate()  # a GPU's typical speed, now that torch says there is one
        self.device_shown.emit()
