"""Frame-label loaders: MNAD .npy, FFP-style gt .mat, Avenue volLabel masks, ShanghaiTech frame masks."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from m2s2l_edge.data import discover, label_candidates, labels_for_scores, load_frame_labels, split_concatenated


@pytest.fixture
def ped2_tree(tmp_path, write_frames):
    """MNAD ped2 test split: videos 01 (6 frames), 02 (4), 10 (5), frames named 0.jpg, 1.jpg, ..."""
    for name, n in (("10", 5), ("01", 6), ("02", 4)):
        write_frames(tmp_path / "ped2" / "testing" / "frames" / name, n, h=8, w=8)
    return tmp_path


def test_mnad_npy_1xN_and_1d(ped2_tree):
    videos = discover(ped2_tree, "ped2", "test")
    labels = np.array([[0, 0, 1, 1, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1]])  # (1, 15): 01 | 02 | 10
    np.save(ped2_tree / "frame_labels_ped2.npy", labels)
    got = load_frame_labels(ped2_tree, "ped2", videos)
    assert [g.tolist() for g in got] == [[0, 0, 1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0, 1]]
    assert all(g.dtype == np.uint8 for g in got)
    # ShanghaiTech-style 1-D file, given explicitly
    np.save(ped2_tree / "flat.npy", labels[0].astype(np.float64))
    flat = load_frame_labels(ped2_tree, "ped2", videos, path=ped2_tree / "flat.npy")
    assert all(np.array_equal(a, b) for a, b in zip(got, flat, strict=True))
    assert [len(x) for x in labels_for_scores(got, 4)] == [2, 0, 1]


def test_mnad_npy_mismatch_names_video_and_counts(ped2_tree):
    videos = discover(ped2_tree, "ped2", "test")
    with pytest.raises(ValueError, match=r"video '10'.*13 labels in all, only 3 left for this video's 5 frames"):
        split_concatenated(np.zeros((1, 13)), videos, "frame_labels_ped2.npy")
    with pytest.raises(ValueError, match=r"16 labels but the 3 test videos have 15 frames"):
        split_concatenated(np.zeros(16), videos)
    with pytest.raises(ValueError, match=r"\(1, N\) or \(N,\), got \(2, 8\)"):
        split_concatenated(np.zeros((2, 8)), videos)


def _cells(*items):
    cells = np.empty((1, len(items)), dtype=object)  # a MATLAB 1×V cell array
    for i, item in enumerate(items):
        cells[0, i] = np.asarray(item, dtype=np.float64)
    return cells


def test_ped2_mat_intervals(ped2_tree):
    videos = discover(ped2_tree, "ped2", "test")
    # 1-based inclusive [start; end] columns; video 02 has two intervals, video 10 none
    scipy.io.savemat(ped2_tree / "ped2.mat", {"gt": _cells([[2], [4]], [[1, 4], [1, 4]], np.zeros((2, 0)))})
    got = load_frame_labels(ped2_tree, "ped2", videos)
    assert [g.tolist() for g in got] == [[0, 1, 1, 1, 0, 0], [1, 0, 0, 1], [0, 0, 0, 0, 0]]

    scipy.io.savemat(ped2_tree / "bad.mat", {"gt": _cells([[2], [4]], [[3], [5]], np.zeros((2, 0)))})
    with pytest.raises(ValueError, match=r"video '02': interval \[3, 5\].*4 frames"):
        load_frame_labels(ped2_tree, "ped2", videos, path=ped2_tree / "bad.mat")
    scipy.io.savemat(ped2_tree / "short.mat", {"gt": _cells([[2], [4]])})
    with pytest.raises(ValueError, match="intervals for 1 videos but 3 test videos"):
        load_frame_labels(ped2_tree, "ped2", videos, path=ped2_tree / "short.mat")


def _vol_label(flags, h=6, w=7):
    cells = np.empty((1, len(flags)), dtype=object)
    for i, flag in enumerate(flags):
        mask = np.zeros((h, w), np.uint8)
        if flag:
            mask[2, 3] = 1  # a single anomalous pixel is enough
        cells[0, i] = mask
    return cells


def test_avenue_label_masks(tmp_path, write_avi):
    write_avi(tmp_path / "testing_videos" / "01.avi", 4, h=8, w=8)
    write_avi(tmp_path / "testing_videos" / "02.avi", 3, h=8, w=8)
    masks = tmp_path / "ground_truth_demo" / "testing_label_mask"
    masks.mkdir(parents=True)
    scipy.io.savemat(masks / "1_label.mat", {"volLabel": _vol_label([0, 1, 1, 0])})
    scipy.io.savemat(masks / "2_label.mat", {"volLabel": _vol_label([1, 0, 0])})
    videos = discover(tmp_path, "avenue", "test")
    got = load_frame_labels(tmp_path, "avenue", videos)
    assert [g.tolist() for g in got] == [[0, 1, 1, 0], [1, 0, 0]]

    scipy.io.savemat(masks / "2_label.mat", {"volLabel": _vol_label([1, 0, 0, 0, 0])})
    with pytest.raises(ValueError, match=r"video '02': 5 labels in .*2_label.mat but 3 frames"):
        load_frame_labels(tmp_path, "avenue", videos)


def test_shanghaitech_frame_masks(tmp_path, write_frames):
    for name, n in (("01_0014", 5), ("01_0015", 3)):
        write_frames(tmp_path / "testing" / "frames" / name, n, h=8, w=8)
    masks = tmp_path / "testing" / "test_frame_mask"
    masks.mkdir()
    np.save(masks / "01_0014.npy", np.array([0, 0, 1, 1, 1]))
    videos = discover(tmp_path, "shanghaitech", "test")
    with pytest.raises(FileNotFoundError, match="01_0015"):
        load_frame_labels(tmp_path, "shanghaitech", videos)
    np.save(masks / "01_0015.npy", np.array([1, 0, 0, 0]))
    with pytest.raises(ValueError, match=r"video '01_0015': 4 labels .* but 3 frames"):
        load_frame_labels(tmp_path, "shanghaitech", videos)
    np.save(masks / "01_0015.npy", np.array([1, 0, 0]))
    got = load_frame_labels(tmp_path, "shanghaitech", videos)
    assert [g.tolist() for g in got] == [[0, 0, 1, 1, 1], [1, 0, 0]]


def test_missing_labels(ped2_tree):
    videos = discover(ped2_tree, "ped2", "test")
    with pytest.raises(FileNotFoundError, match="frame_labels_ped2.npy") as err:
        load_frame_labels(ped2_tree, "ped2", videos)
    assert "ped2.mat" in str(err.value)
    assert ped2_tree / "ped2" / "frame_labels_ped2.npy" in label_candidates(ped2_tree, "ped2")
    with pytest.raises(FileNotFoundError, match="pass path= or name="):
        load_frame_labels(ped2_tree, "custom", videos)
    with pytest.raises(ValueError, match="unknown data set"):
        load_frame_labels(ped2_tree, "ucsd", videos)
