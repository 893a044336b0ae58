"""`gdrec-privacy` (experiments.privacy_report) end to end on a tiny synthetic users.dat: one JSONL row per
(setting, seed) with the student's metrics beside the export's leakage, reference rows checked by hand against the
raw split, a rerun that skips finished rows, a widened sweep that runs only the new setting, and the markdown /
png report with its leakage-target verdict recomputed here from the rows, and committed rows of an older GD student
sampler revision rendered by --report-only; a sweep over list generator families (CGAN and item kNN) whose rows
name their family and whose report has one "Leakage by list generator" row per (family, setting)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

from data_owner.config import TeacherSettings
from experiments import lab
from experiments.lab import LabConfig
from experiments.privacy.render import GENERATOR_TITLE
from experiments.privacy.settings import PrivacySetting, parse_settings, row_key
from experiments.privacy.summary import NO_MEMBER, NOT_RUN, TARGET_TITLE, SettingSummary, leakage_target
from experiments.privacy_report import app
from experiments.results import PrivacyRow, read_rows
from tests.conftest import REPO, write_users_dat

L = 6
TINY = ["--model", "bpr", "--seeds", "0", "--list-length", str(L), "--teacher-epochs", "2", "--cgan-epochs", "2",
        "--gd-epochs", "1", "--student-epochs", "2", "--patience", "0", "--eval-every", "1", "--batch-size", "128",
        "--cgan-json", '{"hidden_g": [16], "hidden_d": [8], "noise_dim": 4, "eval_every": 1, "batch_size": 16, '
                       '"g_steps": 1, "d_steps": 1}',
        "--teacher-json", '{"model": {"dim": 16, "reg": 0.001}, "lr": 0.02}', "--device", "cpu", "--no-progress"]
STAGES = ("train_kd_teacher", "train_generator", "train_gd_teacher", "train_gd_student")


class StageCounter:
    """Counts calls of the chain's stage functions (called through `experiments.lab`)."""

    def __init__(self, monkeypatch) -> None:
        self.calls = dict.fromkeys(STAGES, 0)
        for name in STAGES:
            monkeypatch.setattr(lab, name, self._wrap(name, getattr(lab, name)))

    def _wrap(self, name, function):
        def wrapped(*args, **kwargs):
            self.calls[name] += 1
            return function(*args, **kwargs)

        return wrapped


def invoke(data, out, settings, *extra):
    result = CliRunner().invoke(app, ["--dataset", str(data), "--out-dir", str(out), "--settings", settings, *TINY,
                                      *extra])
    assert result.exit_code == 0, result.output
    return result


def leak(row, name):
    return next(r for r in row["leakage"]["rows"] if r["name"] == name)


def test_sweep_rows_resume_and_report(tmp_path, monkeypatch):
    data = tmp_path / "users.dat"
    write_users_dat(data, n_users=40, n_items=30)
    out = tmp_path / "report"
    results = out / "privacy.jsonl"

    # 1. default and exclude-observed: one KD teacher and one CGAN, two GD teachers and students
    first = StageCounter(monkeypatch)
    result = invoke(data, out, "default,exclude-observed")
    assert "2 (setting, seed) rows: 0 already finished, 2 run now" in result.output
    assert first.calls == {"train_kd_teacher": 1, "train_generator": 1, "train_gd_teacher": 2,
                           "train_gd_student": 2}
    rows = read_rows(results)
    assert [r["setting"]["name"] for r in rows] == ["default", "exclude-observed"]

    # 2. widened by randomized response: the two finished rows are skipped, only rr=2 runs (its own chain)
    monkeypatch.undo()
    second = StageCounter(monkeypatch)
    result = invoke(data, out, "default,exclude-observed,rr=2")
    assert "3 (setting, seed) rows: 2 already finished, 1 run now" in result.output
    assert second.calls == {"train_kd_teacher": 1, "train_generator": 1, "train_gd_teacher": 1, "train_gd_student": 1}

    # 3. the same command again: nothing trains, the rows are untouched
    before = results.read_bytes()
    monkeypatch.undo()
    third = StageCounter(monkeypatch)
    result = invoke(data, out, "default,exclude-observed,rr=2")
    assert "3 (setting, seed) rows: 3 already finished, 0 run now" in result.output
    assert sum(third.calls.values()) == 0 and results.read_bytes() == before

    rows = {r["setting"]["name"]: r for r in read_rows(results)}
    assert set(rows) == {"default", "exclude-observed", "rr=2"}
    check_rows(rows, data)
    check_report(rows, out, result.output)

    # a requested setting without a row is printed as not run, never filled in
    invoke(data, out, "default,rr=2,rr=8", "--report-only")
    line = next(ln for ln in (out / "privacy.md").read_text().splitlines() if ln.startswith("| rr=8 |"))
    assert line.count(NOT_RUN) == 9 and "| 0 |" in line


TINY_KNN = ["--generator-json", '{"itemknn": {"ks": [5], "shrinks": [0.0]}}']


def generator_section(md):
    """The rows of the "Leakage by list generator" table: (first cell, second cell) -> the line."""
    section = md.split(f"## {GENERATOR_TITLE}", 1)[1].split("\n## ", 1)[0]
    table = [ln for ln in section.splitlines() if ln.startswith("| ") and not ln.startswith("| list generator")]
    return {tuple(c.strip() for c in ln.strip("|").split("|")[:2]): ln for ln in table}


def test_generator_sweep_rows_resume_and_table(tmp_path, monkeypatch):
    data = tmp_path / "users.dat"
    write_users_dat(data, n_users=40, n_items=30)
    out = tmp_path / "report"
    results = out / "privacy.jsonl"
    settings = "default,exclude-observed"

    # 1. two families x two settings: one KD teacher, one generator per family, a GD chain per (family, setting)
    first = StageCounter(monkeypatch)
    result = invoke(data, out, settings, "--generators", "cgan,itemknn", *TINY_KNN)
    assert "4 (setting, seed) rows: 0 already finished, 4 run now" in result.output
    assert first.calls == {"train_kd_teacher": 1, "train_generator": 2, "train_gd_teacher": 4, "train_gd_student": 4}
    rows = {r["setting"]["name"]: r for r in read_rows(results)}
    assert set(rows) == {"default", "exclude-observed", "itemknn:default", "itemknn:exclude-observed"}
    for name, row in rows.items():
        knn = name.startswith("itemknn:")
        # a CGAN row is written as it always was; another family's row names it in its setting and generator record
        assert ("generator" in row["setting"], "family" in row["generator"]) == (knn, knn)
        if knn:
            assert row["setting"]["generator"] == row["generator"]["family"] == "itemknn"
            assert row["generator"]["settings"]["k"] == 5
        assert leak(row, "export")["precision"] == pytest.approx(row["observed_share"])
    for name in ("exclude-observed", "itemknn:exclude-observed"):  # exclude-observed: no own item is listed
        assert rows[name]["observed_share"] == 0.0 and leak(rows[name], "export")["membership_auc"] is None
    assert rows["itemknn:default"]["observed_share"] > 0.0
    assert len({r["key"] for r in rows.values()}) == 4

    # 2. the same sweep again skips every row; the CGAN alone (the default) finds its rows under their keys
    before = results.read_bytes()
    monkeypatch.undo()
    again = StageCounter(monkeypatch)
    result = invoke(data, out, settings, "--generators", "cgan,itemknn", *TINY_KNN)
    assert "4 (setting, seed) rows: 4 already finished, 0 run now" in result.output
    md = (out / "privacy.md").read_text()
    result = invoke(data, out, settings)
    assert "2 (setting, seed) rows: 2 already finished, 0 run now" in result.output
    assert sum(again.calls.values()) == 0 and results.read_bytes() == before
    assert GENERATOR_TITLE not in (out / "privacy.md").read_text()

    # 3. the report: one row per (family, include / exclude observed), then the two reference rows
    table = generator_section(md)
    assert list(table) == [("cgan", "include observed"), ("cgan", "exclude observed"),
                           ("itemknn", "include observed"), ("itemknn", "exclude observed"),
                           ("popularity top-L (reference)", "-"), ("raw history T_u (reference)", "-")]
    for family, name in (("cgan", "exclude-observed"), ("itemknn", "itemknn:exclude-observed")):
        cells = [c.strip() for c in table[(family, "exclude observed")].strip("|").split("|")]
        assert cells[2] == "1" and cells[4] == "0.0000" and cells[6] == "0.0000" and cells[7] == NO_MEMBER
        assert cells[3] == f"{rows[name]['student']['test']['HR@50']:.4f}"
    knn = [c.strip() for c in table[("itemknn", "include observed")].strip("|").split("|")]
    assert knn[6] == f"{rows['itemknn:default']['observed_share']:.4f}"
    assert f"| {rows['itemknn:default']['setting']['name']} | 1 |" in md and "- list generators: cgan, itemknn" in md

    # an unknown family is a usage error naming the choices
    bad = CliRunner().invoke(app, ["--dataset", str(data), "--generators", "cgan,knn", "--report-only"])
    assert bad.exit_code != 0 and "unknown list generator 'knn'" in bad.output


def check_rows(rows, data):
    split = lab.load_split(str(data))
    train = [set(split.train.row(u).tolist()) for u in range(split.n_users)]
    counts = np.bincount(split.train.indices, minlength=split.n_items)
    top = set(np.argsort(-counts, kind="stable")[:L].tolist())  # the popularity list, counted here
    popularity_precision = np.mean([len(top & t) / L for t in train])
    for row in rows.values():
        assert row["seed"] == 0 and row["family"] == "bpr"
        for part in ("valid", "test"):
            assert {"HR@50", "NDCG@50"} <= set(row["student"][part])
            assert all(0.0 <= v <= 1.0 for v in row["student"][part].values())
        assert leak(row, "popularity top-L (reference)")["precision"] == pytest.approx(popularity_precision)
        history = leak(row, "raw history T_u (reference)")
        assert history["precision"] == 1.0 and history["recall"] == 1.0 and history["subset_share"] == 1.0
        export = leak(row, "export")
        assert export["mean_list_length"] == L and 0.0 <= export["precision"] <= 1.0
        # the export's precision is the share of listed items that are the user's own (every list has length L)
        assert export["precision"] == pytest.approx(row["observed_share"])
        assert row["true_train_pairs"] == split.train.nnz and row["setting_seconds"] > 0
        assert row["machine"]["cpu_count"] >= 1
    # exclude-observed without randomized response: no listed item is a training item, so no member to infer
    excluded = leak(rows["exclude-observed"], "export")
    assert excluded["precision"] == 0.0 and excluded["subset_share"] == 0.0 and excluded["membership_auc"] is None
    assert leak(rows["default"], "export")["membership_auc"] is not None
    # randomized response at eps 2 (p = 0.12): the models saw a denser matrix than the true one
    assert rows["rr=2"]["setting"]["rr_epsilon"] == 2.0
    assert rows["rr=2"]["model_visible_train_pairs"] > split.train.nnz
    assert rows["default"]["model_visible_train_pairs"] == split.train.nnz


def check_report(rows, out, output):
    md = (out / "privacy.md").read_text()
    png = out / "privacy.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    for name in rows:
        assert f"| {name} | 1 |" in md
    assert "| popularity top-L (reference) |" in md and "| raw history T_u (reference) |" in md
    assert NO_MEMBER in next(ln for ln in md.splitlines() if ln.startswith("| exclude-observed |"))
    assert "seeds requested: 0" in md and "machine:" in md and "run time:" in md
    assert "KD teacher 2, CGAN 2, GD teacher 1, GD student 2" in md
    # the leakage-target verdict, recomputed from the rows
    default_hr = rows["default"]["student"]["test"]["HR@50"]
    bound = 2 * leak(rows["default"], "popularity top-L (reference)")["precision"]
    passing = [name for name in ("exclude-observed", "rr=2")
               if leak(rows[name], "export")["precision"] <= bound
               and default_hr > 0 and rows[name]["student"]["test"]["HR@50"] >= 0.8 * default_hr]
    verdict = "yes" if passing else "no"
    assert f"## {TARGET_TITLE}" in md and f"**A control meets the target: {verdict}**" in md
    assert f"leakage target (reconstruction precision within 2x popularity, GD student HR@50 >= 80% of default): " \
           f"{verdict}" in output
    rr_line = next(ln for ln in md.splitlines() if ln.startswith("- rr=2: precision"))
    assert f"precision {leak(rows['rr=2'], 'export')['precision']:.4f}" in rr_line


def privacy_row(**fields) -> dict:
    """A privacy row with placeholder values for every field `fields` does not set."""
    row = {"key": "k", "dataset": "d", "family": "bpr", "seed": 0, "setting": {}, "student": {},
           "leakage": {"rows": []}, "observed_share": 0.0, "model_visible_train_pairs": 1, "true_train_pairs": 1,
           "kd_teacher": {}, "gd_teacher": {}, "generator": {}, "settings": {}, "machine": {}, "setting_seconds": 0.0,
           "finished_at": "2026-01-01T00:00:00+00:00"}
    return row | fields


def summary(name, hr, precision, popularity=0.1, seeds=(0,)):
    setting = parse_settings(name)[0]
    rows = tuple(PrivacyRow.from_dict(privacy_row(
        seed=s, student={"test": {"HR@50": hr}},
        leakage={"rows": [{"name": "export", "precision": precision},
                          {"name": "popularity top-L (reference)", "precision": popularity}]}))
        for s in seeds)
    return SettingSummary(setting, rows)


def test_leakage_target_known_answers():
    # rr=4 keeps 85% of HR@50 at 1.5x popularity precision: passes; rr=1 leaks little but loses too much utility;
    # exclude-observed keeps utility but leaks 2.5x popularity
    summaries = [summary("default", 0.20, 0.60), summary("rr=1", 0.10, 0.12), summary("rr=4", 0.17, 0.15),
                 summary("exclude-observed", 0.19, 0.25)]
    check = leakage_target(summaries)
    assert check.verdict == "yes" and check.passing == ("rr=4",)
    assert any(line.startswith("rr=1:") and line.endswith("-> no") and "50.0% of default" in line
               for line in check.lines)
    assert leakage_target([summaries[0], summaries[1], summaries[3]]).verdict == "no"
    # exactly at the bounds counts as within them
    assert leakage_target([summaries[0], summary("rr=8", 0.16, 0.2)]).verdict == "yes"
    # no default row: nothing to compare with, and it says so
    missing = leakage_target([SettingSummary(PrivacySetting(), ()), summaries[2]])
    assert missing.verdict == "cannot be checked" and "default setting has no row" in missing.lines[0]


def test_settings_parse_and_refuse_mistakes():
    parsed = parse_settings("default, exclude-observed, rr=1, rr:8, exclude-observed+rr=4")
    assert [s.name for s in parsed] == ["default", "exclude-observed", "rr=1", "rr=8", "exclude-observed+rr=4"]
    assert parsed[4] == PrivacySetting(include_observed=False, rr_epsilon=4.0) and parsed[0].is_default
    for bad, message in [("rr=0", "positive"), ("dp=1", "unknown privacy setting"), ("rr=x", "must be a number"),
                         ("rr=1,rr=1", "listed twice"), ("", "no privacy setting")]:
        with pytest.raises(ValueError, match=message):
            parse_settings(bad)
    result = CliRunner().invoke(app, ["--dataset", "x", "--settings", "rr=-1", "--report-only"])
    assert result.exit_code != 0 and "positive" in result.output


def test_row_keys_follow_the_chain_settings():
    base = LabConfig(dataset="ml-100k", teacher=TeacherSettings("bpr", {"dim": 8}, 0.01))
    setting = PrivacySetting(rr_epsilon=2.0)
    assert row_key(base, setting, 0) == row_key(base, setting, 0)
    others = {row_key(base, setting, 1), row_key(base, PrivacySetting(), 0),
              row_key(LabConfig(**{**base.__dict__, "student_epochs": 3}), setting, 0),
              row_key(LabConfig(**{**base.__dict__, "gd_epochs": 3}), setting, 0)}
    assert row_key(base, setting, 0) not in others and len(others) == 4
    # true-size teacher epochs change what randomized-response rows depend on, and nothing else
    sized = replace(base, rr_true_size_epochs=True)
    assert row_key(sized, setting, 0) != row_key(base, setting, 0)
    assert row_key(sized, PrivacySetting(), 0) == row_key(base, PrivacySetting(), 0)
    json.dumps(setting.__dict__)  # the setting is plain data in the rows


def test_the_newest_sampler_revision_of_a_row_is_rendered():
    from experiments.privacy.settings import GD_SAMPLER_REVISION, row_sampler_revision
    from experiments.privacy.summary import summarise

    base = LabConfig(dataset="ml-100k", teacher=TeacherSettings("bpr", {"dim": 8}, 0.01))
    default, rr = PrivacySetting(), PrivacySetting(rr_epsilon=2.0)
    old = privacy_row(key=row_key(base, default, 0, sampler_revision=1), seed=0, settings={})
    new = privacy_row(key=row_key(base, default, 0), seed=0, settings={"student_sampler": GD_SAMPLER_REVISION})
    old_rr = privacy_row(key=row_key(base, rr, 1, sampler_revision=1), seed=1, settings={})
    assert old["key"] != new["key"]
    assert row_sampler_revision(old) == 1 and row_sampler_revision(new) == GD_SAMPLER_REVISION
    assert PrivacyRow.from_dict(old).sampler_revision == 1
    # both revisions of (default, seed 0): the current one, wherever it stands in the file
    for rows in ([old, new, old_rr], [new, old, old_rr]):
        by_setting = {s.setting: s.rows for s in summarise(rows, base, [default, rr], [0, 1])}
        assert by_setting == {default: (PrivacyRow.from_dict(new),), rr: (PrivacyRow.from_dict(old_rr),)}
    # a row of another seed or other chain settings is never taken
    assert summarise([old], base, [default], [1])[0].rows == ()
    assert summarise([old], replace(base, gd_epochs=3), [default], [0])[0].rows == ()


LIGHT_CGAN = ('{"batch_size": 256, "g_steps": 1, "d_steps": 1, "lr_g": 5e-4, "lr_d": 5e-4, "eval_every": 5, '
              '"patience": 3, "alpha": 0.03, "mask_sampling": "per_user"}')
COMMITTED = {  # report folder, rows, and the chain options of the command that made them
    "ml-100k": ("reports/ml-100k", "reports/ml-100k/privacy.jsonl",
                ["--dataset", "ml-100k", "--seeds", "0,1", "--cgan-epochs", "50"], 12),
    "citeulike-t": ("reports/citeulike-t", "reports/citeulike-t/privacy.jsonl",
                    ["--dataset", "citeulike-t", "--seeds", "0", "--cgan-epochs", "60", "--rr-true-size-epochs"], 6),
    "citeulike-t-light": ("reports/citeulike-t/privacy-cgan-light", "reports/citeulike-t/privacy.jsonl",
                          ["--dataset", "citeulike-t", "--seeds", "0", "--cgan-epochs", "20", "--cgan-json",
                           LIGHT_CGAN], 3),
    "ml-100k-generators": ("reports/ml-100k/privacy-generators", "reports/ml-100k/privacy.jsonl",
                           ["--dataset", "ml-100k", "--seeds", "0", "--cgan-epochs", "50", "--generators",
                            "cgan,itemknn,vae,teacher,ease", "--settings", "default,exclude-observed"], 2),
    "citeulike-t-generators": ("reports/citeulike-t/privacy-generators", "reports/citeulike-t/privacy.jsonl",
                               ["--dataset", "citeulike-t", "--seeds", "0", "--cgan-epochs", "60",
                                "--rr-true-size-epochs", "--generators", "cgan,itemknn,vae,teacher", "--settings",
                                "default,exclude-observed"], 2),
}


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_committed_reports_are_the_render_of_their_rows(name, tmp_path):
    folder, rows, options, old_rows = COMMITTED[name]
    result = CliRunner().invoke(app, [*options, "--results", str(REPO / rows), "--out-dir", str(tmp_path),
                                      "--report-only", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "privacy.md").read_text(encoding="utf-8") == (REPO / folder / "privacy.md").read_text(
        encoding="utf-8")
    assert f"{old_rows} row(s) hold GD students of sampler revision 1" in result.output
