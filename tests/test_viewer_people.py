"""The browser viewer with several people (headless Chromium, as tests/test_browser.py): every
person drawn where the stream puts them, in their track id's colour, with the id above the
head; people who leave disappear; the 2D picture-in-picture draws everyone."""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import numpy as np
import pytest

from realtime.frames import PoseFrame
from realtime.server import PoseServer

from tests.test_browser import browser, expected_world, page, wait_index  # noqa: F401 (fixtures)
from tests.viewer_clip import synthetic_clip

# Where the screenshot goes: a temporary folder, or POSESTREAM_SHOTS_DIR (to refresh the docs).
SHOTS_ENV = "POSESTREAM_SHOTS_DIR"
# Track colours (web_viewer/scene.js PERSON_COLORS), RGB.
ID_RGB = {0: (0x3B, 0x82, 0xF6), 1: (0xF9, 0x73, 0x16), 2: (0x22, 0xC5, 0x5E)}


def crowd(n: int = 30) -> list[PoseFrame]:
    """Three people of the walking clip side by side (ids 0, 1, 2), 1.6 m apart; id 1 leaves
    after frame 19."""
    clip = [f for f in synthetic_clip(n) if f.valid]
    out = []
    for f in clip:
        people = []
        for tid, dx, dz in ((0, -1600.0, 0.0), (1, 0.0, 1500.0), (2, 1600.0, 500.0)):
            if tid == 1 and f.index >= 20:
                continue
            people.append(dataclasses.replace(f, track_id=tid, translation_mm=f.translation_mm + [dx, 0, dz]))
        out.append(PoseFrame.from_people(people, f.index, f.timestamp_s, f.image_size, f.timings_ms))
    return out


def colour_pixels(img: np.ndarray, rgb: tuple[int, int, int], tol: int = 40) -> np.ndarray:
    """(N, 2) x, y of the screenshot pixels within tol of rgb (any channel) (img BGR)."""
    d = np.abs(img[..., ::-1].astype(int) - np.array(rgb)).max(axis=-1)
    ys, xs = np.nonzero(d < tol)
    return np.stack([xs, ys], 1)


def test_every_person_drawn_with_their_id(page, tmp_path):
    import cv2

    frames = crowd(30)
    by_index = {f.index: f for f in frames}
    with PoseServer(port=0) as server:
        page.goto(server.url)
        page.wait_for_function("window.posestream && window.posestream.state === 'live'", timeout=15000)
        page.click("#btn-pip")
        for f in frames:
            if f.index > 18:
                break
            server.publish(f)
            time.sleep(1 / 30)
        last = max(i for i in by_index if i <= 18)
        wait_index(page, last)
        f = by_index[last]
        drawn = page.evaluate("window.posestream.peoplePositions()")
        assert sorted(int(k) for k in drawn) == [0, 1, 2]
        for person in f.people:
            np.testing.assert_allclose(np.array(drawn[str(person.track_id)]), expected_world(person), atol=2e-4)
        # The primary person (lowest id) is what the single-person hooks report.
        np.testing.assert_allclose(np.array(page.evaluate("window.posestream.jointPositions()")),
                                   expected_world(f), atol=2e-4)
        labels = page.evaluate("window.posestream.labelPositions()")
        for person in f.people:
            head_y = expected_world(person)[:, 1].max()
            lab = np.array(labels[str(person.track_id)])
            assert lab[1] > head_y and abs(lab[0] - expected_world(person)[:, 0].mean()) < 0.8
        page.wait_for_function("document.getElementById('hud-person').textContent === '3 people: id 0, 1, 2'")
        time.sleep(0.3)
        png = page.screenshot()
        out = Path(os.environ.get(SHOTS_ENV) or tmp_path)
        (out / "viewer_people.png").write_bytes(png)
        img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        img[-260:, -340:] = 0  # the 2D picture-in-picture (its people overlap in this clip)
        img[:120] = 0          # the HUD and the toolbar (its "on" buttons are blue)
        xs = {}
        for tid, rgb in ID_RGB.items():
            px = colour_pixels(img, rgb)
            print(f"id {tid}: {len(px)} px in its colour")
            assert len(px) > 100, (tid, len(px))
            xs[tid] = np.median(px[:, 0])
        assert xs[0] < xs[1] < xs[2]  # left to right as in the scene (x: -1.6, 0, +1.6 m)
        # Person 1 leaves: hidden, the others stay.
        for f in frames:
            if f.index > 18:
                server.publish(f)
                time.sleep(1 / 30)
        wait_index(page, frames[-1].index)
        drawn = page.evaluate("window.posestream.peoplePositions()")
        assert sorted(int(k) for k in drawn) == [0, 2]
        assert sorted(int(k) for k in page.evaluate("window.posestream.labelPositions()")) == [0, 2]
        page.wait_for_function("document.getElementById('hud-person').textContent === '2 people: id 0, 2'")


def test_single_person_without_track_ids_still_draws(page):
    """A sender that knows nothing of people (no track_id, no others) is drawn as id 0."""
    clip = synthetic_clip(5)
    with PoseServer(port=0) as server:
        page.goto(server.url)
        page.wait_for_function("window.posestream && window.posestream.state === 'live'", timeout=15000)
        msg = page.evaluate("""(() => { const v = window.posestream.view;
            const m = {valid: true, joints_mm: %s, translation_mm: [0, 0, 3000], index: 0};
            v.setFrame(m); return Object.keys(v.peoplePositions()); })()""" % np.round(clip[0].joints_mm, 1).tolist())
        assert msg == ["0"]
