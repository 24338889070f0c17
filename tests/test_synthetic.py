"""The synthetic video generator: determinism, labels that match what is drawn, and the MNAD round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from m2s2l_edge.data import KINDS, AnomalyEvent, discover, generate_dataset, load_frame_labels, render_video

SIZE, FRAMES = 64, 48


def test_render_is_deterministic():
    events = [AnomalyEvent("running", 10)]
    a = render_video(SIZE, FRAMES, seed=3, index=1, split="test", events=events)
    b = render_video(SIZE, FRAMES, seed=3, index=1, split="test", events=events)
    assert a.frames.shape == (FRAMES, SIZE, SIZE, 3) and a.frames.dtype == np.uint8
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    assert not np.array_equal(a.frames, render_video(SIZE, FRAMES, seed=4, index=1, split="test").frames)
    assert not np.array_equal(a.frames[0], render_video(SIZE, FRAMES, seed=3, index=2, split="test").frames[0])


def test_normal_video_moves_smoothly():
    video = render_video(SIZE, FRAMES, seed=0)
    assert not video.labels.any() and (video.boxes == -1).all()
    diff = np.abs(np.diff(video.frames.astype(np.int16), axis=0))  # (N-1, S, S, 3)
    moving = (diff > 40).any(axis=3).mean(axis=(1, 2))  # fraction of pixels with a large change per frame
    assert (moving > 0).all(), "pedestrians should move in every frame"
    assert moving.max() < 0.05, "normal motion is small: walkers move 0.5-1.5 px/frame"


@pytest.mark.parametrize("kind", ["fast_object", "foreign_object", "running"])
def test_moving_event_changes_only_its_labelled_region(kind):
    normal = render_video(SIZE, FRAMES, seed=1, index=2, split="test")
    video = render_video(SIZE, FRAMES, seed=1, index=2, split="test", events=[AnomalyEvent(kind, 12)])
    labelled = np.flatnonzero(video.labels)
    assert labelled[0] == 12 and len(labelled) >= 8
    assert np.array_equal(labelled, np.arange(12, labelled[-1] + 1)), "one contiguous interval"
    for f in np.flatnonzero(video.labels == 0):
        np.testing.assert_array_equal(video.frames[f], normal.frames[f])
    strong = 0
    for f in labelled:
        x0, y0, x1, y1 = video.boxes[f]
        assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE
        outside = np.ones((SIZE, SIZE), bool)
        outside[y0:y1, x0:x1] = False
        np.testing.assert_array_equal(video.frames[f][outside], normal.frames[f][outside])
        inside = np.abs(video.frames[f, y0:y1, x0:x1].astype(np.int16) - normal.frames[f, y0:y1, x0:x1])
        strong += inside.max() > 40
    assert strong >= 0.9 * len(labelled)


def test_fast_and_running_objects_are_fast():
    """Box centres move 3-6 px/frame (fast object) and >= 3 px/frame (runner); walkers move at most 1.5."""
    for kind, low in (("fast_object", 2.5), ("running", 2.5)):
        video = render_video(128, 60, seed=2, split="test", events=[AnomalyEvent(kind, 5)])
        idx = np.flatnonzero(video.labels)
        boxes = video.boxes[idx].astype(np.float64)
        full = (boxes[:, 0] > 0) & (boxes[:, 2] < 128)  # box not cut by the image border
        centre = (boxes[full, 0] + boxes[full, 2]) / 2
        speed = np.abs(np.diff(centre)).mean()
        assert low < speed < 7.0, (kind, speed)


def test_frozen_camera():
    normal = render_video(SIZE, FRAMES, seed=5, split="test")
    video = render_video(SIZE, FRAMES, seed=5, split="test", events=[AnomalyEvent("frozen", 15, duration=6)])
    np.testing.assert_array_equal(video.labels, (np.arange(FRAMES) >= 15) & (np.arange(FRAMES) < 21))
    np.testing.assert_array_equal(video.frames[:15], normal.frames[:15])
    for f in range(15, 21):
        np.testing.assert_array_equal(video.frames[f], video.frames[14])
    assert not np.array_equal(video.frames[21], video.frames[14])  # the camera resumes
    assert (video.boxes[15] == [0, 0, SIZE, SIZE]).all()


def test_generate_dataset_round_trip(tmp_path):
    root = generate_dataset(tmp_path, n_train=1, n_test=4, frames=32, size=48, seed=7)
    assert root == tmp_path / "synthetic"
    train = discover(tmp_path, "synthetic", "train")
    test = discover(tmp_path, "synthetic", "test")
    assert [v.name for v in train] == ["01"] and [v.name for v in test] == ["01", "02", "03", "04"]
    assert all(len(v) == 32 for v in train + test)
    assert (root / "testing" / "frames" / "01" / "0031.jpg").is_file()

    raw = np.load(root / "frame_labels_synthetic.npy")
    assert raw.shape == (1, 4 * 32)
    labels = load_frame_labels(tmp_path, "synthetic", test)
    assert all(lab.any() and not lab.all() for lab in labels), "every test video has normal and anomalous frames"

    meta = json.loads((root / "synthetic_meta.json").read_text())
    kinds = {e["kind"] for events in meta["test_events"].values() for e in events}
    assert kinds == set(KINDS)
    for i, video in enumerate(test):
        events = [AnomalyEvent(**e) for e in meta["test_events"][video.name]]
        expected = render_video(48, 32, seed=7, index=i, split="test", events=events)
        np.testing.assert_array_equal(labels[i], expected.labels)
        got = video.read_range(0, 32).astype(np.float32)  # (32, 48, 48, 3), back from JPEG
        assert np.abs(got - expected.frames).mean() < 4.0
    normal = render_video(48, 32, seed=7, index=0, split="train").frames
    assert np.abs(train[0].read_range(0, 32).astype(np.float32) - normal).mean() < 4.0

    with pytest.raises(FileExistsError, match="overwrite=True"):
        generate_dataset(tmp_path, n_train=1, n_test=1, frames=30, size=32)
    generate_dataset(tmp_path, n_train=1, n_test=1, frames=30, size=32, overwrite=True)
    assert [len(v) for v in discover(tmp_path, "synthetic", "test")] == [30]  # no stale frames or videos


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown anomaly kind 'meteor'.*fast_object, foreign_object"):
        AnomalyEvent("meteor", 5)
    with pytest.raises(ValueError, match="duration"):
        AnomalyEvent("frozen", 5)
    with pytest.raises(ValueError, match="does not fit"):
        render_video(SIZE, 20, events=[AnomalyEvent("frozen", 18, duration=5)])
    with pytest.raises(ValueError, match="size must be >= 32"):
        render_video(16)
    with pytest.raises(ValueError, match="unknown anomaly kinds"):
        generate_dataset(tmp_path, kinds=["fast_object", "ufo"])
