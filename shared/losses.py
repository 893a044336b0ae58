"""Distillation losses shared by the student (consumer) and the baselines (experiments).

GD-REC eq. 6: L_GD = -sum_{i in GF(I)_u} [ q_ui log P(u,i) + (1 - q_ui) log(1 - P(u,i)) ],
q_ui = sigmoid(z^T_ui / t) (shipped by the owner), P(u,i) = sigmoid(z^S_ui / t)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_targets(teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """q = sigmoid(z / t): the teacher's softened probabilities (what the owner exports)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return torch.sigmoid(teacher_logits / temperature)


def retemper(targets: torch.Tensor, from_temperature: float, to_temperature: float) -> torch.Tensor:
    """Soft targets sigmoid(z / t1) -> sigmoid(z / t2) without z: z = t1 * logit(q), exact up to float rounding
    (q is clamped one float32 step inside (0, 1), so a saturated target stays finite)."""
    if from_temperature <= 0 or to_temperature <= 0:
        raise ValueError(f"temperatures must be positive, got {from_temperature} and {to_temperature}")
    tiny = torch.finfo(torch.float32).eps
    q = targets.double().clamp(tiny, 1 - tiny)
    return torch.sigmoid(torch.logit(q) * (from_temperature / to_temperature)).to(targets.dtype)


def soft_target_bce(student_logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean BCE between sigmoid(z^S / t) and soft targets q in [0, 1] (eq. 6, averaged over pairs)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return F.binary_cross_entropy_with_logits(student_logits / temperature, targets)
