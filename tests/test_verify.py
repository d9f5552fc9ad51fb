"""`python -m tools.verify ROOT`: finds every kind of damage, writes the report, exits non-zero, re-converts."""
from __future__ import annotations

import contextlib
import csv
import io
import logging
import shutil
import sqlite3

import pytest

from data.store import open_video
from tests.train_util import make_store
from tests.videos_util import make_legacy_store
from tools import verify


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("verify") / "data", classes=2, videos_per_class=3, frames=10)


@pytest.fixture
def root(pristine, tmp_path):
    dst = tmp_path / "store"
    shutil.copytree(pristine, dst)
    return dst


def _run(*argv: str) -> int:
    with contextlib.redirect_stderr(io.StringIO()):
        return verify.main([*map(str, argv)])


def _report(root) -> list[tuple[str, str]]:
    with open(root / verify.REPORT_NAME, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["path", "problem"]
    return [(r[0].split("/jpg/")[-1], r[1]) for r in rows[1:]]


def _videos(root):
    return sorted(p for p in (root / "jpg").glob("*/*") if p.is_dir())


def test_sound_dataset_exits_zero_with_an_empty_report(root):
    assert _run(root) == 0
    assert _report(root) == []


def test_every_kind_of_damage_is_reported_and_exits_one(root):
    a, b, c, d, e = _videos(root)[:5]
    with sqlite3.connect(a / "frames.db") as conn:
        conn.execute("DELETE FROM frames WHERE idx = 5")  # a hole
    with sqlite3.connect(b / "frames.db") as conn:
        blob = conn.execute("SELECT jpeg FROM frames WHERE idx = 3").fetchone()[0]
        mid = len(blob) // 2
        conn.execute("UPDATE frames SET jpeg = ? WHERE idx = 3", (blob[:mid] + bytes(100) + blob[mid + 100:],))
    (c / "n_frames").unlink()
    (d / "n_frames").write_text("7\n")
    (e / "frames.db").write_bytes(b"not a database at all" * 100)
    assert _run(root) == 1
    rows = _report(root)
    problems = {}
    for path, problem in rows:
        problems.setdefault(path, []).append(problem)
    rel = {v: "/".join(v.parts[-2:]) for v in (a, b, c, d, e)}
    assert any("not continuous from 0: missing [5]" in p for p in problems[rel[a]])
    assert problems[rel[b]] == ["frame 3 fails its checksum"]
    assert problems[rel[c]] == ["no n_frames marker (conversion unfinished)"]
    assert problems[rel[d]] == ["n_frames says 7 frames, the database holds 10"]
    assert any("SQLite" in p or "database" in p for p in problems[rel[e]])
    assert len(problems) == 5  # the sixth video is sound


def test_label_file_naming_a_missing_video_is_a_problem(root):
    victim = _videos(root)[0]
    shutil.rmtree(victim)
    assert _run(root) == 1
    assert any(p.endswith("named by all.csv but not in the frame store") for _, p in _report(root))


def test_reconvert_hands_broken_videos_back_to_the_converter(root, pristine):
    a, b = _videos(root)[:2]
    with sqlite3.connect(a / "frames.db") as conn:
        conn.execute("DELETE FROM frames WHERE idx = 2")
    (b / "n_frames").unlink()
    untouched = (_videos(root)[3] / "frames.db").stat().st_mtime_ns
    assert _run(root, "--reconvert", pristine.parent / "videos") == 0
    assert _report(root) == []
    assert len(open_video(a)) == 10 and len(open_video(b)) == 10
    assert (_videos(root)[3] / "frames.db").stat().st_mtime_ns == untouched  # sound videos are left alone


def test_legacy_databases_without_checksums_pass_with_a_note(tmp_path, caplog):
    for i in range(3):
        make_legacy_store(tmp_path / "jpg" / "walk" / f"v{i}", n_frames=4)
    with caplog.at_level(logging.INFO):
        assert _run(tmp_path) == 0
    assert any("3 without checksums" in r.getMessage() for r in caplog.records)


def test_not_a_dataset_root_exits_two(tmp_path):
    with pytest.raises(SystemExit) as exc:
        _run(tmp_path / "nope")
    assert exc.value.code == 2


def test_decode_finds_frames_that_pass_every_cheaper_check(root):
    """A frame whose bytes are a JPEG frame (start and end markers) with a matching checksum, but no decodable
    image: only `--decode` reports it."""
    from data.store import frame_checksum

    video = _videos(root)[0]
    with sqlite3.connect(video / "frames.db") as conn:
        blob = conn.execute("SELECT jpeg FROM frames WHERE idx = 4").fetchone()[0]
        junk = blob[:3] + bytes(len(blob) - 5) + b"\xff\xd9"  # SOI, a marker, zeros, EOI
        conn.execute("UPDATE frames SET jpeg = ?, crc32 = ? WHERE idx = 4", (junk, frame_checksum(junk)))
    conn.close()
    assert _run(root) == 0 and _report(root) == []
    assert _run(root, "--decode") == 1
    assert _report(root) == [(video.relative_to(root / "jpg").as_posix(), "frame 4 cannot be decoded")]
