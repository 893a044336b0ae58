"""What crosses the boundary, measured and bounded (ALGORITHMS.md section 5): leakage metrics of an export against
the owner's raw data, and the controls that bound it (randomized response on the models' input)."""

from data_owner.privacy.controls import (
    flip_probability,
    randomized_response,
    randomized_response_seed,
    randomized_split,
)
from data_owner.privacy.leakage import (
    ExportedPairs,
    LeakageReport,
    LeakageRow,
    Membership,
    PairScorer,
    Reconstruction,
    export_pairs,
    held_out_pairs,
    leakage_report,
    membership,
    popularity_lists,
    reconstruction,
    roc_auc,
    soft_target_scorer,
    tpr_at_fpr,
)

__all__ = [
    "ExportedPairs",
    "LeakageReport",
    "LeakageRow",
    "Membership",
    "PairScorer",
    "Reconstruction",
    "export_pairs",
    "flip_probability",
    "held_out_pairs",
    "leakage_report",
    "membership",
    "popularity_lists",
    "randomized_response",
    "randomized_response_seed",
    "randomized_split",
    "reconstruction",
    "roc_auc",
    "soft_target_scorer",
    "tpr_at_fpr",
]
