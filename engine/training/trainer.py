"""The fine-tuning recipe: whole documents, gradient-cached steps, evaluation, checkpoints, resume.

The output folder contains::

    run.json                   settings, base model, data sizes
    metrics.jsonl              one row per optimizer step and per evaluation
    checkpoints/step-NNNNNN/   model + tokenizer + optimizer, schedule, RNG and data order
    best/                      model + tokenizer of the best evaluation so far
    last/                      model + tokenizer of the newest checkpoint

best/ and last/ load with ``from_pretrained`` and with ``engine.models.load_model``.

Under DistributedDataParallel (``distributed``), every rank runs this recipe on
its share of each step's documents. Only rank 0 evaluates and writes files,
and every decision that ends or skips a step is agreed by all ranks.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Callable, Iterator

import torch

from ..errors import Cancelled, OutOfMemoryError, SettingsError, SynopsisError
from ..files import write_text_atomic
from ..models import LoadedModel
from ..pairs import Pair
from ..progress import CancellationToken, ProgressFn, ignore_progress
from . import checkpoint
from .distributed import Distributed, SyncedStep, rank_documents, rank_seed
from .events import (
    CheckpointEvent,
    EvaluationEvent,
    FinishedEvent,
    MetricsLog,
    StepEvent,
    TrainingEvent,
    TrainingResult,
)
from .examples import epoch_order, prepare_example
from .optim import build_optimizer, build_schedule, reapply_schedule
from .plan import planned_total_steps, resume_point, resumed_total_steps, world_size_warning
from .precision import precision_for
from .seeding import capture_rng_state, preserved_rng_state, restore_rng_state, seed_everything
from .settings import TrainingSettings
from .state import RunState
from .step import cached_backward
from .validation import MetricFn, default_metric, evaluate

log = logging.getLogger(__name__)


class TrainingDivergedError(SynopsisError):
    """Too many steps had a non-finite loss or gradient, so training stopped."""


class Trainer:
    """Fine-tunes ``loaded.model`` in place on whole-document pairs; ``run`` does the work.

    ``progress(done, total, "steps")`` is called after every optimizer step.
    ``cancel`` is checked before every document; a cancelled run saves a
    checkpoint of the last finished step and returns. ``on_event`` receives
    the events of ``training.events``. ``metric_fn(predictions, references)``
    replaces ROUGE in evaluations.

    With ``distributed``, each optimizer step takes ``accumulate`` documents
    per rank, so ``accumulate`` times the world size in all. Progress and
    events are reported on rank 0 only. A cancel on any rank stops every rank
    before the same document, and the unfinished step is dropped.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        train_pairs: list[Pair],
        validation_pairs: list[Pair],
        settings: TrainingSettings,
        output_dir: str | Path,
        progress: ProgressFn | None = None,
        cancel: CancellationToken | None = None,
        on_event: Callable[[TrainingEvent], None] | None = None,
        metric_fn: MetricFn | None = None,
        distributed: Distributed | None = None,
    ) -> None:
        settings.validate()
        if not train_pairs:
            raise SettingsError("There are no training pairs: add document/summary pairs to train on.")
        if settings.patience is not None and not validation_pairs:
            raise SettingsError("Early stopping (patience) needs validation pairs to evaluate on.")
        self.loaded = loaded
        self.model = loaded.model
        self.train_pairs = list(train_pairs)
        self.pairs_fingerprint = RunState.fingerprint(self.train_pairs)
        self.validation_pairs = list(validation_pairs)[: settings.max_eval_pairs]
        self.settings = settings
        self.window_tokens = loaded.window_tokens(settings.window_tokens)
        self.precision = precision_for(settings.precision, loaded.device)
        self.output_dir = Path(output_dir)
        self.checkpoints = self.output_dir / "checkpoints"
        self.metrics = MetricsLog(self.output_dir / "metrics.jsonl")
        self.progress = progress or ignore_progress
        self.cancel = cancel
        self.on_event = on_event or (lambda event: None)
        self.metric_fn = metric_fn or default_metric
        self.distributed = distributed
        self.world_size = distributed.world_size if distributed is not None else 1
        self.is_main = distributed is None or distributed.is_main
        self.step_forwards: SyncedStep | None = None  # the DDP wrapper, built when the run starts

        # A resume recounts this from the checkpoint's position (see plan.resumed_total_steps).
        self.total_steps = planned_total_steps(len(self.train_pairs), settings, self.world_size)
        self.world_size_changes: list[dict] = []  # run.json's record of resumes with another world size
        self._current_document = ""

    def run(self, resume: bool = False) -> TrainingResult:
        """Train until the last step, early stopping or a cancel; resume from the newest complete checkpoint if asked."""
        with self._memory_advice():
            return self._run(resume)

    def _run(self, resume: bool) -> TrainingResult:
        settings = self.settings
        device = self.loaded.device

        # Set up the optimizer, schedule and loss scaler, then start fresh or resume.
        # Rank 0 tidies the folder, and every rank reads it only after that.
        if self.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            checkpoint.clean_interrupted_writes(self.checkpoints)
            checkpoint.clean_interrupted_writes(self.output_dir)
        self._barrier()
        optimizer = build_optimizer(self.model, settings.learning_rate, settings.weight_decay)
        scaler = self.precision.make_grad_scaler(device)
        state, schedule = self._start_or_resume(resume, optimizer, scaler)
        self._barrier()
        if self.distributed is not None:
            self.step_forwards = SyncedStep(self.model, device)
        if self.is_main:
            self.metrics.truncate_after(state.step)
            self._write_run_file()
        log.info(
            "training %s from step %d of %d: %d pairs, %d validation pairs, %s on %s",
            self.loaded.name, state.step, self.total_steps, len(self.train_pairs),
            len(self.validation_pairs), self.precision.name, device,
        )

        self.model.train()
        stopped_early = False
        already_saved = checkpoint.is_complete(checkpoint.step_folder(self.checkpoints, state.step))
        saved_step = state.step if already_saved else None
        while state.step < self.total_steps:
            # Stop between steps on cancel, keeping the last finished step.
            step_rng = capture_rng_state()
            if self._cancel_requested():
                return self._cancelled(state, optimizer, schedule, scaler, step_rng, saved_step)

            # Begin the next epoch once this one's documents are used up.
            if state.position >= len(state.order):
                state.epoch += 1
                state.order = epoch_order(len(self.train_pairs), settings.seed, state.epoch)
                state.position = 0

            # Forward and backward over each document of the step, accumulating gradients.
            row = self._train_step(state, optimizer, schedule, scaler)
            if row is None:
                return self._cancelled(state, optimizer, schedule, scaler, step_rng, saved_step)

            # Log the step.
            if self.is_main:
                self.metrics.append(row)
                self.on_event(StepEvent(total_steps=self.total_steps, **{k: v for k, v in row.items() if k != "grad_norm"}))
                self.progress(state.step, self.total_steps, "steps")
            log.info(
                "step %d/%d: loss %.4f, learning rate %.3g, %d tokens, %.1f s%s",
                state.step, self.total_steps, row["loss"], row["learning_rate"], row["tokens"],
                row["seconds"], " (skipped)" if row["skipped"] else "",
            )
            if state.skipped_steps >= settings.max_skipped_steps:
                raise TrainingDivergedError(
                    f"Training stopped at step {state.step}: {state.skipped_steps} steps had a loss or "
                    "gradient that was not a finite number. Lower the learning rate, use --precision bf16 "
                    "or fp32 instead of fp16, or check the pairs for empty or garbled text."
                )

            # Evaluate and checkpoint every eval_every steps and after the last one.
            if state.step % settings.eval_every == 0 or state.step == self.total_steps:
                try:
                    improved = self._evaluate_on_main(state) if self.validation_pairs else False
                except Cancelled:
                    # The step itself finished, so it is kept; only its evaluation is dropped.
                    return self._cancelled(state, optimizer, schedule, scaler, capture_rng_state(), saved_step)
                self._save(state, optimizer, schedule, scaler, capture_rng_state(), improved)
                saved_step = state.step
                if settings.patience is not None and state.evaluations_without_improvement >= settings.patience:
                    log.info("stopping early: %d evaluations without improvement", settings.patience)
                    stopped_early = True
                    break

        self.model.eval()
        return self._finish(state, cancelled=False, stopped_early=stopped_early)

    def _train_step(self, state: RunState, optimizer, schedule, scaler) -> dict | None:
        """Run one optimizer step over the next ``accumulate`` documents per rank; return its metrics row, or None on cancel."""
        settings = self.settings
        started = time.perf_counter()
        indices = state.order[state.position : state.position + settings.accumulate * self.world_size]
        learning_rate = schedule.get_last_lr()[0]
        losses: list[float] = []
        tokens = summary_tokens = 0
        finite = True

        for index, share, last in self._documents_of_rank(indices):
            if self._cancel_requested():
                optimizer.zero_grad(set_to_none=True)
                return None
            example = prepare_example(self.train_pairs[index], self.loaded, self.window_tokens)
            self._current_document = f"{example.pair.source} ({example.input_ids.shape[0]} windows)"
            # Each document's loss is divided by the step's document count, so the
            # accumulated gradient is that of the mean loss. DDP averages over the
            # ranks, which divides by the world size once more, so each rank
            # multiplies by it first. A filler document (share 0) only keeps this
            # rank in step with the others' collectives and adds no gradient.
            loss = cached_backward(
                self.model,
                example.input_ids,
                example.attention_mask,
                example.labels,
                settings.chunk_windows,
                loss_scale=self.world_size / len(indices) * share,
                grad_scaler=scaler,
                autocast_dtype=self.precision.autocast_dtype,
                **self._ddp_options(last),
            )
            if share:
                tokens += example.tokens
                summary_tokens += example.summary_tokens
            if not torch.isfinite(loss):
                log.warning("non-finite loss on %s at step %d; skipping the step", example.pair.source, state.step + 1)
                finite = False
                break
            if share:
                losses.append(float(loss))

        # Clip the gradient norm (unscaled first under fp16 loss scaling).
        grad_norm = math.nan
        if finite:
            if scaler is not None:
                scaler.unscale_(optimizer)
            max_norm = settings.max_grad_norm if settings.max_grad_norm is not None else math.inf
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
            # Under fp16 the scaler skips overflowing steps itself and lowers its scale.
            if scaler is None and not math.isfinite(grad_norm):
                log.warning("non-finite gradient norm at step %d; skipping the step", state.step + 1)
                finite = False

        # Update the weights, or drop the step's gradients when they are not finite.
        if finite:
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()

        state.step += 1
        state.position += len(indices)
        if not finite:
            state.skipped_steps += 1
        loss_sum, documents = sum(losses), len(losses)
        if self.distributed is not None:
            # The row describes the whole step: every rank's documents and tokens.
            loss_sum, documents, tokens, summary_tokens = self.distributed.sum(loss_sum, documents, tokens, summary_tokens)
            documents, tokens, summary_tokens = int(documents), int(tokens), int(summary_tokens)
        return {
            "step": state.step,
            "epoch": state.epoch,
            "loss": loss_sum / documents if finite else math.nan,
            "learning_rate": learning_rate,
            "tokens": tokens,
            "summary_tokens": summary_tokens,
            "seconds": time.perf_counter() - started,
            "grad_norm": grad_norm,
            "skipped": not finite,
        }

    def _documents_of_rank(self, indices: list[int]) -> Iterator[tuple[int, int, bool]]:
        """Yield ``(pair index, share, last)`` for each document this rank trains on in a step of ``indices``."""
        if self.distributed is None:
            for position, index in enumerate(indices):
                yield index, 1, position == len(indices) - 1
            return
        yield from rank_documents(indices, self.distributed.rank, self.world_size)

    def _ddp_options(self, last: bool) -> dict:
        """Return the DDP arguments of ``cached_backward``: none for one process."""
        if self.distributed is None:
            return {}
        return {"forwards": self.step_forwards, "synced": last, "agree_finite": self._all_finite}

    def _all_finite(self, finite: bool) -> bool:
        return not self.distributed.any(not finite)

    def _evaluate_on_main(self, state: RunState) -> bool:
        """Evaluate on rank 0 while the other ranks wait, then give every rank rank 0's outcome and counters.

        Raises Cancelled on every rank when rank 0's evaluation was cancelled.
        """
        if self.distributed is None:
            return self._evaluate(state)
        outcome = None
        if self.is_main:
            try:
                improved = self._evaluate(state)
                outcome = {"improved": improved, "state": state.to_json()}
            except Cancelled:
                outcome = {"cancelled": True}
        outcome = self.distributed.broadcast(outcome)
        if outcome.get("cancelled"):
            raise Cancelled("evaluation cancelled on rank 0")
        saved = outcome["state"]
        state.best_step, state.best_value = saved["best_step"], saved["best_value"]
        state.evaluations_without_improvement = saved["evaluations_without_improvement"]
        return outcome["improved"]

    def _evaluate(self, state: RunState) -> bool:
        """Evaluate on the validation pairs, log and report it; return whether the best metric improved."""
        settings = self.settings
        # Evaluation must not move the RNG, or a resumed run would draw other dropout masks.
        with preserved_rng_state():
            result = evaluate(
                self.loaded,
                self.validation_pairs,
                self.window_tokens,
                settings.eval_generation,
                self.metric_fn,
                settings.best_metric,
                settings.higher_is_better,
                self.precision.autocast_dtype,
                cancel=self.cancel,
            )
        if settings.best_metric not in result.metrics:
            raise SettingsError(
                f"The best metric '{settings.best_metric}' is not among the evaluation's metrics "
                f"({', '.join(result.metrics)}): choose one of those."
            )
        value = result.metrics[settings.best_metric]
        improved = state.improves(value, settings.higher_is_better)
        if improved:
            state.best_step, state.best_value = state.step, value
            state.evaluations_without_improvement = 0
        else:
            state.evaluations_without_improvement += 1
        self.metrics.append({"step": state.step, "eval": result.metrics})
        self.on_event(
            EvaluationEvent(state.step, result.metrics, improved, result.best_examples, result.worst_examples)
        )
        return improved

    def _save(self, state: RunState, optimizer, schedule, scaler, rng_state: dict, improved: bool) -> None:
        """Write the step checkpoint, point last/ (and best/ if improved) at it, and prune old ones.

        Under DDP every rank calls this: rank 0 gathers each rank's RNG state
        into ``rng_ranks.pt`` and writes alone, and the others wait until it is done.
        """
        rank_states = self.distributed.gather(rng_state) if self.distributed is not None else None
        if not self.is_main:
            self._barrier()
            return
        folder = checkpoint.step_folder(self.checkpoints, state.step)
        tensors = {"optimizer": optimizer.state_dict(), "scheduler": schedule.state_dict(), "rng": rng_state}
        if rank_states is not None:
            tensors["rng_ranks"] = rank_states
        if scaler is not None:
            tensors["scaler"] = scaler.state_dict()
        checkpoint.write_checkpoint(
            folder, self.model, self.loaded.tokenizer, state.to_json(), self.settings.to_json(), tensors
        )
        self.on_event(CheckpointEvent(state.step, folder, "step"))
        summary = {"step": state.step, "base_model": self.loaded.name, "best_value": state.best_value}
        checkpoint.publish_model(folder, self.output_dir / "last", summary)
        self.on_event(CheckpointEvent(state.step, self.output_dir / "last", "last"))
        if improved:
            checkpoint.publish_model(folder, self.output_dir / "best", summary)
            self.on_event(CheckpointEvent(state.step, self.output_dir / "best", "best"))
        keep = {state.best_step} if state.best_step is not None else set()
        checkpoint.prune_checkpoints(self.checkpoints, self.settings.keep_last, keep)
        log.info("saved checkpoint %s", folder)
        self._barrier()

    def _start_or_resume(self, resume: bool, optimizer, scaler):
        """Return the state to start from and the learning-rate schedule.

        The state is restored from the newest complete checkpoint, or new and
        seeded. A resumed run's schedule spans the total that
        ``resumed_total_steps`` counts from the checkpoint.
        """
        complete = checkpoint.complete_checkpoints(self.checkpoints)
        if not resume:
            if complete or self.metrics.rows():
                raise SettingsError(
                    f"{self.output_dir} already contains a training run: resume it, or choose an empty folder."
                )
            return self._new_state(), build_schedule(optimizer, self.total_steps, self.settings.warmup_fraction)
        if not complete:
            log.info("no complete checkpoint in %s; starting from the beginning", self.checkpoints)
            return self._new_state(), build_schedule(optimizer, self.total_steps, self.settings.warmup_fraction)

        step, folder = complete[-1]
        data, saved_settings = checkpoint.read_state(folder)
        state = RunState.from_json(data)
        if sorted(state.order) != list(range(len(self.train_pairs))):
            raise SettingsError(
                f"The checkpoint {folder} was trained on {len(state.order)} pairs, but {len(self.train_pairs)} "
                "were given: resume with the same training pairs, or start a new run."
            )
        if state.pairs_fingerprint and state.pairs_fingerprint != self.pairs_fingerprint:
            raise SettingsError(
                f"The checkpoint {folder} was trained on other pairs: the texts differ although the count "
                "matches. Resume with the same training pairs, or start a new run."
            )
        state.pairs_fingerprint = self.pairs_fingerprint
        changed = sorted(k for k, v in self.settings.to_json().items() if saved_settings.get(k) != v)
        if changed:
            log.warning("resuming with changed settings: %s", ", ".join(changed))
        if state.base_model != self.loaded.name:
            log.warning("resuming a run of %s with %s", state.base_model, self.loaded.name)
        self._plan_resume(folder, state)
        schedule = build_schedule(optimizer, self.total_steps, self.settings.warmup_fraction)

        checkpoint.load_model_weights(self.model, folder)
        optimizer.load_state_dict(checkpoint.read_tensors(folder, "optimizer"))
        schedule.load_state_dict(checkpoint.read_tensors(folder, "scheduler"))
        reapply_schedule(schedule)
        saved_scaler = checkpoint.read_tensors(folder, "scaler")
        if scaler is not None and saved_scaler is not None:
            scaler.load_state_dict(saved_scaler)
        self._restore_rank_rng(folder, state.step)
        log.info("resuming from %s at step %d of %d", folder, state.step, self.total_steps)
        return state, schedule

    def _new_state(self) -> RunState:
        seed_everything(self._rank_seed())
        order = epoch_order(len(self.train_pairs), self.settings.seed, 0)
        return RunState(order=order, base_model=self.loaded.name, pairs_fingerprint=self.pairs_fingerprint)

    def _plan_resume(self, folder: Path, state: RunState) -> None:
        """Recount the run's total steps from ``state``, and warn when the world size differs from the saved run's."""
        self.total_steps = resumed_total_steps(
            len(self.train_pairs), self.settings, self.world_size, state.step, state.epoch, state.position
        )
        point = resume_point(self.output_dir, folder, state.step, state.epoch, state.position)
        self.world_size_changes = point.world_size_changes
        warning = world_size_warning(point, self.world_size, self.settings.accumulate, self.total_steps)
        if warning is None:
            return
        self.world_size_changes.append({"step": state.step, "from": point.world_size, "to": self.world_size})
        if self.is_main:
            log.warning("resuming %s: %s", self.output_dir, warning)

    def _rank_seed(self) -> int:
        """Return this rank's dropout seed: the run's seed for one process or rank 0, a seed of its own for each other rank."""
        rank = self.distributed.rank if self.distributed is not None else 0
        return rank_seed(self.settings.seed, rank)

    def _restore_rank_rng(self, folder: Path, step: int) -> None:
        """Restore the RNG state this rank had at the checkpoint, so dropout continues as in an uninterrupted run."""
        if self.distributed is None:
            restore_rng_state(checkpoint.read_tensors(folder, "rng"))
            return
        saved = checkpoint.read_tensors(folder, "rng_ranks")
        if saved is not None and len(saved) == self.world_size:
            restore_rng_state(saved[self.distributed.rank])
            return
        found = f"{len(saved)} processes" if saved is not None else "one process"
        log.warning(
            "checkpoint %s was saved by %s, not %d: each rank's dropout starts from a new seed, "
            "so the losses will not repeat those of an uninterrupted run",
            folder, found, self.world_size,
        )
        seed_everything(self._rank_seed() + step)

    def _cancelled(self, state, optimizer, schedule, scaler, rng_state: dict, saved_step: int | None) -> TrainingResult:
        """Save the last finished step (unless already saved) and return a cancelled result."""
        log.info("training cancelled after step %d", state.step)
        if saved_step != state.step:
            self._save(state, optimizer, schedule, scaler, rng_state, improved=False)
        self.model.eval()
        return self._finish(state, cancelled=True, stopped_early=False)

    def _finish(self, state: RunState, cancelled: bool, stopped_early: bool) -> TrainingResult:
        best = self.output_dir / "best"
        last = self.output_dir / "last"
        result = TrainingResult(
            steps=state.step,
            total_steps=self.total_steps,
            cancelled=cancelled,
            stopped_early=stopped_early,
            skipped_steps=state.skipped_steps,
            best_step=state.best_step,
            best_value=state.best_value,
            best_dir=best if best.is_dir() else None,
            last_dir=last if last.is_dir() else None,
            output_dir=self.output_dir,
        )
        if self.is_main:
            self.on_event(FinishedEvent(result))
        return result

    def _cancel_requested(self) -> bool:
        """Return whether to stop. Under DDP, return whether any rank's token is cancelled, so every rank stops together."""
        cancelled = self.cancel is not None and self.cancel.cancelled
        if self.distributed is None:
            return cancelled
        return self.distributed.any(cancelled)

    def _barrier(self) -> None:
        if self.distributed is not None:
            self.distributed.barrier()

    def _write_run_file(self) -> None:
        run = {
            "base_model": self.loaded.name,
            "settings": self.settings.to_json(),
            "train_pairs": len(self.train_pairs),
            "validation_pairs": len(self.validation_pairs),
            "total_steps": self.total_steps,
            "window_tokens": self.window_tokens,
            "precision": self.precision.name,
            "device": str(self.loaded.device),
            "world_size": self.world_size,
            "documents_per_step": self.settings.accumulate * self.world_size,
        }
        if self.world_size_changes:
            run["world_size_changes"] = self.world_size_changes
        write_text_atomic(self.output_dir / "run.json", json.dumps(run, indent=1) + "\n")

    @contextlib.contextmanager
    def _memory_advice(self) -> Iterator[None]:
        """Convert an out-of-memory failure into an OutOfMemoryError whose message lists what to change."""
        try:
            yield
        except torch.OutOfMemoryError as error:
            raise OutOfMemoryError(self._memory_message()) from error
        except RuntimeError as error:
            if "can't allocate memory" not in str(error):
                raise
            raise OutOfMemoryError(self._memory_message()) from error

    def _memory_message(self) -> str:
        advice = []
        if self.settings.chunk_windows > 1:
            advice.append("fewer windows re-encoded at once (--chunk-windows 1)")
        if self.loaded.device.type == "cuda" and self.precision.name == "fp32":
            advice.append("bf16 precision (--precision bf16)")
        advice.append("shorter reference summaries or a smaller model")
        if self.loaded.device.type != "cpu":
            advice.append("training on the CPU (--device cpu), which is slower but has more memory")
        where = f" on {self._current_document}" if self._current_document else ""
        return f"{self.loaded.device} ran out of memory while training{where}. Try {', '.join(advice)}."
