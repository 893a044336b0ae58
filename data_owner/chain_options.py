"""The owner chain's config from command-line values: the dataset's CGAN preset with the epochs and JSON fields laid
over it, the teacher preset with the JSON fields laid over it, and the teacher's search."""

from __future__ import annotations

from typing import Any

from data_owner.config import ChainConfig, TeacherTuning, cgan_preset, teacher_from_fields


def chain_config(dataset: str, family: str, *, cgan_epochs: int | None = None, cgan_json: str | None = None,
                 teacher_fields: dict[str, Any] | None = None, tune: bool | None = None,
                 tuning_fields: dict[str, Any] | None = None, **fields: Any) -> ChainConfig:
    """ChainConfig for `dataset` and teacher `family`: the CGAN preset of the dataset with `cgan_epochs` and the
    CGANConfig fields of `cgan_json` over it; the teacher preset with `teacher_fields` ({"model", "lr", "pretrain"})
    over it when given (the preset of `teacher_optimizer`, a ChainConfig field); `tune` (None: when the dataset has
    no preset and no teacher fields are given) with the `TeacherTuning` fields of `tuning_fields` over its defaults;
    the other ChainConfig fields as passed. Raises TypeError or ValueError naming what is wrong."""
    cgan = cgan_preset(dataset, cgan_epochs).with_json(cgan_json)
    optimizer = fields.get("teacher_optimizer", "adam")
    teacher = teacher_from_fields(dataset, family, teacher_fields, optimizer=optimizer) if teacher_fields else None
    tuning = TeacherTuning(**(tuning_fields or {}))
    return ChainConfig(dataset=dataset, family=family, teacher=teacher, cgan=cgan, tune=tune, tuning=tuning, **fields)
