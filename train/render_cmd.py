"""Synthetic people (MakeHuman body) rendered into labelled 256x256 crops (`posestream render`).

    posestream render --data ../shared/data/h36m/h36m_val.npz --out data_out/synth_s9 --every 5
    posestream render --bvh ../shared/data/bandai/dataset-2/data --out data_out/synth_bandai --count 20000

H36M mode renders each (row, camera) of the file from that file's own cameras; the 3D
labels are the file's joints (see train/synth/samples.py). BVH mode renders random mocap
frames on random bodies from sampled webcam/H36M-like cameras. Output: shard_XXXXX.npz +
manifest.json (docs/synthetic.md); rerunning skips finished shards.

--sequence renders clips instead (train/synth/sequences.py, docs/temporal.md): consecutive
rows of the file per camera (--fps resamples them, --seconds/--clips/--clip-start cut them),
or --count stretches of BVH clips of --seconds; MediaPipe runs in VIDEO mode over each clip,
and --cues stores the Final generator's coarse 3D and FBI per frame. --shard-size then counts
clips (default 4).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from engines.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    # Counts and sizes are range-checked at parsing (usage error, exit 2): a --limit of 0 or
    # less used to "finish" with an empty set and exit 0.
    from realtime.cli_options import non_negative_int, positive_float, positive_int

    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="npz in the Human3.6M staged schema (e.g. h36m_val.npz = S9)")
    src.add_argument("--bvh", help="folder of BVH clips (Bandai-Namco naming)")
    p.add_argument("--out", required=True, help="output folder (shards + manifest.json)")
    p.add_argument("--every", type=positive_int, default=1, help="H36M: keep every N-th row")
    p.add_argument("--cameras", default="0,1,2,3", help="H36M: camera indices, e.g. 0,1,2,3")
    p.add_argument("--count", type=positive_int, default=10000, help="BVH: number of samples")
    p.add_argument("--limit", type=positive_int, default=None, help="render only the first N samples (quick runs)")
    p.add_argument("--no-mediapipe", action="store_true", help="skip the MediaPipe pass (crop from ground truth)")
    p.add_argument("--model", default=None, help="MediaPipe .task bundle (default models/pose_landmarker_full.task)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--workers", type=positive_int, default=1, help="processes (one per core)")
    p.add_argument("--shard-size", type=positive_int, default=None, help="samples per shard (256), clips with --sequence (4)")
    seq = p.add_argument_group("sequences (--sequence)")
    seq.add_argument("--sequence", action="store_true", help="render clips: a person moving in front of one camera")
    seq.add_argument("--fps", type=positive_float, default=None, help="H36M: resample the rows to this frame rate")
    seq.add_argument("--seconds", type=positive_float, default=None,
                     help="clip length (H36M default: whole runs; BVH default 5)")
    seq.add_argument("--clips", type=positive_int, default=1, help="H36M with --clip-start random: clips per run")
    seq.add_argument("--clip-start", choices=("first", "random"), default="first",
                     help="H36M: each run's first --seconds, or --clips stretches at random starts")
    seq.add_argument("--cues", nargs="?", const="generator", default=None, metavar="GENERATOR",
                     help="store the generator's coarse 3D and FBI per frame (default model: generator)")
    p.add_argument("--compress", action="store_true", help="np.savez_compressed shards (smaller, slower)")


def run(args: argparse.Namespace) -> int:
    from train.synth.shards import BvhSource, H36MSource, RunConfig, render_shards

    out = Path(args.out)
    shard_size = args.shard_size or (4 if args.sequence else 256)
    if args.every < 1 or args.count < 1 or args.workers < 1 or shard_size < 1:
        raise UserError("--every, --count, --workers and --shard-size must be >= 1")
    if not args.sequence and (args.fps or args.seconds or args.cues or args.clip_start != "first" or args.clips != 1):
        raise UserError("--fps, --seconds, --clips, --clip-start and --cues apply to --sequence renders")
    if args.sequence:
        from train.synth.sequences import BvhClips, H36MClips

        if args.data:
            source = H36MClips(args.data, _cameras(args.cameras), args.fps, args.seconds, args.clips,
                               args.clip_start, args.seed)
        else:
            if args.fps:
                raise UserError("--fps applies to --data (BVH clips keep their own frame rate)")
            source = BvhClips(args.bvh, args.count, args.seconds or 5.0, cache_dir=out, seed=args.seed)
    elif args.data:
        source = H36MSource(args.data, args.every, _cameras(args.cameras))
    else:
        source = BvhSource(args.bvh, args.count, cache_dir=out, seed=args.seed)
    cfg = RunConfig(out=out, seed=args.seed, shard_size=shard_size, mediapipe=not args.no_mediapipe,
                    workers=args.workers, compress=args.compress, limit=args.limit, model=args.model,
                    generator=args.cues)
    m = render_shards(source, cfg)
    st = m["stats"]
    line = f"render: {st['samples']}/{m['num_samples']} {'clips' if args.sequence else 'samples'} in {out}"
    if "frames" in st:
        line += f" ({st['frames']} frames)"
    if "last_run" in m:
        lr = m["last_run"]
        line += (f"; this run {lr['samples']} samples at {lr['samples_per_s']} samples/s with {lr['workers']} "
                 f"worker(s) ({lr['per_worker_samples_per_s']}/s per worker while rendering)")
    if "mp_detection_rate" in st:
        line += (f"; MediaPipe detected {100 * st['mp_detection_rate']:.1f}%, correct {100 * st['mp_correct_rate']:.1f}%")
    print(line)
    return 0


def _cameras(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(c) for c in text.split(",") if c.strip())
    except ValueError:
        raise UserError(f"--cameras must be comma-separated integers, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="posestream render", description=__doc__.split("\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return run(args)
    except UserError as exc:
        print(f"error: {exc}")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
