"""Multi-person tracking and accuracy figures: CLEAR MOT (MOTA, ID switches), IDF1, and
per-person MPJPE against the single-person run on the same poses, on the synthetic scenarios
of train.synth.multi (read from their files: this module does not import train).

    python -m realtime.track_eval data_out/multi [--model M] [--json out.json]
    python -m realtime.track_eval --tracks o.npz     (a real clip's tracks, no ground truth)

Matching: a ground-truth person and a predicted track correspond in a frame when the
keypoint boxes of their 2D joints (realtime.tracker.keypoint_box: the 17 joints' extent,
padded 10 %) overlap with IoU >= IOU_THRESHOLD.

Which ground-truth people count in a frame: at least MIN_IN_VIEW of their joints inside the
image and at most MAX_OCCLUSION of their pixels hidden by others. People hidden more than
that (or mostly out of the image) but still partly there are *ignored*: a track on them is
neither a false positive nor required (the detector cannot be asked to see a person who is
almost entirely behind someone else).

CLEAR MOT (Bernardin & Stiefelhagen 2008): per frame, correspondences of the previous frame
are kept while their IoU stays above the threshold, the rest matched by the Hungarian method
on IoU. FN = counted people without a match, FP = tracks without a match (and not on an
ignored person), IDSW = a person matched to a different track than at their last match.
MOTA = 1 - (FN + FP + IDSW) / (number of counted people over all frames).
IDF1 (Ristani et al. 2016): the one-to-one assignment of people to tracks maximising the
number of frames in which they correspond (IDTP); IDF1 = 2 IDTP / (people + tracks summed
over frames).

MPJPE here is root-relative (pelvis aligned), mm, over the frames where a person is matched,
counted and less than MPJPE_MAX_OCCLUSION hidden, compared on the same frames with the run of
the same person rendered alone ("single-person"), whose frames with a person are all used.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from realtime.tracker import box_iou, keypoint_box

IOU_THRESHOLD = 0.5
MIN_IN_VIEW = 0.5
MAX_OCCLUSION = 0.7
MPJPE_MAX_OCCLUSION = 0.3


@dataclass(frozen=True)
class TrackScores:
    """CLEAR MOT and identity figures of one sequence (or a sum of sequences)."""

    frames: int
    gt: int          # counted ground-truth people, summed over frames
    pred: int        # predicted people (not on ignored ground truth), summed over frames
    matches: int
    fn: int
    fp: int
    idsw: int
    idtp: int

    @property
    def mota(self) -> float:
        return 1.0 - (self.fn + self.fp + self.idsw) / max(self.gt, 1)

    @property
    def idf1(self) -> float:
        return 2.0 * self.idtp / max(self.gt + self.pred, 1)

    @property
    def idf1_detections(self) -> float:
        """IDF1 if every person's matched frames were under one id (2 matches / (gt + pred)):
        what the detections allow, so 1 - this is lost to detection (misses, false
        positives) and this - idf1 to identity errors."""
        return 2.0 * self.matches / max(self.gt + self.pred, 1)

    @property
    def recall(self) -> float:
        return self.matches / max(self.gt, 1)

    def __add__(self, other: "TrackScores") -> "TrackScores":
        return TrackScores(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values())))


def _hungarian_max(score: np.ndarray, min_score: float) -> list[tuple[int, int]]:
    """Pairs maximising the summed score, each >= min_score."""
    if score.size == 0:
        return []
    import lap

    cost = np.where(score >= min_score, -score, 1e6)
    _, rows, _ = lap.lapjv(cost, extend_cost=True, cost_limit=-min_score + 1e-9)
    return [(r, int(c)) for r, c in enumerate(rows) if c >= 0 and score[r, c] >= min_score]


def score_tracks(gt: Sequence[dict[int, np.ndarray]], pred: Sequence[dict[int, np.ndarray]],
                 ignored: Sequence[dict[int, np.ndarray]] | None = None,
                 iou_threshold: float = IOU_THRESHOLD) -> tuple[TrackScores, list[dict[int, int]]]:
    """CLEAR MOT + IDF1 over frames. gt[f], pred[f], ignored[f]: {id: box (4,) px}. Returns the
    scores and, per frame, the CLEAR correspondences {gt id: track id}."""
    ignored = ignored if ignored is not None else [{} for _ in gt]
    assert len(gt) == len(pred) == len(ignored)
    n_gt = n_pred = n_match = fn = fp = idsw = 0
    last: dict[int, int] = {}          # gt id -> track id of its last match
    previous: dict[int, int] = {}      # correspondences of the previous frame
    cooc: dict[tuple[int, int], int] = {}
    per_frame: list[dict[int, int]] = []
    for g, p, ig in zip(gt, pred, ignored):
        # Tracks on ignored people are dropped from this frame's predictions.
        ig_ids, p_ids = list(ig), list(p)
        drop: set[int] = set()
        if ig_ids and p_ids:
            unmatched_p = p_ids
            # only tracks not better explained by a counted person
            for pid in unmatched_p:
                best_counted = max((box_iou(p[pid], g[gid]) for gid in g), default=0.0)
                best_ignored = max(box_iou(p[pid], ig[iid]) for iid in ig_ids)
                if best_ignored >= iou_threshold and best_ignored > best_counted:
                    drop.add(pid)
        p = {k: v for k, v in p.items() if k not in drop}
        n_gt += len(g)
        n_pred += len(p)
        # identity co-occurrence (IDF1)
        for gid, gb in g.items():
            for pid, pb in p.items():
                if box_iou(gb, pb) >= iou_threshold:
                    cooc[(gid, pid)] = cooc.get((gid, pid), 0) + 1
        # CLEAR: keep last frame's correspondences while valid, Hungarian for the rest
        match = {gid: pid for gid, pid in previous.items()
                 if gid in g and pid in p and box_iou(g[gid], p[pid]) >= iou_threshold}
        free_g = [k for k in g if k not in match]
        free_p = [k for k in p if k not in match.values()]
        iou = np.array([[box_iou(g[a], p[b]) for b in free_p] for a in free_g]).reshape(len(free_g), len(free_p))
        for r, c in _hungarian_max(iou, iou_threshold):
            match[free_g[r]] = free_p[c]
        for gid, pid in match.items():
            if gid in last and last[gid] != pid:
                idsw += 1
            last[gid] = pid
        n_match += len(match)
        fn += len(g) - len(match)
        fp += len(p) - len(match)
        previous = match
        per_frame.append(match)
    gids = sorted({a for a, _ in cooc})
    pids = sorted({b for _, b in cooc})
    mat = np.array([[cooc.get((a, b), 0) for b in pids] for a in gids], np.float64).reshape(len(gids), len(pids))
    idtp = int(sum(mat[r, c] for r, c in _hungarian_max(mat, 0.5)))
    return TrackScores(len(gt), n_gt, n_pred, n_match, fn, fp, idsw, idtp), per_frame


def mpjpe_rel(pred_mm: np.ndarray, gt_mm: np.ndarray) -> float:
    """Root-relative (pelvis aligned) mean per-joint position error, mm, of (17, 3) poses."""
    p = np.asarray(pred_mm, np.float64)
    t = np.asarray(gt_mm, np.float64)
    return float(np.linalg.norm((p - p[0]) - (t - t[0]), axis=-1).mean())


# --------------------------------------------------------------------------- sequences
@dataclass(frozen=True)
class Truth:
    """A rendered scenario's ground truth (train.synth.multi's truth.npz)."""

    joints_cam_mm: np.ndarray    # (F, P, 17, 3)
    joints_2d_px: np.ndarray     # (F, P, 17, 2)
    occlusion: np.ndarray        # (F, P)
    in_view: np.ndarray          # (F, P)
    image_size: tuple[int, int]
    fps: float

    @staticmethod
    def load(path: Path) -> "Truth":
        d = np.load(path)
        return Truth(d["joints_cam_mm"], d["joints_2d_px"], d["occlusion"], d["in_view"],
                     (int(d["image_size"][0]), int(d["image_size"][1])), float(d["fps"]))

    def boxes(self) -> tuple[list[dict[int, np.ndarray]], list[dict[int, np.ndarray]]]:
        """Per frame the counted and the ignored people: {person: box}."""
        W, H = self.image_size
        counted, ignored = [], []
        for f in range(len(self.occlusion)):
            c, i = {}, {}
            for k in range(self.occlusion.shape[1]):
                uv = np.clip(self.joints_2d_px[f, k], [0, 0], [W - 1, H - 1])
                box = keypoint_box(uv)
                if box is None or self.in_view[f, k] <= 0 or self.occlusion[f, k] >= 1.0:
                    continue
                if self.in_view[f, k] >= MIN_IN_VIEW and self.occlusion[f, k] <= MAX_OCCLUSION:
                    c[k] = box
                else:
                    i[k] = box
            counted.append(c)
            ignored.append(i)
        return counted, ignored


def prediction_boxes(frames: Sequence) -> list[dict[int, np.ndarray]]:
    """Per frame {track id: keypoint box} of the valid people of PoseFrames."""
    out = []
    for pf in frames:
        d = {}
        for person in pf.people:
            box = keypoint_box(person.joints_2d_px, person.confidence)
            if box is not None:
                d[person.track_id] = box
        out.append(d)
    return out


@dataclass(frozen=True)
class PersonAccuracy:
    """One person of a scenario: root-relative MPJPE (mm) of the multi-person run and of the
    single-person run on the same frames (those where both have the person, it is counted
    and less than MPJPE_MAX_OCCLUSION hidden), and the root (pelvis) position error, mm."""

    person: int
    frames: int
    mpjpe_multi: float
    mpjpe_single: float
    root_error_multi: float
    root_error_single: float


def person_accuracy(truth: Truth, multi: Sequence, matches: list[dict[int, int]],
                    single: dict[int, Sequence]) -> list[PersonAccuracy]:
    out = []
    for k in range(truth.occlusion.shape[1]):
        em, es, rm, rs = [], [], [], []
        for f, pf in enumerate(multi):
            tid = matches[f].get(k)
            if tid is None or truth.occlusion[f, k] >= MPJPE_MAX_OCCLUSION or f >= len(single[k]):
                continue
            alone = single[k][f]
            if not alone.valid:
                continue
            person = next(p for p in pf.people if p.track_id == tid)
            gt = truth.joints_cam_mm[f, k]
            em.append(mpjpe_rel(person.joints_mm, gt))
            es.append(mpjpe_rel(alone.joints_mm, gt))
            for pose, acc in ((person, rm), (alone, rs)):
                t = np.asarray(pose.translation_mm, np.float64)
                if np.isfinite(t).all():
                    acc.append(float(np.linalg.norm(t - gt[0])))
        if em:
            out.append(PersonAccuracy(k, len(em), float(np.mean(em)), float(np.mean(es)),
                                      float(np.median(rm)) if rm else float("nan"),
                                      float(np.median(rs)) if rs else float("nan")))
    return out


def pair_distance_error(truth: Truth, multi: Sequence, matches: list[dict[int, int]]) -> list[float]:
    """|predicted - true| distance between the pelvises of every two matched people, mm,
    over all frames (how right the people's relative positions are)."""
    errs = []
    for f, pf in enumerate(multi):
        m = matches[f]
        ks = sorted(m)
        by_id = {p.track_id: p for p in pf.people}
        for a in range(len(ks)):
            for b in range(a + 1, len(ks)):
                ta = np.asarray(by_id[m[ks[a]]].translation_mm, np.float64)
                tb = np.asarray(by_id[m[ks[b]]].translation_mm, np.float64)
                if not (np.isfinite(ta).all() and np.isfinite(tb).all()):
                    continue
                d_true = np.linalg.norm(truth.joints_cam_mm[f, ks[a], 0] - truth.joints_cam_mm[f, ks[b], 0])
                errs.append(abs(float(np.linalg.norm(ta - tb)) - float(d_true)))
    return errs


# --------------------------------------------------------------------------- running the app
def run_video(path: Path, people: int, model: str | None, fast_people: bool = False,
              complete: bool | None = None) -> list:
    """PoseFrames of `path` through the app's own objects, as `posestream video --people N`
    computes them (realtime.api.Estimator.stream: every frame, in order; the default model
    for files when `model` is None). people > 1: realtime.people (IMAGE-mode MediaPipe, the
    tracker, each person's own sequence lifting, batched; fast_people: `--fast-people`); 1:
    the single-person default. complete: realtime.people's completion of people behind others
    on or off for this run (None: realtime.people.COMPLETE, the app's default)."""
    import realtime.people
    from realtime.api import Estimator

    default = realtime.people.COMPLETE
    realtime.people.COMPLETE = default if complete is None else complete
    try:
        with Estimator(model=model, threads=1, people=people, fast_people=fast_people and people > 1) as est:
            return list(est.stream(str(path)))
    finally:
        realtime.people.COMPLETE = default


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m realtime.track_eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", nargs="?", help="folder of scenarios written by `python -m train.synth.multi`")
    p.add_argument("--model", default=None, help="lifter (default: the app's default)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.add_argument("--fast-people", action="store_true",
                   help="run the several-people scenes as `--people N --fast-people` does")
    p.add_argument("--complete", choices=("on", "off"), default=None,
                   help="people behind others completed from their tracks (realtime.people's `complete`; "
                        "default: the app's)")
    p.add_argument("--tracks", metavar="NPZ", default=None,
                   help="instead: the tracks of a `posestream video --people N` .npz (no ground truth)")
    args = p.parse_args(argv)
    if args.tracks:
        print("\n".join(track_summary(Path(args.tracks))))
        return 0
    if not args.dir:
        p.error("give a folder of scenarios, or --tracks NPZ")
    complete = {"on": True, "off": False}.get(args.complete)
    return evaluate_dir(Path(args.dir), args.model, args.json, args.fast_people, complete)


def track_summary(path: Path) -> list[str]:
    """Lines describing the tracks of a posestream-people-v1 .npz of a clip without ground
    truth: each track id's frames (first-last, gaps), how many people each frame has, and
    *order flips*: consecutive frames (both people present) where two tracks' pelvis x
    positions in the image swap sides, the mark of an identity switch between people who
    stay side by side (people who really cross flip once too: look at the clip)."""
    d = np.load(path)
    if str(d["format"]) != "posestream-people-v1":
        return [f"{path}: one person ({int(d['valid'].sum())} of {len(d['valid'])} frames)"]
    ids, valid, uv = d["track_ids"], d["valid"], d["joints_2d_px"][:, :, 0, 0]
    F = len(valid)
    lines = [f"{path}: {F} frames, {len(ids)} track ids {ids.tolist()}"]
    for k, tid in enumerate(ids):
        on = np.flatnonzero(valid[:, k])
        gaps = int(np.sum(np.diff(on) > 1)) if len(on) else 0
        lines.append(f"  id {int(tid)}: {len(on)} frames ({int(on[0])}-{int(on[-1])}, {gaps} gaps)" if len(on)
                     else f"  id {int(tid)}: no frame")
    counts = np.bincount(valid.sum(axis=1), minlength=len(ids) + 1)
    lines.append("  frames with " + ", ".join(f"{n} people: {int(c)}" for n, c in enumerate(counts)))
    flips = 0
    for a in range(len(ids)):
        for b in range(a + 1, len(ids)):
            both = np.flatnonzero(valid[:, a] & valid[:, b])
            side = np.sign(uv[both, a] - uv[both, b])
            flips += int(np.sum((side[1:] != side[:-1]) & (np.diff(both) == 1)))
    lines.append(f"  order flips between consecutive frames: {flips}")
    return lines


def evaluate_dir(folder: Path, model: str | None = None, json_out: str | None = None,
                 fast_people: bool = False, complete: bool | None = None) -> int:
    """Run the app on every scenario under `folder` (train.synth.multi render) and print
    the tables (complete: run_video's, for the several-people runs); returns 0."""
    rows, accs, pair_errs = [], [], []
    total = None
    for truth_path in sorted(folder.glob("*/truth.npz")):
        scen = truth_path.parent
        truth = Truth.load(truth_path)
        P = truth.occlusion.shape[1]
        t0 = time.perf_counter()
        multi = run_video(scen / "scene.avi", P, model, fast_people, complete)
        t1 = time.perf_counter()
        single = {k: run_video(scen / f"person{k}.avi", 1, model) for k in range(P)}
        print(f"{scen.name}: {P} people, {len(multi)} frames: --people {P} in {t1 - t0:.0f} s, "
              f"each person alone in {time.perf_counter() - t1:.0f} s", file=sys.stderr, flush=True)
        counted, ignored = truth.boxes()
        scores, matches = score_tracks(counted, prediction_boxes(multi), ignored)
        acc = person_accuracy(truth, multi, matches, single)
        perr = pair_distance_error(truth, multi, matches)
        total = scores if total is None else total + scores
        tracks = sorted({p.track_id for pf in multi for p in pf.people})
        rows.append({"scenario": scen.name, "people": P, "tracks": len(tracks), **asdict(scores),
                     "mota": scores.mota, "idf1": scores.idf1, "idf1_detections": scores.idf1_detections,
                     "recall": scores.recall,
                     "pair_distance_error_mm": float(np.median(perr)) if perr else None})
        accs += [{"scenario": scen.name, **asdict(a)} for a in acc]
        pair_errs += perr
    if total is None:
        print(f"no scenarios under {folder} (run `python -m train.synth.multi --out {folder}` first)")
        return 2
    print("| scenario | people | tracks | IDF1 | IDF1 of the detections | MOTA | ID switches | recall | FP "
          "| median pair distance error mm |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        pe = "-" if r["pair_distance_error_mm"] is None else f"{r['pair_distance_error_mm']:.0f}"
        print(f"| {r['scenario']} | {r['people']} | {r['tracks']} | {r['idf1']:.3f} | {r['idf1_detections']:.3f} | "
              f"{r['mota']:.3f} | {r['idsw']} | {r['recall']:.3f} | {r['fp']} | {pe} |")
    print(f"| all | | | {total.idf1:.3f} | {total.idf1_detections:.3f} | {total.mota:.3f} | {total.idsw} | "
          f"{total.recall:.3f} | {total.fp} | {np.median(pair_errs) if pair_errs else float('nan'):.0f} |")
    print()
    print("| scenario | person | frames (< 30 % hidden) | MPJPE multi mm | MPJPE single mm | ratio | root error multi / single mm |")
    print("|---|---|---|---|---|---|---|")
    for a in accs:
        print(f"| {a['scenario']} | {a['person']} | {a['frames']} | {a['mpjpe_multi']:.1f} | {a['mpjpe_single']:.1f} | "
              f"{a['mpjpe_multi'] / a['mpjpe_single']:.3f} | {a['root_error_multi']:.0f} / {a['root_error_single']:.0f} |")
    if accs:
        w = np.array([a["frames"] for a in accs], np.float64)
        mm = float(np.average([a["mpjpe_multi"] for a in accs], weights=w))
        ms = float(np.average([a["mpjpe_single"] for a in accs], weights=w))
        print(f"| all | | {int(w.sum())} | {mm:.1f} | {ms:.1f} | {mm / ms:.3f} | |")
    if json_out:
        Path(json_out).write_text(json.dumps({"tracking": rows, "accuracy": accs,
                                              "all": {**asdict(total), "mota": total.mota, "idf1": total.idf1,
                                                      "idf1_detections": total.idf1_detections}},
                                             indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
