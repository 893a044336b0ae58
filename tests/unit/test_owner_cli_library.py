"""The library functions behind the owner's commands, without the command line: settings loading, teacher configs,
the chain config from option values, a published audit head read back, and the checks of an export's record."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from data_owner.audit_head import parse_expected_head
from data_owner.chain_options import chain_config
from data_owner.config import cgan_preset, teacher_preset
from data_owner.export_record import (
    ExportRecordError,
    built_export,
    export_consumer,
    load_built_split,
    require_same_secret,
)
from data_owner.pipeline import STAGE_FILE, load_split, split_fingerprint
from data_owner.settings import ArtifactLayout, secret_fingerprint
from data_owner.settings_loading import SettingsRefusedError, load_owner_settings
from data_owner.teacher_trial import dataset_name, teacher_config, train_teacher_trial
from shared.schemas import AuditHead
from shared.training import TrainConfig
from tests.conftest import write_users_dat

SECRET = b"owner-secret-0123456789abcdef0123"


@pytest.fixture
def clean_environment(tmp_path, monkeypatch):
    """No GDREC_OWNER_* variable set and no .env in the working directory."""
    for name in list(os.environ):
        if name.startswith("GDREC_OWNER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_export_record(layout: ArtifactLayout, summary: dict) -> None:
    folder = layout.stage("export")
    folder.mkdir(parents=True)
    (folder / STAGE_FILE).write_text(json.dumps({"summary": summary}))


# ------------------------------------------------------------------------------------------------ settings


def test_settings_take_the_overrides_that_are_given(clean_environment):
    settings = load_owner_settings(environment="development", artifacts_dir=clean_environment / "a", data_dir=None)
    assert settings.artifacts_dir == clean_environment / "a" and settings.data_dir is None


def test_production_without_a_secret_names_the_variable_to_set(clean_environment):
    with pytest.raises(SettingsRefusedError) as refused:
        load_owner_settings(environment="production")
    message = str(refused.value)
    assert message.startswith("invalid settings: ") and "GDREC_OWNER_SECRET" in message
    assert "Value error, " not in message


def test_an_unknown_environment_names_the_field_and_its_variable(clean_environment):
    with pytest.raises(SettingsRefusedError, match=r"environment \(GDREC_OWNER_ENVIRONMENT\): "):
        load_owner_settings(environment="staging")


# ------------------------------------------------------------------------------------------------ teacher trial


def test_bpr_config_is_dim_wide_with_its_default_reg():
    assert teacher_config("bpr", 32, None, None) == {"dim": 32, "reg": 1e-4}
    assert teacher_config("bpr", 32, "64,32", 0.5) == {"dim": 32, "reg": 0.5}


def test_neumf_config_has_both_branches_dim_wide_and_a_halving_mlp_by_default():
    assert teacher_config("neumf", 16, None, None) == {"dim_gmf": 16, "dim_mlp": 16, "hidden": [16, 8], "reg": 1e-5}
    assert teacher_config("neumf", 1, None, None)["hidden"] == [1, 1]
    assert teacher_config("neumf", 16, "64,32,16", 0.0)["hidden"] == [64, 32, 16]


def test_a_dataset_file_is_named_by_its_stem_and_a_hash_of_its_path(tmp_path):
    (tmp_path / "users.dat").write_text("")
    digest = hashlib.sha256(str((tmp_path / "users.dat").resolve()).encode()).hexdigest()[:8]
    assert dataset_name(str(tmp_path / "users.dat")) == f"users-{digest}"
    assert dataset_name("ml-100k") == "ml-100k"


@pytest.mark.filterwarnings("ignore:.*has no timestamps:UserWarning")  # the file-order split of users.dat
def test_a_trial_saves_its_checkpoint_and_summary_under_the_default_name(clean_environment):
    write_users_dat(clean_environment / "users.dat", n_users=60, n_items=30)
    trial = train_teacher_trial("users.dat", "bpr", TrainConfig(epochs=2, seed=5, progress=False), dim=8,
                                batch_size=64, device="cpu")
    assert trial.out == Path("artifacts") / "teachers" / f"{dataset_name('users.dat')}-bpr-d8-s5"
    summary = json.loads((trial.out / "summary.json").read_text())
    assert summary == json.loads(json.dumps(trial.summary))
    assert summary["num_parameters"] == (60 + 30) * 8 and summary["epochs_run"] == 2 and summary["seed"] == 5
    assert summary["pretrain"] is None and summary["device"] == "cpu" and summary["tuning"] is None
    assert (trial.out / "config.json").is_file() and trial.split.n_users == 60


# ------------------------------------------------------------------------------------------------ chain config


def test_the_chain_config_lays_the_options_over_the_presets():
    config = chain_config("citeulike-t", "bpr", cgan_epochs=7, cgan_json='{"lr_g": 1e-4}', seed=3, list_length=9)
    assert config.cgan.epochs == 7 and config.cgan.lr_g == 1e-4
    assert config.cgan.batch_size == cgan_preset("citeulike-t").batch_size
    assert config.teacher is None and config.seed == 3 and config.list_length == 9


def test_teacher_fields_replace_only_what_they_name():
    config = chain_config("ml-100k", "neumf", teacher_fields={"lr": 0.01, "pretrain": None})
    assert config.teacher.lr == 0.01 and config.teacher.pretrain is None
    assert config.teacher.model == teacher_preset("ml-100k", "neumf").model


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"cgan_json": '{"lr": 1}'}, r"unknown CGANConfig field\(s\) \['lr'\]"),
    ({"teacher_fields": {"epochs": 3}},
     "--teacher-json takes the keys 'model', 'lr', 'pretrain', 'optimizer' and 'negatives'"),
])
def test_a_bad_field_is_refused_with_its_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        chain_config("ml-100k", "bpr", **kwargs)


# ------------------------------------------------------------------------------------------------ audit head


def test_a_head_is_its_hash_or_its_json_record():
    digest = "ab" * 32
    assert parse_expected_head(None) is None
    assert parse_expected_head(f"  {digest}\n") == digest
    record = AuditHead(seq=4, hash=digest, tag=None)
    assert parse_expected_head(record.model_dump_json()) == record


@pytest.mark.parametrize(("text", "message"), [
    ('{"seq": -1, "hash": "00"}', r"--expect-head: not a head record \(seq: "),
    ("{not json", r"--expect-head: not a head record \(JSON: "),
    ("AB" * 32, "--expect-head takes a head's hash"),
    ("latest", "--expect-head takes a head's hash"),
])
def test_anything_else_is_refused_naming_the_option(text, message):
    with pytest.raises(ValueError, match=message):
        parse_expected_head(text)


# ------------------------------------------------------------------------------------------------ export record


def test_without_a_finished_export_there_is_no_record_and_no_consumer(tmp_path):
    layout = ArtifactLayout(tmp_path)
    assert built_export(layout) is None and export_consumer(layout) is None


def test_the_consumer_comes_from_the_export_record(tmp_path):
    layout = ArtifactLayout(tmp_path)
    write_export_record(layout, {"consumer_id": "shop-7", "dataset": "users.dat"})
    assert export_consumer(layout) == "shop-7"


def test_another_secret_is_refused_with_what_it_prevents():
    built = {"secret_fingerprint": secret_fingerprint(SECRET)}
    require_same_secret(built, SECRET, "unused")
    require_same_secret({}, b"any", "unused")  # built before fingerprints were recorded
    with pytest.raises(ExportRecordError, match="another secret than GDREC_OWNER_SECRET holds now: its tokens "
                                                "cannot be recomputed; set the secret used by train"):
        require_same_secret(built, b"another-secret", "its tokens cannot be recomputed")


def test_the_split_is_read_again_and_checked_against_its_fingerprint(tmp_path):
    path = tmp_path / "users.dat"
    write_users_dat(path)
    split = load_split(str(path))
    built = {"dataset": str(path), "data_dir": None, "data_fingerprint": split_fingerprint(split)}
    assert split_fingerprint(load_built_split(built, None, "unused")) == built["data_fingerprint"]
    write_users_dat(path, seed=1)
    with pytest.raises(ExportRecordError, match="changed since the export was built: retrain"):
        load_built_split(built, None, "retrain")
    with pytest.raises(ExportRecordError, match="missing.dat"):
        load_built_split({"dataset": "missing.dat"}, tmp_path, "unused")
