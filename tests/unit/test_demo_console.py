"""The demo's pieces that need no process: the catalog titles reader (ml-100k's u.item: pipe-separated, latin-1) and
the relay that shows a child's progress bar on the console while its log records go to the log file only."""

from __future__ import annotations

import io

import pytest

from demo.catalog import catalog_titles, read_titles
from demo.main import BarRelay

U_ITEM = (
    "1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)|0|0|0|1|1\n"
    "1300|Misérables, Les (1995)|01-Jan-1995||http://us.imdb.com/x|0|0|0|0|0\n"
    "1648|Señorita Extraviada (2001)|||http://us.imdb.com/y|0|0|0|0|1\n"
)


def test_read_titles_known_answer_on_latin1(tmp_path):
    path = tmp_path / "u.item"
    path.write_bytes(U_ITEM.encode("latin-1"))
    assert read_titles(path) == {"1": "Toy Story (1995)", "1300": "Misérables, Les (1995)",
                                 "1648": "Señorita Extraviada (2001)"}


def test_read_titles_names_the_file_and_line_of_a_malformed_row(tmp_path):
    path = tmp_path / "u.item"
    path.write_bytes(("1|Toy Story (1995)|x\n\n3\n").encode("latin-1"))
    with pytest.raises(ValueError, match=r"u\.item:3: expected 'item id\|title\|\.\.\.'"):
        read_titles(path)


def test_catalog_titles_reads_ml100k_and_falls_back_to_nothing(tmp_path):
    (tmp_path / "ml-100k").mkdir()
    assert catalog_titles("ml-100k", tmp_path) == ({}, None)  # no u.item: the demo shows item ids
    (tmp_path / "ml-100k" / "u.item").write_bytes(U_ITEM.encode("latin-1"))
    titles, source = catalog_titles("ml-100k", tmp_path)
    assert source == tmp_path / "ml-100k" / "u.item"
    assert titles["1300"] == "Misérables, Les (1995)"
    assert catalog_titles(str(tmp_path / "users.dat"), tmp_path) == ({}, None)  # a file dataset has no catalog


def test_bar_relay_shows_only_the_bar_and_logs_everything():
    log, console = io.StringIO(), io.StringIO()
    relay = BarRelay(log, console)
    stream = ("2026-01-01 00:00:00,000 INFO data_owner.remote_eval: evaluating on 3 test users\n"
              "\rremote evaluation:   0%|  | 0/3", "\rremote evaluation:  67%|# | 2/",
              "3\rremote evaluation: 100%|##| 3/3\n",
              "written: /tmp/x.json\n")
    for chunk in stream:
        relay.feed(chunk)
    assert log.getvalue() == "".join(stream)
    assert console.getvalue() == ("\rremote evaluation:   0%|  | 0/3\rremote evaluation:  67%|# | 2/3"
                                  "\rremote evaluation: 100%|##| 3/3\n")
