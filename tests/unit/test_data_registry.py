"""Dataset registry, path resolution, the (mocked, offline) ml-100k download, and - when the research copies
are present - the dataset statistics of ALGORITHMS.md section 7."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from data_owner.data import (
    DATASETS,
    DataFormatError,
    DatasetUnavailableError,
    data_dir,
    download_ml100k,
    leave_one_out_split,
    load_dataset,
    load_movielens_ratings_dat,
    load_movielens_udata,
    load_recbole_inter,
    load_user_lists,
    loader_for_path,
    registry,
)

UDATA = "1\t10\t5\t100\n1\t11\t3\t200\n2\t10\t4\t150\n"


# ---------------------------------------------------------------------------------------------------- registry


def test_registry_names_and_defaults() -> None:
    assert sorted(DATASETS) == ["citeulike-t", "foursquare", "ml-100k"]
    assert DATASETS["ml-100k"].candidates == ("ml-100k/u.data",)
    assert not DATASETS["ml-100k"].filtered
    assert (DATASETS["citeulike-t"].min_user, DATASETS["citeulike-t"].min_item) == (5, 0)
    assert DATASETS["foursquare"].candidates[-1] == "foursquare/liu2017-hyperkdma/users.dat"


def test_data_dir_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GDREC_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path
    monkeypatch.delenv("GDREC_DATA_DIR")
    assert data_dir() == Path("data")


def test_unknown_name_lists_known_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset 'ml-1m'; known names: citeulike-t, foursquare, ml-100k"):
        load_dataset("ml-1m", data_dir=tmp_path)


def test_second_candidate_and_default_filter(tmp_path: Path) -> None:
    path = tmp_path / "citeulike" / "citeulike-t" / "users.dat"
    path.parent.mkdir(parents=True)
    # user 0: 5 items, user 1: 4 items (dropped, and with it item 99), user 2: 6 items
    path.write_text("5 1 2 3 4 5\n4 1 2 3 99\n6 1 2 3 4 5 6\n")
    table = load_dataset("citeulike-t", data_dir=tmp_path)
    assert table.source == "citeulike-t"
    assert table.user_ids.tolist() == [0, 2]
    assert table.item_ids.tolist() == [1, 2, 3, 4, 5, 6]
    assert len(table) == 11


def test_missing_dataset_names_every_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GDREC_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(registry, "_http_client", _fail_if_called)  # citeulike-t is never downloaded
    with pytest.raises(FileNotFoundError) as caught:
        load_dataset("citeulike-t")
    message = str(caught.value)
    assert str(tmp_path / "citeulike-t" / "users.dat") in message
    assert str(tmp_path / "citeulike" / "citeulike-t" / "users.dat") in message
    assert "GDREC_DATA_DIR" in message and "../shared/datasets" in message
    with pytest.raises(FileNotFoundError, match=r"download=True"):
        load_dataset("ml-100k", download=False)


def test_path_resolution(tmp_path: Path) -> None:
    assert loader_for_path("x/u.data") is load_movielens_udata
    assert loader_for_path("ratings.dat") is load_movielens_ratings_dat
    assert loader_for_path("a/users.dat") is load_user_lists
    assert loader_for_path("ml-1m.inter") is load_recbole_inter
    # a DataFormatError (a ValueError): the CLIs print it as the user's error, with exit status 2, not a traceback
    with pytest.raises(DataFormatError, match="cannot tell the format of items.dat"):
        loader_for_path("items.dat")

    udata = tmp_path / "u.data"
    udata.write_text(UDATA)
    assert len(load_dataset(str(udata))) == 3
    assert len(load_dataset(str(tmp_path))) == 3  # a folder holding u.data
    csv = tmp_path / "log.csv"
    csv.write_text("userId,movieId,timestamp,rating\n1,2,3,4\n1,3,5,4\n")
    table = load_dataset(str(csv))
    assert table.has_timestamps and len(table) == 2
    bad = tmp_path / "log.tsv"
    bad.write_text("a\tb\n1\t2\n")
    with pytest.raises(ValueError, match=r"cannot find the user and item columns.*columns found: \['a', 'b'\]"):
        load_dataset(str(bad))


# ---------------------------------------------------------------------------------------------------- download


def _fail_if_called() -> httpx.Client:
    raise AssertionError("no download expected")


def _fake_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr("ml-100k/u.data", UDATA)
        bundle.writestr("ml-100k/u.item", "1|Toy Story\n")
    return buffer.getvalue()


def _serve(monkeypatch: pytest.MonkeyPatch, handler: Callable[[httpx.Request], httpx.Response]) -> list[str]:
    requested: list[str] = []

    def record(request: httpx.Request) -> httpx.Response:
        requested.append(str(request.url))
        return handler(request)

    monkeypatch.setattr(registry, "_http_client", lambda: httpx.Client(transport=httpx.MockTransport(record)))
    return requested


def _trust_fake_zip(monkeypatch: pytest.MonkeyPatch, zip_md5: bool = True, udata_sha256: bool = True) -> None:
    if zip_md5:
        monkeypatch.setattr(registry, "ML100K_ZIP_MD5", hashlib.md5(_fake_zip()).hexdigest())
    if udata_sha256:
        monkeypatch.setattr(registry, "ML100K_UDATA_SHA256", hashlib.sha256(UDATA.encode()).hexdigest())


def _leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_mocked_download_then_load(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    requested = _serve(monkeypatch, lambda request: httpx.Response(200, content=_fake_zip()))
    _trust_fake_zip(monkeypatch)
    table = load_dataset("ml-100k", data_dir=tmp_path / "data")
    assert requested == [registry.ML100K_URL]
    assert (table.n_users, table.n_items, len(table)) == (2, 2, 3)
    assert _leftovers(tmp_path / "data") == ["ml-100k", "ml-100k.zip", "ml-100k/u.data", "ml-100k/u.item"]
    # files present now: no second request
    load_dataset("ml-100k", data_dir=tmp_path / "data")
    assert len(requested) == 1


def test_download_reuses_a_verified_zip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _trust_fake_zip(monkeypatch)
    (tmp_path / "ml-100k.zip").write_bytes(_fake_zip())
    monkeypatch.setattr(registry, "_http_client", _fail_if_called)
    assert download_ml100k(tmp_path, progress=False) == tmp_path / "ml-100k" / "u.data"


@pytest.mark.parametrize(
    "error",
    [httpx.ConnectError("[Errno -3] Temporary failure in name resolution"), httpx.ReadTimeout("timed out")],
)
def test_offline_download_says_what_to_do(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, error: Exception) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise error

    _serve(monkeypatch, refuse)
    monkeypatch.setenv("GDREC_DATA_DIR", str(tmp_path))
    with pytest.raises(DatasetUnavailableError) as caught:
        load_dataset("ml-100k")
    message = str(caught.value)
    assert f"download of {registry.ML100K_URL} failed ({type(error).__name__}" in message
    assert str(tmp_path / "ml-100k" / "u.data") in message  # the path tried
    assert f"Place u.data under {tmp_path / 'ml-100k'}/" in message and "GDREC_DATA_DIR" in message
    assert isinstance(caught.value, RuntimeError)
    assert _leftovers(tmp_path) == []


def test_http_error_status(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _serve(monkeypatch, lambda request: httpx.Response(404))
    with pytest.raises(DatasetUnavailableError, match="HTTPStatusError"):
        download_ml100k(tmp_path, progress=False)
    assert _leftovers(tmp_path) == []


def test_zip_checksum_mismatch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _serve(monkeypatch, lambda request: httpx.Response(200, content=_fake_zip()))
    _trust_fake_zip(monkeypatch, zip_md5=False)  # the real GroupLens md5 cannot match the fake zip
    with pytest.raises(DatasetUnavailableError, match=f"differs from the published {registry.ML100K_ZIP_MD5}"):
        download_ml100k(tmp_path, progress=False)
    assert _leftovers(tmp_path) == []


def test_udata_checksum_mismatch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _serve(monkeypatch, lambda request: httpx.Response(200, content=_fake_zip()))
    _trust_fake_zip(monkeypatch, udata_sha256=False)
    with pytest.raises(DatasetUnavailableError, match=f"has sha256 .*, expected {registry.ML100K_UDATA_SHA256}"):
        download_ml100k(tmp_path, progress=False)
    assert _leftovers(tmp_path) == ["ml-100k.zip"]  # the verified archive stays; nothing is extracted


# ---------------------------------------------------------------------------------------------------- real data


def _real_data_dir() -> Path:
    configured = os.environ.get("GDREC_DATA_DIR")
    return Path(configured) if configured else Path(__file__).resolve().parents[3] / "shared" / "datasets"


def _real(name: str) -> Path:
    root = _real_data_dir()
    if registry.locate_dataset(name, root) is None:
        pytest.skip(f"{name} not found under {root} (set GDREC_DATA_DIR)")
    return root


@pytest.mark.dataset
def test_real_ml100k_statistics() -> None:
    table = load_dataset("ml-100k", data_dir=_real("ml-100k"), download=False)
    assert (table.n_users, table.n_items, len(table)) == (943, 1682, 100_000)
    split = leave_one_out_split(table)
    assert split.eval_users.size == 943
    assert split.train.nnz == 100_000 - 2 * 943


@pytest.mark.dataset
def test_real_citeulike_statistics() -> None:
    table = load_dataset("citeulike-t", data_dir=_real("citeulike-t"))
    assert (table.n_users, table.n_items, len(table)) == (5_219, 25_181, 125_580)
    with pytest.warns(UserWarning, match="file order"):
        split = leave_one_out_split(table)
    assert split.eval_users.size == 5_219
    # lines are sorted by item id, so the test item is each user's largest item id
    first = split.train.row(0)
    assert split.item_ids[split.test_item[0]] > split.item_ids[split.valid_item[0]] > split.item_ids[first].max()


@pytest.mark.dataset
def test_real_foursquare_statistics() -> None:
    table = load_dataset("foursquare", data_dir=_real("foursquare"))
    assert (table.n_users, table.n_items, len(table)) == (24_941, 28_593, 717_086)
