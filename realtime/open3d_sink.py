"""`--open3d`: a live 3D window of every person (Open3D's legacy Visualizer, non-blocking).

What it shows, in camera space (metres; the real camera at the origin, drawn as a small axis
triad, looking along +z with y down):
  * each person's skeleton as shaded tubes (bones) and balls (joints) in the colour of their
    track id (PERSON_RGB, cycling), left limbs a lighter and right limbs a darker shade, the
    id written above the head;
  * a floor grid (0.5 m cells) just under the lowest ankle, found as the people move: it drops
    at once and rises slowly, so a jump does not lift it;
  * each person's root trajectory of the last few seconds as a trail on the floor, when the
    trajectory stage placed them in the scene (PoseFrame.translation_mm known);
  * a view that frames every person: from behind and above the real camera, looking at the
    centre of the people, far enough back that all of them fit; it follows them smoothly
    until the user drags the view (mouse orbit, zoom), which hands the view to the user.
A person without a translation (no metric root) is drawn 3 m in front of the camera.

OpenGL contexts belong to the thread that made them: create, update and close the sink from
one thread (the CLI does it in the main thread, which consumes the pipeline's output).
`update()` does one non-blocking poll + render; it returns False once the user closed the
window.

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

# One colour per track id (cycling): blue, orange, green, magenta, yellow, cyan, red, violet.
PERSON_RGB = np.array([(0.23, 0.51, 0.96), (0.98, 0.45, 0.09), (0.13, 0.77, 0.37), (0.85, 0.27, 0.94),
                       (0.92, 0.70, 0.03), (0.02, 0.71, 0.83), (0.94, 0.27, 0.27), (0.55, 0.36, 0.96)])
LEFT_MIX, RIGHT_MIX = 0.45, 0.4   # left limbs: mixed towards white by this much; right: towards black
FLOOR_RGB = (0.62, 0.64, 0.68)
BACKGROUND_RGB = (0.97, 0.97, 0.98)
TRAIL_SECONDS = 5.0
BONE_RADIUS_M = 0.022
JOINT_RADIUS_M = 0.034
LABEL_HEIGHT_M = 0.16             # height of the id digits
LABEL_ABOVE_HEAD_M = 0.12
DEFAULT_DEPTH_M = 3.0             # where a person without a metric root is drawn
GRID_CELL_M = 0.5
GRID_MARGIN_M = 2.0               # the grid reaches this far beyond the people
FLOOR_BELOW_ANKLE_M = 0.06
FLOOR_RISE_RATE = 0.02            # fraction of the way the floor rises per frame (it drops at once)
VIEW_FOV_DEG = 50.0               # the window's vertical field of view
VIEW_ELEVATION = 0.35             # view direction: (0, -ELEVATION, -1) from the people, i.e. above
VIEW_MARGIN = 1.25                # framing radius = this x the people's bounding-sphere radius
MIN_FRAMING_RADIUS_M = 1.0
VIEW_SMOOTHING = 0.15             # per frame, how far the view moves towards the new framing
USER_MOVED_TOL = 1e-6


class Open3DUnavailable(UserError):
    """Open3D cannot be imported or cannot open a window/offscreen context here."""


def person_colours(track_id: int) -> np.ndarray:
    """(3, 3) RGB in [0, 1]: the centre, left-side and right-side colours of a track id."""
    base = PERSON_RGB[int(track_id) % len(PERSON_RGB)]
    return np.stack([base, base + (1.0 - base) * LEFT_MIX, base * (1.0 - RIGHT_MIX)])


def _side_of_joint() -> np.ndarray:
    """(17,) 0 centre, 1 left, 2 right."""
    side = np.zeros(NUM_JOINTS, np.int64)
    side[list(LEFT_JOINTS)] = 1
    side[list(RIGHT_JOINTS)] = 2
    return side


_SIDE = _side_of_joint()
_EDGES = np.array(BONES, np.int64)
_BONE_SIDE = _SIDE[_EDGES[:, 1]]


def placed_joints(pf: PoseFrame) -> tuple[np.ndarray, bool]:
    """Camera-space joints (17, 3) metres of one person (NaN rows for unknown joints) and
    whether they are metric-placed (translation known) rather than set DEFAULT_DEPTH_M ahead."""
    rel = np.asarray(pf.joints_mm, np.float64).reshape(NUM_JOINTS, 3) / 1000.0
    rel = rel - rel[0]
    tr = np.asarray(pf.translation_mm, np.float64) / 1000.0
    placed = bool(np.isfinite(tr).all())
    return rel + (tr if placed else np.array([0.0, 0.0, DEFAULT_DEPTH_M])), placed


def _rotations_from_z(d: np.ndarray) -> np.ndarray:
    """(N, 3, 3) rotations taking +z to each unit vector in d (N, 3)."""
    z = np.array([0.0, 0.0, 1.0])
    v = np.cross(z, d)
    c = d[:, 2]
    s = np.linalg.norm(v, axis=1)
    R = np.tile(np.eye(3), (len(d), 1, 1))
    ok = s > 1e-9
    k = v[ok] / s[ok, None]
    K = np.zeros((ok.sum(), 3, 3))
    K[:, 0, 1], K[:, 0, 2], K[:, 1, 0] = -k[:, 2], k[:, 1], k[:, 2]
    K[:, 1, 2], K[:, 2, 0], K[:, 2, 1] = -k[:, 0], -k[:, 1], k[:, 0]
    R[ok] = np.eye(3) + s[ok, None, None] * K + (1.0 - c[ok, None, None]) * (K @ K)
    flip = ~ok & (c < 0)
    R[flip] = np.diag([1.0, -1.0, -1.0])
    return R


class _Template:
    """A unit mesh (vertices, normals, triangles) instanced by numpy transforms."""

    def __init__(self, mesh) -> None:
        mesh.compute_vertex_normals()
        self.v = np.asarray(mesh.vertices, np.float64)
        self.n = np.asarray(mesh.vertex_normals, np.float64)
        self.t = np.asarray(mesh.triangles, np.int64)


class Open3DSink:
    """Live window of every person. `update(pf)` per frame; `capture()` the current image;
    `close()`. visible=False renders offscreen-sized but hidden (tests and screenshots)."""

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
        self.trail_seconds = trail_seconds
        self._tube = _Template(o3d.geometry.TriangleMesh.create_cylinder(radius=1.0, height=1.0, resolution=12))
        self._ball = _Template(o3d.geometry.TriangleMesh.create_sphere(radius=1.0, resolution=8))
        self._digits: dict[str, _Template] = {}
        self._bodies = o3d.geometry.TriangleMesh()
        self._labels = o3d.geometry.TriangleMesh()
        self._grid = o3d.geometry.LineSet()
        self._trails = o3d.geometry.LineSet()
        self._axes = o3d.geometry.TriangleMesh.create_coordinate_frame(size=0.25)
        self._trail_pts: dict[int, deque[tuple[float, np.ndarray]]] = {}
        self._floor_y: float | None = None
        self._grid_key: tuple | None = None
        self._view: tuple[np.ndarray, float] | None = None   # smoothed (target, radius)
        self._last_extrinsic: np.ndarray | None = None
        self._framed = False   # the view has framed people at least once
        self.auto_view = True
        for g in (self._axes, self._grid, self._trails, self._bodies, self._labels):
            self._vis.add_geometry(g)
        opt = self._vis.get_render_option()
        opt.background_color = np.array(BACKGROUND_RGB)
        opt.mesh_show_back_face = True
        opt.line_width = 2.0  # honoured by some GL drivers only; the tubes do not depend on it
        self._set_view(np.array([0.0, 0.0, DEFAULT_DEPTH_M]), 1.5, snap=True)

    # Geometry ------------------------------------------------------------------------------
    def _instances(self, tpl: _Template, R: np.ndarray, S: np.ndarray, T: np.ndarray, rgb: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """N copies of a template: rotation R (N, 3, 3), per-axis scale S (N, 3), translation
        T (N, 3), colour rgb (N, 3) -> vertices, normals, triangles, colours."""
        n = len(R)
        v = np.einsum("nij,nkj->nki", R, tpl.v[None] * S[:, None, :]) + T[:, None, :]
        nr = np.einsum("nij,nkj->nki", R, tpl.n[None].repeat(n, 0))
        tri = tpl.t[None] + (np.arange(n) * len(tpl.v))[:, None, None]
        col = np.repeat(rgb[:, None, :], len(tpl.v), axis=1)
        return v.reshape(-1, 3), nr.reshape(-1, 3), tri.reshape(-1, 3), col.reshape(-1, 3)

    def _person_mesh(self, pts: np.ndarray, track_id: int) -> list[tuple[np.ndarray, ...]]:
        cols = person_colours(track_id)
        ok = np.isfinite(pts).all(axis=1)
        parts = []
        e = _EDGES[ok[_EDGES].all(axis=1)]
        if len(e):
            a, b = pts[e[:, 0]], pts[e[:, 1]]
            length = np.linalg.norm(b - a, axis=1)
            d = (b - a) / np.maximum(length, 1e-9)[:, None]
            S = np.stack([np.full(len(e), BONE_RADIUS_M), np.full(len(e), BONE_RADIUS_M), length], 1)
            parts.append(self._instances(self._tube, _rotations_from_z(d), S, 0.5 * (a + b), cols[_SIDE[e[:, 1]]]))
        j = np.flatnonzero(ok)
        if len(j):
            R = np.tile(np.eye(3), (len(j), 1, 1))
            parts.append(self._instances(self._ball, R, np.full((len(j), 3), JOINT_RADIUS_M), pts[j], cols[_SIDE[j]]))
        return parts

    def _digit_template(self, text: str) -> _Template:
        if text not in self._digits:
            mesh = self._o3d.t.geometry.TriangleMesh.create_text(text, depth=1.0).to_legacy()
            v = np.asarray(mesh.vertices, np.float64)
            lo, hi = v.min(axis=0), v.max(axis=0)
            # text units -> metres, centred, y up -> camera y down, facing the camera (-z)
            s = LABEL_HEIGHT_M / max(hi[1] - lo[1], 1e-9)
            v = (v - [(lo[0] + hi[0]) / 2, lo[1], 0.0]) * s * np.array([1.0, -1.0, -0.1])
            mesh.vertices = self._o3d.utility.Vector3dVector(v)
            self._digits[text] = _Template(mesh)
        return self._digits[text]

    def _label_mesh(self, pts: np.ndarray, track_id: int) -> tuple[np.ndarray, ...] | None:
        ok = np.isfinite(pts).all(axis=1)
        if not ok.any():
            return None
        top = pts[ok][np.argmin(pts[ok, 1])]  # highest joint (y down)
        anchor = np.array([top[0], top[1] - LABEL_ABOVE_HEAD_M, top[2]])
        tpl = self._digit_template(str(int(track_id)))
        rgb = person_colours(track_id)[2][None]
        return self._instances(tpl, np.eye(3)[None], np.ones((1, 3)), anchor[None], rgb)

    def _set_mesh(self, mesh, parts: list[tuple[np.ndarray, ...]]) -> None:
        o3d = self._o3d
        if parts:
            v = np.concatenate([p[0] for p in parts])
            n = np.concatenate([p[1] for p in parts])
            offs = np.cumsum([0] + [len(p[0]) for p in parts[:-1]])
            t = np.concatenate([p[2] + o for p, o in zip(parts, offs)])
            c = np.concatenate([p[3] for p in parts])
        else:
            v = n = c = np.zeros((0, 3))
            t = np.zeros((0, 3), np.int64)
        mesh.vertices = o3d.utility.Vector3dVector(v)
        mesh.vertex_normals = o3d.utility.Vector3dVector(n)
        mesh.triangles = o3d.utility.Vector3iVector(t.astype(np.int32))
        mesh.vertex_colors = o3d.utility.Vector3dVector(c)
        self._vis.update_geometry(mesh)

    def _update_floor(self, ankles_y: list[float]) -> None:
        if not ankles_y:
            return
        lowest = max(ankles_y) + FLOOR_BELOW_ANKLE_M  # y down: the lowest point has the largest y
        if self._floor_y is None or lowest > self._floor_y:
            self._floor_y = lowest
        else:
            self._floor_y += (lowest - self._floor_y) * FLOOR_RISE_RATE

    def _set_grid(self, people_pts: list[np.ndarray]) -> None:
        o3d = self._o3d
        if self._floor_y is None:
            return
        if people_pts:
            allp = np.concatenate(people_pts)
            allp = allp[np.isfinite(allp).all(axis=1)]
            lo, hi = allp.min(axis=0), allp.max(axis=0)
        else:
            lo = hi = np.array([0.0, 0.0, DEFAULT_DEPTH_M])
        c = GRID_CELL_M
        x0, x1 = np.floor((lo[0] - GRID_MARGIN_M) / c) * c, np.ceil((hi[0] + GRID_MARGIN_M) / c) * c
        z0, z1 = max(np.floor((lo[2] - GRID_MARGIN_M) / c) * c, 0.0), np.ceil((hi[2] + GRID_MARGIN_M) / c) * c
        key = (x0, x1, z0, z1, round(self._floor_y, 3))
        if key == self._grid_key:
            return
        self._grid_key = key
        y = self._floor_y
        xs, zs = np.arange(x0, x1 + 1e-9, c), np.arange(z0, z1 + 1e-9, c)
        pts = [[x, y, z0] for x in xs] + [[x, y, z1] for x in xs] + [[x0, y, z] for z in zs] + [[x1, y, z] for z in zs]
        nx, nz = len(xs), len(zs)
        lines = [[i, i + nx] for i in range(nx)] + [[2 * nx + i, 2 * nx + nz + i] for i in range(nz)]
        self._grid.points = o3d.utility.Vector3dVector(np.array(pts, np.float64))
        self._grid.lines = o3d.utility.Vector2iVector(np.array(lines, np.int32))
        self._grid.paint_uniform_color(FLOOR_RGB)
        self._vis.update_geometry(self._grid)

    def _set_trails(self, t: float, roots: dict[int, np.ndarray]) -> None:
        o3d = self._o3d
        for tid, root in roots.items():
            self._trail_pts.setdefault(tid, deque()).append((t, root))
        pts, lines, cols = [], [], []
        for tid in list(self._trail_pts):
            q = self._trail_pts[tid]
            while q and (t - q[0][0] > self.trail_seconds or q[0][0] > t):
                q.popleft()
            if not q:
                del self._trail_pts[tid]
                continue
            p = np.array([r for _, r in q])
            if self._floor_y is not None:
                p[:, 1] = self._floor_y - 0.005
            base = len(pts)
            pts.extend(p)
            lines.extend([base + i, base + i + 1] for i in range(len(p) - 1))
            cols.extend([person_colours(tid)[0]] * (len(p) - 1))
        self._trails.points = o3d.utility.Vector3dVector(np.array(pts, np.float64).reshape(-1, 3))
        self._trails.lines = o3d.utility.Vector2iVector(np.array(lines, np.int32).reshape(-1, 2))
        self._trails.colors = o3d.utility.Vector3dVector(np.array(cols, np.float64).reshape(-1, 3))
        self._vis.update_geometry(self._trails)

    # View ----------------------------------------------------------------------------------
    def _set_view(self, target: np.ndarray, radius: float, snap: bool = False) -> None:
        """Look at `target` from above and behind, far enough back for a sphere of `radius`."""
        if not self.auto_view:
            return
        vc = self._vis.get_view_control()
        params = vc.convert_to_pinhole_camera_parameters()
        if (self._last_extrinsic is not None
                and np.abs(np.asarray(params.extrinsic) - self._last_extrinsic).max() > USER_MOVED_TOL):
            self.auto_view = False  # the user moved the view: it is theirs now
            return
        self._vis.reset_view_point(True)  # refresh the scene bounds (they set the clipping planes)
        params = vc.convert_to_pinhole_camera_parameters()
        if self._view is None or snap:
            self._view = (np.asarray(target, np.float64), float(radius))
        else:
            t0, r0 = self._view
            self._view = (t0 + VIEW_SMOOTHING * (target - t0), r0 + VIEW_SMOOTHING * (radius - r0))
        tgt, r = self._view
        w, h = params.intrinsic.width, params.intrinsic.height
        fy = 0.5 * h / np.tan(np.deg2rad(VIEW_FOV_DEG) / 2)
        half_fov = np.arctan(0.5 * min(w, h) / fy)
        dist = r / np.sin(half_fov)
        back = np.array([0.0, -VIEW_ELEVATION, -1.0])
        back /= np.linalg.norm(back)
        eye = tgt + dist * back
        fwd = -back
        right = np.cross(fwd, [0.0, -1.0, 0.0])  # up is -y
        right /= np.linalg.norm(right)
        down = np.cross(fwd, right)
        R = np.stack([right, down, fwd])       # world -> view rows (x right, y down, z forward)
        ext = np.eye(4)
        ext[:3, :3] = R
        ext[:3, 3] = -R @ eye
        params.extrinsic = ext
        params.intrinsic.set_intrinsics(w, h, fy, fy, (w - 1) / 2, (h - 1) / 2)
        vc.convert_from_pinhole_camera_parameters(params, allow_arbitrary=True)
        self._last_extrinsic = np.asarray(vc.convert_to_pinhole_camera_parameters().extrinsic).copy()

    # Public --------------------------------------------------------------------------------
    def update(self, pf: PoseFrame) -> bool:
        """Show one frame (every person in it); False once the window was closed by the user
        (then a no-op)."""
        if self._closed:
            return False
        body_parts, label_parts, roots, people_pts, ankles = [], [], {}, [], []
        for person in pf.people:
            pts, placed = placed_joints(person)
            if not np.isfinite(pts).any():
                continue
            body_parts += self._person_mesh(pts, person.track_id)
            label = self._label_mesh(pts, person.track_id)
            if label is not None:
                label_parts.append(label)
            people_pts.append(pts)
            if placed:
                roots[person.track_id] = pts[0].copy()
            ankles += [float(pts[j, 1]) for j in (3, 6) if np.isfinite(pts[j]).all()]
        self._update_floor(ankles)
        self._set_mesh(self._bodies, body_parts)
        self._set_mesh(self._labels, label_parts)
        self._set_grid(people_pts)
        self._set_trails(pf.timestamp_s, roots)
        if people_pts:
            allp = np.concatenate(people_pts)
            allp = allp[np.isfinite(allp).all(axis=1)]
            if self._floor_y is not None:  # keep the floor under the feet in view
                allp = np.concatenate([allp, allp * [1.0, 0.0, 1.0] + [0.0, self._floor_y, 0.0]])
            lo, hi = allp.min(axis=0), allp.max(axis=0)
            radius = max(VIEW_MARGIN * 0.5 * float(np.linalg.norm(hi - lo)), MIN_FRAMING_RADIUS_M)
            self._set_view(0.5 * (lo + hi), radius, snap=not self._framed)
            self._framed = True
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
