"""Presets of the research harness: the paper's comparison grid (GD-REC section 4) and the students' settings. The
chain's own settings (teacher presets, L, t, epochs, CGAN) are the owner's, in `data_owner.config`."""

from __future__ import annotations

FRACTIONS = (0.5, 0.3)  # student sizes M and S as fractions of the teacher's parameter count
STUDENT_FRACTION = FRACTIONS[0]  # the one student size of `gdrec-lab gd` and the privacy report
KD_WEIGHTS = (1.0, 0.1, 0.01, 0.001)  # RD / CD / BD
TEMPERATURES = (1.0, 2.0, 5.0, 10.0)  # CD / BD / GD
GD_LAMBDA = 0.7  # the paper's lambda; sweep 0..1 for fig4
SELECTION_METRIC = "NDCG@50"  # on the validation item: every cell's epoch and every report's setting
STUDENT_EPOCHS = 200  # the GD student's epochs (shared.distillation trains it)
LAMBDA_SWEEP = tuple(round(0.1 * k, 1) for k in range(11))
