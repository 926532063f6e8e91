"""numba kernels: top-4 linear blend skinning + projection, Gouraud/Lambert shading and a
z-buffer triangle rasteriser (throughput: docs/synthetic.md).

Conventions: camera space mm (x right, y down, z forward); image pixels with integer
coordinates at pixel centres (as engines.crop). A *viewport* is a (2,3) affine from image
pixels to the pixels of the buffer being drawn (identity for the full frame, a CropBox
affine to draw a crop directly), so the same projected geometry can be drawn into either.
"""
from __future__ import annotations

import numpy as np
from numba import njit

NEAR_MM = 100.0


@njit(cache=True, fastmath=True)
def skin_project(verts, idx, w, A, f, c, k, p, vp, cam_out, uv_out):
    """verts (V,3) rest mm; idx/w (V,4); A (B,3,4) rest model -> camera affines;
    f, c (2,); k (3,), p (2,) H36M distortion; vp (2,3) image -> buffer affine.
    Writes cam_out (V,3) camera mm and uv_out (V,2) buffer px."""
    V = verts.shape[0]
    for v in range(V):
        x, y, z = verts[v, 0], verts[v, 1], verts[v, 2]
        X = 0.0
        Y = 0.0
        Z = 0.0
        for j in range(4):
            b = idx[v, j]
            wj = w[v, j]
            X += wj * (A[b, 0, 0] * x + A[b, 0, 1] * y + A[b, 0, 2] * z + A[b, 0, 3])
            Y += wj * (A[b, 1, 0] * x + A[b, 1, 1] * y + A[b, 1, 2] * z + A[b, 1, 3])
            Z += wj * (A[b, 2, 0] * x + A[b, 2, 1] * y + A[b, 2, 2] * z + A[b, 2, 3])
        cam_out[v, 0] = X
        cam_out[v, 1] = Y
        cam_out[v, 2] = Z
        zz = Z if Z > 1e-3 else 1e-3
        xn = X / zz
        yn = Y / zz
        r2 = xn * xn + yn * yn
        radial = 1.0 + k[0] * r2 + k[1] * r2 * r2 + k[2] * r2 * r2 * r2
        tan = p[0] * yn + p[1] * xn
        xd = xn * (radial + tan) + p[1] * r2
        yd = yn * (radial + tan) + p[0] * r2
        u = xd * f[0] + c[0]
        vv = yd * f[1] + c[1]
        uv_out[v, 0] = vp[0, 0] * u + vp[0, 1] * vv + vp[0, 2]
        uv_out[v, 1] = vp[1, 0] * u + vp[1, 1] * vv + vp[1, 2]


@njit(cache=True, fastmath=True)
def shade(faces, cam, albedo, light, ambient, col_out):
    """Gouraud/Lambert: area-weighted vertex normals from camera-space faces, then
    col = albedo * (ambient + (1 - ambient) * max(0, n . light)); light (3,) unit vector
    towards the light, camera space. albedo/col_out (V,3) float32 0..255."""
    V = cam.shape[0]
    nrm = np.zeros((V, 3))
    for t in range(faces.shape[0]):
        a, b, c = faces[t, 0], faces[t, 1], faces[t, 2]
        e1x = cam[b, 0] - cam[a, 0]
        e1y = cam[b, 1] - cam[a, 1]
        e1z = cam[b, 2] - cam[a, 2]
        e2x = cam[c, 0] - cam[a, 0]
        e2y = cam[c, 1] - cam[a, 1]
        e2z = cam[c, 2] - cam[a, 2]
        nx = e1y * e2z - e1z * e2y
        ny = e1z * e2x - e1x * e2z
        nz = e1x * e2y - e1y * e2x
        for q in (a, b, c):
            nrm[q, 0] += nx
            nrm[q, 1] += ny
            nrm[q, 2] += nz
    for v in range(V):
        n = np.sqrt(nrm[v, 0] ** 2 + nrm[v, 1] ** 2 + nrm[v, 2] ** 2) + 1e-12
        d = (nrm[v, 0] * light[0] + nrm[v, 1] * light[1] + nrm[v, 2] * light[2]) / n
        s = ambient + (1.0 - ambient) * (d if d > 0.0 else 0.0)
        for ch in range(3):
            col_out[v, ch] = albedo[v, ch] * s


@njit(cache=True, fastmath=True)
def rasterize(faces, uv, cam, col, vid, img, zbuf, idbuf):
    """Draw front-facing triangles into img (H,W,3) float32, zbuf (H,W) float32 (camera z,
    mm; +inf = empty) and idbuf (H,W) int16 (vid of the triangle's first vertex; -1 = empty). Colours and z are interpolated linearly in screen space (the
    triangles are small). Back faces (outward normal pointing away from the camera) and
    triangles closer than NEAR_MM are skipped."""
    H, W = zbuf.shape
    for t in range(faces.shape[0]):
        a, b, c = faces[t, 0], faces[t, 1], faces[t, 2]
        if cam[a, 2] < NEAR_MM or cam[b, 2] < NEAR_MM or cam[c, 2] < NEAR_MM:
            continue
        e1x = cam[b, 0] - cam[a, 0]
        e1y = cam[b, 1] - cam[a, 1]
        e1z = cam[b, 2] - cam[a, 2]
        e2x = cam[c, 0] - cam[a, 0]
        e2y = cam[c, 1] - cam[a, 1]
        e2z = cam[c, 2] - cam[a, 2]
        nx = e1y * e2z - e1z * e2y
        ny = e1z * e2x - e1x * e2z
        nz = e1x * e2y - e1y * e2x
        if nx * cam[a, 0] + ny * cam[a, 1] + nz * cam[a, 2] >= 0.0:
            continue
        x0, y0 = uv[a, 0], uv[a, 1]
        x1, y1 = uv[b, 0], uv[b, 1]
        x2, y2 = uv[c, 0], uv[c, 1]
        area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        if area == 0.0:
            continue
        xmin = max(int(np.ceil(min(x0, min(x1, x2)))), 0)
        xmax = min(int(np.floor(max(x0, max(x1, x2)))), W - 1)
        ymin = max(int(np.ceil(min(y0, min(y1, y2)))), 0)
        ymax = min(int(np.floor(max(y0, max(y1, y2)))), H - 1)
        if xmin > xmax or ymin > ymax:
            continue
        inv = 1.0 / area
        za, zb, zc = cam[a, 2], cam[b, 2], cam[c, 2]
        for py in range(ymin, ymax + 1):
            for px in range(xmin, xmax + 1):
                w0 = ((x1 - px) * (y2 - py) - (x2 - px) * (y1 - py)) * inv
                w1 = ((x2 - px) * (y0 - py) - (x0 - px) * (y2 - py)) * inv
                w2 = 1.0 - w0 - w1
                if w0 < 0.0 or w1 < 0.0 or w2 < 0.0:
                    continue
                z = w0 * za + w1 * zb + w2 * zc
                if z < zbuf[py, px]:
                    zbuf[py, px] = z
                    idbuf[py, px] = vid[a]
                    for ch in range(3):
                        img[py, px, ch] = w0 * col[a, ch] + w1 * col[b, ch] + w2 * col[c, ch]
