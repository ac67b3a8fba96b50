"""Inference speed settings: the encoder's number precision and torch's CPU thread count.

Precision names match ``synopsis train --precision``: fp32, bf16, fp16, plus
int8 (dynamic quantization of the encoder's Linear layers, CPU only).

Measured with ``bench/encode.py`` on a Xeon with AVX512-BF16 and AMX, torch
2.13: bf16 autocast encodes a BART-base-sized model 2.6 to 6 times faster than
float32, with a relative drift of the fused states of about 0.4%. On the tiny
test model, summaries from a bf16 or int8 encoder are token-equal to float32's
at beams 1 and 4. A bf16 decoder changes beam-4 summaries there, so reduced
precision applies to the encoder only and the decoder always runs in float32.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import warnings
import weakref
from typing import Iterator

import torch
from torch import nn

from .errors import SettingsError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
PRECISION_HELP = (
    "number format of the encoder: auto (bf16 on a GPU or on a CPU with native bf16 "
    "instructions, else fp32), fp32, bf16, fp16 (GPU only), or int8 (CPU only: "
    "quantizes a copy of the encoder's Linear layers in memory, never the model files)"
)
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_native_bf16() -> bool:
    """Return whether this CPU has bf16 matrix instructions (AVX512-BF16, AMX, or Arm's BF16).

    Without them torch emulates bf16, which runs slower than float32.
    ``torch.backends.cpu.get_cpu_capability()`` reports only "AVX512", which
    does not tell the two apart, so torch's own CPU feature probes are used.
    """
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(torch.cpu, probe, None)
        if check is not None and check():
            return True
    if platform.machine().lower() in ("aarch64", "arm64"):
        return "bf16" in _cpuinfo_flags()
    return False


def _cpuinfo_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def resolve_precision(requested: str, device: torch.device) -> str:
    """Return the concrete precision ("fp32", "bf16", "fp16" or "int8") for ``requested`` on ``device``."""
    if requested not in PRECISIONS:
        raise SettingsError(f"precision '{requested}' is unknown: use one of {', '.join(PRECISIONS)}.")
    if requested == "auto":
        # NOTE: the CUDA choices follow torch's documented support and were not run
        # here (no GPU); only the CPU paths are tested.
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if device.type == "cpu" and cpu_has_native_bf16():
            return "bf16"
        return "fp32"
    if requested == "int8" and device.type != "cpu":
        raise SettingsError(
            f"int8 runs on the CPU only, not on {device}: choose auto or bf16 "
            "(--precision on the command line, Encoder precision in Preferences)."
        )
    if requested == "fp16" and device.type == "cpu":
        raise SettingsError(
            "fp16 runs on GPUs only: on the CPU choose auto, bf16 or int8 "
            "(--precision on the command line, Encoder precision in Preferences)."
        )
    if requested == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        log.warning("this CPU has no bf16 instructions: bf16 is emulated and may be slower than fp32")
    return requested


# Quantized encoder copies, per model, with the weights' fingerprint they were made from.
_QUANTIZED: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, nn.Module]] = weakref.WeakKeyDictionary()


def _fingerprint(module: nn.Module) -> tuple:
    # An optimizer step changes weights in place, which bumps each tensor's version counter.
    return tuple((p.data_ptr(), p._version) for p in module.parameters())


def quantized_encoder(model: nn.Module) -> nn.Module:
    """Return an int8 copy of ``model``'s encoder, made once per set of weights.

    ``quantize_dynamic`` copies the encoder first, so the model in memory and
    its files on disk stay as they were. The copy is kept while the model lives.
    """
    encoder = model.get_encoder()
    fingerprint = _fingerprint(encoder)
    cached = _QUANTIZED.get(model)
    if cached is not None and cached[0] == fingerprint:
        return cached[1]
    with warnings.catch_warnings():
        # torch 2.13 points to torchao in a migration notice; the eager API still works.
        warnings.simplefilter("ignore")
        quantized = torch.ao.quantization.quantize_dynamic(encoder, {nn.Linear}, dtype=torch.qint8, inplace=False)
    _QUANTIZED[model] = (fingerprint, quantized)
    log.info("quantized the encoder's Linear layers to int8")
    return quantized


@contextlib.contextmanager
def encoder_for(model: nn.Module, precision: str) -> Iterator[nn.Module]:
    """Yield the encoder module to call for ``precision`` (resolved), inside the matching autocast."""
    if precision == "int8":
        yield quantized_encoder(model)
        return
    dtype = _AUTOCAST_DTYPES.get(precision)
    if dtype is None:
        yield model.get_encoder()
        return
    with torch.autocast(model.device.type, dtype=dtype):
        yield model.get_encoder()


# Threads --------------------------------------------------------------------


def physical_cores() -> int:
    """Return the number of physical CPU cores (Linux /proc/cpuinfo), else the logical count."""
    cores = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            package = core = None
            for line in cpuinfo:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    package = value.strip()
                elif key == "core id":
                    core = value.strip()
                elif not key and core is not None:
                    cores.add((package, core))
                    package = core = None
            if core is not None:
                cores.add((package, core))
    except OSError:
        pass
    return len(cores) or os.cpu_count() or 1


def encoding_threads() -> int:
    """Return the default intra-op thread count for encoding: one per physical core but one, at least 1.

    OpenMP splits each operation evenly over its threads, so one thread that
    waits for a core busy with the GUI thread or another program holds up the
    whole operation. On 2 cores shared with other jobs, ``bench/encode.py``
    measured 1 thread 1.3 (fp32) to 2.6 (int8) times faster than 2 at batch 1.
    On an idle machine the rule gives up at most one core's share.
    """
    return max(1, physical_cores() - 1)


def decoding_threads() -> int:
    """Return the default intra-op thread count for decoding, by the same rule as encoding.

    A decoding step multiplies only beams x d_model rows per matrix, so every
    operation is short and a thread that waits for a busy core stalls it. On 2
    cores shared with other jobs, ``bench/generate.py`` measured 1 thread 1.4
    to 1.8 times faster than 2 (BART-base size, 16K memory tokens, beam 4).
    """
    # NOTE: measured on a 2-core machine only. On many cores decoding is bound by
    # memory bandwidth, so more threads may help, or fewer than this rule may win.
    return encoding_threads()


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Set torch's intra-op thread count for the duration, then restore it; None changes nothing.

    torch 2.13's OpenMP build keeps the count per OS thread (a count set in a
    Python thread leaves the main thread's unchanged), so this must run in the
    thread that does the work, such as the GUI's worker thread.
    """
    if count is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
