"""realtime.track_eval: CLEAR MOT, IDF1 and MPJPE on hand-made sequences with known answers."""
from __future__ import annotations

import numpy as np
import pytest

from realtime.track_eval import TrackScores, mpjpe_rel, score_tracks


def box(x: float, y: float = 100.0, w: float = 50.0, h: float = 120.0) -> np.ndarray:
    return np.array([x, y, x + w, y + h], np.float64)


def walk(n: int, x0: float, step: float) -> list[np.ndarray]:
    return [box(x0 + step * i) for i in range(n)]


def test_perfect_tracking_under_other_ids():
    a, b = walk(10, 0, 5), walk(10, 300, -5)
    gt = [{0: a[i], 1: b[i]} for i in range(10)]
    pred = [{7: a[i] + 2, 3: b[i] - 1} for i in range(10)]
    s, matches = score_tracks(gt, pred)
    assert (s.gt, s.pred, s.matches, s.fn, s.fp, s.idsw, s.idtp) == (20, 20, 20, 0, 0, 0, 20)
    assert s.mota == 1.0 and s.idf1 == 1.0 and s.recall == 1.0
    assert matches[0] == {0: 7, 1: 3}


def test_identity_swap_counts_two_switches_and_halves_idf1():
    a, b = walk(10, 0, 5), walk(10, 300, -5)
    gt = [{0: a[i], 1: b[i]} for i in range(10)]
    pred = [({1: a[i], 2: b[i]} if i < 5 else {2: a[i], 1: b[i]}) for i in range(10)]
    s, _ = score_tracks(gt, pred)
    assert s.idsw == 2 and s.fn == 0 and s.fp == 0
    assert s.mota == pytest.approx(1 - 2 / 20)
    assert s.idtp == 10 and s.idf1 == pytest.approx(0.5)
    assert s.idf1_detections == 1.0  # every person found on every frame: all of the loss is identity


def test_idf1_of_the_detections_separates_misses_from_identity_errors():
    a = walk(10, 0, 5)
    gt = [{0: a[i]} for i in range(10)]
    pred = [{}, {}] + [{4: a[i]} for i in range(2, 6)] + [{9: a[i]} for i in range(6, 10)]
    s, _ = score_tracks(gt, pred)
    assert s.matches == 8 and s.idf1_detections == pytest.approx(2 * 8 / (10 + 8))
    assert s.idf1 == pytest.approx(2 * 4 / (10 + 8)) and s.idf1 < s.idf1_detections


def test_misses_false_positives_and_a_new_id_after_a_gap():
    a = walk(10, 0, 5)
    gt = [{0: a[i]} for i in range(10)]
    pred = [{}, {}] + [{4: a[i]} for i in range(2, 6)] + [{9: a[i], 5: box(600)} for i in range(6, 10)]
    s, _ = score_tracks(gt, pred)
    assert (s.fn, s.fp, s.idsw, s.matches) == (2, 4, 1, 8)
    assert s.mota == pytest.approx(1 - (2 + 4 + 1) / 10)
    assert s.idtp == 4 and s.idf1 == pytest.approx(2 * 4 / (10 + 12))


def test_tracks_on_ignored_people_are_not_false_positives():
    a, hidden = walk(6, 0, 5), walk(6, 200, 0)
    gt = [{0: a[i]} for i in range(6)]
    ignored = [{1: hidden[i]} for i in range(6)]
    pred = [{0: a[i], 1: hidden[i]} for i in range(6)]
    s, _ = score_tracks(gt, pred, ignored)
    assert s.fp == 0 and s.pred == 6 and s.mota == 1.0 and s.idf1 == 1.0
    s2, _ = score_tracks(gt, pred)  # without the ignore list they are false positives
    assert s2.fp == 6


def test_scores_add_up():
    s = TrackScores(1, 2, 3, 4, 5, 6, 7, 8)
    assert s + s == TrackScores(2, 4, 6, 8, 10, 12, 14, 16)


def test_mpjpe_is_root_relative():
    rng = np.random.default_rng(0)
    gt = rng.normal(0, 300, (17, 3))
    assert mpjpe_rel(gt + [1000, -50, 2000], gt) == pytest.approx(0.0, abs=1e-9)
    off = gt.copy()
    off[5] += [30, 40, 0]  # one joint 50 mm off
    assert mpjpe_rel(off, gt) == pytest.approx(50 / 17)
