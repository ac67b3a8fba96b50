"""Fine-tuning off the GUI thread: checking pairs, training, and comparing two models' summaries.

:class:`TrainingController` lives on the GUI thread and owns a QThread with a
:class:`TrainingWorker` in it. Tasks run one at a time, in the order
submitted. Each of the worker's signals is connected to the controller's
signal of the same name. The controller lives on the GUI thread, so Qt queues
those connections, and every slot connected to the controller runs on the GUI
thread, whatever callable it is. The worker never touches a widget.

The trainer reports through ``on_event`` on the worker thread; the worker
turns each event into a signal whose payload is the event itself (frozen
dataclasses, safe to hand between threads).
"""

from __future__ import annotations

import gc
import logging
import math
import time
import traceback
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
import shiboken6
from PySide6.QtCore import QObject, QThread, Signal, Slot

from synopsis.engine.documents import DocumentLimits, load_document
from synopsis.engine.errors import Cancelled, SettingsError, SynopsisError
from synopsis.engine.generation import GenerationSettings
from synopsis.engine.models import LoadedModel, load_model, resolve_device
from synopsis.engine.preflight import PreflightReport, preflight, usable_pairs
from synopsis.engine.progress import CancellationToken
from synopsis.engine.registry import ModelEntry, ModelRegistry
from synopsis.engine.runs import (
    FAILED,
    FINISHED,
    REQUEST_FILE,
    RUNNING,
    STOPPED,
    STOPPED_EARLY,
    RunPairs,
    RunRequest,
    load_run_pairs,
    metrics_rows,
    save_request,
    write_status,
)
from synopsis.engine.summarize import Summary, summarize_document
from synopsis.engine.training import (
    CheckpointEvent,
    EvaluationEvent,
    FinishedEvent,
    StepEvent,
    Trainer,
    TrainingEvent,
    TrainingResult,
)

log = logging.getLogger(__name__)

# Progress reports closer together than this are dropped, except the last of a stage.
PROGRESS_INTERVAL_S = 0.1
GIB = 1024**3

CHECK = "check"
TRAIN = "train"
COMPARE = "compare"


# Payloads ---------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceInfo:
    """The device a run would use, described for the user."""

    device: str  # as torch names it: "cuda:0", "mps", "cpu"
    description: str  # "CUDA: NVIDIA H200, 130.2 GiB free", "Apple MPS", "CPU, 12.3 GiB available"
    available_bytes: int | None  # memory free for training on it; None when unknown


@dataclass(frozen=True)
class CheckResult:
    """The outcome of a pre-flight check: the pairs used and the report on them."""

    request: RunRequest
    pairs: RunPairs
    report: PreflightReport


@dataclass(frozen=True)
class RunOutcome:
    """A training run that ended without an error, and the model registered from it."""

    request: RunRequest
    folder: Path
    result: TrainingResult
    state: str  # FINISHED, STOPPED_EARLY or STOPPED
    entry: ModelEntry | None  # the registered model; None when stopped or registration failed
    registration_problem: str | None = None


@dataclass(frozen=True)
class Comparison:
    """One document summarized by the base model and by the fine-tuned one."""

    document: Path
    base: Summary
    tuned: Summary


@dataclass(eq=False)
class Task:
    """One request to the worker; ``cancel`` may be set from any thread."""

    kind: str  # CHECK, TRAIN or COMPARE
    request: RunRequest | None = None
    folder: Path | None = None  # TRAIN: the run folder
    resume: bool = False
    registry: ModelRegistry | None = None
    document: Path | None = None  # COMPARE: the document to summarize
    base_model: str = ""  # COMPARE: the model the fine-tuned one started from
    tuned_model: str = ""  # COMPARE: the fine-tuned model's folder
    device: str = "auto"  # COMPARE: device for both models
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    limits: DocumentLimits = field(default_factory=DocumentLimits)  # the user's Preferences, for every document read
    cancel: CancellationToken = field(default_factory=CancellationToken)
    stop_message: str = "Stopped by the user."  # recorded in status.json when a cancel stops training


# Devices ------------------------------------------------------------------------


def describe_device(requested: str = "auto") -> DeviceInfo:
    """Return the device ``requested`` resolves to, with its name and free memory; raise as resolve_device does."""
    device = resolve_device(requested)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        free, _total = torch.cuda.mem_get_info(index)
        name = torch.cuda.get_device_name(index)
        return DeviceInfo(f"cuda:{index}", f"CUDA: {name}, {free / GIB:.1f} GiB free", int(free))
    if device.type == "mps":
        return DeviceInfo("mps", "Apple GPU (MPS), memory shared with the system", None)
    available = _available_system_memory()
    memory = f", {available / GIB:.1f} GiB available" if available is not None else ""
    return DeviceInfo("cpu", f"CPU, {torch.get_num_threads()} threads{memory}", available)


def _available_system_memory() -> int | None:
    """Return MemAvailable from /proc/meminfo (Linux only); None elsewhere."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def memory_in_use(device: torch.device) -> int | None:
    """Return the bytes in use: tensors allocated on a GPU, the process's resident memory on a CPU; None if unknown."""
    if device.type == "cuda":
        return int(torch.cuda.memory_allocated(device))
    if device.type == "mps":
        return int(torch.mps.current_allocated_memory())
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


# The worker -------------------------------------------------------------------


class TrainingWorker(QObject):
    """Runs tasks on the worker thread and reports only through its signals."""

    sig_stage = Signal(str)
    """Stage of the running task: "reading pairs", "loading model", "checking pairs", "training",
    "registering model", "summarizing with the base model" or "summarizing with the fine-tuned model"."""

    sig_progress = Signal(int, int, str)
    """Work done, work in total, and its unit ("pairs" while reading or checking pairs)."""

    sig_pairs = Signal(object)
    """The RunPairs just loaded, before the model loads, so rejected pairs show at once."""

    sig_checked = Signal(object)
    """A CheckResult: the pre-flight report on the pairs (sent by check tasks and before training)."""

    sig_device = Signal(object)
    """The DeviceInfo of the device the model loaded on."""

    sig_step = Signal(object)
    """A StepEvent after every optimizer step: its step, total_steps and loss (NaN when skipped)."""

    sig_memory = Signal(object)
    """Bytes in use on the training device after a step (see memory_in_use), or None when unknown."""

    sig_evaluation = Signal(object)
    """An EvaluationEvent: the step, its metrics ("loss" and ROUGE F1 values), best and worst examples."""

    sig_checkpoint = Signal(int, str, str)
    """A checkpoint written completely: the step, its folder, and its kind ("step", "last" or "best")."""

    sig_finished = Signal(object)
    """A RunOutcome when a training run ends without an error, stopped runs included."""

    sig_compared = Signal(object)
    """A Comparison when a compare task has both summaries."""

    sig_failed = Signal(str, object, str)
    """The task's kind, the exception, and its traceback text (empty for the engine's own errors)."""

    sig_cancelled = Signal(str)
    """The kind of a task stopped by its cancellation token before it produced a result."""

    sig_task_done = Signal(object)
    """The Task that just ended, however it ended; sent last."""

    def __init__(self) -> None:
        super().__init__()
        self._loaded: LoadedModel | None = None
        self._loaded_key: tuple[str, str] | None = None
        self._last_progress = 0.0

    @Slot(object)
    def run_task(self, task: Task) -> None:
        try:
            task.cancel.raise_if_cancelled()
            if task.kind == CHECK:
                self._check(task)
            elif task.kind == TRAIN:
                self._train(task)
            else:
                self._compare(task)
        except Cancelled:
            log.info("%s task cancelled", task.kind)
            self.sig_cancelled.emit(task.kind)
        except SynopsisError as error:
            log.warning("%s task failed: %s", task.kind, error)
            self.sig_failed.emit(task.kind, error, "")
        except Exception as error:  # noqa: BLE001 - reported to the user with its traceback
            log.exception("%s task failed unexpectedly", task.kind)
            self.sig_failed.emit(task.kind, error, traceback.format_exc())
        finally:
            self.sig_task_done.emit(task)

    # Tasks ------------------------------------------------------------------

    def _check(self, task: Task) -> CheckResult:
        request = task.request
        request.validate()
        pairs = self._load_pairs(task)
        loaded = self._model(request.model, request.device, task)
        return self._preflight(task, loaded, pairs)

    def _train(self, task: Task) -> None:
        request, folder = task.request, task.folder
        request.validate()
        folder.mkdir(parents=True, exist_ok=True)
        save_request(request, folder / REQUEST_FILE)
        write_status(folder, RUNNING, message="Reading pairs")
        loaded = None
        try:
            pairs = self._load_pairs(task)
            loaded = self._model(request.model, request.device, task)
            # Training changes the weights in place, so this copy cannot serve later checks.
            self._forget_model()
            check = self._preflight(task, loaded, pairs)
            train, validation = self._training_pairs(request, check)
            task.cancel.raise_if_cancelled()

            self.sig_stage.emit("training")
            trainer = Trainer(
                loaded,
                train,
                validation,
                request.settings,
                folder,
                cancel=task.cancel,
                on_event=partial(self._on_event, folder, loaded.device),
            )
            result = trainer.run(resume=task.resume)
        except Cancelled:
            write_status(folder, STOPPED, message=f"{task.stop_message} Training had not started.")
            raise
        except BaseException as error:
            write_status(folder, FAILED, message=str(error) or type(error).__name__)
            raise
        finally:
            loaded = trainer = None
            _release_memory()
        self.sig_finished.emit(self._conclude(task, result))

    def _compare(self, task: Task) -> None:
        document = load_document(task.document, limits=task.limits, cancel=task.cancel)
        summaries = []
        for stage, source in (("base", task.base_model), ("fine-tuned", task.tuned_model)):
            loaded = self._model(source, task.device, task)
            self.sig_stage.emit(f"summarizing with the {stage} model")
            summary = summarize_document(document, loaded, task.generation, self._report, task.cancel)
            summaries.append(summary)
        self._forget_model()
        self.sig_compared.emit(Comparison(task.document, summaries[0], summaries[1]))

    # Steps ------------------------------------------------------------------

    def _load_pairs(self, task: Task) -> RunPairs:
        self.sig_stage.emit("reading pairs")
        pairs = load_run_pairs(task.request, self._report, task.cancel, task.limits)
        self.sig_pairs.emit(pairs)
        return pairs

    def _preflight(self, task: Task, loaded: LoadedModel, pairs: RunPairs) -> CheckResult:
        self.sig_stage.emit("checking pairs")
        report = preflight(
            loaded,
            pairs.train,
            pairs.validation,
            task.request.settings,
            rejected=pairs.rejected,
            progress=self._report,
            cancel=task.cancel,
            max_input_tokens=task.limits.max_input_tokens,
        )
        result = CheckResult(task.request, pairs, report)
        self.sig_checked.emit(result)
        return result

    @staticmethod
    def _training_pairs(request: RunRequest, check: CheckResult) -> tuple[list, list]:
        """Return the pairs to train and validate on; raise when bad pairs must stop the run."""
        report = check.report
        if report.rejected and not request.skip_bad_pairs:
            raise SettingsError(
                f"{len(report.rejected)} pairs cannot be used (the preview lists them): fix them, or tick "
                "\"Leave out pairs that cannot be used\"."
            )
        train, validation = usable_pairs(report, check.pairs.train, check.pairs.validation)
        if not train:
            raise SettingsError("No training pairs are left to train on: choose pairs the preview accepts.")
        if request.settings.patience is not None and not validation:
            raise SettingsError("Early stopping (patience) needs validation pairs: choose a validation split or file.")
        return train, validation

    def _model(self, source: str, device: str, task: Task) -> LoadedModel:
        key = (source, device)
        if self._loaded is not None and self._loaded_key == key:
            return self._loaded
        self._forget_model()
        task.cancel.raise_if_cancelled()
        self.sig_stage.emit("loading model")
        loaded = load_model(source, device=None if device in ("", "auto") else device)
        self._loaded, self._loaded_key = loaded, key
        info = describe_device(str(loaded.device))
        self.sig_device.emit(info)
        return loaded

    def _forget_model(self) -> None:
        if self._loaded is not None:
            self._loaded = None
            self._loaded_key = None
            _release_memory()

    def _on_event(self, folder: Path, device: torch.device, event: TrainingEvent) -> None:
        if isinstance(event, StepEvent):
            write_status(folder, RUNNING, event.step, event.total_steps, "Training")
            self.sig_step.emit(event)
            self.sig_memory.emit(memory_in_use(device))
        elif isinstance(event, EvaluationEvent):
            self.sig_evaluation.emit(event)
        elif isinstance(event, CheckpointEvent):
            self.sig_checkpoint.emit(event.step, str(event.path), event.kind)
        elif isinstance(event, FinishedEvent):
            log.info("training in %s ended after step %d", folder, event.result.steps)

    def _conclude(self, task: Task, result: TrainingResult) -> RunOutcome:
        """Record how the run ended and register its model unless it was stopped."""
        request, folder = task.request, task.folder
        if result.cancelled:
            message = f"{task.stop_message} Checkpoint saved at step {result.steps} of {result.total_steps}."
            write_status(folder, STOPPED, result.steps, result.total_steps, message)
            return RunOutcome(request, folder, result, STOPPED, None)

        state = STOPPED_EARLY if result.stopped_early else FINISHED
        model_dir = result.best_dir or result.last_dir
        entry, problem = None, None
        if model_dir is not None and task.registry is not None:
            self.sig_stage.emit("registering model")
            metrics = _metrics_at(folder, result.best_step)
            try:
                entry = task.registry.register_finetuned(model_dir, request.name, request.model, metrics)
            except (SynopsisError, OSError) as error:
                log.error("registering %s failed: %s", model_dir, error)
                problem = f"The model in {model_dir} could not be added to the model list: {error}"
        message = f"Finished at step {result.steps} of {result.total_steps}."
        if result.stopped_early:
            message = f"Stopped early at step {result.steps}: the validation score stopped improving."
        write_status(
            folder, state, result.steps, result.total_steps, message, model=str(model_dir) if model_dir else None
        )
        return RunOutcome(request, folder, result, state, entry, problem)

    def _report(self, done: int, total: int, unit: str) -> None:
        now = time.monotonic()
        if done < total and now - self._last_progress < PROGRESS_INTERVAL_S:
            return
        self._last_progress = now
        self.sig_progress.emit(done, total, unit)


def _metrics_at(folder: Path, step: int | None) -> dict:
    """Return the evaluation metrics logged at ``step`` (the best one), without values JSON cannot hold."""
    if step is None:
        return {}
    for row in reversed(metrics_rows(folder)):
        if row.get("step") == step and isinstance(row.get("eval"), dict):
            values = {"step": step}
            values.update({k: v for k, v in row["eval"].items() if isinstance(v, (int, float)) and math.isfinite(v)})
            return values
    return {}


def _release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# The controller ---------------------------------------------------------------


def _stop_thread(thread: QThread, tasks: list[Task], *_destroyed_args) -> None:
    """Cancel ``tasks``, end the thread's event loop and wait for the running task to return."""
    # The QThread may already be deleted when the window goes away at exit.
    if not shiboken6.isValid(thread) or not thread.isRunning():
        return
    for task in tasks:
        task.cancel.cancel()
    thread.quit()
    thread.wait()
    log.info("training thread stopped")


class TrainingController(QObject):
    """Submits tasks to the worker thread; its signals, the worker's relayed, arrive on the GUI thread.

    The signals carry the payloads documented on :class:`TrainingWorker`.
    """

    sig_stage = Signal(str)
    sig_progress = Signal(int, int, str)
    sig_pairs = Signal(object)
    sig_checked = Signal(object)
    sig_device = Signal(object)
    sig_step = Signal(object)
    sig_memory = Signal(object)
    sig_evaluation = Signal(object)
    sig_checkpoint = Signal(int, str, str)
    sig_finished = Signal(object)
    sig_compared = Signal(object)
    sig_failed = Signal(str, object, str)
    sig_cancelled = Signal(str)
    sig_task_done = Signal(object)
    """The Task that ended; sent after the controller has forgotten it, so is_training() is already current."""

    _sig_submit = Signal(object)

    RELAYED = (
        "sig_stage", "sig_progress", "sig_pairs", "sig_checked", "sig_device", "sig_step", "sig_memory",
        "sig_evaluation", "sig_checkpoint", "sig_finished", "sig_compared", "sig_failed", "sig_cancelled",
    )

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._tasks: list[Task] = []
        self._thread = QThread()
        self._thread.setObjectName("synopsis-training")
        self.worker = TrainingWorker()
        self.worker.moveToThread(self._thread)
        self._sig_submit.connect(self.worker.run_task)
        for name in self.RELAYED:
            getattr(self.worker, name).connect(getattr(self, name))
        self.worker.sig_task_done.connect(self._on_task_done)
        # Stop the thread before Qt destroys it with its parent; the callback must not reference self.
        self.destroyed.connect(partial(_stop_thread, self._thread, self._tasks))
        self._thread.start()

    def submit(self, task: Task) -> Task:
        self._tasks.append(task)
        log.info("training task submitted: %s %s", task.kind, task.request.name if task.request else "")
        self._sig_submit.emit(task)
        return task

    def cancel(self, kind: str | None = None) -> None:
        """Cancel the tasks of ``kind`` (all when None); training stops after its current document with a checkpoint."""
        for task in self._tasks:
            if kind is None or task.kind == kind:
                task.cancel.cancel()

    def stop_training(self, message: str = "Stopped by the user.") -> bool:
        """Ask the training task to stop with a checkpoint; return whether one was running or waiting."""
        stopping = False
        for task in self._tasks:
            if task.kind == TRAIN:
                task.stop_message = message
                task.cancel.cancel()
                stopping = True
        return stopping

    def current_task(self) -> Task | None:
        """Return the task the worker is running (tasks run in submission order), or None when idle."""
        return self._tasks[0] if self._tasks else None

    def training_task(self) -> Task | None:
        return next((task for task in self._tasks if task.kind == TRAIN), None)

    def is_training(self) -> bool:
        return self.training_task() is not None

    def is_busy(self) -> bool:
        return bool(self._tasks)

    def shutdown(self) -> None:
        """Cancel every task, stop the thread and wait for it; safe to call twice."""
        _stop_thread(self._thread, self._tasks)

    @Slot(object)
    def _on_task_done(self, task: Task) -> None:
        # Removed in place, because the destroyed callback refers to this same list.
        self._tasks[:] = [waiting for waiting in self._tasks if waiting is not task]
        self.sig_task_done.emit(task)
