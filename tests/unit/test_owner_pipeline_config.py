"""The owner's training settings: per-dataset teacher presets, validation, and stage keys that change exactly
when a stage's output would."""

from __future__ import annotations

from dataclasses import replace

import pytest

from data_owner.config import ChainConfig, TeacherSettings, teacher_preset
from data_owner.gan import CGANConfig
from data_owner.pipeline import STAGES, stage_keys


def test_presets_per_dataset_and_family():
    assert teacher_preset("ml-100k", "bpr") == TeacherSettings("bpr", {"dim": 64, "reg": 1e-2}, 5e-3)
    assert teacher_preset("citeulike-t", "bpr").model == {"dim": 100, "reg": 1e-2}
    neumf = teacher_preset("ml-100k", "neumf")
    assert neumf.model == {"dim_gmf": 64, "dim_mlp": 64, "hidden": [64, 32], "reg": 1e-4} and neumf.lr == 2e-3
    assert teacher_preset("/data/my/users.dat", "bpr") == teacher_preset("ml-100k", "bpr")  # by path: default
    with pytest.raises(ValueError, match="family"):
        teacher_preset("ml-100k", "svd")


@pytest.mark.parametrize(("changes", "message"), [
    ({"family": "svd"}, "family"),
    ({"list_length": 0}, "list_length"),
    ({"temperature": 0.0}, "temperature"),
    ({"teacher_epochs": 0}, "epochs"),
    ({"consumer_id": "two words"}, "consumer id"),
    ({"teacher": TeacherSettings("neumf", {}, 1e-3)}, "teacher settings are for 'neumf'"),
])
def test_bad_settings_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        ChainConfig(dataset="ml-100k", **changes)


def changed(config: ChainConfig, **fields) -> set[str]:
    before = stage_keys(config, "data", "secret")
    after = stage_keys(replace(config, **fields), "data", "secret")
    return {name for name in STAGES if before[name] != after[name]}


def test_stage_keys_follow_what_each_stage_depends_on():
    config = ChainConfig(dataset="ml-100k")
    assert changed(config, temperature=5.0) == {"export"}
    assert changed(config, consumer_id="other") == {"export"}
    assert changed(config, list_length=20) == {"lists", "gd_teacher", "export"}
    assert changed(config, cgan=CGANConfig(epochs=7)) == {"generator", "lists", "gd_teacher", "export"}
    assert changed(config, teacher_epochs=7) == {"kd_teacher", "gd_teacher", "export"}
    assert changed(config, gd_epochs=7) == {"gd_teacher", "export"}
    assert changed(config, seed=1) == set(STAGES)
    assert changed(config, device="cuda", progress=False) == set()  # results do not depend on them
    assert changed(config, cgan=replace(config.cgan, progress=False)) == set()
    base = stage_keys(config, "data", "secret")
    assert stage_keys(config, "other data", "secret")["kd_teacher"] != base["kd_teacher"]
    assert {k for k, v in stage_keys(config, "data", "other secret").items() if v != base[k]} == {"export"}


def test_generator_stage_keys_read_the_kd_teacher_only_where_the_family_uses_it():
    knn = ChainConfig(dataset="ml-100k", generator="itemknn")
    assert changed(knn, teacher_epochs=7) == {"kd_teacher", "gd_teacher", "export"}
    assert changed(knn, generator_settings={"itemknn": {"ks": [10]}}) == {"generator", "lists", "gd_teacher",
                                                                          "export"}
    assert changed(knn, generator="vae") == {"generator", "lists", "gd_teacher", "export"}
    for family in ("teacher", "auto"):
        config = ChainConfig(dataset="ml-100k", generator=family)
        assert changed(config, teacher_epochs=7) == set(STAGES) - {"cgan"}
    auto = ChainConfig(dataset="ml-100k", generator="auto")
    # auto's dry-run exports are tokenised under the secret and scored at the export's temperature
    assert changed(auto, temperature=5.0) == {"generator", "lists", "gd_teacher", "export"}
    assert changed(auto, auto_families=("itemknn",)) == {"generator", "lists", "gd_teacher", "export"}
    other = stage_keys(auto, "data", "other secret")
    assert {k for k, v in other.items() if v != stage_keys(auto, "data", "secret")[k]} == {
        "generator", "lists", "gd_teacher", "export"}


def test_cgan_presets_apply_to_their_dataset_only():
    from data_owner.config import cgan_preset
    from data_owner.gan import CGANConfig

    tuned = cgan_preset("citeulike-t")
    assert (tuned.mask_sampling, tuned.alpha, tuned.batch_size, tuned.g_steps, tuned.d_steps) == (
        "per_batch", 0.3, 256, 1, 1)
    assert cgan_preset("foursquare") == tuned  # the other wide sparse catalog, untuned
    assert cgan_preset("ml-100k") == CGANConfig() and cgan_preset("some/file.dat", epochs=3) == CGANConfig(epochs=3)
    assert cgan_preset("citeulike-t", epochs=9).with_json('{"alpha": 0.03}').alpha == 0.03  # options win
