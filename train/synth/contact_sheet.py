"""Contact sheet of rendered samples with their labels drawn (docs/synth_contact_sheet.png).

    python -m train.synth.contact_sheet OUT.png DIR [DIR ...] [--count 24] [--cols 6]

Drawn per tile: the 17 ground-truth joints and bones (yellow = visible, red = not
visible), MediaPipe's 17 joints (green dots) when it found the person, and the tile's
source / FBI summary in the corner.
"""
from __future__ import annotations

import argparse

import numpy as np

from engines.skeleton import BONES


def draw_sample(s: dict[str, np.ndarray], size: int = 256) -> np.ndarray:
    import cv2
    img = np.ascontiguousarray(s["images"]).copy()
    uv = s["joints_2d_crop"]
    vis = s["visibility"]
    for p, c in BONES:
        cv2.line(img, tuple(int(round(v)) for v in uv[p]), tuple(int(round(v)) for v in uv[c]),
                 (255, 230, 0), 1, cv2.LINE_AA)
    if bool(s["mp_found"]):
        for x, y in s["mp_joints_2d_crop"]:
            cv2.circle(img, (int(round(x)), int(round(y))), 2, (0, 255, 0), -1, cv2.LINE_AA)
    for (x, y), v in zip(uv, vis):
        cv2.circle(img, (int(round(x)), int(round(y))), 3, (255, 230, 0) if v else (255, 0, 0), -1, cv2.LINE_AA)
    # FBI: F/B/P letters at the middle of each FBI bone would clutter; summarise instead.
    counts = np.bincount(s["fbi"].astype(int), minlength=3)
    src = "H36M S%d c%d" % (int(s["subject"]), int(s["camera_index"])) if int(s["source"]) == 0 else "mocap"
    txt = f"{src} F{counts[0]} B{counts[1]} P{counts[2]}"
    if size != img.shape[0]:
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    cv2.rectangle(img, (0, 0), (9 + 7 * len(txt), 16), (0, 0, 0), -1)
    cv2.putText(img, txt, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def main(argv: list[str] | None = None) -> int:
    from train.synth.dataset import SynthDataset
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--count", type=int, default=24)
    ap.add_argument("--cols", type=int, default=6)
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    rng = np.random.default_rng(a.seed)
    sets = [SynthDataset(d) for d in a.dirs]
    picks = [rng.choice(len(ds), size=min(len(ds), a.count), replace=False) for ds in sets]
    tiles = []
    for k in range(a.count):
        ds = sets[k % len(sets)]
        tiles.append(draw_sample(ds[int(picks[k % len(sets)][k // len(sets)])], a.tile))
    rows = [np.concatenate(tiles[r * a.cols:(r + 1) * a.cols], axis=1) for r in range(len(tiles) // a.cols)]
    sheet = np.concatenate(rows, axis=0)
    try:  # a 256-colour palette keeps the PNG small (Pillow arrives with matplotlib/mediapipe)
        from PIL import Image
        Image.fromarray(sheet).quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(a.out, optimize=True)
    except ImportError:
        import cv2
        cv2.imwrite(a.out, sheet[:, :, ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {a.out} ({sheet.shape[1]}x{sheet.shape[0]}, {len(tiles)} samples)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
