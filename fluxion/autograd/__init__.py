"""``fluxion.autograd``: reverse-mode differentiation of the recorded graph."""

from fluxion.autograd.anomaly import detect_anomaly, is_anomaly_enabled, set_detect_anomaly
from fluxion.autograd.engine import backward, grad
from fluxion.autograd.function import Function, FunctionCtx
from fluxion.autograd.grad_mode import (
    enable_grad,
    inference_mode,
    is_grad_enabled,
    no_grad,
    set_grad_enabled,
)
from fluxion.autograd.gradcheck import gradcheck, gradgradcheck

__all__ = [
    "Function", "FunctionCtx", "backward", "detect_anomaly", "enable_grad", "grad", "gradcheck",
    "gradgradcheck", "inference_mode", "is_anomaly_enabled", "is_grad_enabled", "no_grad",
    "set_detect_anomaly", "set_grad_enabled",
]
