"""Several people: the batched lifter (one call per frame for everyone), the people
estimator (MediaPipe's people -> tracker ids -> lifted, each in camera space), per-track
stages, and the frame message carrying everyone."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from engines.crop import box_from_joints
from engines.skeleton import NUM_JOINTS
from realtime.detector import Detection
from realtime.estimator import Detected, PoseEstimator
from realtime.frames import Frame, PoseFrame
from realtime.trajectory import intrinsics_for

from pose_fixtures import standing_pose

SIZE = (640, 480)


def project(rel_mm: np.ndarray, trans_mm: np.ndarray) -> np.ndarray:
    """(17, 2) px of a root-relative pose placed at trans_mm, with the app's default camera."""
    intr = intrinsics_for(SIZE)
    cam = rel_mm + trans_mm
    return (intr.f * cam[:, :2] / cam[:, 2:3] + intr.c).astype(np.float32)


def detection(uv: np.ndarray) -> Detection:
    return Detection(uv, np.ones(NUM_JOINTS, np.float32), np.zeros((NUM_JOINTS, 3), np.float32), box_from_joints(uv),
                     np.zeros((33, 2), np.float32), np.ones(33, np.float32))


class CountingLifter:
    """A lifter (backend protocol) that returns the standing pose for every row, or wraps a
    real backend; counts calls and rows."""

    name = "counting"
    metadata: dict = {}

    def __init__(self, inner=None) -> None:
        self.inner = inner
        self.calls: list[int] = []

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(inputs["features"])
        self.calls.append(n)
        if self.inner is not None:
            return self.inner.run(inputs)
        return {"joints_mm": np.repeat(standing_pose()[None].astype(np.float32), n, axis=0)}

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()


class ScriptedDetector:
    """detect_people finds the scripted people of the frame at `timestamp_s` (a list per
    frame, at 30 fps) as MediaPipe would: inside the region of interest when one is given,
    and only people whose pelvis is not painted over (realtime.people.painted_over) in the
    (black) test image. Counts calls."""

    num_poses = 4
    mode = "image"

    def __init__(self, script: list[list[np.ndarray]]) -> None:
        self.script = script
        self.calls = 0

    def detect_people(self, image: np.ndarray, timestamp_s: float | None = None,
                      roi: tuple[int, int, int, int] | None = None) -> list[Detection]:
        self.calls += 1
        out = []
        for uv in self.script[int(round(timestamp_s * 30))]:
            u, v = int(uv[0, 0]), int(uv[0, 1])
            if roi is not None and not (roi[0] <= u < roi[2] and roi[1] <= v < roi[3]):
                continue
            if 0 <= v < image.shape[0] and 0 <= u < image.shape[1] and image[v, u].any():
                continue  # painted over: already found
            out.append(detection(uv))
        return out

    def close(self) -> None:
        pass


def detected(uv: np.ndarray, track_id: int, index: int = 0) -> Detected:
    return Detected(index, index / 30.0, SIZE, detection(uv), {"detect": 1.0}, None, track_id=track_id)


def lift_all(est, frames: list[Frame], root=None) -> list[PoseFrame]:
    """A several-people estimator over frames as the app runs it: detect, the people's
    sequence lifter, flushed at the end."""
    lifter = est.sequence(root)
    out = [pf for f in frames for pf in lifter.push(est.detect(f))]
    return out + lifter.flush()


def test_batched_lifter_is_one_call_and_equals_one_by_one():
    from engines.backends import open_backend
    from realtime.people import PeopleDetected, PeopleEstimator

    lifter = CountingLifter(open_backend("base_gt", "onnxruntime", threads=1))
    est = PoseEstimator(detector=ScriptedDetector([]), lifter=lifter)
    rng = np.random.default_rng(0)
    people = []
    for k, tr in enumerate(([-900.0, 200.0, 3500.0], [300.0, 150.0, 4200.0], [1200.0, 250.0, 5000.0])):
        rel = standing_pose() + rng.normal(0, 20, (17, 3))
        people.append(detected(project(rel - rel[0], np.array(tr)), track_id=k + 4))
    (frame,) = PeopleEstimator(est).sequence(None).push(PeopleDetected(0, 0.0, SIZE, tuple(people), {"detect": 1.0}))
    assert lifter.calls == [3]
    alone = [est.lift(d) for d in people]
    assert lifter.calls == [3, 1, 1, 1]
    together = frame.people
    for a, b, d in zip(together, alone, people):
        assert a.track_id == d.track_id and a.valid
        np.testing.assert_allclose(a.joints_mm, b.joints_mm, atol=1e-3)
        np.testing.assert_allclose(a.translation_mm, b.translation_mm, atol=1e-2)
        assert a.timings_ms["lift"] > 0
    # each placed where it stands: the depth order of the people is kept
    assert together[0].translation_mm[2] < together[1].translation_mm[2] < together[2].translation_mm[2]
    est.close()


class WindowLifter(CountingLifter):
    """A temporal lifter (centred, 5 frames 1/30 s apart) whose pose depends on every frame
    of its window, so two people's histories mixed up would show."""

    metadata = {"window": 5, "spacing_ms": 1000.0 / 30.0, "causal": False}

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        w = inputs["features"]
        self.calls.append(len(w))
        v = (w * np.arange(1, w.shape[1] + 1)[None, :, None]).sum(axis=1)  # (N, D)
        return {"joints_mm": (standing_pose()[None] + 50.0 * v[:, :NUM_JOINTS, None]).astype(np.float32)}


def test_each_person_has_their_own_temporal_history_and_root_filter():
    from realtime.people import PeopleEstimator
    from realtime.sequence import lift_sequence
    from realtime.trajectory import RootFilterConfig

    n = 30
    uvs, _ = walk_script(n)
    est = PeopleEstimator(PoseEstimator(detector=ScriptedDetector(uvs), lifter=WindowLifter()), appearance=False)
    blank = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
    frames = [Frame(i, i / 30.0, blank) for i in range(n)]
    root = RootFilterConfig(lag_s=0.2)
    out = lift_all(est, frames, root)
    assert [pf.index for pf in out] == list(range(n))  # every frame once, in order
    assert max(est.est.lifter.calls) > 1 and len(est.est.lifter.calls) <= n + 2  # batched over the people
    # Each person's poses are exactly those of their detections lifted alone (a person of
    # their own: their history, centred hold-back, edge padding and root filter).
    est2 = PeopleEstimator(PoseEstimator(detector=ScriptedDetector(uvs), lifter=WindowLifter()), appearance=False)
    tracked = [est2.detect(f) for f in frames]
    for tid in (0, 1):
        mine = [next((d for d in pd.people if d.track_id == tid), None) for pd in tracked]
        alone = list(lift_sequence([Detected(f.index, f.timestamp_s, SIZE, d.detection if d else None, {}, track_id=tid)
                                    for f, d in zip(frames, mine)], est2.est, root))
        got = [next((p for p in pf.people if p.track_id == tid), None) for pf in out]
        assert sum(g is not None for g in got) == sum(a.valid for a in alone) > 0
        for g, a in zip(got, alone):
            assert (g is not None) == a.valid
            if g is not None:
                np.testing.assert_allclose(g.joints_mm, a.joints_mm, atol=1e-4)
                np.testing.assert_allclose(g.translation_mm, a.translation_mm, atol=1e-3)
                assert g.cold_start == a.cold_start
    firsts = {}
    for pf in out:
        for p in pf.people:
            firsts.setdefault(p.track_id, p)
    assert all(p.cold_start for p in firsts.values())  # a track's first frames are edge-padded


def test_a_track_gone_for_good_is_flushed_and_forgotten():
    from realtime.people import PeopleDetected, PeopleEstimator

    est = PeopleEstimator(PoseEstimator(detector=ScriptedDetector([]), lifter=WindowLifter()))
    lifter = est.sequence(None, forget_s=0.5)
    uv = project(standing_pose(), np.array([0.0, 200.0, 4000.0]))
    out = []
    for i in range(40):
        people = (detected(uv, 3, i),) if i < 10 else ()
        out += lifter.push(PeopleDetected(i, i / 30.0, SIZE, people))
    assert 3 not in lifter._lifters
    out += lifter.flush()
    assert [pf.index for pf in out] == list(range(40))
    assert [pf.valid for pf in out] == [True] * 10 + [False] * 30


def test_final_model_batch_equals_one_by_one():
    from engines.final import FinalModel

    with FinalModel.open("final", "onnxruntime", threads=1) as m:
        calls = []
        run = m.generator.run
        m.generator.run = lambda inputs: calls.append(len(inputs["image"])) or run(inputs)
        rng = np.random.default_rng(1)
        image = rng.integers(0, 255, (480, 640, 3), np.uint8)
        uv = np.stack([project(standing_pose(), np.array([x, 200.0, 4000.0])) for x in (-800.0, 700.0)])
        intr = intrinsics_for(SIZE)
        batch = m.lift_batch(image, uv, intr.f, intr.c)
        assert calls == [2]
        for k in range(2):
            one = m.lift(image, uv[k], intr.f, intr.c)
            np.testing.assert_allclose(batch[k].joints_mm, one.joints_mm, atol=1e-2)
            np.testing.assert_allclose(batch[k].fbi_prob, one.fbi_prob, atol=1e-4)
        assert calls == [2, 1, 1]


def walk_script(n: int) -> tuple[list[list[np.ndarray]], list[list[np.ndarray]]]:
    """Two people crossing at different depths; the far one hidden for 6 frames at the
    crossing. Returns (2D per frame, true translations per frame) in a shuffled order."""
    rng = np.random.default_rng(2)
    uvs, trans = [], []
    for i in range(n):
        ta = np.array([-1500.0 + 100 * i, 200.0, 3500.0])
        tb = np.array([1500.0 - 100 * i, 200.0, 5000.0])
        people = [(ta, project(standing_pose(), ta))]
        if abs(i - n / 2) > 3:
            people.append((tb, project(standing_pose(), tb)))
        order = rng.permutation(len(people))
        uvs.append([people[k][1] for k in order])
        trans.append([people[k][0] for k in order])
    return uvs, trans


def test_people_estimator_keeps_ids_and_places_everyone():
    from realtime.people import PeopleEstimator

    uvs, trans = walk_script(30)
    lifter = CountingLifter()
    # complete=False: the people found only (complete also outputs the far one, hidden, at their prediction)
    est = PeopleEstimator(PoseEstimator(detector=ScriptedDetector(uvs), lifter=lifter), appearance=False,
                          complete=False)
    blank = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
    out = lift_all(est, [Frame(i, i / 30.0, blank) for i in range(30)])
    assert lifter.calls == [len(u) for u in uvs]  # one lifter call per frame, for everyone
    # The near person (x increasing) is id 0 or 1 throughout, the far one the other id.
    ids_near = {p.track_id for pf in out for p in pf.people if p.translation_mm[2] < 4200}
    ids_far = {p.track_id for pf in out for p in pf.people if p.translation_mm[2] > 4200}
    assert len(ids_near) == 1 and len(ids_far) == 1 and ids_near != ids_far
    for pf in out:
        assert [p.track_id for p in pf.people] == sorted(p.track_id for p in pf.people)
        assert pf.track_id == pf.people[0].track_id and pf.others == pf.people[1:]
        assert "detect" in pf.timings_ms and "track" in pf.timings_ms and "lift" in pf.timings_ms
    # metric positions: the distance between the two people is right
    for pf, tr in zip(out, trans):
        if len(tr) == 2:
            got = np.linalg.norm(pf.people[0].translation_mm - pf.people[1].translation_mm)
            assert got == pytest.approx(np.linalg.norm(tr[0] - tr[1]), abs=1.0)
    est.close()


def test_nobody_gives_an_empty_frame():
    from realtime.people import PeopleEstimator

    est = PeopleEstimator(PoseEstimator(detector=ScriptedDetector([[]]), lifter=CountingLifter()))
    (pf,) = lift_all(est, [Frame(0, 0.0, np.zeros((SIZE[1], SIZE[0], 3), np.uint8))])
    assert not pf.valid and pf.people == () and pf.image_size == SIZE


def test_per_track_stage_keeps_one_state_per_person():
    from realtime.filters import PoseSmoother
    from realtime.people import PerTrack

    rng = np.random.default_rng(3)
    frames, streams = [], {0: [], 1: []}
    for i in range(40):
        people = []
        for tid in ((0, 1) if i % 7 else (1,)):  # id 0 missing now and then
            p = PoseFrame(i, i / 30.0, True, (standing_pose() + rng.normal(0, 15, (17, 3))).astype(np.float32),
                          np.array([tid * 1000.0, 0, 3000.0], np.float32), np.zeros((17, 2), np.float32),
                          np.ones(17, np.float32), SIZE, track_id=tid)
            people.append(p)
            streams[tid].append(p)
        frames.append(PoseFrame.from_people(people, i, i / 30.0, SIZE))
    per = PerTrack(PoseSmoother)
    got = [per(f) for f in frames]
    for tid in (0, 1):
        ref = PoseSmoother()
        want = [ref(p) for p in streams[tid]]
        mine = [p for f in got for p in f.people if p.track_id == tid]
        assert len(mine) == len(want)
        for a, b in zip(mine, want):
            np.testing.assert_allclose(a.joints_mm, b.joints_mm, atol=1e-4)
            np.testing.assert_allclose(a.translation_mm, b.translation_mm, atol=1e-4)
    # a track unseen for longer than forget_s starts afresh
    per2 = PerTrack(PoseSmoother, forget_s=0.1)
    per2(frames[1])
    per2(dataclasses.replace(frames[10], others=()))
    assert set(per2._stages) == {0}


def test_frame_message_carries_everyone():
    from realtime.protocol import decode_json, encode_frame, message_to_frame

    people = [PoseFrame(3, 0.1, True, standing_pose().astype(np.float32), np.array([x, 0, 3000.0], np.float32),
                        np.full((17, 2), 5.0, np.float32), np.ones(17, np.float32), SIZE, track_id=tid)
              for tid, x in ((2, -500.0), (7, 500.0))]
    f = PoseFrame.from_people(people, 3, 0.1, SIZE, {"lift": 0.5})
    msg = decode_json(encode_frame(f))
    assert msg["track_id"] == 2 and [o["track_id"] for o in msg["others"]] == [7]
    back = message_to_frame(msg)
    assert [p.track_id for p in back.people] == [2, 7]
    np.testing.assert_allclose(back.others[0].translation_mm, [500, 0, 3000], atol=0.05)
    one = decode_json(encode_frame(people[0]))
    assert one["others"] == []


def test_people_option():
    from engines.errors import UserError
    from realtime.api import Options
    from realtime.filters import PoseSmoother
    from realtime.people import PerTrack

    with pytest.raises(UserError):
        Options(people=0)
    assert isinstance(Options(people=3).smoother(live=True), PerTrack)
    assert isinstance(Options().smoother(live=True), PoseSmoother)
    assert Options(people=3).smoother(live=False) is None


def test_osc_drives_the_avatar_with_the_selected_person():
    from realtime.osc_sink import VmcEncoder, parse_packet

    people = [PoseFrame(0, 0.0, True, standing_pose().astype(np.float32), np.array([x, 0, 3000.0], np.float32),
                        np.zeros((17, 2), np.float32), np.ones(17, np.float32), SIZE, track_id=tid)
              for tid, x in ((1, -800.0), (4, 900.0))]
    f = PoseFrame.from_people(people, 0, 0.0, SIZE)
    assert f.person(4).track_id == 4 and f.person(4).others == () and f.person(None).track_id == 1
    assert not f.person(9).valid

    def joints_x(msgs: list[bytes]) -> list[float]:
        out = [parse_packet(m)[0] for m in msgs]
        assert [a for a, v in out if a == "/VMC/Ext/OK"][0:1] and out[0][1] == [1]
        return [v[1] for a, v in out if a == "/posestream/joint" and v[0] == "pelvis"]

    assert joints_x(VmcEncoder(person=4).messages(f)) == [pytest.approx(900.0)]
    assert joints_x(VmcEncoder().messages(f)) == [pytest.approx(-800.0)]
    gone = VmcEncoder(person=9).messages(f)
    assert parse_packet(gone[0])[0] == ("/VMC/Ext/OK", [0])


@pytest.mark.parametrize("several", [False, True])
def test_batch_phase_two_lifts_with_the_poses_of_phase_one(several):
    """posestream batch's phase 2 takes a single-frame model's poses from phase 1 (where the
    Final model had the pixels), by (frame, track id), for one person and for several."""
    from realtime.batch import _PhaseTwo
    from realtime.people import PeopleDetected

    lifter = CountingLifter()
    est = PoseEstimator(detector=ScriptedDetector([]), lifter=lifter)
    uv = project(standing_pose(), np.array([0.0, 200.0, 4000.0]))
    ids = (2, 5) if several else (0,)
    rel = {tid: (standing_pose() * (1 + 0.1 * tid)).astype(np.float32) for tid in ids}
    rel = {tid: r - r[0] for tid, r in rel.items()}
    phase = _PhaseTwo(est, {(0, tid): (rel[tid], np.full((14, 3), tid, np.float32)) for tid in ids}, several)
    seq = phase.sequence(None)
    people = tuple(detected(uv, tid) for tid in ids)
    (pf,) = seq.push(PeopleDetected(0, 0.0, SIZE, people) if several else people[0])
    assert lifter.calls == []  # the model is not run again
    assert [p.track_id for p in pf.people] == list(ids)
    for p in pf.people:
        np.testing.assert_allclose(p.joints_mm, rel[p.track_id])
        assert (p.fbi == p.track_id).all()


def test_fast_people_option_opens_the_batched_landmark_model():
    """--fast-people reaches Options and open_people (a LandmarkRunner on the estimator, closed
    with it); it needs several people."""
    pytest.importorskip("ai_edge_litert")
    import argparse

    from engines.errors import UserError
    from realtime.api import Options
    from realtime.cli_options import options_from_args
    from realtime.people import open_people

    with pytest.raises(UserError):
        Options(fast_people=True)
    from realtime import video_cmd

    p = argparse.ArgumentParser()
    video_cmd.add_arguments(p)
    opts = options_from_args(p.parse_args(["in.mp4", "--people", "2", "--fast-people"]))
    assert opts.fast_people and opts.people == 2
    assert not options_from_args(p.parse_args(["in.mp4", "--people", "2"])).fast_people
    est = open_people("base_gt", people=2, batched=True)
    try:
        assert est.landmarks is not None and est.landmarks.calls == 0
    finally:
        est.close()
    assert est.landmarks._it is None
    plain = open_people("base_gt", people=2)
    try:
        assert plain.landmarks is None
    finally:
        plain.close()
