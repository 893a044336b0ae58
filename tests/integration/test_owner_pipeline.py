"""`gdrec-owner train` end to end on a tiny synthetic users.dat, then the same artifacts served and the served
model of a consumer evaluated by `gdrec-owner evaluate` over real HTTP on loopback.

Training runs once for the module (tiny sizes, a few epochs); the later tests reuse its artifacts."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import replace

import pytest
import uvicorn
from fastapi import FastAPI, Header, HTTPException, Query, Request
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from data_owner.api import create_app
from data_owner.cli import app
from data_owner.pipeline import STAGES, load_split, read_stage
from data_owner.remote_eval import user_tokens
from data_owner.settings import ArtifactLayout, OwnerSettings
from shared.schemas import ExportBundle, ExportPage, RecommendationList, ScoredItem
from tests.conftest import write_users_dat

SECRET = "pipeline-test-secret-0123456789abcdef"
CONSUMER_KEY = "the-consumers-own-key"
TINY = [
    "--generator", "cgan", "--include-observed",
    "--list-length", "8", "--teacher-epochs", "6", "--gd-epochs", "3", "--cgan-epochs", "3",
    "--cgan-json", '{"hidden_g": [32], "hidden_d": [16], "noise_dim": 4, "batch_size": 16, "g_steps": 1, '
                   '"d_steps": 1, "eval_every": 3}',
    "--teacher-json", '{"model": {"dim": 16, "reg": 0.001}, "lr": 0.02}',
    "--patience", "0", "--eval-every", "3", "--batch-size", "128", "--device", "cpu", "--no-progress",
    "--consumer-id", "vendor",
]


@contextmanager
def owner_environment(root, **settings: str):
    """Work in `root` (a tiny users.dat written there) with only this test's GDREC_OWNER_* variables set: the
    secret, plus `settings` (e.g. ARTIFACTS_DIR=...)."""
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("GDREC_OWNER_"):
                mp.delenv(name)
        mp.setenv("GDREC_OWNER_SECRET", SECRET)
        mp.setenv("GDREC_OWNER_ENVIRONMENT", "development")  # SECRET is a readable test value, weak for production
        for name, value in settings.items():
            mp.setenv(f"GDREC_OWNER_{name}", value)
        mp.chdir(root)
        write_users_dat(root / "users.dat")
        yield root


@pytest.fixture(scope="module")
def environment(tmp_path_factory):
    root = tmp_path_factory.mktemp("owner")
    with owner_environment(root, ARTIFACTS_DIR=str(root / "artifacts")):
        yield root


def train(*extra: str):
    result = CliRunner().invoke(app, ["train", "--dataset", "users.dat", *TINY, *extra])
    assert result.exit_code == 0, result.output
    return result


def statuses(layout: ArtifactLayout, before: dict[str, str]) -> dict[str, str]:
    """Which stages were redone since `before` (their finished_at changed)."""
    return {name: ("ran" if read_stage(layout, name)["finished_at"] != before.get(name) else "skipped")
            for name in STAGES}


def finished(layout: ArtifactLayout) -> dict[str, str]:
    return {name: read_stage(layout, name)["finished_at"] for name in STAGES}


@pytest.fixture(scope="module")
def trained(environment):
    result = train()
    layout = ArtifactLayout(environment / "artifacts")
    return layout, result


def test_train_writes_every_stage_and_a_valid_export(trained):
    layout, result = trained
    for name in STAGES:
        assert (layout.stage(name) / "stage.json").is_file()
        assert f"{name}" in result.output
    bundle = ExportBundle.model_validate_json(layout.export_file.read_bytes())
    assert bundle.manifest.n_users == 60 and bundle.manifest.list_length == 8
    assert bundle.manifest.teacher.family == "bpr" and bundle.manifest.temperature == 2.0
    card, lists_record = bundle.manifest.generator, read_stage(layout, "lists")["summary"]
    assert bundle.manifest.schema_version == "1.1" and card is not None
    assert card.family == read_stage(layout, "generator")["summary"]["family"]
    assert card.lists["list_length"] == 8 and card.lists["n_users"] == 60
    assert card.lists["coverage"] == lists_record["coverage"] and "include_observed" not in card.lists
    record = read_stage(layout, "export")["summary"]
    assert record["consumer_id"] == "vendor" and record["export_id"] == bundle.manifest.export_id
    assert "export " + bundle.manifest.export_id in result.output
    summary = json.loads(layout.summary_file.read_text())
    assert 0.0 <= summary["stages"]["gd_teacher"]["test"]["HR@5"] <= 1.0
    assert not list(layout.root.rglob("users.dat")) and not list(layout.stages.glob(".tmp-*"))


def test_a_rerun_skips_every_finished_stage(trained):
    layout, _ = trained
    before = finished(layout)
    export_id = read_stage(layout, "export")["summary"]["export_id"]
    started = time.perf_counter()
    result = train()
    assert time.perf_counter() - started < 5
    assert statuses(layout, before) == dict.fromkeys(STAGES, "skipped")
    assert result.output.count("skipped") >= len(STAGES)
    assert read_stage(layout, "export")["summary"]["export_id"] == export_id


def test_a_changed_setting_redoes_only_the_stages_it_affects(trained):
    layout, _ = trained
    before = finished(layout)
    original = read_stage(layout, "export")["summary"]["export_id"]
    train("--temperature", "3")
    assert statuses(layout, before) == {"kd_teacher": "skipped", "generator": "skipped", "lists": "skipped",
                                        "gd_teacher": "skipped", "export": "ran"}
    assert read_stage(layout, "export")["summary"]["export_id"] != original
    train()  # back to t = 2: the same content, the same export id
    assert read_stage(layout, "export")["summary"]["export_id"] == original


def test_an_interrupted_stage_resumes_and_redoes_what_reads_it(trained, monkeypatch):
    layout, _ = trained
    original = read_stage(layout, "export")["summary"]["export_id"]
    before = finished(layout)
    shutil.rmtree(layout.stage("lists"))  # as if the run had stopped before the lists were written

    from data_owner import pipeline

    def crash(self, folder):
        (folder / "half-written.pt").write_bytes(b"\x00" * 10)
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline._Chain, "_run_gd_teacher", crash)
    result = CliRunner().invoke(app, ["train", "--dataset", "users.dat", *TINY])
    assert result.exit_code != 0
    assert read_stage(layout, "lists") is not None  # finished before the crash: kept
    assert not list(layout.stages.glob(".tmp-*"))  # the crashed stage's partial output is gone
    assert read_stage(layout, "gd_teacher")["finished_at"] == before["gd_teacher"]  # the old one untouched
    monkeypatch.undo()

    train()
    assert statuses(layout, before) == {"kd_teacher": "skipped", "generator": "skipped", "lists": "ran",
                                        "gd_teacher": "ran", "export": "ran"}
    assert read_stage(layout, "export")["summary"]["export_id"] == original  # seeded: the same export again


def test_a_teacher_killed_mid_training_continues_from_its_last_saved_epoch(trained, tmp_path, monkeypatch, caplog):
    from data_owner import stages
    from shared import training

    reference = read_stage(trained[0], "kd_teacher")["summary"]  # the same settings, never interrupted
    every_epoch = stages.train_config
    monkeypatch.setattr(stages, "train_config", lambda *a: replace(every_epoch(*a), checkpoint_every_s=0))
    save, saves = training._Checkpoint.save, []

    def dying_save(self, state):
        save(self, state)
        saves.append(state.get("epoch"))
        if len(saves) == 3:
            raise KeyboardInterrupt

    with owner_environment(tmp_path, ARTIFACTS_DIR=str(tmp_path / "artifacts")):
        layout = ArtifactLayout(tmp_path / "artifacts")
        with monkeypatch.context() as dying:
            dying.setattr(training._Checkpoint, "save", dying_save)
            assert CliRunner().invoke(app, ["train", "--dataset", "users.dat", *TINY]).exit_code != 0
        assert saves == [1, 2, 3] and read_stage(layout, "kd_teacher") is None
        (partial,) = layout.stages.glob(".partial-kd_teacher-*")
        assert len(list(partial.glob("*.pt"))) == 1

        with caplog.at_level("INFO", logger="shared.training"):
            train()
        assert "resuming after epoch 3" in caplog.text
        assert read_stage(layout, "kd_teacher")["summary"]["test"] == reference["test"]
        assert read_stage(layout, "kd_teacher")["summary"]["best_epoch"] == reference["best_epoch"]
        assert not list(layout.stages.glob(".partial-*"))  # removed once each stage finished


def test_train_reports_bad_options_without_a_traceback(environment):
    for args, message in [
        (["--dataset", "nowhere.dat"], "unknown dataset"),
        (["--dataset", "users.dat", "--cgan-json", "{bad"], "--cgan-json: not JSON"),
        (["--dataset", "users.dat", "--cgan-json", '{"lr": 1}'], "unknown CGANConfig field(s) ['lr']"),
        (["--dataset", "users.dat", "--teacher-json", '{"dim": 3}'],
         "takes the keys 'model', 'lr', 'pretrain', 'optimizer' and 'negatives'"),
        (["--dataset", "users.dat", "--model", "neumf", "--teacher-optimizer", "sgd"], "trains BPR only"),
        (["--dataset", "users.dat", "--teacher-json", '{"negatives": "popularity", "optimizer": "adam"}'],
         "drawn by the per-triple SGD optimizer only"),
        (["--dataset", "users.dat", "--consumer-id", "a b"], "consumer id"),
        (["--dataset", "users.dat", "--model", "neumf", "--teacher-json", '{"pretrain": {"beta": 1}}'],
         "unexpected keyword argument 'beta'"),
        (["--dataset", "users.dat", "--teacher-json", '{"pretrain": {}}'], "pre-training is defined for NeuMF only"),
    ]:
        result = CliRunner().invoke(app, ["train", *args])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, args


def test_the_trained_export_is_served(trained):
    layout, _ = trained
    added = CliRunner().invoke(app, ["keys", "add"])  # the consumer id comes from the export
    assert added.exit_code == 0, added.output
    key = added.stdout.strip()
    settings = OwnerSettings()
    with TestClient(create_app(settings)) as client:
        tokens, cursor = [], None
        while True:
            response = client.get("/v1/export/users", params={"limit": 16} | ({"cursor": cursor} if cursor else {}),
                                  headers={"Authorization": f"Bearer {key}"})
            assert response.status_code == 200, response.text
            page = ExportPage.model_validate_json(response.content)
            assert page.hash_matches()
            tokens += [r.token for r in page.users]
            cursor = page.next_cursor
            if cursor is None:
                break
    bundle = ExportBundle.model_validate_json(layout.export_file.read_bytes())
    assert sorted(tokens) == sorted(r.token for r in bundle.users)
    verify = CliRunner().invoke(app, ["audit", "verify"])
    assert verify.exit_code == 0 and "4 line(s), chain intact" in verify.output


@contextmanager
def served_on_loopback(asgi_app):
    """A real uvicorn server on a free loopback port, in a thread."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(asgi_app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the test consumer did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_evaluate_command_scores_a_consumer_over_http(trained, environment):
    layout, _ = trained
    split = load_split(str(environment / "users.dat"))
    tokens = user_tokens(split, SECRET.encode(), "vendor")
    catalog = [str(i) for i in split.item_ids]
    user_of = {t: u for u, t in enumerate(tokens)}
    seen: list[dict] = []
    consumer = FastAPI()

    @consumer.get("/v1/recommendations/{token}", response_model=RecommendationList)
    def recommend(token: str, request: Request, k: int = Query(ge=1, le=100),
                  authorization: str | None = Header(None)) -> RecommendationList:
        seen.append({"path": request.url.path, "query": dict(request.query_params)})
        if authorization != f"Bearer {CONSUMER_KEY}":
            raise HTTPException(401, "invalid API key")
        u = user_of[token]  # a consumer that knows the answer, to pin the expected numbers
        test = catalog[split.test_item[u]]
        ranked = [test] + [i for i in catalog if i != test]
        return RecommendationList(token=token, model_version="oracle",
                                  items=[ScoredItem(item_id=i, score=-r) for r, i in enumerate(ranked[:k])])

    out = environment / "evaluation.json"
    with served_on_loopback(consumer) as url:
        result = CliRunner().invoke(app, ["evaluate", "--consumer", url, "--k", "5", "--out", str(out)],
                                    env={"GDREC_OWNER_CONSUMER_KEY": CONSUMER_KEY})
        assert result.exit_code == 0, result.output
        refused = CliRunner().invoke(app, ["evaluate", "--consumer", url, "--key", "wrong", "--k", "5"])
    assert "| consumer (remote) | 1.0000 | 1.0000 |" in result.output
    assert "owner's GD teacher (local)" in result.output
    written = json.loads(out.read_text())
    assert written["metrics"]["HR@5"] == 1.0 and written["answered"] == written["users"] == split.eval_users.size
    assert written["export_id"] == read_stage(layout, "export")["summary"]["export_id"]
    assert {r["query"]["k"] for r in seen} == {str(written["k_requested"])} and all(
        set(r["query"]) == {"k"} for r in seen)
    assert refused.exit_code == 2 and "refused the key" in refused.output and "Traceback" not in refused.output
