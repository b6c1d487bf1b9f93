"""Analyses: pure functions (model, data, options) -> named result dataclasses."""

from interp.analyses.accuracy import task_accuracy
from interp.analyses.dla import direct_logit_attribution
from interp.analyses.patching import patch_heads, patch_residual, sweep_sites
from interp.analyses.results import AccuracyResult, DLAResult, PatchingResult

__all__ = [
    "task_accuracy",
    "direct_logit_attribution",
    "patch_heads",
    "patch_residual",
    "sweep_sites",
    "AccuracyResult",
    "DLAResult",
    "PatchingResult",
]
