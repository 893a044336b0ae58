"""Named datasets (ml-100k, citeulike-t, foursquare): where their files live, how to read them, how to filter
them (ALGORITHMS.md section 7), and the opt-in ml-100k download.

Files are looked up under a data directory: the `data_dir` argument, else the environment variable
`GDREC_DATA_DIR`, else `./data`. The research copies sit in `../shared/datasets` (never copied into the repo),
so `GDREC_DATA_DIR=../shared/datasets` finds all three.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from types import MappingProxyType

import httpx
from tqdm.auto import tqdm

from data_owner.data.errors import DataFormatError, DatasetUnavailableError
from data_owner.data.filters import filter_min_interactions
from data_owner.data.loaders import (
    load_movielens_ratings_dat,
    load_movielens_udata,
    load_recbole_inter,
    load_table,
    load_user_lists,
    require_file,
)
from data_owner.data.table import InteractionTable

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "GDREC_DATA_DIR"
DEFAULT_DATA_DIR = "./data"

ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
ML100K_ZIP_MD5 = "0e33842e24a9c977be4e0107933c0723"  # published by GroupLens next to the zip
ML100K_UDATA_SHA256 = "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490"  # of ml-100k/u.data


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset: candidate paths (relative to the data dir, first existing wins), a loader and the
    default filter (`min_user` / `min_item` interactions, one pass unless `iterate`)."""

    name: str
    candidates: tuple[str, ...]
    loader: Callable[[Path], InteractionTable]
    min_user: int = 0
    min_item: int = 0
    iterate: bool = False
    download: Callable[[Path], Path] | None = None  # fetches the files into a data dir, returns the main file
    description: str = ""

    @property
    def filtered(self) -> bool:
        return self.min_user > 0 or self.min_item > 0


def data_dir() -> Path:
    """The data directory: `$GDREC_DATA_DIR`, or `./data` when unset or empty."""
    return Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR).expanduser()


# --------------------------------------------------------------------------------------------------------------
# ml-100k download


def _http_client() -> httpx.Client:
    """The HTTP client used for downloads (tests replace this to serve a mocked response)."""
    return httpx.Client(follow_redirects=True, timeout=httpx.Timeout(60.0, connect=15.0))


def _file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _place_hint(root: Path) -> str:
    return (
        f"Place u.data under {root / 'ml-100k'}/ (from {ML100K_URL}), or set {DATA_DIR_ENV} to a folder "
        "holding ml-100k/u.data (e.g. ../shared/datasets)."
    )


def download_ml100k(root: str | Path, *, progress: bool = True) -> Path:
    """Fetch ml-100k.zip from GroupLens into `root`, verify it, extract it; return `root/ml-100k/u.data`.

    The zip streams into a temporary file and is renamed into place only once its md5 matches GroupLens's
    published value; the archive is extracted into a temporary folder and its files moved into
    `root/ml-100k/` only once the sha256 of u.data matches. Raises `DatasetUnavailableError` when offline,
    on an HTTP error or on a checksum mismatch (nothing partial is left behind).
    """
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    archive = root / "ml-100k.zip"
    if archive.is_file() and _file_digest(archive, "md5") == ML100K_ZIP_MD5:
        logger.info("using the already downloaded %s", archive)
    else:
        _fetch(ML100K_URL, archive, ML100K_ZIP_MD5, root, progress)
    return _extract_ml100k(archive, root)


def _fetch(url: str, target: Path, md5: str, root: Path, progress: bool) -> None:
    logger.info("downloading %s to %s", url, target)
    handle = tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", suffix=".part", delete=False)
    temporary = Path(handle.name)
    try:
        digest = hashlib.md5()
        with handle, _http_client() as client, client.stream("GET", url) as response:
            response.raise_for_status()
            total = int(response.headers.get("Content-Length", 0)) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=target.name, disable=not progress) as bar:
                for chunk in response.iter_bytes():
                    handle.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if digest.hexdigest() != md5:
            raise DatasetUnavailableError(
                f"download of {url} is corrupt: md5 {digest.hexdigest()} differs from the published {md5}. "
                + _place_hint(root)
            )
        os.replace(temporary, target)
    except httpx.HTTPError as exc:
        raise DatasetUnavailableError(
            f"download of {url} failed ({type(exc).__name__}: {exc}). " + _place_hint(root)
        ) from exc
    finally:
        temporary.unlink(missing_ok=True)


def _extract_ml100k(archive: Path, root: Path) -> Path:
    target_dir = root / "ml-100k"
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".ml-100k-extract-"))
    try:
        try:
            with zipfile.ZipFile(archive) as bundle:
                for member in bundle.namelist():
                    parts = PurePosixPath(member).parts
                    if member.startswith("/") or ".." in parts:
                        raise DatasetUnavailableError(f"{archive}: refusing unsafe member path {member!r}")
                bundle.extractall(staging)
        except zipfile.BadZipFile as exc:
            raise DatasetUnavailableError(f"{archive} is not a valid zip ({exc}). " + _place_hint(root)) from exc
        extracted = staging / "ml-100k"
        udata = extracted / "u.data"
        if not udata.is_file():
            raise DatasetUnavailableError(f"{archive} holds no ml-100k/u.data. " + _place_hint(root))
        sha256 = _file_digest(udata, "sha256")
        if sha256 != ML100K_UDATA_SHA256:
            raise DatasetUnavailableError(
                f"ml-100k/u.data extracted from {archive} has sha256 {sha256}, expected {ML100K_UDATA_SHA256}. "
                + _place_hint(root)
            )
        target_dir.mkdir(parents=True, exist_ok=True)
        for item in extracted.iterdir():
            destination = target_dir / item.name
            if item.is_dir():
                shutil.rmtree(destination, ignore_errors=True)
            os.replace(item, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("extracted ml-100k into %s", target_dir)
    return target_dir / "u.data"


# --------------------------------------------------------------------------------------------------------------
# Registry

DATASETS: Mapping[str, DatasetSpec] = MappingProxyType(
    {
        "ml-100k": DatasetSpec(
            name="ml-100k",
            candidates=("ml-100k/u.data",),
            loader=load_movielens_udata,
            download=download_ml100k,
            description="MovieLens 100K ratings as implicit feedback, with timestamps; no filter",
        ),
        "citeulike-t": DatasetSpec(
            name="citeulike-t",
            candidates=("citeulike-t/users.dat", "citeulike/citeulike-t/users.dat"),
            loader=load_user_lists,
            min_user=5,
            description="CiteULike-t user libraries, no timestamps; users with >= 5 items (one pass)",
        ),
        "foursquare": DatasetSpec(
            name="foursquare",
            candidates=("foursquare/users.dat", "foursquare/liu2017-hyperkdma/users.dat"),
            loader=load_user_lists,
            min_user=5,
            description="Foursquare POIs (Liu et al. 2017 copy), no timestamps; users with >= 5 POIs (one pass)",
        ),
    }
)


def locate_dataset(name: str, data_dir: str | Path | None = None) -> Path | None:
    """The first existing candidate file of a named dataset under the data dir, or None."""
    spec = _spec(name)
    root = _resolve_root(data_dir)
    for candidate in spec.candidates:
        path = root / candidate
        if path.is_file():
            return path
    return None


def _resolve_root(directory: str | Path | None) -> Path:
    return Path(directory).expanduser() if directory is not None else data_dir()


def _spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(
            f"unknown dataset {name!r}; known names: {', '.join(sorted(DATASETS))} (or pass a path to a file)"
        ) from None


def load_dataset(name: str, data_dir: str | Path | None = None, download: bool | None = None) -> InteractionTable:
    """Load a named dataset with its default filter applied, or any file given by path (no filter).

    `name` is a registry name (see `DATASETS`) or the path of an existing file, whose loader is inferred by
    `loader_for_path`. `download` (default: True for ml-100k, the only downloadable one) fetches missing files.
    """
    if name not in DATASETS:
        as_path = Path(name).expanduser()
        if as_path.exists():
            return load_path(as_path)
        raise ValueError(
            f"unknown dataset {name!r}; known names: {', '.join(sorted(DATASETS))}, and there is no file or "
            f"folder at {as_path.resolve()}"
        )
    spec = DATASETS[name]
    root = _resolve_root(data_dir)
    path = locate_dataset(name, root)
    if path is None:
        tried = ", ".join(str(root / candidate) for candidate in spec.candidates)
        want_download = spec.download is not None if download is None else download
        if want_download and spec.download is not None:
            try:
                path = spec.download(root)
            except DatasetUnavailableError as exc:
                raise DatasetUnavailableError(f"dataset {name!r} not found (tried {tried}); {exc}") from exc
        else:
            raise FileNotFoundError(
                f"dataset {name!r} not found; tried {tried}. Set {DATA_DIR_ENV} to the folder holding it "
                f"(e.g. {DATA_DIR_ENV}=../shared/datasets) or pass data_dir="
                + (" (or download=True to fetch it)" if spec.download is not None else "")
            )
    logger.info("dataset %s: reading %s", name, path)
    table = replace(spec.loader(path), source=name)
    if spec.filtered:
        table = filter_min_interactions(table, min_user=spec.min_user, min_item=spec.min_item, iterate=spec.iterate)
    logger.info("dataset %s", table.summary())
    return table


# --------------------------------------------------------------------------------------------------------------
# Files given by path

_USER_COLUMNS = ("user", "user_id", "userId", "userid", "uid")
_ITEM_COLUMNS = ("item", "item_id", "itemId", "itemid", "iid", "movie_id", "movieId")
_TIME_COLUMNS = ("timestamp", "time", "ts", "datetime")


def loader_for_path(path: str | Path) -> Callable[[Path], InteractionTable]:
    """The loader for a file, from its name: u.data (or *.data), ratings.dat, users.dat, *.inter, or a table
    (.csv / .tsv / .txt / .parquet) with conventionally named user / item / timestamp columns."""
    p = Path(path)
    lower = p.name.lower()
    suffix = p.suffix.lower()
    if lower == "u.data" or suffix == ".data":
        return load_movielens_udata
    if lower == "ratings.dat":
        return load_movielens_ratings_dat
    if lower == "users.dat":
        return load_user_lists
    if suffix == ".inter":
        return load_recbole_inter
    if suffix in (".csv", ".tsv", ".txt", ".parquet"):
        return _load_conventional_table
    raise DataFormatError(
        f"cannot tell the format of {p}: expected u.data, ratings.dat, users.dat, a RecBole .inter file or a "
        ".csv/.tsv/.txt/.parquet table (or call a loader from data_owner.data.loaders directly)",
        path=p,
    )


def load_path(path: str | Path) -> InteractionTable:
    """Load one file (or a folder holding u.data, ratings.dat or users.dat) with the inferred loader; no
    filter is applied."""
    p = Path(path).expanduser()
    if p.is_dir():
        for name in ("u.data", "ratings.dat", "users.dat"):
            if (p / name).is_file():
                p = p / name
                break
        else:
            raise FileNotFoundError(f"{p} is a folder without u.data, ratings.dat or users.dat")
    p = require_file(p)
    return loader_for_path(p)(p)


def _load_conventional_table(path: Path) -> InteractionTable:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        columns = list(pq.read_schema(path).names)
    else:
        import pandas as pd

        columns = list(pd.read_csv(path, sep="," if suffix == ".csv" else "\t", nrows=0).columns)

    def pick(candidates: tuple[str, ...]) -> str | None:
        by_lower = {column.lower(): column for column in columns}
        return next((by_lower[c.lower()] for c in candidates if c.lower() in by_lower), None)

    user_col, item_col = pick(_USER_COLUMNS), pick(_ITEM_COLUMNS)
    if user_col is None or item_col is None:
        raise ValueError(
            f"{path}: cannot find the user and item columns (looked for {_USER_COLUMNS} and {_ITEM_COLUMNS}); "
            f"columns found: {columns}. Call load_table(path, user_col=..., item_col=...) instead"
        )
    return load_table(path, user_col, item_col, pick(_TIME_COLUMNS))
