"""realtime.people's search for people: where it looks (crops, tiles), what it paints over,
which poses it refuses, and identities through crossings with a detector that, as
MediaPipe, gives the most prominent person of what it is shown."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from engines.crop import box_from_joints
from engines.skeleton import NUM_JOINTS
from realtime.detector import Detection
from realtime.estimator import PoseEstimator
from realtime.frames import Frame
from realtime.people import (BACKOFF_AFTER_S, CROP_MAX_LOST_S, CROP_SCALE, DISCOVER_EVERY, MASK_GREY, MIN_HITS,
                             PeopleEstimator, _hidden, discovery_tiles, on_paint, paint_mask, painted_over, square_crop)
from realtime.tracker import box_iou, keypoint_box

from pose_fixtures import standing_pose

SIZE = (960, 540)


def person(x: float, foot_y: float, height_px: float) -> np.ndarray:
    """(17, 2) px: a standing person whose feet are at (x, foot_y), height_px tall."""
    p = standing_pose()[:, :2]
    p = p / (p[:, 1].max() - p[:, 1].min()) * height_px
    return (p - [0.0, p[:, 1].max()] + [x, foot_y]).astype(np.float32)


def crossing_script(n: int = 60) -> list[list[np.ndarray]]:
    """n frames of two people crossing: the near one walks right in front of the far one, who
    walks left and is not seen while the near one hides them."""
    script = []
    for i in range(n):
        near, far = person(150 + 11 * i, 520, 400), person(810 - 11 * i, 430, 300)
        script.append([near] if abs((150 + 11 * i) - (810 - 11 * i)) < 60 else [near, far])
    return script


def near_far(pd) -> dict[str, int]:
    """{"near"/"far": track id} of a frame's people (realtime.people.PeopleDetected), told
    apart by their height (the near person is the taller)."""
    return {("near" if np.ptp(d.detection.joints_2d_px[:, 1]) > 350 else "far"): d.track_id for d in pd.people}


def detection(uv: np.ndarray) -> Detection:
    return Detection(uv, np.ones(NUM_JOINTS, np.float32), np.zeros((NUM_JOINTS, 3), np.float32), box_from_joints(uv),
                     np.zeros((33, 2), np.float32), np.ones(33, np.float32))


def test_discovery_tiles_are_overlapping_squares_across_the_image():
    tiles = discovery_tiles((960, 540))
    assert len(tiles) == 3
    assert all(x1 - x0 == 540 and y0 == 0 and y1 == 540 for x0, y0, x1, y1 in tiles)
    assert tiles[0][0] == 0 and tiles[-1][2] == 960
    assert all(b[0] < a[2] for a, b in zip(tiles, tiles[1:]))  # neighbours overlap
    portrait = discovery_tiles((540, 960))
    assert all(x0 == 0 and x1 == 540 and y1 - y0 == 540 for x0, y0, x1, y1 in portrait)
    assert portrait[-1][3] == 960
    assert discovery_tiles((500, 500)) == []


def test_crop_is_never_smaller_than_min_side():
    box = np.array([400.0, 200.0, 440.0, 260.0])
    x0, y0, x1, y1 = square_crop(box, SIZE)
    assert x1 - x0 == pytest.approx(CROP_SCALE * 60, abs=2)
    x0, y0, x1, y1 = square_crop(box, SIZE, min_side=200.0)
    assert x1 - x0 == pytest.approx(CROP_SCALE * 200, abs=2) and y1 - y0 == pytest.approx(CROP_SCALE * 200, abs=2)


def test_painting_keeps_the_body_of_the_person_looked_for():
    image = np.full((SIZE[1], SIZE[0], 3), 30, np.uint8)
    front = person(480, 500, 400)   # nearer, in front
    behind = person(540, 420, 300)  # the person looked for, partly behind
    conf = np.ones(NUM_JOINTS)
    out = painted_over(image, [(front, conf)], keep=[(behind, conf)])
    mask = paint_mask(SIZE, [(front, conf)], [(behind, conf)])
    assert (out[mask] == MASK_GREY).all() and (out[~mask] == 30).all()
    assert (image == 30).all()  # a copy
    px = lambda uv, j: (int(round(uv[j, 1])), int(round(uv[j, 0])))  # noqa: E731
    assert mask[px(front, 3)] and mask[px(front, 6)]          # the front person's feet: painted
    assert not mask[px(behind, 8)] and not mask[px(behind, 0)]  # the kept body: not painted
    # without keep the whole front body is painted, the kept pixels included
    full = paint_mask(SIZE, [(front, conf)])
    assert full.sum() > mask.sum() and (full | ~mask).all()


def test_poses_made_on_painted_pixels_are_ghosts():
    conf = np.ones(NUM_JOINTS)
    painted = person(300, 500, 400)
    mask = paint_mask(SIZE, [(painted, conf)])
    assert on_paint(detection(painted), mask)                  # on the painted body
    assert not on_paint(detection(person(750, 500, 400)), mask)  # someone else
    assert not on_paint(detection(painted), None)              # nothing painted


def test_hidden_fraction_counts_only_people_in_front():
    conf = np.ones(NUM_JOINTS)
    target = person(500, 400, 300)
    box = keypoint_box(target, conf)
    assert _hidden((target, conf), box, [detection(person(500, 480, 380))], SIZE) > 0.6  # right in front
    assert _hidden((target, conf), box, [detection(person(500, 350, 250))], SIZE) == 0.0  # behind: no cover
    assert _hidden((target, conf), box, [detection(person(850, 480, 380))], SIZE) == 0.0  # beside
    assert _hidden((target, conf), box, [], SIZE) == 0.0


class ProminentDetector:
    """As MediaPipe's landmarker: in what it is shown (the image, or its region of interest)
    it finds the one most prominent (tallest) person whose pelvis is neither painted over nor
    outside the region. The test image is black; painted pixels are grey. Records the
    regions it was asked about."""

    num_poses = 2
    mode = "image"

    def __init__(self, script: list[list[np.ndarray]]) -> None:
        self.script = script
        self.rois: list[tuple[int, tuple[int, int, int, int] | None]] = []

    def detect_people(self, image, timestamp_s=None, roi=None):
        f = int(round(timestamp_s * 30))
        self.rois.append((f, roi))
        seen = []
        for uv in self.script[f]:
            u, v = int(round(uv[0, 0])), int(round(uv[0, 1]))
            if roi is not None and not (roi[0] <= u < roi[2] and roi[1] <= v < roi[3]):
                continue
            if not (0 <= v < image.shape[0] and 0 <= u < image.shape[1]) or image[v, u].any():
                continue
            seen.append(uv)
        return [detection(max(seen, key=lambda uv: np.ptp(uv[:, 1])))] if seen else []

    def close(self) -> None:
        pass


class NoLifter:
    name = "none"
    metadata: dict = {}

    def run(self, inputs):
        return {"joints_mm": np.zeros((len(inputs["features"]), NUM_JOINTS, 3), np.float32)}

    def close(self) -> None:
        pass


def run_ids(script: list[list[np.ndarray]], complete: bool | None = None
            ) -> tuple[list[dict[str, int]], ProminentDetector]:
    """Per frame {"near"/"far": track id} of the people PeopleEstimator(complete) reports,
    told apart by their height (the near person is the taller)."""
    det = ProminentDetector(script)
    est = PeopleEstimator(PoseEstimator(detector=det, lifter=NoLifter()), appearance=False, people=2,
                          complete=complete)
    black = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
    return [near_far(est.detect(Frame(i, i / 30.0, black))) for i in range(len(script))], det


def test_people_crossing_keep_their_ids_when_the_detector_sees_only_the_nearest():
    """The near person walks right in front of the far one, who walks left and is hidden
    while they pass: each keeps one id, and the far one is not looked for while hidden."""
    n = 60
    script = crossing_script(n)
    ids, det = run_ids(script)
    near = {f["near"] for f in ids if "near" in f}
    far = {f["far"] for f in ids if "far" in f}
    assert len(near) == 1 and len(far) == 1 and near != far
    assert sum("near" in f for f in ids) >= n - 3 and sum("far" in f for f in ids) >= n - 15
    # where the far person is behind the near one, no crop looked for them (kept by prediction)
    crossing = [i for i in range(n) if len(script[i]) == 1]
    for i in crossing[2:-2]:
        crops = [roi for f, roi in det.rois if f == i and roi is not None and roi not in discovery_tiles(SIZE)]
        assert len(crops) == 1  # the near person's alone


def test_a_pose_on_part_of_a_person_does_not_shrink_their_next_crop():
    """MediaPipe sometimes returns a pose of part of a person (here: a small one at their
    head on frame 5); the crops after it stay as large as the person was."""
    script = []
    for i in range(12):
        whole = person(480 + 2 * i, 400, 200)
        script.append([person(480 + 2 * i, 250, 50)] if i == 5 else [whole])
    ids, det = run_ids(script)
    sides = {f: roi[2] - roi[0] for f, roi in det.rois if roi is not None}
    whole_side = np.ptp(script[0][0][:, 1]) * 1.2  # keypoint box: 10 % padding each side
    assert min(sides[f] for f in range(6, 12) if f in sides) >= CROP_SCALE * whole_side * 0.95


def test_detector_calls_counts_every_mediapipe_call():
    """PeopleEstimator.detector_calls (what `posestream bench --people N` reports per frame)
    counts the crops and the searches for new people alike."""
    script = [[person(300 + 5 * i, 500, 380), person(700 - 5 * i, 420, 280)] for i in range(12)]
    det = ProminentDetector(script)
    est = PeopleEstimator(PoseEstimator(detector=det, lifter=NoLifter()), appearance=False, people=2)
    black = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
    for i in range(len(script)):
        est.detect(Frame(i, i / 30.0, black))
    assert est.detector_calls == len(det.rois) > len(script)


def test_fewer_people_in_view_than_asked_for_are_searched_for_less_often():
    """`people=2`, one person in view for 4 s, then a second walks in: after BACKOFF_AFTER_S
    with nobody lost the whole image is searched every 2, 4, 8, then DISCOVER_EVERY frames,
    not every frame, and the newcomer is still found within DISCOVER_EVERY frames. A person
    who vanishes is lost, not gone: while their track is kept, every frame is searched."""
    n, arrive = 180, 120
    script = [[person(300, 500, 380)] + ([person(750, 420, 280)] if i >= arrive else []) for i in range(n)]
    ids, det = run_ids(script)
    whole = sorted({f for f, roi in det.rois if roi is None})
    settled = int(BACKOFF_AFTER_S * 30)
    assert set(range(settled)) <= set(whole)  # before: every frame
    waiting = [f for f in whole if settled <= f < arrive]
    gaps = [b - a for a, b in zip(waiting, waiting[1:])]
    assert len(waiting) <= (arrive - settled) // DISCOVER_EVERY + 3
    assert min(gaps) > 1 and max(gaps) == DISCOVER_EVERY
    assert min(i for i, f in enumerate(ids) if "far" in f) <= arrive + DISCOVER_EVERY + MIN_HITS
    # the second person vanishes at frame 60 (nobody in front of them): their crop is searched
    # for CROP_MAX_LOST_S, then the whole image on every frame while their track is kept
    # (max_lost_s, 2 s)
    script = [[person(300, 500, 380)] + ([person(750, 420, 280)] if i < 60 else []) for i in range(n)]
    _, det = run_ids(script)
    whole = {f for f, roi in det.rois if roi is None}
    assert set(range(60 + int(CROP_MAX_LOST_S * 30) + 1, 115)) <= whole


class Follower(ProminentDetector):
    """A VIDEO-mode landmarker of one track: as ProminentDetector, and records its closing."""

    mode = "video"

    def __init__(self, script: list[list[np.ndarray]], made: list) -> None:
        super().__init__(script)
        self.closed = False
        made.append(self)

    def close(self) -> None:
        self.closed = True


def test_follow_uses_a_landmarker_per_person_apart_and_the_search_where_people_overlap():
    """With follow=True each person whose predicted body meets no one else's is looked for
    by their own VIDEO-mode landmarker; while two people overlap (a crossing) both go
    through the IMAGE-mode search; identities hold; the landmarkers are closed at the end."""
    n = 60
    script = crossing_script(n)
    det, made = ProminentDetector(script), []
    est = PeopleEstimator(PoseEstimator(detector=det, lifter=NoLifter()), appearance=False, people=2, follow=True)
    est._new_follower = lambda: Follower(script, made)
    black = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
    ids = [near_far(est.detect(Frame(i, i / 30.0, black))) for i in range(n)]
    near = {f["near"] for f in ids if "near" in f}
    far = {f["far"] for f in ids if "far" in f}
    assert len(near) == 1 and len(far) == 1 and near != far
    assert len(made) == 2  # one landmarker per person
    followed = {f for m in made for f, _ in m.rois}
    assert set(range(1, 10)) | set(range(52, n)) <= followed  # apart: followed
    crossing = [i for i in range(n) if abs((150 + 11 * i) - (810 - 11 * i)) < 150]
    assert not followed & set(crossing)  # overlapping: searched in IMAGE mode instead
    assert all(f in {g for g, _ in det.rois} for f in crossing)
    assert est.detector_calls == len(det.rois) + sum(len(m.rois) for m in made)
    est.close()
    assert all(m.closed for m in made)


def test_searching_at_once_finds_exactly_what_the_search_in_order_finds():
    """workers > 1: the crops of people apart from the others and the first search of every
    region for new people run at once on landmarkers of their own, and a call made early is
    used only where the search in order would have made that very call. So the people, their
    poses and their ids are those of workers = 1, on a crossing (crops painted, people hidden)
    and with people coming and going (searches for new people)."""
    script = crossing_script(40)
    script += [[person(200 + 4 * i, 520, 380), person(760 - 3 * i, 450, 300), person(480, 400, 200)][:1 + i % 3]
               for i in range(20)]
    black = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)

    def run(workers: int) -> tuple[list, ProminentDetector, list[ProminentDetector], int]:
        det = ProminentDetector(script)
        extra: list[ProminentDetector] = []

        def make() -> ProminentDetector:
            extra.append(ProminentDetector(script))
            return extra[-1]

        est = PeopleEstimator(PoseEstimator(detector=det, lifter=NoLifter()), appearance=False, people=3,
                              workers=workers, detector_factory=make)
        out = [[(d.track_id, d.detection.joints_2d_px.copy()) for d in est.detect(Frame(i, i / 30.0, black)).people]
               for i in range(len(script))]
        calls = est.detector_calls
        est.close()
        return out, det, extra, calls

    alone, det1, none, calls1 = run(1)
    together, det2, extra, calls2 = run(2)
    assert not none and len(extra) == 1        # one more landmarker for the second worker
    assert [[tid for tid, _ in f] for f in together] == [[tid for tid, _ in f] for f in alone]
    assert all(np.array_equal(a[1], b[1]) for fa, fb in zip(alone, together) for a, b in zip(fa, fb))
    assert extra[0].rois                          # the second landmarker did part of the work
    assert calls2 >= calls1 == len(det1.rois)     # early calls the search did not use still count
    assert calls2 == len(det2.rois) + len(extra[0].rois)
    assert sum(len(f) for f in alone) > len(script)  # several people found on most frames
    with pytest.raises(ValueError):
        PeopleEstimator(PoseEstimator(detector=det1, lifter=NoLifter()), workers=0)


# -- completion of people behind others (PeopleEstimator(complete=True)) -----------------------
HIDDEN_LOWER = [2, 3, 5, 6]  # knees and ankles


class ConfidenceDetector(ProminentDetector):
    """As ProminentDetector, the script's people being (keypoints, confidence) pairs: a
    person partly behind someone comes with their hidden joints unconfident and misplaced,
    as MediaPipe gives them."""

    def detect_people(self, image, timestamp_s=None, roi=None):
        f = int(round(timestamp_s * 30))
        confs = {id(uv): c for uv, c in self.full[f]}
        got = super().detect_people(image, timestamp_s, roi)
        return [dataclasses.replace(g, confidence=confs[id(self.script[f][k])])
                for g in got for k in range(len(self.script[f])) if np.array_equal(g.joints_2d_px, self.script[f][k])]

    def __init__(self, script: list[list[tuple[np.ndarray, np.ndarray]]]) -> None:
        super().__init__([[uv for uv, _ in people] for people in script])
        self.full = [[(self.script[f][k], c) for k, (_, c) in enumerate(people)] for f, people in enumerate(script)]


def behind_script(n: int, partial_from: int) -> tuple[list, np.ndarray]:
    """n frames: a near person standing, a far one standing beside and behind them (part of
    them behind the near one), whose knees and ankles come unconfident and 60 px off from
    frame partial_from on. Returns the script and the far person's true keypoints."""
    near, far = person(480, 520, 400), person(585, 430, 300)
    whole = np.ones(NUM_JOINTS, np.float32)
    partial = whole.copy()
    partial[HIDDEN_LOWER] = 0.1
    guessed = far.copy()
    guessed[HIDDEN_LOWER] += [60.0, -40.0]
    return [[(near, whole), (far, whole) if i < partial_from else (guessed, partial)] for i in range(n)], far


def far_people(script, complete: bool) -> list:
    """Per frame the far person's Detected (None when not output), PeopleEstimator(complete)."""
    det = ConfidenceDetector(script)
    est = PeopleEstimator(PoseEstimator(detector=det, lifter=NoLifter()), appearance=False, people=2, complete=complete)
    black = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
    out = []
    for i in range(len(script)):
        pd = est.detect(Frame(i, i / 30.0, black))
        out.append(next((d for d in pd.people if np.nanmax(d.detection.joints_2d_px[:, 1]) < 470), None))
    return out


def test_a_person_partly_behind_someone_is_completed_from_their_track():
    """The far person's knees and ankles, hidden behind the near one from frame 8, come from
    their track's prediction re-anchored on the visible joints (marked completed) when
    `complete` is on: on frame 8 where the person was last seen whole, then where the track
    predicts them. (Joints on the near person's painted body count as hidden too: those come
    from the prediction as well, here where they are.) Without `complete` nothing changes."""
    from realtime.tracker import completed_joints

    script, far = behind_script(16, 8)
    on, off = far_people(script, True), far_people(script, False)
    assert all(d is not None for d in on[1:]) and all(d is not None for d in off[1:])
    whole = keypoint_box(far, np.ones(NUM_JOINTS))
    for d in on[1:9]:  # whole, then completed from the whole pose
        assert np.abs(d.detection.joints_2d_px - far).max() < 2.0
        assert box_iou(keypoint_box(d.detection.joints_2d_px, d.detection.confidence), whole) > 0.95
    for d in on[8:]:
        done = completed_joints(d.detection.confidence)
        assert done[HIDDEN_LOWER].all() and not done[[0, 1, 4]].any()  # the hips anchor it
        assert np.abs(d.detection.joints_2d_px[[0, 1, 4]] - far[[0, 1, 4]]).max() < 1e-3
    for d in off[1:]:
        assert not completed_joints(d.detection.confidence).any()
    assert box_iou(keypoint_box(off[8].detection.joints_2d_px, off[8].detection.confidence), whole) < 0.8


def test_no_completion_for_a_track_never_seen_whole():
    """A person partly hidden from their first frame on: nothing to complete them from."""
    from realtime.tracker import completed_joints

    script, _ = behind_script(12, 0)
    on = far_people(script, True)
    assert sum(d is not None for d in on) >= 10
    assert not any(completed_joints(d.detection.confidence).any() for d in on if d is not None)


def test_a_person_hidden_behind_someone_is_output_at_their_prediction():
    """In the crossing, the far person (not looked for while behind the near one) is output
    at their track's prediction, all joints completed and under their own id, only for a
    short while after they were last seen whole, and only with `complete`."""
    from realtime.tracker import completed_joints

    n = 60
    script = crossing_script(n)
    det = ProminentDetector(script)
    est = PeopleEstimator(PoseEstimator(detector=det, lifter=NoLifter()), appearance=False, people=2, complete=True)
    black = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
    frames = [est.detect(Frame(i, i / 30.0, black)) for i in range(n)]
    ids = [near_far(pd) for pd in frames]
    far = {f["far"] for f in ids if "far" in f}
    assert len(far) == 1 and len({f["near"] for f in ids if "near" in f}) == 1
    hidden = [i for i in range(n) if len(script[i]) == 1]
    coasted = [i for i in hidden if "far" in ids[i]]
    assert len(coasted) >= len(hidden) - 3 and est.coasted >= len(coasted)
    for i in coasted:
        (d,) = [d for d in frames[i].people if d.track_id in far]
        assert completed_joints(d.detection.confidence).all()
        truth = person(810 - 11 * i, 430, 300)
        assert box_iou(keypoint_box(d.detection.joints_2d_px, d.detection.confidence),
                       keypoint_box(truth, np.ones(NUM_JOINTS))) > 0.7
    plain, _ = run_ids(script, complete=False)
    assert not any("far" in plain[i] for i in hidden[2:-2])


def test_completed_joints_reach_the_npz_file(tmp_path):
    """The marking of completed joints (their confidence) survives lifting and the .npz
    writer: a reader finds the completed joints of each person with completed_joints."""
    from realtime.tracker import completed_joints
    from realtime.writers import Recording

    script, _ = behind_script(12, 8)
    est = PeopleEstimator(PoseEstimator(detector=ConfidenceDetector(script), lifter=NoLifter()), appearance=False,
                          people=2, complete=True)
    lifter = est.sequence()
    black = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
    frames = [pf for i in range(len(script)) for pf in lifter.push(est.detect(Frame(i, i / 30.0, black)))]
    frames += lifter.flush()
    rec = Recording([tmp_path / "c.npz"], 30.0, {"kind": "test", "people": 2}, say=lambda _m: None)
    for pf in frames:
        rec.write(pf)
    rec.close()
    d = np.load(tmp_path / "c.npz")
    marked = completed_joints(d["confidence"]) & d["valid"][..., None]
    far = [p for p, tid in enumerate(d["track_ids"]) if np.nanmax(d["joints_2d_px"][:, p, :, 1]) < 470]
    assert len(far) == 1
    assert marked[8:, far[0]][:, HIDDEN_LOWER].all() and not marked[:8, far[0]][:, HIDDEN_LOWER].any()
    assert not marked[:, [p for p in range(marked.shape[1]) if p != far[0]]].any()  # the near person: never


def test_a_person_whose_pose_shrank_to_part_of_them_is_not_output_behind_someone():
    """Just before the far person is hidden, MediaPipe gives a pose of part of them (all
    joints confident, squeezed into the middle of their body): their prediction behind the
    near person would be a box of that part, so they are not output there."""
    n = 60
    script = crossing_script(n)
    for i in range(n):
        if len(script[i]) == 2 and abs((150 + 11 * i) - (810 - 11 * i)) < 110:
            far = script[i][1]
            script[i] = [script[i][0], (far[0] + 0.45 * (far - far[0])).astype(np.float32)]
    det = ProminentDetector(script)
    est = PeopleEstimator(PoseEstimator(detector=det, lifter=NoLifter()), appearance=False, people=2, complete=True)
    black = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
    frames = [est.detect(Frame(i, i / 30.0, black)) for i in range(n)]
    hidden = [i for i in range(n) if len(script[i]) == 1]
    near_ids = {d.track_id for pd in frames for d in pd.people if np.ptp(d.detection.joints_2d_px[:, 1]) > 350}
    assert len(near_ids) == 1
    assert all(d.track_id in near_ids for i in hidden for d in frames[i].people)
    assert est.coasted == 0
