"""`gdrec-owner audit leakage` and the randomized-response switch of `gdrec-owner train`, end to end on a tiny
synthetic users.dat (two tiny training runs for the module: default switches, and eps = 1 with exclude-observed).
That another epsilon gives other stage keys is pinned in tests/unit/test_privacy_pipeline.py."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from data_owner.api import create_app
from data_owner.cli import app
from data_owner.pipeline import STAGES, load_split, read_stage
from data_owner.privacy import randomized_response_seed, randomized_split
from data_owner.privacy.leakage import EXPORT_ROW, HISTORY_ROW, POPULARITY_ROW
from data_owner.settings import ArtifactLayout, OwnerSettings
from shared.schemas import ExportBundle
from tests.integration.test_owner_pipeline import SECRET, TINY, owner_environment


@pytest.fixture(scope="module")
def environment(tmp_path_factory):
    root = tmp_path_factory.mktemp("leakage")
    with owner_environment(root):
        yield root


def train(artifacts, *extra: str):
    result = CliRunner().invoke(app, ["train", "--dataset", "users.dat", "--artifacts", str(artifacts), *TINY, *extra])
    assert result.exit_code == 0, result.output
    return result


def audit(artifacts, out, *extra: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, ["audit", "leakage", "--artifacts", str(artifacts), "--out", str(out), *extra],
                              env=env)


@pytest.fixture(scope="module")
def plain(environment):
    train(environment / "plain")
    return ArtifactLayout(environment / "plain")


@pytest.fixture(scope="module")
def randomized(environment):
    result = train(environment / "rr", "--rr-epsilon", "1", "--exclude-observed", "--rr-true-size-epochs")
    assert "randomized response eps=1 per interaction" in result.output
    return ArtifactLayout(environment / "rr")


def lists_of(layout: ArtifactLayout) -> np.ndarray:
    with np.load(layout.stage("lists") / "lists.npz") as data:
        return data["items"]


def test_leakage_of_a_default_export_against_the_raw_history(plain, environment):
    out = environment / "plain-leakage.json"
    result = audit(plain.root, out)
    assert result.exit_code == 0, result.output
    for row in (EXPORT_ROW, POPULARITY_ROW, HISTORY_ROW):
        assert f"| {row} |" in result.output
    report = json.loads(out.read_text())
    rows = {row["name"]: row for row in report["rows"]}
    # the same numbers counted by hand from the lists stage and the raw split
    split = load_split(str(environment / "users.dat"))
    lists = lists_of(plain)
    history = [set(split.train.row(u).tolist()) for u in range(split.n_users)]
    hits = [len(set(lists[u].tolist()) & history[u]) for u in range(split.n_users)]
    assert rows[EXPORT_ROW]["precision"] == pytest.approx(np.mean([h / lists.shape[1] for h in hits]))
    assert rows[EXPORT_ROW]["recall"] == pytest.approx(np.mean([h / len(history[u]) for u, h in enumerate(hits)]))
    assert rows[EXPORT_ROW]["subset_share"] == pytest.approx(np.mean([h == lists.shape[1] for h in hits]))
    assert rows[EXPORT_ROW]["precision"] == pytest.approx(
        read_stage(plain, "lists")["summary"]["observed_share"], abs=1e-4)
    assert rows[HISTORY_ROW]["precision"] == rows[HISTORY_ROW]["recall"] == rows[HISTORY_ROW]["subset_share"] == 1.0
    assert rows[EXPORT_ROW]["n_members"] == sum(hits) and rows[EXPORT_ROW]["n_nonmembers"] == 2 * split.eval_users.size
    for row in rows.values():
        assert 0.0 <= row["membership_auc"] <= 1.0
    assert report["context"]["include_observed"] is True and report["context"]["rr_epsilon"] is None
    assert report["context"]["soft_target_max_deviation"] < 1e-3
    assert report["context"]["export_id"] == read_stage(plain, "export")["summary"]["export_id"]


def test_randomized_response_is_recorded_and_the_models_read_only_the_randomized_matrix(plain, randomized,
                                                                                        environment):
    manifest = ExportBundle.model_validate_json(randomized.export_file.read_bytes()).manifest
    assert manifest.privacy.randomized_response_epsilon == 1.0 and manifest.privacy.include_observed is False
    config = json.loads(randomized.run_file.read_text())["config"]
    assert config["rr_epsilon"] == 1.0 and config["rr_true_size_epochs"] is True
    for name in STAGES:
        assert read_stage(randomized, name)["key"] != read_stage(plain, name)["key"]
    # exclude-observed under randomized response: no list holds an item of the user's randomized training set,
    # the very matrix the pipeline derives from the secret (known answer for "the lists come from C~")
    split = load_split(str(environment / "users.dat"))
    model_input = randomized_split(split, 1.0, randomized_response_seed(SECRET.encode(), 0)).train
    lists = lists_of(randomized)
    users = np.repeat(np.arange(split.n_users), lists.shape[1])
    assert not model_input.contains(users, lists.ravel()).any()
    randomized_interactions = read_stage(randomized, "generator")["summary"]["randomized_interactions"]
    assert randomized_interactions == model_input.nnz != split.train.nnz
    gd = read_stage(randomized, "gd_teacher")["summary"]
    assert {"valid", "test", "valid_on_randomized"} <= set(gd) and gd["rr_epsilon"] == 1.0

    out = environment / "rr-leakage.json"
    result = audit(randomized.root, out)
    assert result.exit_code == 0, result.output
    context = json.loads(out.read_text())["context"]
    assert context["rr_epsilon"] == 1.0 and context["include_observed"] is False


def test_the_audit_log_records_the_privacy_switches_of_what_it_served(randomized):
    added = CliRunner().invoke(app, ["keys", "add", "--artifacts", str(randomized.root)])
    assert added.exit_code == 0, added.output
    with TestClient(create_app(OwnerSettings(artifacts_dir=randomized.root))) as client:
        response = client.get("/v1/export/manifest", headers={"Authorization": f"Bearer {added.stdout.strip()}"})
        assert response.status_code == 200, response.text
    entry = json.loads(randomized.audit_log.read_text().splitlines()[-1])
    assert entry["privacy"] == {"include_observed": False, "randomized_response_epsilon": 1.0}


def test_without_the_export_teacher_only_reconstruction_is_measured(plain, environment):
    copy = environment / "plain-copy"
    shutil.copytree(plain.root, copy)
    shutil.rmtree(ArtifactLayout(copy).stage("gd_teacher"))
    out = environment / "no-teacher.json"
    result = audit(copy, out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert all(row["membership_auc"] is None for row in report["rows"])
    assert any("no teacher" in note for note in report["notes"])


def test_the_audit_refuses_what_it_cannot_map_back(plain, environment):
    missing = audit(environment / "nowhere", environment / "x.json")
    assert missing.exit_code == 2 and "no finished export" in missing.output and "Traceback" not in missing.output
    wrong = audit(plain.root, environment / "y.json", env={"GDREC_OWNER_SECRET": "another-secret-0123456789abcdef"})
    assert wrong.exit_code == 2 and "another secret" in wrong.output
    assert not (environment / "x.json").exists() and not (environment / "y.json").exists()

