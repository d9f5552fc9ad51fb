"""The JPEG benchmark's matched-setting search: the least setting that reaches a PSNR, in either direction."""
from __future__ import annotations

from tools.bench.jpeg import Stats, least_reaching


def _evaluator(psnr_of, calls):
    def evaluate(setting: int) -> Stats:
        calls.append(setting)
        return Stats(bytes=10 * setting, frames=1, psnrs=(psnr_of(setting),))
    return evaluate


def test_finds_the_lowest_quality_at_or_above_the_target_with_few_evaluations():
    calls: list[int] = []
    found = least_reaching(_evaluator(lambda q: 20 + q / 4, calls), list(range(1, 101)), 30.1)
    assert found is not None and found[0] == 41 and found[1].psnr == 30.25  # q40 gives 30.0, below the target
    assert len(calls) <= 9 and len(set(calls)) == len(calls)


def test_exact_target_counts_as_reached_and_descending_settings_work():
    # mjpeg's qscale: quality grows as the value falls, so the settings are listed 31 .. 2.
    calls: list[int] = []
    found = least_reaching(_evaluator(lambda qs: 40 - qs / 2, calls), list(range(31, 1, -1)), 29.0)
    assert found is not None and found[0] == 22 and found[1].psnr == 29.0


def test_no_setting_reaching_the_target_is_none():
    assert least_reaching(_evaluator(lambda q: 25.0, []), list(range(1, 101)), 30.0) is None


def test_stats_add_up_and_average_psnr_per_video():
    total = Stats(100, 10, (30.0,), 1.0) + Stats(300, 10, (34.0,), 3.0)
    assert (total.bytes_per_frame, total.psnr, total.fps) == (20.0, 32.0, 5.0)
