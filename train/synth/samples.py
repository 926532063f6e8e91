"""One labelled synthetic sample = pose source item + random body/appearance/scene, rendered,
(optionally) passed through MediaPipe, and cropped to 256x256 with engines.crop.

Labels (all from the posed MakeHuman skeleton, which is what was rendered):
  joints_3d   (17,3) mm, camera coords (x right, y down, z forward), root(pelvis)-relative
  root_cam    (3,)  mm, pelvis in camera coords (joints_3d + root_cam = absolute)
  depth       (17,) mm, absolute camera z of each joint (= joints_3d[:,2] + root_cam[2])
  joints_2d_image (17,2) px in the full camera image: the 3D joints projected with the
              camera's full model (f, c and the H36M radial/tangential distortion k, p)
  joints_2d_crop  (17,2) px in the 256x256 crop = box.image_to_crop(joints_2d_image)
  fbi         (14,) int8, engines.skeleton.fbi_states(absolute camera joints)
  visibility  (17,) bool: inside the image, not under an occluder, and not hidden by
              another body part (see `_visibility`)
For Human3.6M poses the 3D labels ARE the given H36M joints for 16 joints (the body's bone
lengths are set from the subject; error < 1e-6 mm); neck_nose is the body's own point in
the head, near H36M's (docs/synthetic.md). For mocap poses the directions come from the
mocap and the lengths from the sampled body (train.synth.pose.sample_lengths).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.camera import Camera, project_camera, world_to_camera
from engines.crop import box_from_joints
from engines.skeleton import NUM_JOINTS, bone_lengths, fbi_states, root_relative
from train.synth.body import Body, label_segments, load_body
from train.synth.pose import PoseSolver, rest_bone_lengths, sample_lengths, with_lengths
from train.synth.scene import (Light, Scene, camera_affines, degrade, draw_background, draw_occluders,
                               render_body, sample_albedo, sample_camera, sample_light, sample_scene)

SOURCE_H36M, SOURCE_BVH = 0, 1
MP_LIMB_LANDMARKS = (11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
MP_LIMB_JOINTS = (11, 14, 12, 15, 13, 16, 4, 1, 5, 2, 6, 3)  # our joints, same order


@dataclass(frozen=True)
class PoseItem:
    """One pose to render. joints_world (17,3) mm in a z-up world; camera None = sample one;
    keep_lengths: True = labels must equal these joints (H36M), False = sample a body."""

    joints_world: np.ndarray
    camera: Camera | None
    keep_lengths: bool
    source: int
    subject: int = -1
    camera_index: int = -1
    frame: int = -1
    clip: int = -1
    h36m_like: Camera | None = None  # intrinsics to copy when sampling an H36M-like camera


def default_model_path() -> Path:
    return Path(__file__).resolve().parents[2] / "models" / "pose_landmarker_full.task"


class MediaPipe2D:
    """MediaPipe Tasks PoseLandmarker in IMAGE mode (one pose), offline model bundle; with
    video=True in VIDEO mode (detect_video: tracking from frame to frame, as the app runs it)."""

    def __init__(self, model: str | Path | None = None, video: bool = False):
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions
        from mediapipe.tasks.python.vision import PoseLandmarker, PoseLandmarkerOptions, RunningMode
        from engines.errors import UserError
        path = Path(model) if model else default_model_path()
        if not path.is_file():
            raise UserError(f"MediaPipe model not found: {path} (or pass --no-mediapipe)")
        self._mp = mp
        opts = PoseLandmarkerOptions(base_options=BaseOptions(model_asset_path=str(path)),
                                     running_mode=RunningMode.VIDEO if video else RunningMode.IMAGE, num_poses=1)
        self._lm = PoseLandmarker.create_from_options(opts)

    def close(self) -> None:
        """Release MediaPipe. Call it before the interpreter exits: MediaPipe's own __del__
        fails noisily during teardown."""
        if self._lm is not None:
            self._lm.close()
            self._lm = None

    MAX_SIDE = 640  # frames are shrunk to this long side first, as a webcam app feeds it

    def detect_video(self, rgb: np.ndarray, ts_ms: int) -> tuple[np.ndarray, np.ndarray] | None:
        """VIDEO mode: rgb (H, W, 3) uint8 at time ts_ms (increasing) -> (landmarks (33, 3)
        [u px, v px, visibility] in this image's pixel-centre convention, as the app's detector
        converts them; world landmarks (33, 3) mm) or None."""
        res = self._lm.detect_for_video(self._mp.Image(image_format=self._mp.ImageFormat.SRGB,
                                                       data=np.ascontiguousarray(rgb)), int(ts_ms))
        if not res.pose_landmarks or not res.pose_world_landmarks:
            return None
        H, W = rgb.shape[:2]
        lm = np.array([[p.x * W - 0.5, p.y * H - 0.5, 1.0 if p.visibility is None else p.visibility]
                       for p in res.pose_landmarks[0]], np.float32)
        world = np.array([[p.x, p.y, p.z] for p in res.pose_world_landmarks[0]], np.float32) * 1000.0
        if lm.shape != (33, 3) or not (np.isfinite(lm).all() and np.isfinite(world).all()):
            return None
        return lm, world

    def detect(self, rgb: np.ndarray) -> np.ndarray | None:
        """rgb (H,W,3) uint8 -> (33,3) [x px, y px, visibility] (input-image px) or None."""
        import cv2
        H, W = rgb.shape[:2]
        s = self.MAX_SIDE / max(H, W)
        if s < 1.0:
            rgb = cv2.resize(rgb, (int(round(W * s)), int(round(H * s))), interpolation=cv2.INTER_AREA)
        img = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        res = self._lm.detect(img)
        self.last_world_mm = None
        if not res.pose_landmarks:
            return None
        if res.pose_world_landmarks:  # (33, 3) mm, kept for callers that compare with MediaPipe's own 3D
            self.last_world_mm = np.array([[p.x, p.y, p.z] for p in res.pose_world_landmarks[0]], np.float32) * 1000.0
        # Normalised landmarks * original size: the resize does not change them (up to
        # its half-pixel convention, < 1 px here).
        return np.array([[p.x * W, p.y * H, p.visibility if p.visibility is not None else 1.0]
                         for p in res.pose_landmarks[0]], np.float32)


def _visibility(uv_buf: np.ndarray, z: np.ndarray, zbuf: np.ndarray, idbuf: np.ndarray,
                allowed: np.ndarray, occ: np.ndarray, radius: np.ndarray,
                inside: np.ndarray) -> np.ndarray:
    """Joint j is visible if inside the image, not under an occluder, and not hidden by
    another part of the body: some pixel of its 3x3 neighbourhood shows its own limb/trunk
    (body.label_segments), or the surface there is no closer than z_j - (1.6 radius_j + 30)
    mm (a joint sits inside its limb, about radius_j deep)."""
    H, W = zbuf.shape
    vis = inside.copy()
    for j in range(len(z)):
        u, v = int(round(uv_buf[j, 0])), int(round(uv_buf[j, 1]))
        if not (0 <= u < W and 0 <= v < H):
            continue  # outside this buffer (crop): decided by `inside` alone
        if occ[v, u]:
            vis[j] = False
            continue
        ids = idbuf[max(v - 1, 0):v + 2, max(u - 1, 0):u + 2]
        if allowed[j, ids[ids >= 0]].any():
            continue
        zz = zbuf[max(v - 1, 0):v + 2, max(u - 1, 0):u + 2].max()
        if zz < z[j] - (1.6 * radius[j] + 30.0):
            vis[j] = False
    return vis


class SampleRenderer:
    """Renders samples; holds the body, the pose solver and (optionally) MediaPipe."""

    def __init__(self, use_mediapipe: bool = True, model: str | Path | None = None, body: Body | None = None):
        self.body = body or load_body()
        self.solver = PoseSolver(self.body)
        self.rest_lengths = rest_bone_lengths(self.body)
        self.mp = MediaPipe2D(model) if use_mediapipe else None
        # Local body radius at each label joint: distance to the nearest rest vertex.
        d = np.linalg.norm(self.body.verts[None] - self.body.label_rest[:, None], axis=-1)
        self.radius = d.min(1)
        # (17, segments) lookup: may joint j be seen on segment s?
        self.allowed = np.zeros((NUM_JOINTS, int(self.body.segment.max()) + 1), bool)
        for j, segs in enumerate(label_segments()):
            self.allowed[j, list(segs)] = True

    def close(self) -> None:
        if self.mp is not None:
            self.mp.close()

    def _draw(self, A: np.ndarray, cam: Camera, vp: np.ndarray, size: tuple[int, int], scene: Scene,
              albedo: np.ndarray, light: Light, rng: np.random.Generator):
        """Scene + body through viewport vp into a buffer of `size` (w, h): returns uint8
        image, zbuf, segment ids and the occluder mask."""
        bg = draw_background(scene, size, vp, cam.size)
        img, zbuf, idbuf = render_body(self.body, A, cam, vp, bg, albedo, light)
        occ = draw_occluders(img, scene, vp)
        return degrade(img, scene.effects, rng, float(vp[0, 0])), zbuf, idbuf, occ

    def render(self, item: PoseItem, rng: np.random.Generator) -> dict[str, np.ndarray]:
        targets = np.asarray(item.joints_world, np.float64)
        if item.keep_lengths:
            stature = bone_lengths(targets).sum() / self.rest_lengths.sum()
            girth = float(rng.uniform(0.9, 1.15) * stature)
        else:
            lengths, girth = sample_lengths(self.body, rng)
            targets = with_lengths(targets, lengths)
        posed = self.solver.solve(targets, girth)
        h36m_like = item.h36m_like if (item.h36m_like is not None and rng.random() < 0.3) else None
        cam = item.camera or sample_camera(rng, posed.joints, h36m_like)
        jc = world_to_camera(posed.joints, cam.R, cam.T)
        uv = project_camera(jc, cam.f, cam.c, cam.k, cam.p)
        W, H = cam.size
        albedo = sample_albedo(self.body, rng)
        light = sample_light(rng)
        lo, hi = uv.min(0), uv.max(0)
        scene = sample_scene(rng, (W, H), (lo[0], lo[1], hi[0], hi[1]))
        A = camera_affines(posed.affine, cam)
        inside = (uv[:, 0] >= 0) & (uv[:, 0] <= W - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= H - 1) & (jc[:, 2] > 0)
        gt_box = box_from_joints(uv)
        box = gt_box
        mp_lm = np.full((33, 3), np.nan, np.float32)
        mp17 = np.full((NUM_JOINTS, 2), np.nan, np.float32)
        mp_conf = np.zeros(NUM_JOINTS, np.float32)
        mp_found = mp_ok = False
        if self.mp is not None:
            # The frame MediaPipe sees: the whole image at <= MediaPipe2D.MAX_SIDE px (what a
            # webcam app feeds it), same scene; landmarks are mapped back to image px.
            s = min(1.0, MediaPipe2D.MAX_SIDE / max(W, H))
            fw, fh = max(int(round(W * s)), 1), max(int(round(H * s)), 1)
            vp = np.array([[fw / W, 0, 0.5 * fw / W - 0.5], [0, fh / H, 0.5 * fh / H - 0.5]])
            frame = self._draw(A, cam, vp, (fw, fh), scene, albedo, light, rng)[0]
            lm = self.mp.detect(frame)
            if lm is not None:
                from engines.landmarks import landmarks_to_joints_2d
                mp_found = True
                lm[:, 0] = (lm[:, 0] - vp[0, 2]) / vp[0, 0]
                lm[:, 1] = (lm[:, 1] - vp[1, 2]) / vp[1, 1]
                mp_lm = lm
                mp17, mp_conf = landmarks_to_joints_2d(lm[:, :2], np.clip(lm[:, 2], 0, 1))
                err = np.linalg.norm(lm[list(MP_LIMB_LANDMARKS), :2] - uv[list(MP_LIMB_JOINTS)], axis=1)
                mp_ok = bool(np.median(err) < 0.1 * max(np.ptp(uv[:, 1]), np.ptp(uv[:, 0])))
                if mp_ok:
                    box = box_from_joints(mp17)
        # The crop is drawn directly through the crop box's affine (engines.crop.CropBox):
        # the same pixels crop_image() would cut from a full-resolution render, without
        # rendering the full frame; outside the camera image it is black, as crop_image's
        # border.
        S = box.size
        crop, zbuf, idbuf, occ = self._draw(A, cam, box.affine, (S, S), scene, albedo, light, rng)
        xs = box.crop_to_image(np.stack([np.arange(S), np.arange(S)], 1).astype(np.float64))
        okx = (xs[:, 0] >= -0.5) & (xs[:, 0] <= W - 0.5)
        oky = (xs[:, 1] >= -0.5) & (xs[:, 1] <= H - 0.5)
        crop[~oky] = 0
        crop[:, ~okx] = 0
        uvc = box.image_to_crop(uv)
        vis = _visibility(uvc, jc[:, 2], zbuf, idbuf, self.allowed, occ, self.radius * girth, inside)
        mp_crop = box.image_to_crop(mp17.astype(np.float64)).astype(np.float32)
        return {
            "images": crop,
            "joints_2d_crop": box.image_to_crop(uv).astype(np.float32),
            "joints_2d_image": uv.astype(np.float32),
            "joints_3d": root_relative(jc).astype(np.float32),
            "root_cam": jc[0].astype(np.float32),
            "depth": jc[:, 2].astype(np.float32),
            "fbi": fbi_states(jc),
            "visibility": vis,
            "mp_found": np.bool_(mp_found),
            "mp_ok": np.bool_(mp_ok),
            "mp_joints_2d_crop": mp_crop,
            "mp_conf": mp_conf,
            "mp_landmarks_image": mp_lm,
            "box": np.array([box.cx, box.cy, box.side], np.float32),
            "box_from_mp": np.bool_(box is not gt_box),
            "f": np.asarray(cam.f, np.float32), "c": np.asarray(cam.c, np.float32),
            "k": np.asarray(cam.k, np.float32), "p": np.asarray(cam.p, np.float32),
            "cam_R": np.asarray(cam.R, np.float32), "cam_T": np.asarray(cam.T, np.float32),
            "image_size": np.array(cam.size, np.int32),
            "source": np.int8(item.source), "subject": np.int16(item.subject),
            "camera_index": np.int8(item.camera_index), "frame": np.int32(item.frame),
            "clip": np.int32(item.clip), "girth": np.float32(girth),
        }


FIELD_DOC: dict[str, str] = {
    "images": "uint8 (N,256,256,3) RGB crops",
    "joints_2d_crop": "float32 (N,17,2) crop px",
    "joints_2d_image": "float32 (N,17,2) full-image px (distorted projection)",
    "joints_3d": "float32 (N,17,3) mm, camera coords, pelvis-relative",
    "root_cam": "float32 (N,3) mm, pelvis in camera coords",
    "depth": "float32 (N,17) mm, absolute camera z per joint",
    "fbi": "int8 (N,14) engines.skeleton.fbi_states (0 forward, 1 backward, 2 parallel)",
    "visibility": "bool (N,17) in image, not occluded, not self-occluded",
    "mp_found": "bool (N,) MediaPipe returned a pose on the render",
    "mp_ok": "bool (N,) found and median limb-joint error < 10% of the person's 2D extent",
    "mp_joints_2d_crop": "float32 (N,17,2) MediaPipe joints (engines.landmarks) in crop px, NaN if none",
    "mp_conf": "float32 (N,17) their confidence",
    "mp_landmarks_image": "float32 (N,33,3) raw landmarks: x px, y px, visibility (image), NaN if none",
    "box": "float32 (N,3) crop box cx, cy, side in image px (engines.crop.CropBox)",
    "box_from_mp": "bool (N,) crop box built from MediaPipe joints (else from ground truth)",
    "f": "float32 (N,2) px", "c": "float32 (N,2) px", "k": "float32 (N,3) radial", "p": "float32 (N,2) tangential",
    "cam_R": "float32 (N,3,3) world->camera", "cam_T": "float32 (N,3) camera centre, world mm",
    "image_size": "int32 (N,2) width, height of the full image",
    "source": "int8 (N,) 0 Human3.6M, 1 BVH mocap", "subject": "int16 (N,) H36M subject or -1",
    "camera_index": "int8 (N,) H36M camera 0..3 or -1 (sampled)", "frame": "int32 (N,) H36M row or BVH frame",
    "clip": "int32 (N,) BVH clip index (manifest 'clips') or -1", "girth": "float32 (N,) body girth factor",
    "index": "int64 (N,) global sample index",
}


def stack_samples(samples: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.stack([s[k] for s in samples]) for k in samples[0]}
