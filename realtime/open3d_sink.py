"""`--open3d`: a live 3D skeleton window (Open3D's legacy Visualizer, non-blocking updates).

The window shows the skeleton in camera space (metres; the camera sits at the origin, drawn
as a small axis triad, looking along +z with y down, so the first view matches the webcam's),
left limbs blue, right limbs red, and the last few seconds of the root trajectory as a trail
when the trajectory stage placed the person in the scene. Mouse drags orbit as usual.

OpenGL contexts belong to the thread that made them: create, update and close the sink from
one thread (the CLI does it in the main thread, which consumes the pipeline's output).
`update()` does one non-blocking poll + render (its cost under Xvfb and EGL: docs/realtime.md);
it returns False once the user closed the window.

With visible=False (tests, screenshots) and no display, Open3D renders offscreen through
Mesa EGL; Xvfb works too. A visible window without a display on Linux, a missing Open3D, or
a window that cannot be created raise `Open3DUnavailable` (a `UserError`) saying why.
"""
from __future__ import annotations

import os
import sys
from collections import deque

import numpy as np

from engines.errors import UserError
from engines.skeleton import BONES, LEFT_JOINTS, NUM_JOINTS, RIGHT_JOINTS
from realtime.frames import PoseFrame

LEFT_RGB = (0.15, 0.45, 0.95)
RIGHT_RGB = (0.9, 0.2, 0.15)
CENTRE_RGB = (0.25, 0.25, 0.25)
TRAIL_RGB = (0.1, 0.65, 0.3)
TRAIL_SECONDS = 5.0


class Open3DUnavailable(UserError):
    """Open3D cannot be imported or cannot open a window/offscreen context here."""


def _bone_colors() -> np.ndarray:
    left, right = set(LEFT_JOINTS), set(RIGHT_JOINTS)
    return np.array([LEFT_RGB if c in left else RIGHT_RGB if c in right else CENTRE_RGB for _, c in BONES])


class Open3DSink:
    """Live skeleton window. `update(pf)` per frame; `capture()` the current image; `close()`.

    visible=False renders offscreen-sized but hidden (used by tests and for screenshots)."""

    def __init__(self, width: int = 960, height: int = 720, title: str = "posestream",
                 visible: bool = True, trail_seconds: float = TRAIL_SECONDS) -> None:
        if visible and sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                                 or os.environ.get("WAYLAND_DISPLAY")):
            # Open3D would silently fall back to an invisible EGL context: say so instead.
            raise Open3DUnavailable("--open3d needs a display, and DISPLAY is not set (run it in a desktop "
                                    "session, or under xvfb-run for an invisible one)")
        try:
            import open3d as o3d
        except Exception as exc:  # ImportError, or OSError for a missing libusb/libGL
            raise Open3DUnavailable(f"--open3d needs the open3d package (pip install open3d-cpu; Debian: "
                                    f"apt-get install libusb-1.0-0 libgl1 libegl1): {exc}") from None
        self._o3d = o3d
        o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)
        self._vis = o3d.visualization.Visualizer()
        if not self._vis.create_window(title, width=width, height=height, visible=visible):
            raise Open3DUnavailable("Open3D could not open a window (no display, and no EGL offscreen "
                                    "context either: run under xvfb-run, or install libegl1 + Mesa)")
        self._closed = False
        self._lines = o3d.geometry.LineSet()
        self._joints = o3d.geometry.PointCloud()
        self._trail = o3d.geometry.LineSet()
        self._axes = o3d.geometry.TriangleMesh.create_coordinate_frame(size=0.25)
        self._bone_colors = _bone_colors()
        self._edges = np.array(BONES, np.int32)
        self._trail_pts: deque[tuple[float, np.ndarray]] = deque()
        self.trail_seconds = trail_seconds
        self._view_set = False
        self._placed: bool | None = None  # whether the current view was set for camera space
        for g in (self._axes, self._lines, self._joints, self._trail):
            self._vis.add_geometry(g)
        opt = self._vis.get_render_option()
        opt.background_color = np.array([1.0, 1.0, 1.0])
        opt.point_size = 8.0
        opt.line_width = 4.0  # honoured by some GL drivers only; llvmpipe draws 1 px lines

    # Geometry ------------------------------------------------------------------------------
    def _set_skeleton(self, pts_m: np.ndarray | None) -> None:
        o3d = self._o3d
        if pts_m is None:
            self._lines.points = o3d.utility.Vector3dVector(np.zeros((0, 3)))
            self._lines.lines = o3d.utility.Vector2iVector(np.zeros((0, 2), np.int32))
            self._joints.points = o3d.utility.Vector3dVector(np.zeros((0, 3)))
        else:
            ok = np.isfinite(pts_m).all(axis=1)
            edges = self._edges[ok[self._edges].all(axis=1)]
            colors = self._bone_colors[ok[self._edges].all(axis=1)]
            self._lines.points = o3d.utility.Vector3dVector(np.where(ok[:, None], pts_m, 0.0))
            self._lines.lines = o3d.utility.Vector2iVector(edges)
            self._lines.colors = o3d.utility.Vector3dVector(colors)
            self._joints.points = o3d.utility.Vector3dVector(pts_m[ok])
            self._joints.paint_uniform_color(CENTRE_RGB)
        for g in (self._lines, self._joints):
            self._vis.update_geometry(g)

    def _set_trail(self, t: float, root_m: np.ndarray | None) -> None:
        o3d = self._o3d
        if root_m is not None:
            self._trail_pts.append((t, root_m))
        while self._trail_pts and (t - self._trail_pts[0][0] > self.trail_seconds or self._trail_pts[0][0] > t):
            self._trail_pts.popleft()
        pts = np.array([p for _, p in self._trail_pts]).reshape(-1, 3)
        n = len(pts)
        self._trail.points = o3d.utility.Vector3dVector(pts)
        self._trail.lines = o3d.utility.Vector2iVector(np.stack([np.arange(n - 1), np.arange(1, n)], 1).astype(np.int32)
                                                       if n > 1 else np.zeros((0, 2), np.int32))
        self._trail.paint_uniform_color(TRAIL_RGB)
        self._vis.update_geometry(self._trail)

    def _set_view(self, centre_m: np.ndarray, placed: bool) -> None:
        """Look from behind the camera towards the person (as the webcam sees them)."""
        vc = self._vis.get_view_control()
        self._vis.reset_view_point(True)
        vc.set_front([0.0, 0.0, -1.0])
        vc.set_up([0.0, -1.0, 0.0])
        vc.set_lookat(centre_m.tolist())
        vc.set_zoom(0.8 if placed else 0.6)
        self._view_set, self._placed = True, placed

    # Public --------------------------------------------------------------------------------
    def update(self, pf: PoseFrame) -> bool:
        """Show one frame; False once the window was closed by the user (then a no-op)."""
        if self._closed:
            return False
        pts_m = None
        root_m = None
        if pf.valid:
            pts_m = np.asarray(pf.joints_mm, np.float64).reshape(NUM_JOINTS, 3) / 1000.0
            tr = np.asarray(pf.translation_mm, np.float64)
            if np.isfinite(tr).all():  # joints_mm are root-relative: place them in the scene
                root_m = tr / 1000.0
                pts_m = pts_m - pts_m[0] + root_m
        self._set_skeleton(pts_m)
        self._set_trail(pf.timestamp_s, root_m)
        if pts_m is not None and np.isfinite(pts_m).any():
            placed = root_m is not None
            if not self._view_set or placed != self._placed:
                centre = np.nanmean(pts_m, axis=0)
                if placed:
                    centre[0] = 0.0  # on the camera's axis: the person can walk left or right in view
                self._set_view(centre, placed)
        return self.poll()

    def poll(self) -> bool:
        """Keep the window responsive without a new frame (mouse orbit, resize); False once it
        was closed by the user."""
        if self._closed:
            return False
        alive = self._vis.poll_events()
        self._vis.update_renderer()
        if not alive:
            self.close()
        return alive

    def capture(self) -> np.ndarray:
        """The window's current image, (H, W, 3) float32 RGB in [0, 1]."""
        return np.asarray(self._vis.capture_screen_float_buffer(do_render=True), np.float32)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._vis.destroy_window()

    def __enter__(self) -> "Open3DSink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
