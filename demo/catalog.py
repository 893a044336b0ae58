"""Item titles for display: the public catalog file that ships with a dataset (ml-100k's `u.item`: pipe-separated,
latin-1, `item id | title | release date | ...`). Titles are catalog data, not user data; the consumer only knows
item ids, and the demo labels them as the owner's catalog team would."""

from __future__ import annotations

from pathlib import Path

TITLE_FILES = {"ml-100k": ("u.item", "|", "latin-1")}  # dataset -> (file in its folder, separator, encoding)


def read_titles(path: Path, separator: str = "|", encoding: str = "latin-1") -> dict[str, str]:
    """{item id: title} from a catalog file whose first two fields are the id and the title. Blank lines are skipped;
    a line without both fields raises ValueError naming the file and line."""
    titles: dict[str, str] = {}
    with path.open(encoding=encoding, newline="") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split(separator)
            if len(fields) < 2 or not fields[0].strip() or not fields[1].strip():
                raise ValueError(f"{path}:{number}: expected 'item id{separator}title{separator}...', "
                                 f"got {line[:60]!r}")
            titles[fields[0].strip()] = fields[1].strip()
    return titles


def catalog_titles(dataset: str, data_dir: Path) -> tuple[dict[str, str], Path | None]:
    """The titles of a named dataset's catalog under `data_dir`, and the file they came from; ({}, None) when the
    dataset ships no titles file (or it is absent): the caller then shows item ids."""
    if dataset not in TITLE_FILES:
        return {}, None
    name, separator, encoding = TITLE_FILES[dataset]
    path = data_dir / dataset / name
    if not path.is_file():
        return {}, None
    return read_titles(path, separator, encoding), path
