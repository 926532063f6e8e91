"""posestream: live monocular 3D human pose from a webcam or a video (docs/api.md).

    import posestream

    with posestream.Estimator() as est:                  # model, backend, fov, calib
        poses = list(est.stream("clip.mp4"))             # one PoseFrame per video frame
    posestream.write(poses, "clip.bvh")                  # .npz / .json / .csv / .bvh
    print(poses[0].joints_mm)                            # (17, 3) mm, root-relative

The implementation lives in realtime.api (the `posestream` command is a thin layer over the
same code); this package is the public face: the version, the API and the data types.
"""
from posestream._version import __version__
from realtime.api import Estimator, Options, PoseStream, default_model, read, write
from realtime.batch import BatchReport, batch
from realtime.filters import SmootherConfig
from realtime.frames import Frame, PoseFrame

__all__ = ["BatchReport", "Estimator", "Frame", "Options", "PoseFrame", "PoseStream", "SmootherConfig",
           "__version__", "batch", "default_model", "read", "write"]
