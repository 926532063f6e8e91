"""realtime.writers and realtime.journal: every format round-trips, empty frames stay (NaN,
valid=False), the journal keeps every written frame through a crash (a torn tail dropped,
never misread), outputs are replaced only by complete ones, a failing output does not lose
the others, leftovers are recovered (earlier versions' part files too), the OpenPose layout.
The .bvh content is tested in tests/test_bvh.py."""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from bvh_reader import read_bvh  # noqa: E402
from conftest import data_path  # noqa: E402

from engines.errors import UserError  # noqa: E402
from engines.skeleton import JOINT_NAMES  # noqa: E402
from realtime.frames import PoseFrame  # noqa: E402
from realtime.journal import RECORD_DTYPE, Clip, read_journal  # noqa: E402
from realtime.writers import (FORMATS, NpzWriter, OutputError, Recording, check_outputs, csv_header,  # noqa: E402
                              open_writer, output_spec, read_pose_npz, recover, recover_npz)


def _pose(i: int, rng: np.random.Generator, valid: bool = True) -> PoseFrame:
    if not valid:
        return PoseFrame.empty(i, i / 25.0, (640, 480))
    j = rng.normal(scale=300, size=(17, 3)).astype(np.float32)
    j[0] = 0
    fbi = rng.dirichlet(np.ones(3), size=14).astype(np.float32)
    return PoseFrame(i, i / 25.0, True, j, np.array([10, -20, 3000], np.float32),
                     rng.uniform(0, 640, (17, 2)).astype(np.float32), rng.uniform(0, 1, 17).astype(np.float32),
                     (640, 480), fbi)


def _poses(n: int = 6) -> list[PoseFrame]:
    rng = np.random.default_rng(0)
    return [_pose(i, rng, valid=i not in (2, 3)) for i in range(n)]


def _write(path: Path, poses: list[PoseFrame]) -> Path:
    w = open_writer(path, 25.0)
    for p in poses:
        w.write(p)
    w.close()
    return path


def test_npz_round_trip_keeps_empty_frames(tmp_path: Path):
    poses = _poses()
    out = _write(tmp_path / "a.npz", poses)
    assert not (tmp_path / "a.npz.part").exists()
    d = np.load(out)
    assert d["joints_mm"].shape == (6, 17, 3) and d["joints_2d_px"].shape == (6, 17, 2)
    assert d["valid"].tolist() == [True, True, False, False, True, True]
    assert np.isnan(d["joints_mm"][2]).all() and float(d["fps"]) == 25.0
    assert list(d["joint_names"]) == list(JOINT_NAMES)
    back = read_pose_npz(out)
    assert len(back) == 6
    for a, b in zip(poses, back):
        assert (a.index, a.valid, a.image_size) == (b.index, b.valid, b.image_size)
        assert a.timestamp_s == pytest.approx(b.timestamp_s)
        np.testing.assert_allclose(b.joints_mm, a.joints_mm, equal_nan=True)
        np.testing.assert_allclose(b.translation_mm, a.translation_mm, equal_nan=True)
        np.testing.assert_allclose(b.confidence, a.confidence)
        assert (a.fbi is None) == (b.fbi is None)


def _die(rec: Recording) -> None:
    """What a killed process leaves: the journal file closed (its lock released), nothing rendered."""
    rec._journal.close()


def test_npz_crash_loses_no_processed_frame(tmp_path: Path):
    out = tmp_path / "crash.npz"
    w = NpzWriter(out, 30.0)
    for p in _poses(4):
        w.write(p)
    _die(w)  # every written frame is on disk already
    assert not out.exists()
    recover_npz(out)
    back = read_pose_npz(out)
    assert [p.index for p in back] == [0, 1, 2, 3]
    assert [p.valid for p in back] == [True, True, False, False]


def test_read_pose_npz_errors(tmp_path: Path):
    with pytest.raises(UserError):
        read_pose_npz(tmp_path / "missing.npz")
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(UserError, match="not a posestream"):
        read_pose_npz(other)


def test_json_and_csv(tmp_path: Path):
    poses = _poses()
    doc = json.loads(_write(tmp_path / "a.json", poses).read_text())
    assert doc["meta"]["joint_names"] == list(JOINT_NAMES) and len(doc["frames"]) == 6
    f2 = doc["frames"][2]
    assert f2["valid"] is False and f2["joints_mm"][0] == [None, None, None]
    np.testing.assert_allclose(doc["frames"][0]["joints_mm"], poses[0].joints_mm, atol=1e-3)
    with open(_write(tmp_path / "a.csv", poses)) as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == csv_header() and len(rows) == 7
    assert all(len(r) == len(rows[0]) for r in rows)
    r3 = dict(zip(rows[0], rows[3]))
    assert r3["valid"] == "0" and r3["head_x_mm"] == ""
    r1 = dict(zip(rows[0], rows[1]))
    assert float(r1["l_wrist_z_mm"]) == pytest.approx(poses[0].joints_mm[13, 2], abs=1e-3)


def test_unsupported_extension():
    with pytest.raises(UserError, match="unsupported"):
        open_writer("out.xyz", 30.0)


def _lm_pose(i: int, rng: np.random.Generator, track_id: int = 0) -> PoseFrame:
    """A pose with MediaPipe's 33 landmarks and a track id."""
    p = _pose(i, rng)
    return PoseFrame(p.index, p.timestamp_s, True, p.joints_mm, p.translation_mm, p.joints_2d_px, p.confidence,
                     p.image_size, None, {}, track_id, rng.uniform(0, 600, (33, 2)).astype(np.float32),
                     rng.normal(scale=400, size=(33, 3)).astype(np.float32), rng.uniform(0, 1, 33).astype(np.float32))


def _same(a: PoseFrame, b: PoseFrame) -> None:
    assert (a.index, a.valid, a.image_size, a.track_id) == (b.index, b.valid, b.image_size, b.track_id)
    assert a.timestamp_s == b.timestamp_s
    for name in ("joints_mm", "translation_mm", "joints_2d_px", "confidence", "fbi", "landmarks_px",
                 "landmarks_world_mm", "landmarks_visibility"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            np.testing.assert_array_equal(np.asarray(x, np.float32), y, err_msg=name)


def test_journal_keeps_every_field(tmp_path: Path):
    rng = np.random.default_rng(1)
    poses = [_lm_pose(0, rng, track_id=3), _pose(1, rng), PoseFrame.empty(2, 2 / 25, (640, 480))]
    rec = Recording([tmp_path / "a.npz"], 25.0, {"kind": "test"})
    for p in poses:
        rec.write(p)
    _die(rec)
    j = read_journal(tmp_path / "a.npz.part")
    assert j.dropped_bytes == 0 and j.clip.fps == 25.0 and j.clip.source == {"kind": "test"}
    assert j.outputs == [(tmp_path / "a.npz", {})]
    back = list(j.clip.frames())
    assert len(back) == 3
    for a, b in zip(poses, back):
        _same(a, b)
    assert j.clip.has_landmarks.tolist() == [True, False, False]


def test_journal_drops_a_torn_or_damaged_tail(tmp_path: Path):
    rng = np.random.default_rng(2)
    rec = Recording([tmp_path / "a.json"], 25.0)
    for i in range(5):
        rec.write(_pose(i, rng))
    _die(rec)
    part = tmp_path / "a.json.part"
    size = part.stat().st_size
    with open(part, "ab") as fh:
        fh.write(b"\x07" * (RECORD_DTYPE.itemsize // 2))  # a record cut in half
    j = read_journal(part)
    assert len(j.clip) == 5 and j.dropped_bytes == RECORD_DTYPE.itemsize // 2
    raw = bytearray(part.read_bytes()[:size])
    raw[size - 100] ^= 0xFF  # a damaged byte in the last whole record
    part.write_bytes(bytes(raw))
    assert len(read_journal(part).clip) == 4  # the CRC catches it: dropped, never misread


def test_an_existing_output_is_replaced_only_by_a_complete_one(tmp_path: Path, capsys):
    out = tmp_path / "a.json"
    out.write_text("an earlier take")
    rec = Recording([out], 25.0)
    assert "a.json exists: it will be replaced" in capsys.readouterr().err
    for p in _poses(3):
        rec.write(p)
        assert out.read_text() == "an earlier take"  # untouched while the run goes on
    rec.close()
    assert len(json.loads(out.read_text())["frames"]) == 3
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.json"]  # no journal, no temporary left
    with pytest.raises(UserError, match="--no-overwrite"):
        Recording([out], 25.0, overwrite=False)
    assert not (tmp_path / "a.json.part").exists()


def test_no_frame_writes_nothing(tmp_path: Path):
    out = tmp_path / "a.csv"
    out.write_text("keep me")
    Recording([out], 25.0).close()  # e.g. Ctrl-C before the first frame
    assert out.read_text() == "keep me" and sorted(x.name for x in tmp_path.iterdir()) == ["a.csv"]


def test_outputs_that_cannot_be_written_are_refused_before_any_work(tmp_path: Path):
    (tmp_path / "a.npz").mkdir()
    with pytest.raises(UserError, match="is a folder"):
        check_outputs([output_spec(tmp_path / "a.npz")])
    with pytest.raises(UserError, match="given twice"):
        check_outputs([output_spec(tmp_path / "b.bvh"), output_spec(tmp_path / "x" / ".." / "b.bvh")])
    (tmp_path / "f").write_text("a file")
    with pytest.raises(UserError, match="not a folder"):
        check_outputs([output_spec(tmp_path / "f" / "c.csv")])
    foreign = tmp_path / "d.openpose"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="refusing to replace"):
        check_outputs([output_spec(foreign)])
    with pytest.raises(UserError, match="unsupported"):
        output_spec(tmp_path / "e.txt")
    assert check_outputs([output_spec(tmp_path / "new" / "dir" / "g.json")]) == []


def test_a_failing_output_does_not_lose_the_others(tmp_path: Path, monkeypatch):
    def broken(clip, path, options):
        path.write_text("half")
        raise OSError(28, "No space left on device")

    monkeypatch.setitem(FORMATS, ".csv", dataclasses.replace(FORMATS[".csv"], render=broken))
    outs = [tmp_path / "a.npz", tmp_path / "b.csv", tmp_path / "c.json"]
    rec = Recording(outs, 25.0)
    for p in _poses(4):
        rec.write(p)
    with pytest.raises(OutputError, match=r"b\.csv \(No space left on device\).*posestream recover"):
        rec.close()
    assert len(read_pose_npz(outs[0])) == 4 and len(json.loads(outs[2].read_text())["frames"]) == 4
    assert not outs[1].exists()  # never a partial file under the final name
    assert (tmp_path / "a.npz.part").is_file()  # the journal stays until every output is written
    monkeypatch.undo()
    assert recover(tmp_path / "a.npz.part") == outs
    assert len(outs[1].read_text().splitlines()) == 5 and not (tmp_path / "a.npz.part").exists()


def test_a_leftover_journal_is_recovered_never_overwritten(tmp_path: Path, capsys):
    outs = [tmp_path / "a.bvh", tmp_path / "b.npz"]
    first = Recording(outs, 25.0)
    for p in _poses(5):
        first.write(p)
    _die(first)  # killed: a.bvh.part holds 5 frames
    with pytest.raises(UserError, match="being written"):  # a live journal is never taken over
        lock = Recording([tmp_path / "c.npz"], 25.0)
        try:
            Recording([tmp_path / "c.npz"], 25.0)
        finally:
            lock.close()
    second = Recording([tmp_path / "b.npz", tmp_path / "a.bvh"], 25.0)
    err = capsys.readouterr().err
    assert "a.bvh.part was left by an interrupted run: recovered its 5 frames" in err
    assert len(read_pose_npz(tmp_path / "b.recovered.npz")) == 5
    assert len(read_bvh(tmp_path / "a.recovered.bvh")[3]) == 5
    for p in _poses(2):
        second.write(p)
    second.close()
    assert len(read_pose_npz(tmp_path / "b.npz")) == 2 and not (tmp_path / "a.bvh.part").exists()


def test_recover_reads_earlier_versions_part_files(tmp_path: Path):
    """OUT.npz.part (+ OUT.npz.fps) and OUT.bvh.part as the previous writers left them."""
    poses = _poses(3)
    rows = []
    for p in poses:
        fbi = np.full((14, 3), np.nan) if p.fbi is None else p.fbi
        rows.append(np.concatenate([[p.index, p.timestamp_s, float(p.valid), *p.image_size], np.ravel(p.joints_mm),
                                    p.translation_mm, np.ravel(p.joints_2d_px), p.confidence, np.ravel(fbi)]))
    (tmp_path / "old.npz.part").write_bytes(np.array(rows, np.float64).tobytes() + b"\x01\x02")  # + a torn tail
    (tmp_path / "old.npz.fps").write_text("25.0")
    recover(tmp_path / "old.npz.part")
    back = read_pose_npz(tmp_path / "old.npz")
    assert [b.valid for b in back] == [p.valid for p in poses] and float(np.load(tmp_path / "old.npz")["fps"]) == 25
    np.testing.assert_allclose(back[0].joints_mm, poses[0].joints_mm, rtol=1e-6)
    assert not (tmp_path / "old.npz.part").exists() and not (tmp_path / "old.npz.fps").exists()
    cam = np.array([p.joints_mm + p.translation_mm if p.valid else np.full((17, 3), np.nan) for p in poses])
    bvh_rows = np.concatenate([np.array([[float(p.valid)] for p in poses]), cam.reshape(3, -1)], axis=1)
    (tmp_path / "old.bvh.part").write_bytes(bvh_rows.astype(np.float64).tobytes())
    recover(tmp_path / "old.bvh.part", [output_spec(tmp_path / "old_as.json")])
    frames = json.loads((tmp_path / "old_as.json").read_text())["frames"]
    assert [f["valid"] for f in frames] == [p.valid for p in poses]
    np.testing.assert_allclose(frames[0]["translation_mm"], poses[0].translation_mm, atol=1e-3)
    assert (tmp_path / "old.bvh.part").exists()  # other outputs than the journal's own: it is kept


def test_recover_never_takes_a_finished_output_for_its_journal(tmp_path: Path):
    """`recover OUT` with no OUT.part: an error, and OUT (a finished output) stays as it was."""
    for name in ("done.npz", "done.bvh"):
        out = _write(tmp_path / "w.npz", _poses(4)) if name.endswith(".npz") else None
        target = tmp_path / name
        if out is not None:
            out.rename(target)
        else:
            rec = Recording([target], 25.0)
            for p in _poses(4):
                rec.write(p)
            rec.close()
        before = target.read_bytes()
        with pytest.raises(UserError, match=f"no journal .*{name}.part to recover"):
            recover(target)
        assert target.read_bytes() == before


def test_recover_refuses_damaged_journals_and_writes_nothing(tmp_path: Path):
    rng = np.random.default_rng(3)
    for name in ("r.npz.part", "r.bvh.part"):  # an earlier version's name, random bytes
        (tmp_path / name).write_bytes(rng.integers(0, 256, 50_000, np.uint8).tobytes())
        with pytest.raises(UserError, match="not a posestream journal"):
            recover(tmp_path / name)
        assert (tmp_path / name).is_file() and not (tmp_path / name[:-5]).exists()
    rec = Recording([tmp_path / "j.npz"], 25.0)
    for p in _poses(3):
        rec.write(p)
    rec._journal.close()
    good = (tmp_path / "j.npz.part").read_bytes()
    end = good.index(b"\n", len(b"posestream-journal-v1\n"))
    header = json.loads(good[len(b"posestream-journal-v1\n"):end])
    for change in ({"fps": True}, {"fps": -1}, {"outputs": [5]}, {"outputs": []}, {"record_dtype": []}):
        bad = tmp_path / "bad.npz.part"
        bad.write_bytes(good[:len(b"posestream-journal-v1\n")] + json.dumps({**header, **change}).encode()
                        + good[end:])
        with pytest.raises(UserError, match="not a readable posestream journal"):
            recover(bad)
        assert bad.is_file() and not (tmp_path / "bad.npz").exists()


def test_check_not_input_finds_the_input_under_any_name(tmp_path: Path):
    from realtime.writers import check_not_input

    src = tmp_path / "in.person1.bvh"  # an odd input name: a person's file of in.bvh
    src.write_text("x")
    (tmp_path / "alias.bvh").symlink_to(src)
    for outputs, people in (([src], 1), ([tmp_path / "sub" / ".." / src.name], 1), ([tmp_path / "alias.bvh"], 1),
                            ([tmp_path / "in.bvh"], 2)):
        with pytest.raises(UserError, match="would replace the input"):
            check_not_input(src, outputs, people)
    check_not_input(src, [tmp_path / "in.bvh", tmp_path / "other.npz"], 1)  # one person: in.bvh only
    check_not_input("0", [tmp_path / "a.npz"])  # not a file (a camera): nothing to compare


def test_landmarks_are_written_when_asked(tmp_path: Path):
    rng = np.random.default_rng(5)
    poses = [_lm_pose(0, rng, track_id=2), PoseFrame.empty(1, 0.04, (640, 480))]
    args = argparse.Namespace(landmarks=True)
    rec = Recording([output_spec(tmp_path / "a.npz", args), output_spec(tmp_path / "a.json", args),
                     tmp_path / "plain.npz"], 25.0)
    for p in poses:
        rec.write(p)
    rec.close()
    d = np.load(tmp_path / "a.npz")
    assert d["landmarks_px"].shape == (2, 33, 2) and d["landmarks_world_mm"].shape == (2, 33, 3)
    np.testing.assert_array_equal(d["landmarks_world_mm"][0], poses[0].landmarks_world_mm)
    assert np.isnan(d["landmarks_px"][1]).all() and list(d["landmark_names"][:2]) == ["nose", "left_eye_inner"]
    assert d["track_id"].tolist() == [2, 0] and str(d["format"]) == "posestream-poses-v1"
    doc = json.loads((tmp_path / "a.json").read_text())
    assert len(doc["meta"]["landmark_names"]) == 33 and "landmarks_px" not in doc["frames"][1]
    np.testing.assert_allclose(doc["frames"][0]["landmarks_visibility"], poses[0].landmarks_visibility, atol=1e-3)
    assert "landmarks_px" not in np.load(tmp_path / "plain.npz")  # only when asked
    back = read_pose_npz(tmp_path / "a.npz")  # the extra arrays are read back
    assert [p.track_id for p in back] == [2, 0] and back[1].landmarks_px is None
    np.testing.assert_array_equal(back[0].landmarks_px, poses[0].landmarks_px)
    assert read_pose_npz(tmp_path / "plain.npz")[0].landmarks_px is None


def test_openpose_body25_layout(tmp_path: Path):
    from realtime.openpose import BODY_25

    rng = np.random.default_rng(6)
    with_lm, without = _lm_pose(7, rng, track_id=1), _pose(8, rng)
    rec = Recording([tmp_path / "clip.openpose"], 25.0)
    for p in (with_lm, without, PoseFrame.empty(9, 9 / 25, (640, 480))):
        rec.write(p)
    rec.close()
    names = sorted(x.name for x in (tmp_path / "clip.openpose").iterdir())
    assert names == [f"clip_{i:012d}_keypoints.json" for i in (7, 8, 9)]
    docs = [json.loads((tmp_path / "clip.openpose" / n).read_text()) for n in names]
    assert docs[2]["people"] == [] and docs[0]["posestream"]["layout"] == "BODY_25"
    person = docs[0]["people"][0]
    assert person["person_id"] == [1]
    kp = np.array(person["pose_keypoints_2d"]).reshape(25, 3)
    lm, vis = with_lm.landmarks_px, with_lm.landmarks_visibility
    np.testing.assert_allclose(kp[BODY_25.index("Neck"), :2], (lm[11] + lm[12]) / 2, atol=1e-3)
    np.testing.assert_allclose(kp[BODY_25.index("LHeel")], [*lm[29], vis[29]], atol=1e-3)
    assert (kp[BODY_25.index("LSmallToe")] == 0).all()  # MediaPipe has no small toe: OpenPose's "missing"
    kp3 = np.array(person["pose_keypoints_3d"]).reshape(25, 4)
    r_wrist = JOINT_NAMES.index("r_wrist")
    np.testing.assert_allclose(kp3[BODY_25.index("RWrist"), :3],
                               with_lm.joints_mm[r_wrist] + with_lm.translation_mm, atol=1e-2)
    assert (kp3[BODY_25.index("REye")] == 0).all()
    fallback = np.array(docs[1]["people"][0]["pose_keypoints_2d"]).reshape(25, 3)  # no landmarks: our joints
    np.testing.assert_allclose(fallback[BODY_25.index("MidHip"), :2], without.joints_2d_px[0], atol=1e-3)
    assert (fallback[BODY_25.index("REar")] == 0).all()
    rec = Recording([tmp_path / "clip.openpose"], 25.0)  # our own folder is replaced as a whole
    rec.write(without)
    rec.close()
    assert [x.name for x in (tmp_path / "clip.openpose").iterdir()] == ["clip_000000000008_keypoints.json"]


def test_clip_from_frames_matches_the_journal(tmp_path: Path):
    rng = np.random.default_rng(7)
    poses = [_lm_pose(0, rng), _pose(1, rng)]
    clip = Clip.from_frames(poses, 25.0)
    for a, b in zip(poses, clip.frames()):
        _same(a, b)
