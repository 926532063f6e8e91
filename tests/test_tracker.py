"""realtime.tracker: identities across frames (birth, loss, re-identification, crossings)."""
from __future__ import annotations

import numpy as np
import pytest

from realtime.tracker import (APPEARANCE_DIM, COMPLETED_CONFIDENCE, Observation, PersonTracker, TrackerConfig, _assign,
                              appearance_descriptor, appearance_similarity, box_iou, complete_pose, completed_joints,
                              keypoint_box, oks)

from pose_fixtures import standing_pose

FPS = 30.0


def person_2d(x: float, y: float = 240.0, height_px: float = 200.0) -> np.ndarray:
    """A standing person's 17 keypoints (px): pelvis at (x, y), about height_px tall."""
    p = standing_pose()[:, :2]
    p = p / (p[:, 1].max() - p[:, 1].min()) * height_px
    return p + np.array([x, y])


def obs(x: float, y: float = 240.0, height_px: float = 200.0, appearance: np.ndarray | None = None) -> Observation:
    return Observation(person_2d(x, y, height_px), np.ones(17), appearance)


def colour_hist(hue: int) -> np.ndarray:
    """The descriptor of a person dressed all in one hue (OpenCV 0-179), from a real image."""
    import cv2

    img = np.zeros((480, 640, 3), np.uint8)
    kp = person_2d(320)
    hsv = np.zeros((480, 640, 3), np.uint8)
    hsv[...] = (hue, 220, 200)
    img[...] = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return appearance_descriptor(img, kp)


def run(tracker: PersonTracker, frames: list[list[Observation]]) -> list[list[int | None]]:
    return [tracker.update(people, i / FPS) for i, people in enumerate(frames)]


def test_births_get_new_ids_and_steady_people_keep_them():
    tr = PersonTracker()
    frames = [[obs(150 + i), obs(450 - i)] for i in range(20)]
    frames += [[obs(170 + i), obs(430 - i), obs(600, 240, 150)] for i in range(20)]  # a third person enters
    ids = run(tr, frames)
    assert ids[0] == [0, 1]
    assert all(f[:2] == [0, 1] for f in ids)
    assert all(f[2] == 2 for f in ids[20:])
    assert [s.track_id for s in tr.tracks] == [0, 1, 2] and all(s.lost_s == 0 for s in tr.tracks)


def test_order_of_detections_does_not_matter():
    tr = PersonTracker()
    ids = []
    rng = np.random.default_rng(0)
    for i in range(30):
        people = [obs(100 + 2 * i), obs(320), obs(540 - 2 * i)]
        order = rng.permutation(3)
        got = tr.update([people[k] for k in order], i / FPS)
        ids.append([got[list(order).index(k)] for k in range(3)])
    assert sorted(ids[0]) == [0, 1, 2] and all(f == ids[0] for f in ids), ids


def test_loss_and_reidentification_within_the_gap():
    """A walking person hidden for half a second is found again where they were heading,
    under the same id; someone appearing after the gap expired gets a new id."""
    tr = PersonTracker(TrackerConfig(max_lost_s=1.0))
    frames = [[obs(100 + 4 * i)] for i in range(30)]          # walks right at 120 px/s
    frames += [[] for _ in range(15)]                           # hidden 0.5 s (still walking)
    frames += [[obs(100 + 4 * i)] for i in range(45, 60)]       # reappears on its path
    ids = run(tr, frames)
    assert {f[0] for f in ids if f} == {0}
    assert tr.tracks[0].lost_s == 0.0
    # Gone for longer than max_lost_s: a new identity.
    t_end = 59 / FPS
    assert tr.update([], t_end + 0.5) == []
    assert tr.tracks and tr.tracks[0].lost_s == pytest.approx(0.5)
    assert tr.update([obs(340)], t_end + 1.6) == [1]
    assert [s.track_id for s in tr.tracks] == [1]


def test_reidentification_needs_the_prediction():
    """Without the motion prediction a person who walked 60 px while hidden would not overlap
    their last box; with it, they do."""
    frames = [[obs(100 + 8 * i, height_px=120)] for i in range(20)]
    frames += [[] for _ in range(15)]
    frames += [[obs(100 + 8 * i, height_px=120)] for i in range(35, 45)]
    assert {f[0] for f in run(PersonTracker(), frames) if f} == {0}
    still = PersonTracker(TrackerConfig(max_predict_s=0.0))
    assert {f[0] for f in run(still, frames) if f} == {0, 1}


@pytest.mark.parametrize("with_appearance", [False, True])
def test_crossing_people_keep_their_ids(with_appearance):
    """Two people walk towards each other and cross; the one behind is hidden for the
    frames where they overlap most (as MediaPipe then finds only the front one)."""
    red, blue = (colour_hist(0), colour_hist(110)) if with_appearance else (None, None)
    tr = PersonTracker()
    ids = []
    for i in range(60):
        xa, xb = 100 + 7 * i, 520 - 7 * i               # cross at i = 30
        people = [obs(xa, 250, 210, red)]
        if abs(xa - xb) > 60:                           # B (behind, smaller) hidden near the crossing
            people.append(obs(xb, 230, 180, blue))
        ids.append(tr.update(people, i / FPS))
    a = [f[0] for f in ids]
    b = [f[1] for f in ids if len(f) > 1]
    assert set(a) == {0} and set(b) == {1}, ids


def test_crossing_with_both_visible():
    """While both are detected and overlap (one nearer the camera than the other), the
    velocity keeps each on its side."""
    tr = PersonTracker()
    ids = [tr.update([obs(200 + 5 * i, 260, 220), obs(440 - 5 * i, 225, 160)], i / FPS) for i in range(48)]
    assert all(f == [0, 1] for f in ids), ids


def test_appearance_reidentifies_after_a_direction_change():
    """Hidden people who reappear away from their predicted path are told apart by their
    clothes."""
    red, blue = colour_hist(0), colour_hist(110)
    tr = PersonTracker()
    for i in range(20):
        assert tr.update([obs(200, appearance=red), obs(440, appearance=blue)], i / FPS) == [0, 1]
    for i in range(20, 50):
        tr.update([], i / FPS)
    # Both come back a second later, swapped sides (they walked past each other while hidden).
    assert tr.update([obs(430, appearance=red), obs(210, appearance=blue)], 50 / FPS) == [0, 1]


def test_duplicate_detections_are_merged_and_unusable_ones_skipped():
    tr = PersonTracker()
    a = obs(200)
    dup = Observation(a.keypoints + 1.5, np.full(17, 0.8))
    empty = Observation(np.full((17, 2), np.nan), np.zeros(17))
    assert tr.update([dup, a, empty, obs(450)], 0.0) == [None, 0, None, 1]


def test_lost_track_ages_out_and_snapshot_reports_it():
    tr = PersonTracker(TrackerConfig(max_lost_s=0.5))
    tr.update([obs(200)], 0.0)
    tr.update([], 0.3)
    assert tr.tracks[0].lost_s == pytest.approx(0.3)
    pred = tr.predicted_boxes(0.4)
    assert list(pred) == [0] and pred[0].shape == (4,)
    tr.update([], 0.9)
    assert tr.tracks == ()
    tr.reset()
    assert tr.update([obs(200)], 1.0) == [1]  # ids are never reused


def test_assignment_is_globally_optimal():
    """Greedy (best pair first) would pair row 0 with col 0 and leave row 1 with 0.1; the
    Hungarian method takes 0.8 + 0.8."""
    sim = np.array([[0.9, 0.8], [0.8, 0.1]])
    assert sorted(_assign(sim, 0.2)) == [(0, 1), (1, 0)]
    assert _assign(np.array([[0.1, 0.15]]), 0.2) == []
    assert _assign(np.zeros((0, 3)), 0.2) == []
    assert sorted(_assign(np.array([[0.5], [0.9], [0.3]]), 0.2)) == [(1, 0)]


def test_similarity_measures():
    a = person_2d(200)
    assert oks(a, a, 100.0) == pytest.approx(1.0)
    assert oks(a, a + 200, 100.0) < 0.01
    assert 0.3 < oks(a, a + 10, 100.0) < 1.0
    assert oks(a, np.full((17, 2), np.nan), 100.0) == 0.0
    box = keypoint_box(a)
    assert box_iou(box, box) == pytest.approx(1.0) and box_iou(box, box + 1000) == 0.0
    red, red2, blue = colour_hist(0), colour_hist(3), colour_hist(110)
    assert red.shape == (APPEARANCE_DIM,) and np.isclose(red[:32].sum(), 1.0) and np.isclose(red[32:40].sum(), 1.0)
    assert appearance_similarity(red, red2) > 0.9 > 0.6 > appearance_similarity(red, blue)  # 0.6: the floor
    assert appearance_similarity(np.zeros(APPEARANCE_DIM), red) == 0.5  # no evidence


def test_appearance_descriptor_handles_edges_and_missing_joints():
    img = np.zeros((100, 100, 3), np.uint8)
    off = appearance_descriptor(img, person_2d(2000))           # entirely outside the image
    assert off.shape == (APPEARANCE_DIM,) and not off.any()
    conf = np.ones(17)
    conf[[1, 4]] = 0.0                                           # hips unseen: no region usable
    assert not appearance_descriptor(img, person_2d(50, 50, 80), conf).any()


def test_config_is_checked():
    with pytest.raises(ValueError):
        TrackerConfig(iou_weight=1.5)
    with pytest.raises(ValueError):
        TrackerConfig(max_lost_s=-1)


# -- completion of a partly hidden person's pose ------------------------------------------------
LOWER = [1, 2, 3, 4, 5, 6]  # hips, knees, ankles (engines.skeleton order)


def test_completion_fills_hidden_joints_from_the_prediction_anchored_on_the_visible_ones():
    """The lower body hidden (unconfident) and the pose seen 12 px right and 5 % larger than
    predicted: the hidden joints are the prediction moved and scaled onto the visible joints,
    marked completed; the visible ones are kept as they are."""
    pred = person_2d(300.0)
    truth = (pred - pred[0]) * 1.05 + pred[0] + [12.0, 0.0]
    conf = np.ones(17, np.float32)
    conf[[2, 3, 5, 6]] = 0.1  # knees and ankles hidden
    new = truth.copy()
    new[[2, 3, 5, 6]] += 80.0  # where MediaPipe guessed them
    kp, c, done = complete_pose(new, conf, pred)
    assert done.tolist() == [j in (2, 3, 5, 6) for j in range(17)]
    assert np.abs(kp[done] - truth[done]).max() < 1.0
    assert np.array_equal(kp[~done], new[~done].astype(np.float32)) and np.array_equal(c[~done], conf[~done])
    assert (c[done] == COMPLETED_CONFIDENCE).all() and completed_joints(c).tolist() == done.tolist()
    assert not completed_joints(np.ones(17)).any()


def test_joints_on_someone_in_front_or_off_the_prediction_are_completed():
    """Confident joints known to lie on a nearer person (hidden) and a confident joint far
    off the prediction that the other joints agree with (put on the person in front) are
    replaced; the scale change is bounded."""
    pred = person_2d(300.0)
    new = pred + [5.0, 0.0]
    new[16] += [90.0, 30.0]  # a wrist on someone else
    hidden = np.zeros(17, bool)
    hidden[[3, 6]] = True
    kp, c, done = complete_pose(new, np.ones(17), pred, hidden)
    assert done.tolist() == [j in (3, 6, 16) for j in range(17)]
    assert np.allclose(kp[done], pred[done] + [5.0, 0.0], atol=1.0)
    # a pose twice the prediction's size: the fitted prediction grows by 10 % at most
    big = (pred - pred[0]) * 2.0 + pred[0]
    conf = np.ones(17)
    conf[[3, 6]] = 0.0
    kp, _, done = complete_pose(big, conf, pred, outlier=10.0)
    assert done[[3, 6]].all()
    assert np.linalg.norm(kp[3] - kp[6]) == pytest.approx(1.1 * np.linalg.norm(pred[3] - pred[6]), rel=1e-4)


def test_no_completion_without_enough_anchors_or_without_anything_hidden():
    pred = person_2d(300.0)
    conf = np.zeros(17)
    conf[[7, 8, 9]] = 1.0  # three upper joints: too few to anchor
    assert complete_pose(pred, conf, pred) is None
    conf[[11, 12]] = 1.0    # five, but no hip or shoulder among them? 11 is a shoulder: anchored
    assert complete_pose(pred, conf, pred) is not None
    conf = np.zeros(17)
    conf[[7, 8, 9, 10, 12, 13, 15, 16]] = 1.0  # arms and head, no hip or shoulder
    assert complete_pose(pred, conf, pred) is None
    assert complete_pose(pred, np.ones(17), pred) is None  # whole and where predicted: nothing to do


def test_tracks_report_when_they_were_last_seen_whole():
    tr = PersonTracker()
    half = np.ones(17)
    half[LOWER] = 0.0
    tr.update([obs(100.0)], 0.0)
    tr.update([Observation(person_2d(104.0), half)], 1 / FPS)
    (state,) = tr.tracks
    assert state.whole_s == pytest.approx(1 / FPS)  # seen whole on the first frame only
    completed = np.where(half > 0, 1.0, COMPLETED_CONFIDENCE)
    tr.update([Observation(person_2d(108.0), completed)], 2 / FPS)
    assert tr.tracks[0].whole_s == pytest.approx(2 / FPS)  # completed joints do not make it whole
    tr.update([obs(112.0)], 3 / FPS)
    assert tr.tracks[0].whole_s == 0.0
    fresh = PersonTracker()
    fresh.update([Observation(person_2d(100.0), half)], 0.0)
    assert fresh.tracks[0].whole_s == float("inf")  # never seen whole
