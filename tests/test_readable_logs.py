"""Logs a person can read: speed colours that mean something on a CPU, level names visible on a dark terminal,
one report per failed video in predict, and help texts without doubled or misleading defaults."""
from __future__ import annotations

import logging

import coloredlogs

from tools import convert
from train.callbacks import SpeedMonitor
from train.console import setup_logging

RED, YELLOW, GREEN = "\x1b[31m", "\x1b[33m", "\x1b[32m"


def test_on_a_cpu_the_speed_line_is_coloured_by_the_data_wait_share():
    sm = SpeedMonitor(colour=True)
    slow_model = {"read": 50.0, "forward": 2.0, "backward": 1.0}  # CPU speeds, far below the GPU thresholds
    text = sm.format(slow_model, 0.03)
    assert RED not in text and f"data {GREEN}3%" in text, text
    assert f"data {RED}60%" in sm.format(slow_model, 0.6)
    sm.gpu = True  # on a GPU the clips/s figures keep their thresholds
    assert RED in sm.format(slow_model, 0.03).split("data")[0]


def test_level_names_are_not_black(monkeypatch):
    seen = {}
    real_install = coloredlogs.install

    def install(**kw):  # what setup_logging asks of coloredlogs, rendered as on a terminal
        seen.update(kw)
        return real_install(**kw)

    monkeypatch.setattr(coloredlogs, "install", install)
    setup_logging("INFO")
    formatter = coloredlogs.ColoredFormatter(seen["fmt"], field_styles=seen["field_styles"])
    text = formatter.format(logging.LogRecord("x", logging.WARNING, "f.py", 1, "hello", None, None))
    assert "WARNING" in text and "\x1b[30" not in text and ";30m" not in text, repr(text)


def test_other_ranks_drop_what_every_rank_would_say_alike_and_keep_their_own_warnings(capfd):
    from data.rank_logging import SAME_ON_EVERY_RANK, RankSpecificOnly

    root = logging.getLogger()
    saved = list(root.handlers), root.level
    try:
        for main in (True, False):
            setup_logging("WARNING", main_process=main)
            log = logging.getLogger("some.module")
            log.warning("7 of 9 videos are left out", extra=SAME_ON_EVERY_RANK)
            log.warning("this rank met a bad batch")
            err = capfd.readouterr().err
            assert ("7 of 9 videos are left out" in err) == main, err
            assert "this rank met a bad batch" in err
    finally:  # the filter went on every handler root had, pytest's own capture among them
        for handler in {*root.handlers, *saved[0]}:
            for f in [f for f in handler.filters if isinstance(f, RankSpecificOnly)]:
                handler.removeFilter(f)
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_convert_help_shows_each_default_once_and_no_misleading_ones(capsys):
    try:
        convert.main(["--help"])
    except SystemExit:
        pass
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: native) (default: None)" not in text and text.count("(default: None)") == 0, text
    assert "--no-jpeg-optimize" not in text or "(default: True)" not in text.split("--no-jpeg-optimize")[1][:200]


def test_predict_reports_each_failed_video_once(tmp_path, capsys):
    from tests.test_predict import make_checkpoint, write_video
    from tools import predict

    good = write_video(tmp_path / "good.mp4", n_frames=20)
    ckpt = make_checkpoint(tmp_path / "m.pth")
    for extra in ([], ["--json"]):
        code = predict.main(["--checkpoint", str(ckpt), "--clips", "1", "--device", "cpu", *extra,
                             str(tmp_path / "missing.mp4"), str(good)])
        captured = capsys.readouterr()
        assert code == 1
        said = captured.err if extra else captured.out + captured.err
        assert said.count("missing.mp4: no such file") == 1, said
        assert "1 of 2 video(s) failed" in captured.err
