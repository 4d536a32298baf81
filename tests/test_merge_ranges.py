"""Merge options by frame range (data_dst/merge.json): kept, checked as untrusted input, and
refused by the real `facelab merge` in one line before any model loads. Their use by a
real merge is tests/test_merge_preview.py's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from facelab.errors import FacelabError
from facelab.merge.options import MergeOptions
from facelab.merge.ranges import (
    Range,
    load_ranges,
    options_for,
    parse_ranges,
    ranges_path,
    save_ranges,
    set_range,
)
from facelab.workspace import Workspace
from tests.conftest import assert_one_line_error, run_facelab


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    w = Workspace(tmp_path / "ws")
    w.init()
    return w


def _put(ws: Workspace, text: str) -> None:
    ranges_path(ws).write_text(text, encoding="utf-8")


def test_saved_ranges_read_back_and_choose_each_frames_options(ws: Workspace):
    assert load_ranges(ws) == []  # no file: no ranges
    ranges = set_range([], 10, 20, {"erode": 30})
    ranges = set_range(ranges, 15, 30, {"color": "mkl", "mode": "overlay"})  # cuts 10-20
    ranges = set_range(ranges, 12, 12, {})  # back to the run's options
    save_ranges(ws, ranges)
    assert load_ranges(ws) == ranges == [Range(10, 11, {"erode": 30}),
                                         Range(13, 14, {"erode": 30}),
                                         Range(15, 30, {"color": "mkl", "mode": "overlay"})]
    assert json.loads(ranges_path(ws).read_text())["ranges"][0] == {
        "first": 10, "last": 11, "options": {"erode": 30}}
    base = MergeOptions(blur=5)
    got = {n: options_for(n, base, ranges) for n in (9, 10, 12, 14, 15, 30, 31)}
    assert got[9] is base and got[12] is base and got[31] is base
    assert got[10] == got[14] == MergeOptions(blur=5, erode=30)
    assert got[15] == got[30] == MergeOptions(blur=5, color="mkl", mode="overlay")
    assert not list(ranges_path(ws).parent.glob(".merge.part-*"))  # written atomically


@pytest.mark.parametrize(("text", "words"), [
    ("{", ["not valid JSON"]),
    ("[]", ["must be an object"]),
    ('{"ranges": [], "other": 1}', ["must be an object"]),
    ('{"ranges": {"first": 1}}', ["list"]),
    ('{"ranges": [{"first": 5, "last": 2, "options": {}}]}', ["range 1", "first ≤ last"]),
    ('{"ranges": [{"first": true, "last": 2, "options": {}}]}', ["range 1"]),
    ('{"ranges": [{"first": -1, "last": 2, "options": {}}]}', ["range 1"]),
    ('{"ranges": [{"first": 1, "last": 2, "options": {}, "x": 0}]}', ["range 1"]),
    ('{"ranges": [{"first": 1, "last": 2, "options": {"erode": 500}}]}', ["1-2", "--erode"]),
    ('{"ranges": [{"first": 1, "last": 2, "options": {"erode": "5"}}]}', ["--erode"]),
    ('{"ranges": [{"first": 1, "last": 2, "options": {"erode": NaN}}]}', ["NaN"]),
    ('{"ranges": [{"first": 1, "last": 2, "options": {"mode": "x"}}]}', ["--mode"]),
    ('{"ranges": [{"first": 1, "last": 2, "options": {"mode": ["raw"]}}]}', ["--mode"]),
    ('{"ranges": [{"first": 1, "last": 2, "options": {"masked_hist_match": 1}}]}',
     ["true or false"]),
    ('{"ranges": [{"first": 1, "last": 2, "options": {"export_alpha": true}}]}',
     ["export_alpha", "not an option a range can set"]),
    ('{"ranges": [{"first": 1, "last": 2, "options": {"rm -rf": 1}}]}', ["not an option"]),
    ('{"ranges": [{"first": 1, "last": 5, "options": {}}, '
     '{"first": 5, "last": 9, "options": {}}]}', ["1-5", "5-9", "overlap"]),
])
def test_a_malformed_file_is_refused_in_one_sentence(ws: Workspace, text: str,
                                                     words: list[str]):
    _put(ws, text)
    with pytest.raises(FacelabError) as e:
        load_ranges(ws)
    msg = str(e.value)
    assert msg.startswith("data_dst/merge.json ") and "\n" not in msg and len(msg) < 400, msg
    assert "--ignore-ranges" in msg
    for w in words:
        assert w in msg, (w, msg)


def test_limits_of_untrusted_input(ws: Workspace):
    _put(ws, '{"ranges": [{"first": 1, "last": 2, "options": {"mode": "' + "x" * 10**5
         + '"}}]}')
    with pytest.raises(FacelabError) as e:
        load_ranges(ws)
    assert len(str(e.value)) < 400  # the value is not echoed whole
    _put(ws, " " * (5 << 20))
    with pytest.raises(FacelabError, match="larger than"):
        load_ranges(ws)
    ranges_path(ws).write_bytes(b"\xff\xfe{}")
    with pytest.raises(FacelabError, match="cannot be read"):
        load_ranges(ws)
    # a request body (the studio's) is refused the same way, naming what it was
    with pytest.raises(FacelabError, match=r"^the merge ranges: range 3-4: --blur"):
        parse_ranges({"ranges": [{"first": 3, "last": 4, "options": {"blur": -999}}]})
    with pytest.raises(FacelabError, match="overlap"):
        save_ranges(ws, [Range(1, 5, {}), Range(3, 4, {"erode": 1})])


@pytest.mark.slow  # two CLI runs
def test_merge_refuses_a_malformed_file_in_one_line_before_loading_a_model(ws: Workspace):
    _put(ws, '{"ranges": [{"first": 1, "last": 9, "options": {"erode": 900}}]}')
    res = run_facelab("-w", ws.root, "merge", "--model-name", "absent", timeout=120)
    assert_one_line_error(res, "data_dst/merge.json", "range 1-9", "--erode")
    # --ignore-ranges gets past it (to the next thing missing: the model)
    res = run_facelab("-w", ws.root, "merge", "--model-name", "absent", "--ignore-ranges",
                      timeout=120)
    assert res.rc != 0 and "merge.json" not in res.err and "absent" in res.err, res.err
