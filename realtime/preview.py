"""`--preview VIDEO`: the input video with the 2D skeleton drawn on it, a 3D inset of the lifted
pose seen from a fixed side view, and a progress bar, at the input's frame rate: one output
frame per input frame (frames without a person are shown and marked "no person"; frames the
decoder could not read are black, marked "not decodable"). Each frame's image waits in memory
until its pose comes out (a centred model answers seconds later): within
realtime.thumbnails.TAP_BUDGET_BYTES, so a large input's preview may come out downscaled.

    pw = PreviewWriter(path, fps, total_frames)
    pw.write(pose, image_rgb)       # per frame, in order; image None for an undecodable frame
    pw.close()                      # completes the video, renamed to `path`

Encoding: H.264 (yuv420p, which browsers and players accept) by the `ffmpeg` program when it
is installed, in its own process (so encoding overlaps the pose work, and Ctrl-C in the
terminal reaches only posestream, which then completes the video); without ffmpeg,
OpenCV's MPEG-4 Part 2 writer. The video is written under a temporary name (PATH.tmp/NAME)
and renamed when complete, like the pose outputs; nothing is written without a frame.
Nothing here runs unless --preview is given.

Drawing (OpenCV, RGB): bones as the viewer's thumbnails draw them (the person's left blue,
right red, centre white). The inset, in the top-right corner, shows the root-relative
joints from the person's left side when they face the camera: depth (camera z) runs to
the right, away from the camera, up is up; grid lines every 500 mm.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from engines.errors import UserError
from engines.skeleton import BONES, LEFT_JOINTS, RIGHT_JOINTS
from realtime.frames import PoseFrame

SUFFIXES = (".mp4", ".mkv", ".mov", ".avi")
LEFT_RGB, RIGHT_RGB, CENTRE_RGB = (40, 110, 240), (230, 50, 40), (240, 240, 240)
MARK_RGB = (255, 60, 60)
INSET_FRACTION = 0.38   # inset side / the frame's shorter side
INSET_RANGE_MM = 2400.0  # the inset spans this many millimetres
GRID_MM = 500.0
BAR_PX = 8               # progress bar height


def add_preview_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("preview video")
    g.add_argument("--preview", metavar="VIDEO",
                   help=f"also write the input with the skeleton drawn, a 3D side-view inset and a progress "
                        f"bar ({', '.join(SUFFIXES)}; H.264 through ffmpeg when installed)")


def check_preview(path: Path, overwrite: bool = True) -> str | None:
    """UserError if `path` cannot be a preview video (extension, a folder in the way,
    --no-overwrite); a note if an existing file will be replaced."""
    from realtime.writers import check_output_path

    if path.suffix.lower() not in SUFFIXES:
        raise UserError(f"--preview {path.name!r}: use a video name ending in {', '.join(SUFFIXES)}")
    return check_output_path(path, overwrite)


def bone_color(child: int) -> tuple[int, int, int]:
    return LEFT_RGB if child in LEFT_JOINTS else RIGHT_RGB if child in RIGHT_JOINTS else CENTRE_RGB


def draw_skeleton(image: np.ndarray, uv: np.ndarray, thickness: int = 2) -> None:
    """Draw the 17-joint skeleton at pixel positions uv (17, 2) on `image` (RGB, in place);
    bones with a missing end are skipped."""
    import cv2

    uv = np.asarray(uv, np.float64)
    for p, c in BONES:
        if np.isfinite(uv[[p, c]]).all():
            cv2.line(image, tuple(int(round(v)) for v in uv[p]), tuple(int(round(v)) for v in uv[c]),
                     bone_color(c), thickness, cv2.LINE_AA)


def _text(image: np.ndarray, text: str, org: tuple[int, int], scale: float, color: tuple[int, int, int]) -> None:
    """`text` at `org` (its baseline's left end) on a darkened box, readable on any background."""
    import cv2

    thick = max(1, int(round(scale * 2)))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    x0, y0 = max(0, org[0] - 3), max(0, org[1] - th - 3)
    box = image[y0:org[1] + base + 1, x0:org[0] + tw + 3]
    box[:] = (box.astype(np.uint16) * 2 // 7).astype(np.uint8)
    cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, thick, cv2.LINE_AA)


def draw_side_view(image: np.ndarray, pose: PoseFrame) -> None:
    """The 3D inset (module docstring), in the top-right corner of `image` (in place)."""
    import cv2

    h, w = image.shape[:2]
    side = max(32, int(min(h, w) * INSET_FRACTION))
    x0, y0 = w - side - 8, 8
    roi = image[y0:y0 + side, x0:x0 + side]
    roi[:] = (roi.astype(np.uint16) * 2 // 7).astype(np.uint8)  # darkened background
    s = side / INSET_RANGE_MM
    cx, cy = side * 0.5, side * 0.42  # the pelvis; feet are about 900 mm below it
    grid = np.arange(-2 * GRID_MM, 2 * GRID_MM + 1, GRID_MM)
    for g in grid:
        gx, gy = int(round(cx + g * s)), int(round(cy + g * s))
        if 0 <= gx < side:
            cv2.line(roi, (gx, 0), (gx, side - 1), (70, 70, 70), 1)
        if 0 <= gy < side:
            cv2.line(roi, (0, gy), (side - 1, gy), (70, 70, 70), 1)
    cv2.rectangle(roi, (0, 0), (side - 1, side - 1), (150, 150, 150), 1)
    scale = max(0.35, side / 520)
    _text(roi, "side view", (6, int(18 * scale / 0.5)), scale, (220, 220, 220))
    _text(roi, "<- camera", (6, side - 8), scale * 0.85, (170, 170, 170))
    if not pose.valid or not np.isfinite(pose.joints_mm).all():
        _text(roi, "no person", (6, side // 2), scale, MARK_RGB)
        return
    j = np.asarray(pose.joints_mm, np.float64)
    uv = np.stack([cx + j[:, 2] * s, cy + j[:, 1] * s], axis=1)  # depth to the right, y down
    draw_skeleton(roi, uv, max(1, side // 120))


def draw_progress(image: np.ndarray, done: int, total: int | None, timestamp_s: float) -> None:
    """A progress bar along the bottom edge and the frame number / time above it (in place)."""
    h, w = image.shape[:2]
    image[h - BAR_PX:, :] = (40, 40, 40)
    if total:
        image[h - BAR_PX:, : int(round(w * min(done, total) / total))] = (80, 200, 120)
    scale = max(0.4, min(h, w) / 900)
    label = f"frame {done}" + (f"/{total}" if total else "") + f"  {timestamp_s:.2f} s"
    _text(image, label, (8, h - BAR_PX - 8), scale, (240, 240, 240))


def render_frame(pose: PoseFrame, image: np.ndarray | None, done: int, total: int | None,
                 size: tuple[int, int]) -> np.ndarray:
    """One preview frame (size = (width, height), RGB uint8): `image` with the skeleton, the
    inset and the progress bar; a black frame marked "not decodable" without an image. The
    image may be smaller than the source frame (pose.image_size: a large input's frames are
    kept downscaled while they wait for their poses, realtime.thumbnails.ImageTap)."""
    import cv2

    w, h = size
    if image is None:
        canvas = np.zeros((h, w, 3), np.uint8)
        _text(canvas, "frame not decodable", (12, 40), max(0.5, min(h, w) / 700), MARK_RGB)
    else:
        ih, iw = image.shape[:2]
        if ih - h in (0, 1) and iw - w in (0, 1):  # the size of the first frame (an odd side cut to even)
            canvas = np.array(image[:h, :w], np.uint8, copy=True)
            dw, dh = iw, ih
        else:  # a frame of another size (image folders): fitted in
            canvas = cv2.resize(np.asarray(image), (w, h), interpolation=cv2.INTER_AREA)
            dw, dh = w, h
        # the pose's pixels are the source frame's; its image may have been kept downscaled
        src_w, src_h = pose.image_size if pose.image_size and min(pose.image_size) > 0 else (iw, ih)
        sx, sy = dw / src_w, dh / src_h
        if pose.valid:
            draw_skeleton(canvas, np.asarray(pose.joints_2d_px, np.float64) * [sx, sy], max(2, min(h, w) // 240))
        else:
            cv2.rectangle(canvas, (1, 1), (w - 2, h - 2), MARK_RGB, 3)
            _text(canvas, "no person", (12, 40), max(0.6, min(h, w) / 600), MARK_RGB)
        draw_side_view(canvas, pose)
    draw_progress(canvas, done, total, pose.timestamp_s)
    return canvas


def _ffmpeg_codec(ffmpeg: str) -> list[str]:
    """H.264 when this ffmpeg has libx264, else its own MPEG-4 Part 2 encoder."""
    try:
        out = subprocess.run([ffmpeg, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    if "libx264" in out:
        return ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p"]
    return ["-c:v", "mpeg4", "-q:v", "3"]


class PreviewWriter:
    """Writes the preview video frame by frame (module docstring). `frames` counts the
    frames written; `close()` completes and renames the video (OutputError if the encoder
    failed; nothing is written without a frame)."""

    def __init__(self, path: Path, fps: float, total: int | None = None, overwrite: bool = True) -> None:
        from realtime.writers import temp_path

        self.path, self.total, self.overwrite = Path(path), total, overwrite
        self.fps = fps if fps and np.isfinite(fps) and fps > 0 else 30.0
        self.frames = 0
        self._tmp = temp_path(self.path)
        self._size: tuple[int, int] | None = None
        self._proc: subprocess.Popen | None = None
        self._cv_writer: Any = None
        self._stderr: Any = None
        self._error: str | None = None

    def _open(self, size: tuple[int, int]) -> None:
        from realtime.writers import clear_temp

        clear_temp(self._tmp.parent, self.path.name)
        self._tmp.parent.mkdir(parents=True)
        ffmpeg = shutil.which("ffmpeg")
        w, h = size
        if ffmpeg:
            self._stderr = tempfile.TemporaryFile()
            cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
                   "-s", f"{w}x{h}", "-r", f"{self.fps:.6g}", "-i", "-", "-an", *_ffmpeg_codec(ffmpeg)]
            if self.path.suffix.lower() in (".mp4", ".mov"):
                cmd += ["-movflags", "+faststart"]
            self._proc = subprocess.Popen(cmd + [str(self._tmp)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                          stderr=self._stderr, start_new_session=True)
        else:
            import cv2

            self._cv_writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self._cv_writer.isOpened():
                raise OSError(f"OpenCV cannot write {self.path.suffix} video")

    def write(self, pose: PoseFrame, image: np.ndarray | None) -> None:
        if self._error is not None:
            return
        try:
            if self._size is None:
                w, h = (image.shape[1], image.shape[0]) if image is not None else pose.image_size
                self._size = (max(2, w - w % 2), max(2, h - h % 2))  # yuv420p needs even sides
                self._open(self._size)
            frame = render_frame(pose, image, self.frames + 1, self.total, self._size)
            if self._proc is not None:
                assert self._proc.stdin is not None
                self._proc.stdin.write(frame.tobytes())
            else:
                self._cv_writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
            self.frames += 1
        except (OSError, ValueError) as exc:  # the encoder died (disk full, ...): the pose files go on
            self._error = f"{exc.strerror or exc}" if isinstance(exc, OSError) else str(exc)

    def _finish_encoder(self) -> None:
        if self._proc is not None:
            proc, self._proc = self._proc, None
            try:
                assert proc.stdin is not None
                proc.stdin.close()
            except OSError as exc:
                self._error = self._error or str(exc)
            rc = proc.wait()
            if rc != 0 and self._error is None:
                self._stderr.seek(0)
                lines = self._stderr.read().decode(errors="replace").strip().splitlines()
                self._error = f"ffmpeg exited with code {rc}" + (f": {lines[-1]}" if lines else "")
        if self._cv_writer is not None:
            self._cv_writer.release()
            self._cv_writer = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def close(self) -> None:
        from realtime.writers import OutputError, clear_temp

        try:
            self._finish_encoder()
            if self.frames == 0 or self._size is None:
                return
            if self._error is not None:
                raise OutputError(f"could not write the preview {self.path} ({self._error}); the pose files "
                                  f"are not affected")
            if not self.overwrite and self.path.exists():
                raise OutputError(f"{self.path} appeared during the run and --no-overwrite is set")
            os.replace(self._tmp, self.path)
        finally:
            if self._size is not None:
                clear_temp(self._tmp.parent, self.path.name)
            self._size = None
