"""The KD teacher as a list generator: its scores z_ui with Gumbel noise at a temperature, a stochastic top-L
(Gumbel-top-L: L items drawn without replacement from softmax(z_u / tau)); at tau = 0 it is the teacher's own
top-L. It has nothing to fit: it is the teacher the chain trained, selected on validation there."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from data_owner.data import LeaveOneOutSplit
from data_owner.generators.base import FitReport, ListGenerator, validation_metrics
from shared.checkpoint import load_checkpoint, save_checkpoint
from shared.interactions import ItemSets
from shared.models import Recommender


@dataclass(frozen=True)
class TeacherListSettings:
    noise_temperature: float = 0.0  # tau on the teacher's logits (0: its own top-L)

    def __post_init__(self) -> None:
        if self.noise_temperature < 0:
            raise ValueError(f"teacher noise_temperature must be >= 0, got {self.noise_temperature}")


class TeacherLists(ListGenerator):
    family: ClassVar[str] = "teacher"

    def __init__(self, model: Recommender, noise_temperature: float, report: FitReport | None = None) -> None:
        self.model, self.noise_temperature, self.n_items = model.eval(), noise_temperature, model.n_items
        self.report = report or FitReport(chosen=self.settings())

    @torch.no_grad()
    def logits(self, users: torch.Tensor, train: ItemSets, noise: torch.Generator | None = None) -> torch.Tensor:
        return self.model.score_all(users.to(self.model.device)).to(users.device)

    def settings(self) -> dict[str, Any]:
        return {"noise_temperature": self.noise_temperature}

    def _state(self) -> dict[str, torch.Tensor]:
        return {}

    def save(self, folder: Path) -> None:
        save_checkpoint(Path(folder) / "teacher", self.model, {"role": "list generator"})
        super().save(folder)

    @classmethod
    def _from_state(cls, settings: dict[str, Any], state: dict[str, torch.Tensor], n_items: int,
                    device: torch.device) -> TeacherLists:
        raise NotImplementedError("TeacherLists loads through load_teacher_lists (it keeps a model checkpoint)")


def load_teacher_lists(folder: Path, settings: dict[str, Any], device: torch.device | str) -> TeacherLists:
    model, _ = load_checkpoint(Path(folder) / "teacher", device)
    return TeacherLists(model, float(settings["noise_temperature"]))


def fit_teacher_lists(teacher: Recommender, trained_on: LeaveOneOutSplit, settings: TeacherListSettings,
                      device: torch.device | str = "cpu") -> TeacherLists:
    """The teacher as a generator (nothing to fit); its report holds the teacher's validation numbers."""
    lists = TeacherLists(teacher, settings.noise_temperature)
    lists.report = FitReport(chosen=lists.settings(),
                             valid=validation_metrics(lists.scorer(trained_on.train, device=device), trained_on,
                                                      device))
    return lists


__all__ = ["TeacherListSettings", "TeacherLists", "fit_teacher_lists", "load_teacher_lists"]
