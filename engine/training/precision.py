"""Choosing the autocast dtype and loss scaling for a device."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import SettingsError


@dataclass(frozen=True)
class Precision:
    """Numeric format of forward passes; ``autocast_dtype`` None means plain float32."""

    name: str  # "fp32", "bf16" or "fp16"
    autocast_dtype: torch.dtype | None
    grad_scaler: bool  # fp16 gradients underflow without loss scaling

    def make_grad_scaler(self, device: torch.device) -> torch.amp.GradScaler | None:
        return torch.amp.GradScaler(device.type) if self.grad_scaler else None


FP32 = Precision("fp32", None, False)
BF16 = Precision("bf16", torch.bfloat16, False)
FP16 = Precision("fp16", torch.float16, True)


def choose_precision(requested: str, device_type: str, bf16_supported: bool) -> Precision:
    """Return the precision for ``requested`` ("auto", "fp32", "bf16", "fp16") on ``device_type``.

    "auto" picks bf16 on a CUDA GPU that supports it, fp16 with loss scaling on
    an older CUDA GPU, and float32 elsewhere. bf16 on a CPU must be requested,
    because only some CPUs run it fast. fp16 runs on CUDA only.
    """
    if requested == "auto":
        if device_type == "cuda":
            return BF16 if bf16_supported else FP16
        return FP32
    if requested == "fp32":
        return FP32
    if requested == "bf16":
        if device_type == "cuda" and not bf16_supported:
            raise SettingsError("This GPU does not support bf16: use --precision fp16 or auto.")
        if device_type not in ("cuda", "cpu"):
            raise SettingsError(f"bf16 training is not supported on {device_type}: use --precision fp32.")
        return BF16
    if requested == "fp16":
        if device_type != "cuda":
            raise SettingsError(f"fp16 training needs a CUDA GPU, not {device_type}: use --precision fp32 or bf16.")
        return FP16
    raise SettingsError(f"precision '{requested}' is unknown: use auto, fp32, bf16 or fp16.")


def precision_for(requested: str, device: torch.device) -> Precision:
    """Return ``choose_precision`` for ``device``, asking CUDA whether it supports bf16."""
    bf16_supported = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return choose_precision(requested, device.type, bf16_supported)
