"""Several people in every output: the journal keeps one record per person, and each format
has a person axis (.npz (F, P, ...) arrays, .json a list of people per frame, .csv a track_id
column, .bvh a file per person, .openpose every person of a frame), read back, recovered after
a crash, replayed by `posestream serve`, and written by `posestream video --people 2`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from realtime.frames import PoseFrame

from pose_fixtures import standing_pose

SIZE = (640, 480)
N = 12
# Frames in which each track id is present: 0 throughout but frame 5, 1 in 0-7, 3 in 4-11.
PRESENT = {0: [i for i in range(N) if i != 5], 1: list(range(8)), 3: list(range(4, N))}


def person(i: int, tid: int) -> PoseFrame:
    rel = standing_pose().astype(np.float32) + np.float32(i)
    trans = np.array([tid * 700.0 - 700.0, 100.0 + i, 3000.0 + 400 * tid], np.float32)
    uv = np.full((17, 2), 10.0 * tid + i, np.float32)
    return PoseFrame(i, i / 30.0, True, rel - rel[0], trans, uv, np.full(17, 0.9, np.float32), SIZE, track_id=tid)


def crowd() -> list[PoseFrame]:
    out = []
    for i in range(N):
        people = [person(i, tid) for tid, frames in PRESENT.items() if i in frames]
        out.append(PoseFrame.from_people(people, i, i / 30.0, SIZE, {"lift": 1.0}))
    return out


def ids_per_frame(frames: list[PoseFrame]) -> list[list[int]]:
    return [[p.track_id for p in f.people] for f in frames]


EXPECTED_IDS = [[t for t in (0, 1, 3) if i in PRESENT[t]] for i in range(N)]


def record(tmp_path: Path, names: list[str], people: int = 3) -> list[Path]:
    from realtime.writers import Recording

    paths = [tmp_path / n for n in names]
    rec = Recording(paths, 30.0, {"kind": "test", "people": people}, say=lambda _m: None)
    for f in crowd():
        rec.write(f)
    rec.close()
    return paths


def test_every_format_has_a_person_axis(tmp_path):
    from realtime.writers import read_pose_npz

    npz, js, csv, bvh, op = record(tmp_path, ["c.npz", "c.json", "c.csv", "c.bvh", "c.openpose"])
    # .npz: (F, P, ...) arrays, valid (F, P), track ids (P,)
    d = np.load(npz)
    assert str(d["format"]) == "posestream-people-v1"
    assert d["joints_mm"].shape == (N, 3, 17, 3) and d["valid"].shape == (N, 3) and d["translation_mm"].shape == (N, 3, 3)
    assert d["track_ids"].tolist() == [0, 1, 3] and d["index"].tolist() == list(range(N))
    for k, tid in enumerate((0, 1, 3)):
        assert np.flatnonzero(d["valid"][:, k]).tolist() == PRESENT[tid]
        f = PRESENT[tid][0]
        np.testing.assert_allclose(d["translation_mm"][f, k], person(f, tid).translation_mm)
    assert np.isnan(d["joints_mm"][5, 0]).all()  # id 0 is not in frame 5
    back = read_pose_npz(npz)
    assert len(back) == N and ids_per_frame(back) == EXPECTED_IDS
    np.testing.assert_allclose(back[6].others[-1].translation_mm, person(6, 3).translation_mm)
    # .json: a list of people per frame, with their ids
    doc = json.loads(js.read_text())
    assert doc["meta"]["format"] == "posestream-people-json-v1" and len(doc["frames"]) == N
    assert [[p["track_id"] for p in fr["people"]] for fr in doc["frames"]] == EXPECTED_IDS
    # .csv: a row per person found (one empty row for a frame with nobody), a track_id column
    rows = csv.read_text().splitlines()
    head = rows[0].split(",")
    assert head[:3] == ["index", "track_id", "timestamp_s"]
    assert len(rows) - 1 == sum(max(1, len(x)) for x in EXPECTED_IDS)
    assert [r.split(",")[1] for r in rows[1:4]] == ["0", "1", "0"]
    # .bvh: one file per person, every frame in each
    assert not bvh.exists()
    for tid in (0, 1, 3):
        text = (tmp_path / f"c.person{tid}.bvh").read_text()
        assert f"Frames: {N}\n" in text and text.startswith("HIERARCHY")
    # .openpose: every person of a frame
    files = sorted(op.iterdir())
    assert len(files) == N
    assert [[p["person_id"][0] for p in json.loads(f.read_text())["people"]] for f in files] == EXPECTED_IDS
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob("*.part"))


def test_one_person_files_are_unchanged(tmp_path):
    """A one-person run writes the one-person formats (no person axis), as before."""
    from realtime.writers import Recording

    rec = Recording([tmp_path / "s.npz", tmp_path / "s.bvh"], 30.0, {"kind": "test", "people": 1}, say=lambda _m: None)
    for i in range(5):
        rec.write(person(i, 0) if i != 2 else PoseFrame.empty(i, i / 30.0, SIZE))
    rec.close()
    d = np.load(tmp_path / "s.npz")
    assert str(d["format"]) == "posestream-poses-v1" and d["joints_mm"].shape == (5, 17, 3)
    assert d["valid"].tolist() == [True, True, False, True, True]
    assert (tmp_path / "s.bvh").is_file() and not list(tmp_path.glob("s.person*.bvh"))


def test_crashed_people_run_recovers_with_its_people(tmp_path):
    from realtime.writers import Recording, read_pose_npz, recover

    rec = Recording([tmp_path / "r.npz", tmp_path / "r.bvh"], 30.0, {"kind": "test", "people": 3}, say=lambda _m: None)
    for f in crowd()[:7]:
        rec.write(f)
    rec._journal.close()  # killed here: the journal is all that is left
    recover(tmp_path / "r.npz.part", say=lambda _m: None)
    assert ids_per_frame(read_pose_npz(tmp_path / "r.npz")) == EXPECTED_IDS[:7]
    assert sorted(p.name for p in tmp_path.glob("r.person*.bvh")) == ["r.person0.bvh", "r.person1.bvh", "r.person3.bvh"]


def test_serve_replays_every_person(tmp_path):
    from realtime.serve_cmd import load_frames

    (npz,) = record(tmp_path, ["s.npz"])
    frames, _fps = load_frames(npz)
    assert ids_per_frame(frames) == EXPECTED_IDS


SHARED_CLIP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "media" / "videos" / "mmaction2_demo_skeleton.mp4"


def shipped(model: str) -> None:
    if not (Path(__file__).resolve().parents[1] / "models" / f"{model}.onnx").is_file():
        pytest.skip(f"{model} is not shipped")


@pytest.mark.parametrize("model", ["base_gt", "temporal_sh"])
def test_video_command_writes_two_tracks(tmp_path, model):
    """`posestream video two_people.mp4 --people 2 --out o.npz`: both people of the shared
    clip tracked on its first frames, each under one id; with a single-frame and with a
    (centred) temporal model, each person then lifted from their own history."""
    shipped(model)
    clip = SHARED_CLIP
    if not clip.is_file():
        pytest.skip(f"the shared two-person clip is not here ({clip})")
    out = tmp_path / "o.npz"
    r = subprocess.run([sys.executable, "-m", "realtime.cli", "video", str(clip), "--people", "2", "--max-frames", "8",
                        "--model", model, "--out", str(out), "--no-progress"],
                       cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    d = np.load(out)
    assert str(d["format"]) == "posestream-people-v1" and d["joints_mm"].shape[:2] == (8, 2)
    assert d["valid"].all(), d["valid"]  # both people on every frame, under the same two ids
    # the two are side by side, about a metre apart, at a similar depth
    gap = np.linalg.norm(d["translation_mm"][:, 0] - d["translation_mm"][:, 1], axis=-1)
    assert (gap > 300).all() and (gap < 2500).all(), gap


@pytest.mark.parametrize("model", ["base_gt", "temporal_sh"])
def test_batch_writes_every_person_as_video_does(tmp_path, model):
    """`posestream batch --people 2` gives the same people, ids and poses as `posestream
    video --people 2` (one task per video: one tracker over it)."""
    import cv2

    from realtime import batch as B
    from realtime.api import Options
    from realtime.cli import main

    shipped(model)
    if not SHARED_CLIP.is_file():
        pytest.skip(f"the shared two-person clip is not here ({SHARED_CLIP})")
    clip = tmp_path / "two.avi"  # its first frames, so the test stays short
    cap = cv2.VideoCapture(str(SHARED_CLIP))
    ok, bgr = cap.read()
    out = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (bgr.shape[1], bgr.shape[0]))
    for _ in range(10):
        out.write(bgr)
        ok, bgr = cap.read()
    out.release(), cap.release()
    single = tmp_path / "video.npz"
    assert main(["video", str(clip), "--people", "2", "--model", model, "--out", str(single), "--no-progress"]) == 0
    opts = B.BatchOptions(pose=Options(model=model, people=2), formats=("npz", "bvh"), chunk_frames=600).resolved()
    (job,), _ = B.plan([str(clip)], tmp_path / "b", opts)
    assert job.chunks == ((0, None),)
    row = B.finish_video(job, str(tmp_path / "b"), opts, [B.detect_chunk(job.path, 0, None, opts)])
    assert row.status == "done" and row.frames == 10, row
    a, b = np.load(single), np.load(tmp_path / "b" / "two.npz")
    assert str(b["format"]) == "posestream-people-v1" and b["track_ids"].tolist() == a["track_ids"].tolist()
    assert len(b["track_ids"]) == 2 and b["valid"].tolist() == a["valid"].tolist()
    for key in ("joints_mm", "translation_mm", "joints_2d_px"):
        np.testing.assert_allclose(b[key], a[key], atol=1e-3, equal_nan=True)
    assert sorted(p.name for p in (tmp_path / "b").glob("two.person*.bvh")) == [f"two.person{t}.bvh" for t in a["track_ids"]]
