"""Scene sampling and rendering: appearance, lighting, backgrounds, cameras, occluders,
blur and noise around the numba kernels of train.synth.raster.

All random choices take an explicit np.random.Generator, so a sample is a pure function of
its seed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from engines.camera import Camera
from train.h36m import default_data_dir
from train.synth.body import PART_INDEX as PI, Body
from train.synth.raster import rasterize, shade, skin_project


# ---------------------------------------------------------------- appearance
SKIN_TONES = np.array([[255, 224, 196], [241, 194, 160], [224, 172, 125], [198, 134, 90],
                       [160, 102, 62], [118, 72, 42], [80, 50, 32]], np.float32)
HAIR_COLOURS = np.array([[20, 16, 14], [45, 30, 20], [90, 60, 35], [150, 110, 60], [200, 170, 110],
                         [140, 140, 140], [120, 40, 20]], np.float32)


def _random_colour(rng: np.random.Generator, dark: bool = False) -> np.ndarray:
    import colorsys
    h, s = rng.random(), rng.uniform(0.05, 0.9)
    v = rng.uniform(0.08, 0.45) if dark else rng.uniform(0.12, 0.95)
    return np.array(colorsys.hsv_to_rgb(h, s, v), np.float32) * 255.0


def _pattern(body: Body, rng: np.random.Generator) -> np.ndarray:
    """(V,) in [0,1] mixing two cloth colours: plain, stripes, checks or blotches, computed on
    rest-pose coordinates so the pattern moves with the body."""
    v = body.verts
    kind = rng.integers(0, 4)
    if kind == 0:
        return np.zeros(len(v), np.float32)
    period = rng.uniform(25.0, 90.0)
    if kind == 1:  # stripes along a random axis
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        return (np.sin(2 * np.pi * (v @ axis) / period) > 0).astype(np.float32)
    if kind == 2:  # checks
        a = np.floor(v[:, 0] / period) + np.floor(v[:, 1] / period) + np.floor(v[:, 2] / period)
        return (a % 2).astype(np.float32)
    w = rng.normal(size=(4, 3)) / period  # blotches: sum of random sinusoids
    ph = rng.uniform(0, 2 * np.pi, 4)
    return (np.sin(v @ w.T + ph).sum(1) > 0.5).astype(np.float32)


_PART_ROWS: dict[int, tuple[Body, dict[str, np.ndarray]]] = {}


def _part_rows(body: Body) -> dict[str, np.ndarray]:
    """Vertex indices of each part (cached per Body object)."""
    hit = _PART_ROWS.get(id(body))
    if hit is None or hit[0] is not body:
        hit = (body, {name: np.flatnonzero(body.part == i) for name, i in PI.items()})
        _PART_ROWS[id(body)] = hit
    return hit[1]


def sample_albedo(body: Body, rng: np.random.Generator) -> np.ndarray:
    """Per-vertex albedo (V,3) float32 0..255 from per-part clothing: skin tone, hair (or
    bald), shirt with long/short/no sleeves, long trousers or shorts (or a one-piece
    outfit), shoes; cloth gets an optional two-colour pattern."""
    rows = _part_rows(body)
    t = rng.uniform(0, len(SKIN_TONES) - 1)
    i = int(t)
    skin = SKIN_TONES[i] * (1 - (t - i)) + SKIN_TONES[min(i + 1, len(SKIN_TONES) - 1)] * (t - i)
    skin = skin * rng.uniform(0.92, 1.06, 3)
    hair = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] if rng.random() > 0.1 else skin * 0.95
    shirt, shirt2 = _random_colour(rng), _random_colour(rng)
    trousers, trousers2 = _random_colour(rng, dark=rng.random() < 0.6), _random_colour(rng)
    if rng.random() < 0.1:  # one-piece outfit
        trousers, trousers2 = shirt, shirt2
    shoes = _random_colour(rng, dark=True)
    col = np.empty((len(body.part), 3), np.float32)
    col[:] = skin
    col[rows["hair"]] = hair
    sleeves = rng.choice(3, p=[0.5, 0.35, 0.15])  # long, short, none
    shirt_parts = ["torso"] + (["upper_arm"] if sleeves < 2 else []) + (["lower_arm"] if sleeves == 0 else [])
    if rng.random() < 0.3:
        shirt_parts.append("neck")
    legs = ["hips", "thigh"] + (["shin"] if rng.random() < 0.75 else [])
    pat_s, pat_t = _pattern(body, rng), _pattern(body, rng)
    for parts, c1, c2, pat in ((shirt_parts, shirt, shirt2, pat_s), (legs, trousers, trousers2, pat_t)):
        r = np.concatenate([rows[p] for p in parts])
        w = pat[r][:, None]
        col[r] = c1 * (1 - w) + c2 * w
    col[rows["foot"]] = shoes
    return np.clip(col, 0, 255)


@dataclass(frozen=True)
class Light:
    direction: np.ndarray  # (3,) unit, camera space, towards the light
    ambient: float
    gain: np.ndarray       # (3,) colour gain of the light


def sample_light(rng: np.random.Generator) -> Light:
    d = np.array([rng.uniform(-1, 1), rng.uniform(-1.0, 0.3), -rng.uniform(0.3, 1.2)])
    return Light(d / np.linalg.norm(d), float(rng.uniform(0.25, 0.55)),
                 rng.uniform(0.8, 1.15) * rng.uniform(0.92, 1.08, 3))


# ---------------------------------------------------------------- backgrounds
@lru_cache(maxsize=1)
def photo_regions() -> list[np.ndarray]:
    """Person-free regions (RGB uint8) of the COCO photos in data/media/images/coco: random
    rectangles (>= 96 px, deterministic) that do not touch any annotated person box grown by
    10 %. Empty if the photos are not there."""
    import cv2
    d = default_data_dir() / "media" / "images" / "coco"
    ann_path = d / "test_coco.json"
    if not ann_path.is_file():
        return []
    ann = json.loads(ann_path.read_text())
    rng = np.random.default_rng(1234)
    regions: list[np.ndarray] = []
    for im in ann["images"]:
        img = cv2.imread(str(d / im["file_name"]))
        if img is None:
            continue
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        H, W = img.shape[:2]
        boxes = [a["bbox"] for a in ann["annotations"] if a["image_id"] == im["id"] and a["category_id"] == 1]
        grown = [(x - 0.1 * w, y - 0.1 * h, x + 1.1 * w, y + 1.1 * h) for x, y, w, h in boxes]
        found = 0
        for _ in range(400):
            w = int(rng.integers(96, W))
            h = int(rng.integers(96, H))
            x0, y0 = int(rng.integers(0, W - w + 1)), int(rng.integers(0, H - h + 1))
            if any(x0 < bx1 and bx0 < x0 + w and y0 < by1 and by0 < y0 + h for bx0, by0, bx1, by1 in grown):
                continue
            regions.append(np.ascontiguousarray(img[y0:y0 + h, x0:x0 + w]))
            found += 1
            if found >= 12:
                break
    return regions


BG_MAX_SIDE = 320  # backgrounds are drawn at <= this size, then resized (they are smooth)


def sample_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """(H,W,3) float32 0..255: smooth colour noise, a procedural pattern (stripes/checks/
    wall+floor), or a person-free photo region, with random brightness. Drawn at most
    BG_MAX_SIDE px on the long side and resized, which also keeps it slightly soft, like an
    out-of-focus background."""
    import cv2
    scale = min(1.0, BG_MAX_SIDE / max(width, height))
    if scale < 1.0:
        small = _background(rng, max(int(round(width * scale)), 2), max(int(round(height * scale)), 2))
        return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    return _background(rng, width, height)


def _two_colour(mask: np.ndarray, c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
    """(H,W) float32 weights -> (H,W,3) float32 c1*(1-m) + c2*m. Per channel with cv2.merge:
    numpy broadcasting over a trailing axis of 3 is much slower."""
    import cv2
    return cv2.merge([(float(c1[k]) + float(c2[k] - c1[k]) * mask).astype(np.float32) for k in range(3)])


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    import cv2
    regions = photo_regions()
    kind = rng.choice(4, p=[0.3, 0.25, 0.2, 0.25] if regions else [0.4, 0.35, 0.25, 0.0])
    if kind == 0:  # smooth colour noise at a random scale
        cells = int(rng.integers(2, 12))
        small = rng.uniform(0, 255, (cells, cells, 3)).astype(np.float32)
        bg = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    elif kind == 1:  # stripes / checks in two colours
        c1, c2 = _random_colour(rng), _random_colour(rng)
        period = rng.uniform(8, 80) * max(width, height) / 256
        ang = rng.uniform(0, np.pi)
        yy = np.arange(height, dtype=np.float32)[:, None]
        xx = np.arange(width, dtype=np.float32)[None, :]
        u = (np.cos(ang) / period) * xx + (np.sin(ang) / period) * yy
        if rng.random() < 0.5:
            m = np.floor(u) % 2
        else:
            v = (-np.sin(ang) / period) * xx + (np.cos(ang) / period) * yy
            m = (np.floor(u) + np.floor(v)) % 2
        bg = _two_colour(m.astype(np.float32), c1, c2)
    elif kind == 2:  # wall + floor with a horizon and a vertical gradient
        c1, c2 = _random_colour(rng), _random_colour(rng)
        horizon = rng.uniform(0.3, 0.9) * height
        yy = np.arange(height, dtype=np.float32)
        g = 1.0 + rng.uniform(-0.4, 0.4) * (yy / height - 0.5)
        m = np.broadcast_to((yy >= horizon).astype(np.float32)[:, None], (height, width))
        bg = _two_colour(np.ascontiguousarray(m), c1, c2)
        bg *= np.ascontiguousarray(np.broadcast_to(g[:, None, None], bg.shape))
    else:  # person-free photo region, random flip
        reg = regions[int(rng.integers(len(regions)))]
        if rng.random() < 0.5:
            reg = reg[:, ::-1]
        bg = cv2.resize(np.ascontiguousarray(reg), (width, height), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    gain = float(rng.uniform(0.6, 1.25))
    shift = rng.normal(0, rng.uniform(0, 10), 3)
    m = np.concatenate([gain * np.eye(3), shift[:, None]], axis=1).astype(np.float32)
    bg = cv2.transform(np.ascontiguousarray(bg, np.float32), m)  # per-pixel gain + shift
    return np.clip(bg, 0.0, 255.0)  # (cv2.max with a float scalar only touches channel 0)


# ---------------------------------------------------------------- cameras
def look_at(centre: np.ndarray, target: np.ndarray, roll_deg: float = 0.0) -> np.ndarray:
    """World->camera rotation (rows: right, down, forward) for a z-up world."""
    fwd = target - centre
    fwd = fwd / np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    R = np.stack([right, down, fwd])
    r = np.deg2rad(roll_deg)
    Rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return Rz @ R


WEBCAM_SIZES = ((640, 480), (1280, 720), (960, 540), (480, 640))


def sample_camera(rng: np.random.Generator, joints_world: np.ndarray,
                  h36m_like: Camera | None = None) -> Camera:
    """A camera looking at a person whose joints (17,3) are in a z-up world (mm).

    Webcam-like (default): sizes WEBCAM_SIZES, horizontal FOV U(50, 78) deg, mild radial
    distortion, camera height 0.6-2.0 m, person 35-95 % of the image height, roll +-6 deg,
    the aim jittered so that ~15 % of people are partly out of frame.
    H36M-like (h36m_like given): that camera's intrinsics and distortion, 1000x1000-ish,
    3.5-6 m away at 1.2-1.9 m height, as in the studio.
    """
    lo, hi = joints_world.min(0), joints_world.max(0)
    centre = 0.5 * (lo + hi)
    height_mm = max(hi[2] - lo[2], 500.0) + 200.0  # + head top and feet
    az = rng.uniform(0, 2 * np.pi)
    if h36m_like is not None:
        dist = rng.uniform(3500, 6000)
        cam_h = rng.uniform(1200, 1900)
        C = np.array([centre[0] + dist * np.cos(az), centre[1] + dist * np.sin(az), cam_h])
        tgt = centre + np.array([0, 0, rng.uniform(-200, 200)])
        return Camera(R=look_at(C, tgt, rng.normal(0, 1.0)), T=C, f=h36m_like.f, c=h36m_like.c,
                      k=h36m_like.k, p=h36m_like.p, size=h36m_like.size)
    w, h = WEBCAM_SIZES[int(rng.choice(4, p=[0.45, 0.3, 0.15, 0.1]))]
    fov = rng.uniform(50, 78)
    f = 0.5 * w / np.tan(np.deg2rad(fov) / 2)
    frac = rng.uniform(0.35, 0.95)
    dist = float(np.clip(f * height_mm / (frac * h), 1000, 9000))
    cam_h = rng.uniform(600, 2000)
    C = np.array([centre[0] + dist * np.cos(az), centre[1] + dist * np.sin(az), cam_h])
    tgt = centre.copy()
    if rng.random() < 0.15:  # truncation: aim off the body so part of it leaves the frame
        tgt[2] += rng.choice([-1, 1]) * rng.uniform(0.3, 0.6) * height_mm
    else:
        tgt[2] += rng.uniform(-0.1, 0.1) * height_mm
    k = np.array([rng.uniform(-0.08, 0.04), 0.0, 0.0])
    return Camera(R=look_at(C, tgt, rng.normal(0, 3.0)), T=C, f=np.array([f, f]),
                  c=np.array([w / 2 + rng.normal(0, 4), h / 2 + rng.normal(0, 4)]), k=k, p=np.zeros(2),
                  size=(w, h))


# ---------------------------------------------------------------- rendering
def camera_affines(affine_world: np.ndarray, cam: Camera) -> np.ndarray:
    """(B,3,4) rest -> world affines composed with X_cam = R (X - T)."""
    R, T = np.asarray(cam.R, np.float64), np.asarray(cam.T, np.float64)
    out = np.empty_like(affine_world)
    out[:, :, :3] = np.einsum("ij,bjk->bik", R, affine_world[:, :, :3])
    out[:, :, 3] = (affine_world[:, :, 3] - T) @ R.T
    return out


def render_body(body: Body, affine_cam: np.ndarray, cam: Camera, viewport: np.ndarray,
                background: np.ndarray, albedo: np.ndarray, light: Light
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw the skinned body over background (H,W,3) float32 through `viewport` (2,3, image
    px -> buffer px). Returns (image (H,W,3) float32, zbuf (H,W) float32 camera z mm,
    idbuf (H,W) int16 Body.segment of the visible surface, -1 = background)."""
    V = len(body.verts)
    cam_v = np.empty((V, 3))
    uv = np.empty((V, 2))
    skin_project(body.verts, body.skin_idx, body.skin_w, np.ascontiguousarray(affine_cam),
                 np.asarray(cam.f, np.float64), np.asarray(cam.c, np.float64), np.asarray(cam.k, np.float64),
                 np.asarray(cam.p, np.float64), np.ascontiguousarray(viewport, np.float64), cam_v, uv)
    col = np.empty((V, 3), np.float32)
    shade(body.faces, cam_v, albedo, light.direction, light.ambient, col)
    col *= light.gain.astype(np.float32)
    img = np.ascontiguousarray(background, np.float32).copy()
    zbuf = np.full(img.shape[:2], np.inf, np.float32)
    idbuf = np.full(img.shape[:2], -1, np.int16)
    rasterize(body.faces, uv, cam_v, col, body.segment, img, zbuf, idbuf)
    return img, zbuf, idbuf


@dataclass(frozen=True)
class Occluder:
    """A rectangle (angle 0) or ellipse in full-image px, filled with a small texture."""

    ellipse: bool
    cx: float
    cy: float
    w: float
    h: float
    angle: float
    texture: np.ndarray  # (32,32,3) float32


@dataclass(frozen=True)
class Effects:
    """Image degradations, in full-image px units (scaled per buffer)."""

    blur_len: float      # motion blur length px (0 = none)
    blur_angle: float    # radians
    defocus: float       # Gaussian sigma px (0 = only the 0.5 px edge softening)
    noise_sigma: float   # grey levels


@dataclass(frozen=True)
class Scene:
    """Everything random about a sample except the body, fixed in full-image coordinates so
    it can be drawn identically into the full frame (for MediaPipe) and into a crop."""

    background: np.ndarray   # (h,w,3) float32, covers the whole image at low resolution
    occluders: tuple[Occluder, ...]
    effects: Effects


def sample_scene(rng: np.random.Generator, size: tuple[int, int], person_box: tuple[float, float, float, float],
                 occluder_prob: float = 0.3) -> Scene:
    """Background, occluders (p=0.3: 1-2 shapes over the person's box x0,y0,x1,y1 image px)
    and effects: motion blur (p=0.25, 3-11 px), defocus (p=0.2, 0.5-1.5 px), noise (0-6)."""
    W, H = size
    sb = min(1.0, BG_MAX_SIDE / max(W, H))
    bg = _background(rng, max(int(round(W * sb)), 2), max(int(round(H * sb)), 2))
    occ: list[Occluder] = []
    if rng.random() < occluder_prob:
        x0, y0, x1, y1 = person_box
        bw, bh = max(x1 - x0, 8), max(y1 - y0, 8)
        for _ in range(int(rng.integers(1, 3))):
            ell = bool(rng.random() >= 0.6)
            occ.append(Occluder(ell, float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1)),
                                float(rng.uniform(0.15, 0.45) * bw), float(rng.uniform(0.1, 0.35) * bh),
                                float(rng.uniform(0, 180)) if ell else 0.0, _background(rng, 32, 32)))
    blur = float(rng.uniform(3, 11)) if rng.random() < 0.25 else 0.0
    eff = Effects(blur, float(rng.uniform(0, np.pi)), float(rng.uniform(0.5, 1.5)) if rng.random() < 0.2 else 0.0,
                  float(rng.uniform(0, 6)))
    return Scene(bg, tuple(occ), eff)


def draw_background(scene: Scene, size: tuple[int, int], viewport: np.ndarray, image_size: tuple[int, int]
                    ) -> np.ndarray:
    """The scene background as seen through viewport (image px -> buffer px), (h,w,3)."""
    import cv2
    W, H = image_size
    bh, bw = scene.background.shape[:2]
    # buffer <- image <- background: image = background px * (W / bw).
    M = viewport[:, :2] @ np.diag([W / bw, H / bh])
    A = np.concatenate([M, viewport[:, 2:]], axis=1)
    # Sample pixel centres consistently: background px p covers image [p*W/bw, (p+1)*W/bw).
    A[:, 2] += viewport[:, :2] @ np.array([0.5 * W / bw - 0.5, 0.5 * H / bh - 0.5])
    return cv2.warpAffine(scene.background, A, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def draw_occluders(img: np.ndarray, scene: Scene, viewport: np.ndarray) -> np.ndarray:
    """Paint the occluders into img through viewport (an axis-aligned scale + shift);
    returns the (H,W) bool occluder mask."""
    import cv2
    H, W = img.shape[:2]
    mask = np.zeros((H, W), np.uint8)
    k = float(viewport[0, 0])
    for o in scene.occluders:
        cx, cy = viewport @ np.array([o.cx, o.cy, 1.0])
        w, h = o.w * k, o.h * k
        m = np.zeros((H, W), np.uint8)
        sh = 4  # sub-pixel bits for cv2 drawing
        f = float(1 << sh)
        if o.ellipse:
            cv2.ellipse(m, (int(cx * f), int(cy * f)), (int(w / 2 * f), int(h / 2 * f)), o.angle, 0, 360, 1, -1,
                        cv2.LINE_8, sh)
        else:
            cv2.rectangle(m, (int((cx - w / 2) * f), int((cy - h / 2) * f)),
                          (int((cx + w / 2) * f), int((cy + h / 2) * f)), 1, -1, cv2.LINE_8, sh)
        # Texture stretched over the shape's bounding square, through the same viewport;
        # warped only over the square's pixels.
        side = max(w, h, 1.0)
        x0, y0 = max(int(cx - side / 2) - 1, 0), max(int(cy - side / 2) - 1, 0)
        x1, y1 = min(int(cx + side / 2) + 2, W), min(int(cy + side / 2) + 2, H)
        if x1 <= x0 or y1 <= y0:
            continue
        A = np.array([[side / 32, 0, cx - side / 2 - x0], [0, side / 32, cy - side / 2 - y0]])
        tex = cv2.warpAffine(o.texture, A, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT)
        sel = m[y0:y1, x0:x1].astype(bool)
        img[y0:y1, x0:x1][sel] = tex[sel]
        mask |= m
    return mask.astype(bool)


def degrade(img: np.ndarray, eff: Effects, rng: np.random.Generator, scale: float) -> np.ndarray:
    """Apply eff to a float32 image; scale = buffer px per image px. The noise pattern is
    drawn from rng. Returns uint8."""
    import cv2
    if eff.blur_len > 0:
        length = max(int(round(eff.blur_len * scale)), 2)
        kern = np.zeros((length, length), np.float32)
        c = (length - 1) / 2
        for t in np.linspace(-c, c, 2 * length):
            kern[int(round(c + t * np.sin(eff.blur_angle))), int(round(c + t * np.cos(eff.blur_angle)))] = 1
        img = cv2.filter2D(img, -1, kern / kern.sum())
    sigma = eff.defocus * scale if eff.defocus > 0 else 0.5  # 0.5 px: soften the aliased edges
    img = cv2.GaussianBlur(img, (0, 0), max(sigma, 0.3))
    if eff.noise_sigma > 0.5:
        img = img + eff.noise_sigma * _noise_window(rng, img.shape)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


@lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    # A fixed bank of N(0,1) samples; each image takes a random window of it (fast, and
    # still a pure function of the sample's rng).
    return np.random.default_rng(99).standard_normal((1400, 1400, 3), dtype=np.float32)


def _noise_window(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    bank = _noise_bank()
    H, W = shape[:2]
    if H > bank.shape[0] or W > bank.shape[1]:
        return rng.standard_normal(shape, dtype=np.float32)
    y, x = int(rng.integers(bank.shape[0] - H + 1)), int(rng.integers(bank.shape[1] - W + 1))
    return bank[y:y + H, x:x + W]
