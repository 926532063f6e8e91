"""Image folders are not videos: a folder of unrelated photos gets a pose on every image, and in
a video a frame where MediaPipe's tracker loses the person is re-detected on that same frame.
Real photos: the 8 annotated Human3.6M / MPI-INF-3DHP frames of ../shared/data/media."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import data_path  # noqa: E402
from engine_fixtures import make_lifter_checkpoint  # noqa: E402

from realtime.cli import main  # noqa: E402
from realtime.detector import DEFAULT_MODEL, PoseDetector  # noqa: E402
from realtime.sources import ImageFolderSource  # noqa: E402
from realtime.writers import read_pose_npz  # noqa: E402

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason=f"{DEFAULT_MODEL} missing")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """A folder of the 8 unrelated photos (links), one person each."""
    frames = data_path("media", "frames")
    images = sorted(p for p in frames.rglob("*.jpg") if "IUV" not in str(p))
    assert len(images) == 8
    folder = tmp_path_factory.mktemp("photos")
    for p in images:
        (folder / p.name).symlink_to(p)
    return folder


def test_folder_of_photos_answers_every_image(photos: Path, tmp_path: Path, capsys):
    lifter = make_lifter_checkpoint(tmp_path / "lifter.pt")
    out = tmp_path / "o.npz"
    assert main(["video", str(photos), "--out", str(out), "--model", str(lifter), "--backend", "torch",
                 "--no-progress"]) == 0
    poses = read_pose_npz(out)
    assert [p.index for p in poses] == list(range(8))
    assert all(p.valid for p in poses), [p.valid for p in poses]
    assert "single-frame lifter" in capsys.readouterr().out


def test_tracker_losing_the_person_is_redetected_on_the_same_frame(photos: Path):
    """The photos as a 'video' (VIDEO mode): the tracker loses the person at every cut; with
    re-detection every frame still has its person."""
    found = {}
    for redetect in (False, True):
        with PoseDetector(mode="video", redetect=redetect) as det, ImageFolderSource(photos) as src:
            found[redetect] = [det.detect(f.image, f.timestamp_s) is not None for f in src]
            redetected = det.redetected
    assert all(found[True]) and len(found[True]) == 8
    assert redetected == found[False].count(False) >= 1  # the tracker alone did lose some


def test_temporal_model_on_unrelated_photos_is_refused(photos: Path, tmp_path: Path, capsys):
    from engines.checkpoint import MODELS_DIR

    if not (MODELS_DIR / "temporal_conv_sh.onnx").is_file():
        pytest.skip("needs the exported temporal_conv_sh.onnx")
    assert main(["video", str(photos), "--out", str(tmp_path / "o.npz"), "--model", "temporal_conv_sh",
                 "--no-progress"]) == 2
    assert "needs a video" in capsys.readouterr().err
    assert not (tmp_path / "o.npz").exists()


def test_stills_are_searched_on_turned_views_and_videos_are_not(tmp_path: Path):
    """Unrelated stills take the detector's turned-view search (realtime.detector, views);
    video frames, from files or live, keep one pass."""
    from realtime.api import Options, open_pose_estimator

    opts = Options(model=str(make_lifter_checkpoint(tmp_path / "lifter.pt")), backend="torch")
    for live, stills in ((False, True), (False, False), (True, False)):
        with open_pose_estimator(opts, live=live, stills=stills) as est:
            assert est.detector.views is stills
            assert est.detector.mode == ("image" if stills else "video")
