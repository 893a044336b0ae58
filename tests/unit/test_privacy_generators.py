"""The privacy report over list generator families (experiments.privacy): families parsed and refused by name, the
(family, setting) grid in order, CGAN rows keyed exactly as before families existed, other families keyed by their
own generator settings, and the "Leakage by list generator" table rendered from synthetic rows: one row per (family,
include / exclude observed), exclude-observed rows with no own item, absent when only the CGAN ran."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import pytest

from data_owner.config import TeacherSettings
from data_owner.privacy.leakage import EXPORT_ROW, HISTORY_ROW, POPULARITY_ROW
from experiments.lab import LabConfig
from experiments.privacy.render import GENERATOR_TITLE, render_markdown
from experiments.privacy.settings import (
    PrivacySetting,
    chain_settings,
    parse_generators,
    parse_settings,
    row_key,
    setting_config,
    with_generators,
)
from experiments.privacy.summary import NO_MEMBER, summarise
from experiments.results import PrivacyRow

BASE = LabConfig(dataset="ml-100k", teacher=TeacherSettings("bpr", {"dim": 8}, 0.01))


def test_generators_parse_and_refuse_mistakes():
    assert parse_generators("cgan") == ("cgan",)
    assert parse_generators(" CGAN, itemknn ,ease,") == ("cgan", "itemknn", "ease")
    for bad, message in [("knn", "unknown list generator 'knn'"), ("auto", "unknown list generator"),
                         ("cgan,cgan", "listed twice"), (" , ", "no list generator")]:
        with pytest.raises(ValueError, match=message):
            parse_generators(bad)


def test_every_setting_runs_under_every_family_in_order():
    grid = with_generators(parse_settings("default,exclude-observed+rr=4"), ("cgan", "itemknn"))
    assert [s.name for s in grid] == ["default", "exclude-observed+rr=4", "itemknn:default",
                                      "itemknn:exclude-observed+rr=4"]
    assert grid[0].is_default and not grid[2].is_default  # the default is the paper's mode: the CGAN's lists
    assert grid[0].identity() == {"include_observed": True, "rr_epsilon": None}
    assert grid[3].identity() == {"include_observed": False, "rr_epsilon": 4.0, "generator": "itemknn"}
    assert grid[2].describe().startswith("lists of the itemknn generator; lists may hold")
    assert setting_config(BASE, grid[3], 1).generator == "itemknn"


def test_cgan_rows_keep_the_keys_they_had():
    for setting in parse_settings("default,exclude-observed,rr=2"):
        config = replace(BASE, seed=0, include_observed=setting.include_observed, rr_epsilon=setting.rr_epsilon)
        payload = {"setting": {"include_observed": setting.include_observed, "rr_epsilon": setting.rr_epsilon},
                   "seed": 0, "settings": chain_settings(config)}
        expected = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]
        assert row_key(BASE, setting, 0) == expected
        assert "generator" not in chain_settings(config)["gd_teacher"]["lists"]


def test_another_family_is_keyed_by_its_own_settings():
    knn = PrivacySetting(generator="itemknn")
    key = row_key(BASE, knn, 0)
    assert key != row_key(BASE, PrivacySetting(), 0) != row_key(BASE, PrivacySetting(generator="ease"), 0)
    assert row_key(replace(BASE, generator_settings={"itemknn": {"ks": [5]}}), knn, 0) != key
    # another family's settings and the CGAN's do not touch it; they do the CGAN's key
    assert row_key(replace(BASE, generator_settings={"ease": {"max_items": 10}}), knn, 0) == key
    assert row_key(replace(BASE, cgan=replace(BASE.cgan, epochs=3)), knn, 0) == key
    assert row_key(replace(BASE, cgan=replace(BASE.cgan, epochs=3)), PrivacySetting(), 0) != row_key(
        BASE, PrivacySetting(), 0)
    lists = chain_settings(setting_config(BASE, knn, 0))["gd_teacher"]["lists"]
    assert lists["generator"] == "itemknn" and "cgan" not in lists


def privacy_row(base: LabConfig, setting: PrivacySetting, hr: float, precision: float, share: float) -> dict:
    own = share > 0
    leakage = {"max_fpr": 0.01, "rows": [
        {"name": EXPORT_ROW, "precision": precision, "recall": precision / 2, "subset_share": 0.0,
         "membership_auc": 0.8 if own else None, "tpr_at_low_fpr": 0.1 if own else None},
        {"name": POPULARITY_ROW, "precision": 0.3, "recall": 0.2, "subset_share": 0.0, "membership_auc": 0.7,
         "tpr_at_low_fpr": 0.0},
        {"name": HISTORY_ROW, "precision": 1.0, "recall": 1.0, "subset_share": 1.0, "membership_auc": 0.9,
         "tpr_at_low_fpr": 0.2}]}
    return {"key": row_key(base, setting, 0), "dataset": base.dataset, "family": "bpr", "seed": 0,
            "setting": {"name": setting.name, **setting.identity()},
            "student": {"test": {"HR@50": hr, "NDCG@50": hr / 2}}, "leakage": leakage, "observed_share": share,
            "model_visible_train_pairs": 10, "true_train_pairs": 10, "kd_teacher": {}, "gd_teacher": {},
            "generator": {}, "settings": {}, "machine": {"cpu": "x"}, "setting_seconds": 1.0,
            "finished_at": "2026-01-01T00:00:00+00:00"}


def table_rows(md: str) -> list[list[str]]:
    section = md.split(f"## {GENERATOR_TITLE}", 1)[1].split("\n## ", 1)[0]
    return [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| list generator")]


def test_the_generator_table_has_one_row_per_family_and_setting():
    settings = with_generators(parse_settings("default,exclude-observed,rr=2"), ("cgan", "itemknn"))
    numbers = {"default": (0.30, 0.25, 0.25), "exclude-observed": (0.28, 0.0, 0.0), "rr=2": (0.2, 0.2, 0.2),
               "itemknn:default": (0.33, 0.6, 0.6), "itemknn:exclude-observed": (0.31, 0.0, 0.0),
               "itemknn:rr=2": (0.25, 0.5, 0.5)}
    rows = [privacy_row(BASE, s, *numbers[s.name]) for s in settings]
    md = render_markdown(summarise(rows, BASE, settings, [0]), BASE, [0])
    table = table_rows(md)
    # no randomized-response row; the reference rows last, their own-item share their precision
    assert [row[:3] for row in table] == [["cgan", "include observed", "1"], ["cgan", "exclude observed", "1"],
                                          ["itemknn", "include observed", "1"], ["itemknn", "exclude observed", "1"],
                                          [POPULARITY_ROW, "-", "1"], [HISTORY_ROW, "-", "1"]]
    assert table[2][3:] == ["0.3300", "0.6000", "0.3000", "0.6000", "0.8000"]
    for excluded in (table[1], table[3]):
        assert excluded[4] == excluded[6] == "0.0000" and excluded[7] == NO_MEMBER
    assert table[4][3:] == ["-", "0.3000", "0.2000", "0.3000", "0.7000"]
    assert "| itemknn:rr=2 | 1 |" in md and "- list generators: cgan, itemknn {}" in md
    # a requested family without rows is printed as not run
    missing = render_markdown(summarise(rows[:3], BASE, settings, [0]), BASE, [0])
    assert table_rows(missing)[2] == ["itemknn", "include observed", "0", *["not run"] * 5]


def test_only_the_cgan_renders_no_generator_table():
    settings = parse_settings("default,exclude-observed")
    rows = [privacy_row(BASE, s, 0.3, p, p) for s, p in zip(settings, (0.25, 0.0), strict=True)]
    md = render_markdown(summarise(rows, BASE, settings, [0]), BASE, [0])
    assert GENERATOR_TITLE not in md and "list generators" not in md
    assert PrivacyRow.from_dict(rows[0]).to_dict() == rows[0]
