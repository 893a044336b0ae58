"""`gdrec-owner train` with the product's defaults (`--generator auto`, own items left out of the lists) and with a
named generator family, on a tiny synthetic users.dat."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from data_owner.cli import app
from data_owner.lists import GeneratedLists
from data_owner.pipeline import load_split, read_stage
from data_owner.settings import ArtifactLayout
from tests.integration.test_owner_pipeline import TINY, owner_environment

# the tiny chain without its generator choice: the product's defaults apply
PRODUCT_TINY = [arg for arg in TINY if arg not in ("--generator", "cgan", "--include-observed")]
FAST_VAE = '{"vae": {"hidden": 16, "latent": 4, "epochs": 6, "eval_every": 2}}'


@pytest.fixture(scope="module")
def environment(tmp_path_factory):
    root = tmp_path_factory.mktemp("generators")
    with owner_environment(root):
        yield root


def train(artifacts, *extra: str):
    result = CliRunner().invoke(app, ["train", "--dataset", "users.dat", "--artifacts", str(artifacts),
                                      *PRODUCT_TINY, "--generator-json", FAST_VAE, *extra])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def auto(environment):
    result = train(environment / "auto")
    return ArtifactLayout(environment / "auto"), result


def test_auto_keeps_the_candidate_whose_dry_run_student_validates_best(auto):
    layout, result = auto
    summary = read_stage(layout, "generator")["summary"]
    selection = summary["selection"]
    families = [c["family"] for c in selection["candidates"]]
    assert families == ["itemknn", "teacher", "vae"] and selection["skipped_for_time"] == []
    best = max(selection["candidates"], key=lambda c: (c["student_valid"]["HR@50"], c["student_valid"]["NDCG@50"]))
    assert summary["family"] == selection["chosen"] == best["family"]
    for candidate in selection["candidates"]:
        assert 0 <= candidate["student_valid"]["HR@50"] <= 1 and candidate["lists"]["list_length"] == 8
    assert f"list generator: {summary['family']}" in result.output
    assert result.output.count("  candidate ") == 3


def test_the_product_default_leaves_each_users_own_items_out(auto, environment):
    layout, result = auto
    lists = GeneratedLists.load(layout.stage("lists"))
    split = load_split(str(environment / "users.dat"))
    assert not lists.include_observed and lists.observed_share(split.train) == 0.0
    assert read_stage(layout, "export")["summary"]["privacy"]["include_observed"] is False
    assert "exclude observed" in result.output


def test_auto_redoes_its_choice_when_the_export_it_dry_runs_changes(auto):
    layout, _ = auto
    before = read_stage(layout, "generator")["finished_at"]
    kd_before = read_stage(layout, "kd_teacher")["finished_at"]
    train(layout.root, "--temperature", "3")  # the dry-run students learn from t = 3 targets
    assert read_stage(layout, "generator")["finished_at"] != before
    assert read_stage(layout, "kd_teacher")["finished_at"] == kd_before


@pytest.mark.parametrize("family", ["itemknn", "teacher"])
def test_a_named_family_is_fitted_and_recorded(environment, family):
    artifacts = environment / family
    result = train(artifacts, "--generator", family)
    layout = ArtifactLayout(artifacts)
    summary = read_stage(layout, "generator")["summary"]
    assert summary["family"] == family and "selection" not in summary
    assert 0 <= summary["valid"]["HR@50"] <= 1
    lists = read_stage(layout, "lists")["summary"]
    assert lists["generator"] == family and lists["observed_share"] == 0.0 and lists["coverage"] > 0
    assert json.loads((layout.stage("generator") / "generator.json").read_text())["family"] == family
    assert f"list generator: {family}" in result.output


def test_bad_generator_options_are_refused_before_any_training(environment):
    runner = CliRunner()
    for extra, message in [(["--generator", "gan"], "--generator must be one of"),
                           (["--generator-json", '{"itemknn": {"k": 3}}'], "itemknn generator settings take"),
                           (["--auto-families", "itemknn,gan"], "generator families must be among")]:
        result = runner.invoke(app, ["train", "--dataset", "users.dat", "--artifacts", str(environment / "bad"),
                                     *PRODUCT_TINY, *extra])
        assert result.exit_code == 2 and message in result.output, result.output
        assert not (environment / "bad" / "stages").exists() or not any((environment / "bad" / "stages").iterdir())


def test_the_export_record_names_its_list_source_and_list_statistics(auto):
    layout, _ = auto
    record = read_stage(layout, "export")["summary"]
    chosen = read_stage(layout, "generator")["summary"]
    assert record["generator"] == {"family": chosen["family"], "settings": chosen["settings"]}
    assert record["lists"]["observed_share"] == 0.0 and record["lists"]["list_length"] == 8
