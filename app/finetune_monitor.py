"""The live view of a training run: progress with an ETA, memory, loss plot, ROUGE table and examples."""

from __future__ import annotations

import html
import math
import time

from PySide6.QtCharts import QChart, QChartView, QLineSeries, QValueAxis
from PySide6.QtCore import QMargins, QPointF, Qt
from PySide6.QtGui import QPainter, QPen
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QProgressBar,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from synopsis.engine.training import EvaluationEvent, EvaluationExample, StepEvent

from .eta import format_duration

GIB = 1024**3
ROUGE_COLUMNS = (("rouge1", "R-1"), ("rouge2", "R-2"), ("rougeL", "R-L"), ("rougeLsum", "R-Lsum"))
TABLE_HEADERS = ["Step", "Loss"] + [label for _key, label in ROUGE_COLUMNS] + ["Best"]
EXCERPT_CHARACTERS = 300


def nice_interval(span: float, ticks: int = 6) -> int:
    """Return a whole tick interval of 1, 2 or 5 times a power of ten that splits ``span`` into at most ``ticks`` parts."""
    interval = 1
    while span / interval > ticks:
        for factor in (2, 5 / 2, 2):  # 1 -> 2 -> 5 -> 10 -> 20 ...
            interval = round(interval * factor)
            if span / interval <= ticks:
                break
    return interval


def format_memory(size: int | None) -> str:
    if size is None:
        return "unknown"
    if size < GIB:
        return f"{size / 1024**2:.0f} MiB"
    return f"{size / GIB:.1f} GiB"


class StepClock:
    """The rate of optimizer steps since this session's first step, for an ETA.

    A resumed run starts part-way, so only steps taken in this session count.
    Evaluations that ran in between are part of the measured rate, so the
    ETA assumes they keep recurring as often as they did.
    """

    def __init__(self) -> None:
        self.started: float | None = None
        self.first_step = 0
        self.step = 0
        self.total = 0

    def update(self, step: int, total: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self.started is None:
            # The first reported step finished just now; count from the one before it.
            self.started, self.first_step = now, step
        self.step, self.total = step, total

    def remaining(self, now: float | None = None) -> float | None:
        """Return the estimated seconds to the last step, or None until two steps were seen."""
        now = time.monotonic() if now is None else now
        done = self.step - self.first_step
        if self.started is None or done <= 0:
            return None
        return (self.total - self.step) * (now - self.started) / done

    def describe(self, now: float | None = None) -> str:
        if self.started is None:
            return "Waiting for the first step…"
        text = f"Step {self.step:,} of {self.total:,}"
        left = self.remaining(now)
        if left is not None and self.step < self.total:
            text += f" · about {format_duration(left)} left"
        return text


class LossChart(QChartView):
    """Training loss per step and validation loss per evaluation, against the step."""

    def __init__(self, parent: QWidget | None = None) -> None:
        chart = QChart()
        chart.setTitle("Loss (nats per summary token)")
        chart.setMargins(QMargins(4, 4, 4, 4))
        chart.legend().setAlignment(Qt.AlignmentFlag.AlignBottom)
        super().__init__(chart, parent)
        self.setRenderHint(QPainter.RenderHint.Antialiasing)
        self.setMinimumHeight(220)

        self.train_series = QLineSeries()
        self.train_series.setName("training")
        self.validation_series = QLineSeries()
        self.validation_series.setName("validation")
        self.validation_series.setPointsVisible(True)
        pen = QPen(Qt.GlobalColor.darkRed)
        pen.setWidth(2)
        self.validation_series.setPen(pen)
        self.x_axis = QValueAxis()
        self.x_axis.setTitleText("step")
        self.x_axis.setLabelFormat("%d")
        self.x_axis.setTickType(QValueAxis.TickType.TicksDynamic)
        self.x_axis.setTickAnchor(0)
        self.y_axis = QValueAxis()
        self.y_axis.setTitleText("loss")
        for series in (self.train_series, self.validation_series):
            chart.addSeries(series)
        chart.addAxis(self.x_axis, Qt.AlignmentFlag.AlignBottom)
        chart.addAxis(self.y_axis, Qt.AlignmentFlag.AlignLeft)
        for series in (self.train_series, self.validation_series):
            series.attachAxis(self.x_axis)
            series.attachAxis(self.y_axis)
        self.clear()

    def clear(self) -> None:
        self.train_series.clear()
        self.validation_series.clear()
        self._max_step = 1
        self._losses: list[float] = []
        self._rescale()

    def add_training(self, step: int, loss: float) -> None:
        # A skipped step has no loss; the curve just has no point there.
        if math.isfinite(loss):
            self.train_series.append(QPointF(step, loss))
            self._note(step, loss)

    def add_validation(self, step: int, loss: float) -> None:
        if math.isfinite(loss):
            self.validation_series.append(QPointF(step, loss))
            self._note(step, loss)

    def set_total(self, total: int) -> None:
        self._max_step = max(self._max_step, total)
        self._rescale()

    def _note(self, step: int, loss: float) -> None:
        self._max_step = max(self._max_step, step)
        self._losses.append(loss)
        self._rescale()

    def _rescale(self) -> None:
        self.x_axis.setRange(0, self._max_step)
        # Ticks on whole steps; a fixed tick count would put them between steps.
        self.x_axis.setTickInterval(nice_interval(self._max_step))
        if self._losses:
            low, high = min(self._losses), max(self._losses)
            pad = max((high - low) * 0.08, 0.05)
            self.y_axis.setRange(max(low - pad, 0.0), high + pad)
        else:
            self.y_axis.setRange(0, 1)


class TrainingMonitor(QWidget):
    """Everything a running (or resumed) training run reports, for the dialog's Training tab."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.clock = StepClock()
        self._step_detail = ""  # loss, learning rate and duration of the latest step
        self.status_label = QLabel("No run yet. Press Start to train.")
        self.status_label.setWordWrap(True)
        self.progress_bar = QProgressBar()
        self.progress_bar.setTextVisible(False)
        self.step_label = QLabel()
        self.memory_label = QLabel()
        self.memory_label.setToolTip("Memory held by tensors on the GPU; on the CPU, the whole process's resident memory")

        self.chart = LossChart()
        self.table = QTableWidget(0, len(TABLE_HEADERS))
        self.table.setHorizontalHeaderLabels(TABLE_HEADERS)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setToolTip(
            "Validation scores per evaluation: loss in nats per summary token; ROUGE-1, ROUGE-2, ROUGE-L "
            "and ROUGE-Lsum F1 in percent; ★ marks the best checkpoint"
        )
        self.best_examples = QTextBrowser()
        self.worst_examples = QTextBrowser()
        examples = QTabWidget()
        examples.addTab(self.best_examples, "Best validation examples")
        examples.addTab(self.worst_examples, "Worst validation examples")

        lower = QSplitter(Qt.Orientation.Horizontal)
        lower.addWidget(self.table)
        lower.addWidget(examples)
        lower.setSizes([380, 420])
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.chart)
        splitter.addWidget(lower)
        splitter.setSizes([300, 260])

        layout = QVBoxLayout(self)
        layout.addWidget(self.status_label)
        layout.addWidget(self.progress_bar)
        info = QVBoxLayout()
        info.addWidget(self.step_label)
        info.addWidget(self.memory_label)
        layout.addLayout(info)
        layout.addWidget(splitter, 1)

    def reset(self) -> None:
        self.clock = StepClock()
        self._step_detail = ""
        self.chart.clear()
        self.table.setRowCount(0)
        self.best_examples.clear()
        self.worst_examples.clear()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.step_label.clear()
        self.memory_label.clear()

    def load_history(self, rows: list[dict], best_step: int | None = None) -> None:
        """Draw the rows of an earlier session's metrics.jsonl, so a resumed run's curves continue.

        ``best_step`` is the step of the best checkpoint so far, whose row gets the star.
        """
        for row in rows:
            step = row.get("step")
            if not isinstance(step, int):
                continue
            if isinstance(row.get("eval"), dict):
                self._add_evaluation_row(step, row["eval"], is_best=step == best_step)
            elif isinstance(row.get("loss"), (int, float)):
                self.chart.add_training(step, float(row["loss"]))

    def set_status(self, text: str) -> None:
        self.status_label.setText(text)

    # Reports ----------------------------------------------------------------

    def add_step(self, event: StepEvent) -> None:
        self.clock.update(event.step, event.total_steps)
        self.chart.set_total(event.total_steps)
        self.chart.add_training(event.step, event.loss)
        self.progress_bar.setRange(0, max(event.total_steps, 1))
        self.progress_bar.setValue(event.step)
        loss = "skipped (not finite)" if event.skipped else f"{event.loss:.4f}"
        self._step_detail = f"loss {loss} · learning rate {event.learning_rate:.2e} · {event.seconds:.1f} s per step"
        self.refresh_eta()

    def refresh_eta(self) -> None:
        text = self.clock.describe()
        self.step_label.setText(f"{text} · {self._step_detail}" if self._step_detail else text)

    def set_memory(self, size: int | None, device_type: str) -> None:
        where = "GPU memory in use" if device_type in ("cuda", "mps") else "Process memory (CPU)"
        self.memory_label.setText(f"{where}: {format_memory(size)}")

    def add_evaluation(self, event: EvaluationEvent) -> None:
        self._add_evaluation_row(event.step, event.metrics, event.is_best)
        self.best_examples.setHtml(_examples_html(event.best_examples, event.step))
        self.worst_examples.setHtml(_examples_html(event.worst_examples, event.step))

    def _add_evaluation_row(self, step: int, metrics: dict, is_best: bool) -> None:
        loss = metrics.get("loss")
        if isinstance(loss, (int, float)):
            self.chart.add_validation(step, float(loss))
        row = self.table.rowCount()
        self.table.insertRow(row)
        cells = [str(step), _number(loss, 1, 4)]
        cells += [_number(metrics.get(key), 100, 2) for key, _label in ROUGE_COLUMNS]
        cells.append("★" if is_best else "")
        for column, text in enumerate(cells):
            item = QTableWidgetItem(text)
            item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.table.setItem(row, column, item)
        if is_best:
            for other in range(row):
                self.table.item(other, len(cells) - 1).setText("")
        self.table.scrollToBottom()

    def evaluation_rows(self) -> list[list[str]]:
        """Return the ROUGE table's cells, for tests and for copying."""
        return [
            [self.table.item(row, column).text() for column in range(self.table.columnCount())]
            for row in range(self.table.rowCount())
        ]


def _number(value, scale: float, decimals: int) -> str:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "–"
    return f"{value * scale:.{decimals}f}"


def _examples_html(examples: list[EvaluationExample], step: int) -> str:
    if not examples:
        return "<p>No examples.</p>"
    parts = [f"<p><i>Evaluation at step {step}</i></p>"]
    for example in examples:
        excerpt = example.document_excerpt[:EXCERPT_CHARACTERS]
        parts.append(
            f"<h4>{html.escape(example.source)} · score {example.score:.4f}</h4>"
            f"<p><b>Document:</b> {html.escape(excerpt)}…</p>"
            f"<p><b>Reference:</b> {html.escape(example.reference)}</p>"
            f"<p><b>Generated:</b> {html.escape(example.generated) or '<i>(empty)</i>'}</p><hr>"
        )
    return "".join(parts)
