"""S9 sequence renders with the mirrored 2D of `--mirror-2d`: `posestream eval --data` figures of
the files' model on the set's own MediaPipe 2D and on the 2D averaged with a mirrored pass.

    python scripts/mirror_s9.py --data data_out/seq_s9 --mirrored DIR [--model temporal_mp] [--json FILE]

DIR holds one clip_NNNN.npz per clip of the set (NNNN = the set's clip index) from a second
VIDEO-mode MediaPipe landmarker run on the mirrored frames of the same render, aligned to the
set's frames: mir_found (T,), mir_landmarks (T, 33, 3) (image px with u already mapped back to
the unmirrored image, visibility; landmarks in MediaPipe's order on the mirrored image, i.e.
not yet swapped left/right), mir_world (T, 33, 3) MediaPipe's world landmarks on the mirrored
image (m), time_ms (T,) (checked against the set's). Each frame's two passes are merged by the
detector's own rule (realtime.detector.merge_mirrored, after the mapping of its mirrored pass:
engines.landmarks), and the set is evaluated as `posestream eval --data` does
(train.eval_sequences.evaluate_sequence_set: frames that show a Human3.6M row where the person
was found), with and without the files' fixed bone lengths (`--fixed-bones`). Prints the 2D
error of both inputs too (px, against the renders' exact projection).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.landmarks import MP_FLIP_PERMUTATION  # noqa: E402
from engines.skeleton import NUM_JOINTS  # noqa: E402
from realtime.detector import detection_from_landmarks, merge_mirrored, mirror_disagreement, MIRROR_DISAGREE  # noqa: E402
from realtime.filters import FILE_BODY  # noqa: E402
from train.eval_sequences import evaluate_sequence_set  # noqa: E402
from train.sequence_sets import SequenceSet, load_sequence_set  # noqa: E402


def mirrored_set(ss: SequenceSet, mirrored_dir: Path) -> tuple[SequenceSet, dict]:
    """The set with each frame's 2D (joints, confidence, landmarks, world landmarks, found)
    replaced by the merge of its normal and mirrored passes; and counts of what the merge did."""
    mp2d, conf, lms, world, found = (a.copy() for a in (ss.mp2d, ss.mp_conf, ss.landmarks, ss.world_mm, ss.found))
    perm = list(MP_FLIP_PERMUTATION)
    counts = {"both": 0, "normal_only": 0, "mirrored_only": 0, "neither": 0, "kept_normal_on_disagreement": 0}
    for clip in np.unique(ss.clip):
        own = np.flatnonzero(ss.clip == clip)
        path = mirrored_dir / f"clip_{int(clip):04d}.npz"
        if not path.is_file():
            raise SystemExit(f"{path} missing: every clip of the set needs its mirrored pass")
        with np.load(path) as z:
            if not np.array_equal(z["time_ms"], ss.time_ms[own]):
                raise SystemExit(f"{path}: its frames are not the set's clip {clip}")
            m_found, m_lms, m_world = z["mir_found"], z["mir_landmarks"], z["mir_world"]
        for k, t in enumerate(own):
            normal = (detection_from_landmarks(ss.landmarks[t, :, :2], ss.landmarks[t, :, 2], ss.world_mm[t] / 1000.0)
                      if ss.found[t] else None)
            # the mirrored pass mapped back as realtime.detector does (u is already back: the
            # left/right swap and the world's x remain)
            other = None
            if m_found[k]:
                w = m_world[k][perm].astype(np.float64)
                w[:, 0] = -w[:, 0]
                other = detection_from_landmarks(m_lms[k][perm, :2], m_lms[k][perm, 2], w)
            key = ("both" if normal is not None and other is not None else "normal_only" if normal is not None
                   else "mirrored_only" if other is not None else "neither")
            counts[key] += 1
            if key == "both" and mirror_disagreement(normal, other) > MIRROR_DISAGREE:
                counts["kept_normal_on_disagreement"] += 1
            d = merge_mirrored(normal, other)
            found[t] = d is not None
            if d is None:
                mp2d[t], conf[t], lms[t], world[t] = np.nan, 0.0, np.nan, np.nan
                continue
            mp2d[t], conf[t] = d.joints_2d_px, d.confidence
            lms[t, :, :2], lms[t, :, 2], world[t] = d.landmarks_px, d.visibility, d.landmarks_world_mm
    return replace(ss, mp2d=mp2d, mp_conf=conf, landmarks=lms, world_mm=world, found=found), counts


def error_2d(ss: SequenceSet, frames: np.ndarray) -> tuple[float, float]:
    """Mean 2D joint error (px) on `frames` against the exact projection, and the mean error of
    the 2D displacement over 3 frames (100 ms at 30 fps) where both ends are in `frames` and in
    one clip."""
    e = ss.mp2d - ss.gt2d
    have = np.zeros(len(ss), bool)
    have[frames] = True
    k = np.flatnonzero(have[3:] & have[:-3] & (ss.clip[3:] == ss.clip[:-3]))
    return (float(np.linalg.norm(e[frames], axis=-1).mean()),
            float(np.linalg.norm(e[k + 3] - e[k], axis=-1).mean()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="the sequence render set (posestream render --sequence)")
    ap.add_argument("--mirrored", required=True, type=Path, help="folder of clip_NNNN.npz mirrored passes")
    ap.add_argument("--model", action="append", help="model to evaluate, repeatable (default temporal_mp)")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    models = args.model or ["temporal_mp"]
    plain = load_sequence_set(args.data)
    merged, counts = mirrored_set(plain, args.mirrored)
    assert merged.mp2d.shape[1:] == (NUM_JOINTS, 2)
    both = np.flatnonzero(plain.found & merged.found)  # = the frames the normal pass found
    print(f"{len(plain)} frames: {counts}")
    report: dict = {"counts": counts, "error_2d_px": {}, "tables": {}}
    for name, ss in (("plain", plain), ("mirrored", merged)):
        err, vel = error_2d(ss, both)
        report["error_2d_px"][name] = {"mean": err, "velocity_100ms": vel}
        print(f"2D on the {len(both)} frames the normal pass found: {name} {err:.2f} px, displacement over 3 frames "
              f"{vel:.2f} px")
    print(f"\n| 2D | fixed bones | model | frames | MPJPE | P-MPJPE | MPJVE |\n|---|---|---|---|---|---|---|")
    # the mirrored 2D finds the person on some frames the normal pass missed: also on the
    # plain set's frames alone (like with like)
    for name, ss, only in (("plain", plain, None), ("mirrored", merged, None),
                           ("mirrored, plain's frames", merged, plain.found)):
        for body in (None, FILE_BODY):
            out = evaluate_sequence_set(args.data, models, args.backend, body=body, sequences=ss, only=only)
            report["tables"][f"{name}{' fixed bones' if body else ''}"] = out
            for m, e in out["models"].items():
                print(f"| {name} | {'yes' if body else 'no'} | {m} | {out['evaluated']} | {e['mpjpe_mm']:.2f} | "
                      f"{e['p_mpjpe_mm']:.2f} | {e['mpjve_mm']:.2f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
