"""Readers for the standard layouts, natural ordering, clip datasets and their errors, on real files."""

from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from m2s2l_edge.data import (
    DATASETS,
    ClipDataset,
    FrameFolderSource,
    VideoFileSource,
    discover,
    extract_frames,
    iter_video_clips,
    natural_sorted,
    preprocess_frame,
)


def rgb(bgr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(bgr[..., ::-1]) if bgr.ndim == 3 else np.repeat(bgr[..., None], 3, axis=2)


def assert_close(frame: np.ndarray, expected_bgr: np.ndarray, tol: float = 4.0):
    """JPEG / MJPG round trip: mean absolute error of a few levels."""
    assert frame.shape == rgb(expected_bgr).shape and frame.dtype == np.uint8
    err = np.abs(frame.astype(np.float32) - rgb(expected_bgr)).mean()
    assert err < tol, err


# --- ordering ---------------------------------------------------------------------------------------------------


def test_natural_order():
    names = ["10.jpg", "2.jpg", "1.jpg", "0010a.jpg", "Test10", "Test2", "test1"]
    assert [p.name for p in natural_sorted(names)] == [
        "1.jpg",
        "2.jpg",
        "10.jpg",
        "0010a.jpg",
        "test1",
        "Test2",
        "Test10",
    ]


# --- layouts ----------------------------------------------------------------------------------------------------


def test_mnad_frames_natural_order_and_content(tmp_path, write_frames, make_frame):
    for name, n in (("10", 3), ("2", 12), ("01", 4)):
        write_frames(tmp_path / "ped2" / "testing" / "frames" / name, n)  # 0.jpg .. 11.jpg, unpadded
    videos = discover(tmp_path, "ped2", "test")
    assert [v.name for v in videos] == ["01", "2", "10"]
    assert [len(v) for v in videos] == [4, 12, 3]
    assert all(isinstance(v, FrameFolderSource) for v in videos)
    v = videos[1]
    assert [p.name for p in v.files][:3] == ["0.jpg", "1.jpg", "2.jpg"] and v.files[-1].name == "11.jpg"
    for i in (0, 2, 10, 11):
        assert_close(v.read(i), make_frame(i))
    assert v.read_range(9, 12).shape == (3, 24, 32, 3)
    # root may also point at the data set folder itself
    assert [v.name for v in discover(tmp_path / "ped2", "ped2", "test")] == ["01", "2", "10"]
    with pytest.raises(FileNotFoundError, match="ped2 train"):
        discover(tmp_path, "ped2", "train")


def test_ucsd_original_tif(tmp_path, write_frames, make_frame):
    test = tmp_path / "UCSDped2" / "Test"
    for name in ("Test002", "Test001"):
        write_frames(test / name, 5, names=[f"{i + 1:03d}.tif" for i in range(5)], gray=True)
    write_frames(test / "Test001_gt", 5, names=[f"{i + 1:03d}.bmp" for i in range(5)], gray=True)
    (test / "UCSDped2.m").write_text("% matlab ground truth script")
    (test / "Test001" / "._001.tif").write_bytes(b"macOS resource fork")  # ignored: hidden
    write_frames(
        tmp_path / "UCSDped2" / "Train" / "Train001", 6, names=[f"{i + 1:03d}.tif" for i in range(6)], gray=True
    )

    videos = discover(tmp_path, "ped2", "test")
    assert [(v.name, len(v)) for v in videos] == [("Test001", 5), ("Test002", 5)]
    frame = videos[0].read(3)
    assert frame.shape == (24, 32, 3)
    np.testing.assert_array_equal(frame, rgb(make_frame(3, gray=True)))  # .tif is lossless; gray → 3 equal channels
    assert [v.name for v in discover(tmp_path / "UCSDped2", "ped2", "train")] == ["Train001"]


def test_avenue_videos_and_frame_folders(tmp_path, write_avi, write_frames, make_frame):
    write_avi(tmp_path / "testing_videos" / "02.avi", 7)
    write_avi(tmp_path / "testing_videos" / "01.avi", 9)
    write_avi(tmp_path / "training_videos" / "01.avi", 5)
    videos = discover(tmp_path, "avenue", "test")
    assert [(v.name, len(v)) for v in videos] == [("01", 9), ("02", 7)]
    v = videos[0]
    assert isinstance(v, VideoFileSource)
    for i in (0, 5, 1, 8, 2):  # forward and backward jumps
        assert_close(v.read(i), make_frame(i))
    frames = v.read_range(3, 9)
    assert frames.shape == (6, 24, 32, 3)
    for k, frame in enumerate(v.iter_frames(2, 5)):
        assert_close(frame, make_frame(2 + k))
    assert [len(x) for x in discover(tmp_path, "avenue", "train")] == [5]

    # Avenue as frame folders (MNAD layout)
    mnad = tmp_path / "mnad"
    write_frames(mnad / "avenue" / "testing" / "frames" / "01", 6, names=[f"{i:04d}.jpg" for i in range(6)])
    videos = discover(mnad, "avenue", "test")
    assert [(v.name, len(v)) for v in videos] == [("01", 6)]
    assert_close(videos[0].read(5), make_frame(5))


def test_video_file_seeks_and_decodes_once(tmp_path, write_avi, make_frame):
    v = VideoFileSource(write_avi(tmp_path / "a.avi", 40), cache_size=4, seek_threshold=8)
    assert len(v) == 40 and v.name == "a"
    assert_close(v.read(30), make_frame(30))  # long forward jump: seek
    assert_close(v.read(3), make_frame(3))  # backward: reopen
    v = VideoFileSource(tmp_path / "a.avi", cache_size=5)  # a cache as long as a clip
    decoded = []
    original = v._decode_next

    def counting():
        decoded.append(v._pos)
        return original()

    v._decode_next = counting
    for start in range(0, 36):  # every clip of 5 frames, in order
        v.read_range(start, start + 5)
    assert decoded == list(range(40))  # each frame decoded exactly once
    assert VideoFileSource(tmp_path / "a.avi", exact_count=True).num_frames == 40


def test_extract_frames(tmp_path, write_avi, make_frame):
    video = VideoFileSource(write_avi(tmp_path / "01_001.avi", 6))
    frames = extract_frames(video, tmp_path / "training" / "frames" / "01_001")
    assert (frames.name, len(frames), frames.files[0].name) == ("01_001", 6, "0000.jpg")
    assert_close(frames.read(5), make_frame(5), tol=6.0)  # decoded from MJPG, then JPEG again
    with pytest.raises(ValueError, match="unsupported frame extension"):
        extract_frames(video, tmp_path / "x", ext=".gif")


def test_shanghaitech_original(tmp_path, write_avi, write_frames, make_frame):
    write_avi(tmp_path / "training" / "videos" / "01_001.avi", 6)
    write_avi(tmp_path / "training" / "videos" / "01_002.avi", 4)
    write_frames(tmp_path / "testing" / "frames" / "01_0014", 5, names=[f"{i:03d}.jpg" for i in range(5)])
    write_frames(tmp_path / "testing" / "frames" / "01_0015", 3, names=[f"{i:03d}.jpg" for i in range(3)])
    train = discover(tmp_path, "shanghaitech", "train")
    assert [(v.name, len(v), type(v)) for v in train] == [
        ("01_001", 6, VideoFileSource),
        ("01_002", 4, VideoFileSource),
    ]
    test = discover(tmp_path, "shanghaitech", "test")
    assert [(v.name, len(v)) for v in test] == [("01_0014", 5), ("01_0015", 3)]
    assert_close(test[0].read(4), make_frame(4))


def test_custom_inputs(tmp_path, write_avi, write_frames, make_frame):
    video = write_avi(tmp_path / "cam.avi", 6)
    [v] = discover(video, "custom")
    assert (v.name, len(v)) == ("cam", 6)

    frames = write_frames(tmp_path / "frames", 11)
    [v] = discover(frames, "custom", "train")  # a flat folder has no splits: split is ignored
    assert (v.name, len(v)) == ("frames", 11)
    assert_close(v.read(10), make_frame(10))

    mixed = tmp_path / "mixed"
    write_avi(mixed / "b10.avi", 3)
    write_avi(mixed / "b2.avi", 4)
    write_frames(mixed / "a1", 5)
    (mixed / "notes").mkdir()  # a folder without frames is not a video
    assert [(v.name, len(v)) for v in discover(mixed, "custom")] == [("a1", 5), ("b2", 4), ("b10", 3)]

    tree = tmp_path / "tree"
    write_frames(tree / "training" / "frames" / "01", 4)
    write_frames(tree / "testing" / "frames" / "01", 7)
    assert len(discover(tree, "custom", "test")[0]) == 7
    assert len(discover(tree, "custom", "train")[0]) == 4


# --- errors -----------------------------------------------------------------------------------------------------


def test_bad_inputs(tmp_path, write_frames, write_avi):
    with pytest.raises(ValueError, match="unknown data set 'ucf'.*ped2, avenue, shanghaitech"):
        discover(tmp_path, "ucf")
    with pytest.raises(ValueError, match="unknown split 'val'.*train, test"):
        discover(tmp_path, "ped2", "val")
    with pytest.raises(FileNotFoundError, match="not found"):
        discover(tmp_path / "missing", "ped2")
    (tmp_path / "empty_root").mkdir()
    with pytest.raises(FileNotFoundError, match="looked for") as err:
        discover(tmp_path / "empty_root", "avenue", "test")
    assert "testing_videos" in str(err.value) and "avenue/testing/frames" in str(err.value)

    (tmp_path / "vids").mkdir()
    (tmp_path / "vids" / "03.avi").write_bytes(b"")
    with pytest.raises(ValueError, match="video '03' is empty"):
        discover(tmp_path / "vids", "custom")
    (tmp_path / "junk.avi").write_bytes(b"not a video at all" * 100)
    with pytest.raises(ValueError, match="video 'junk'"):
        discover(tmp_path / "junk.avi", "custom")

    folder = write_frames(tmp_path / "ped2" / "testing" / "frames" / "01", 4)
    (folder / "2.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    [v] = discover(tmp_path, "ped2", "test")
    v.read(1)
    with pytest.raises(ValueError, match=r"video '01': frame 2 \(2.jpg\) is unreadable or corrupt"):
        v.read(2)
    with pytest.raises(IndexError, match="out of range for video '01' with 4 frames"):
        v.read(4)
    (tmp_path / "ped2" / "testing" / "frames" / "02").mkdir()
    with pytest.raises(ValueError, match="video '02' is empty"):
        discover(tmp_path, "ped2", "test")


def test_every_named_data_set_is_accepted_and_others_are_refused():
    """The names the CLI offers (DATASETS) are exactly the ones the readers accept; the error lists them."""
    from m2s2l_edge.data.layouts import MNAD_NAMES, check_dataset

    for name in DATASETS:
        assert check_dataset(name) == name
    assert set(MNAD_NAMES) | {"custom"} == set(DATASETS)  # every named set but custom has a folder layout
    with pytest.raises(ValueError, match="unknown data set 'ped1'; valid options: " + ", ".join(DATASETS)):
        check_dataset("ped1")


# --- clips ------------------------------------------------------------------------------------------------------


def test_preprocess_colour_and_range():
    red_bgr = np.zeros((8, 10, 3), np.uint8)
    red_bgr[..., 2] = 255
    src = cv2.cvtColor(red_bgr, cv2.COLOR_BGR2RGB)  # what a source returns
    out = preprocess_frame(src, (4, 5))
    assert out.shape == (3, 4, 5) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], 1.0)
    np.testing.assert_allclose(out[1:], -1.0)
    gray = preprocess_frame(np.full((6, 6), 255 // 2, np.uint8), 12)
    assert gray.shape == (3, 12, 12) and np.allclose(gray[0], gray[2])


def test_clip_dataset_shapes_values_and_index(tmp_path, write_frames, write_avi):
    write_frames(tmp_path / "v" / "a", 7)
    write_avi(tmp_path / "v" / "b.avi", 9)
    write_frames(tmp_path / "v" / "c", 3)  # shorter than T+1: no clips
    videos = discover(tmp_path / "v", "custom")
    ds = ClipDataset(videos, clip_len=4, image_size=(12, 16))
    assert len(ds) == (7 - 4) + (9 - 4)
    assert ds.locate(0) == (0, 0) and ds.locate(2) == (0, 2) and ds.locate(3) == (1, 0) and ds.locate(7) == (1, 4)
    clip = ds[4]  # video b, start 1: frames 1..5, target frame 5
    assert clip.shape == (5, 3, 12, 16) and clip.dtype == torch.float32
    assert clip.min() >= -1.0 and clip.max() <= 1.0
    target = preprocess_frame(videos[1].read(5), (12, 16))
    np.testing.assert_allclose(clip[4].numpy(), target, atol=1e-6)
    np.testing.assert_allclose(clip[0].numpy(), preprocess_frame(videos[1].read(1), (12, 16)), atol=1e-6)
    everything = ClipDataset(videos, clip_len=4, image_size=(12, 16), cache_size=None)
    for i in range(len(everything)):
        everything[i]
    assert len(everything._cache) == 7 + 9  # every frame of the clip-giving videos, each decoded once
    torch.testing.assert_close(everything[4], clip)
    strided = ClipDataset(videos, clip_len=2, image_size=8, stride=2)
    assert len(strided) == 3 + 4 + 1 and strided.locate(4) == (1, 2) and strided.locate(7) == (2, 0)
    with pytest.raises(ValueError, match="clip_len"):
        ClipDataset(videos, clip_len=0)
    with pytest.raises(ValueError, match="no clips"):
        ClipDataset(videos[2:], clip_len=4)


@pytest.mark.parametrize("start_method", ["fork", "forkserver"])
def test_clip_dataset_dataloader_workers(tmp_path, write_frames, write_avi, start_method):
    import gc

    write_avi(tmp_path / "v" / "a.avi", 12)
    write_frames(tmp_path / "v" / "b", 8)
    videos = discover(tmp_path / "v", "custom")
    videos[0].cache_size = 2  # the workers must decode, not find every frame in an inherited cache
    ds = ClipDataset(videos, clip_len=3, image_size=16)
    expected = torch.stack([ds[i] for i in range(len(ds))])  # (n, T+1, 3, 16, 16)
    videos[0].read(6)  # the parent holds an open decoder: workers must not use it (nor free it: that hangs)
    gc.collect()  # no garbage from earlier tests (decoders in cycles) for a forked child to collect
    # timeout: a worker that hangs (as one freeing an inherited decoder did) fails the test instead of stalling it
    loader = DataLoader(ds, batch_size=4, num_workers=2, shuffle=False, multiprocessing_context=start_method,
                        timeout=120)
    got = torch.cat(list(loader))
    assert got.shape == (len(ds), 4, 3, 16, 16)
    torch.testing.assert_close(got, expected)
    # spawn / forkserver workers receive a pickled copy: no decoder or cache travels with it
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.videos[0]._cap is None and not clone._cache
    torch.testing.assert_close(clone[len(ds) - 1], expected[-1])


def test_iter_video_clips_sequential(tmp_path, write_avi):
    video = VideoFileSource(write_avi(tmp_path / "a.avi", 11))
    reads = []
    original = video.read
    video.read = lambda i: reads.append(i) or original(i)
    ds = ClipDataset([VideoFileSource(tmp_path / "a.avi")], clip_len=4, image_size=8)
    batches = list(iter_video_clips(video, clip_len=4, image_size=8, batch_size=3))
    targets = np.concatenate([t for t, _ in batches])
    np.testing.assert_array_equal(targets, np.arange(4, 11))  # scores exist for frames T .. N-1
    assert [c.shape[0] for _, c in batches] == [3, 3, 1]
    clips = torch.cat([c for _, c in batches])  # (N - T, T+1, 3, 8, 8)
    torch.testing.assert_close(clips, torch.stack([ds[i] for i in range(len(ds))]))
    assert reads == list(range(11))  # every frame read once, in order
