"""A stand-in run for tests/test_fault_injection.py: writes N deterministic frames to the
outputs given, through realtime.writers.Recording and realtime.interrupts.DeferredInterrupt as
`posestream video` does (the loop stops after the frame in hand on Ctrl-C / SIGTERM, the
outputs are then completed). It prints READY once its journal is open and its signal
handlers are installed, then "W i" once frame i is in the journal. No camera,
no model: start-up is a fraction of a second, so random kills land in every phase.

    python tests/writer_driver.py N DELAY_S OUT [OUT ...]
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from realtime.frames import PoseFrame  # noqa: E402
from realtime.interrupts import DeferredInterrupt  # noqa: E402
from realtime.writers import Recording  # noqa: E402

FPS = 30.0


def frame(i: int) -> PoseFrame:
    """Frame i of the stand-in clip (the same every time; every 7th has nobody)."""
    if i % 7 == 3:
        return PoseFrame.empty(i, i / FPS, (640, 480))
    rng = np.random.default_rng(i)
    j = rng.normal(scale=300, size=(17, 3)).astype(np.float32)
    j[0] = 0
    return PoseFrame(i, i / FPS, True, j, np.array([0, -100, 3000], np.float32),
                     rng.uniform(0, 640, (17, 2)).astype(np.float32), rng.uniform(0, 1, 17).astype(np.float32),
                     (640, 480), rng.dirichlet(np.ones(3), 14).astype(np.float32),
                     landmarks_px=rng.uniform(0, 640, (33, 2)).astype(np.float32),
                     landmarks_world_mm=rng.normal(scale=300, size=(33, 3)).astype(np.float32),
                     landmarks_visibility=rng.uniform(0, 1, 33).astype(np.float32))


def main(argv: list[str]) -> int:
    n, delay, outs = int(argv[0]), float(argv[1]), argv[2:]
    with DeferredInterrupt(message="") as ctrl:
        rec = Recording(outs, FPS)
        print("READY", flush=True)
        try:
            for i in range(n):
                rec.write(frame(i))
                print(f"W {i}", flush=True)
                if ctrl.requested:
                    break
                time.sleep(delay)
        except KeyboardInterrupt:  # a second signal: stop now, still complete the outputs
            pass
        try:
            with ctrl.finishing(", ".join(outs)):
                rec.close()
        except KeyboardInterrupt:  # two more signals abort the rendering: the journal stays
            print("aborted while writing the outputs", file=sys.stderr)
    return ctrl.exit_code or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
