"""Rebuild the outputs of an interrupted run from its journal (OUT.part).

A run of `posestream video` or `webcam` appends every frame to a journal named after its
first output (OUT.part) and writes the outputs from it when it ends. A run that was killed
(power cut, SIGKILL, a crash) leaves the journal; this command writes every output it was
meant for, from the frames it holds, and removes it. With --out, it writes those outputs
instead (any format) and keeps the journal. It also reads the .npz.part / .bvh.part files
of earlier versions. (A later run with the same --out recovers a leftover journal by
itself, as OUT.recovered.EXT.)

    posestream recover out/take1.bvh.part
    posestream recover out/take1.bvh.part --out take1.json --landmarks
"""
from __future__ import annotations

import argparse
import sys

from realtime.writers import add_file_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("journal", metavar="FILE.part", help="the journal an interrupted run left (or its output's name)")
    add_file_arguments(p, out_help="write these outputs instead of the ones the journal lists (repeatable; "
                                   "the journal is then kept)")


def run(args: argparse.Namespace) -> int:
    from realtime.writers import OutputError, output_specs, recover

    try:
        recover(args.journal, output_specs(args.out, args) or None, overwrite=not args.no_overwrite)
    except OutputError as exc:
        print(f"posestream recover: error: {exc}", file=sys.stderr)
        return 1
    return 0
