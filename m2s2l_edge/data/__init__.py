"""Data: readers for the standard video-anomaly layouts, frame labels, clip datasets and a synthetic generator.

Typical use::

    from m2s2l_edge.data import discover, load_frame_labels, ClipDataset, iter_video_clips

    train = ClipDataset(discover(root, "ped2", "train"), clip_len=4, image_size=256)
    test_videos = discover(root, "ped2", "test")
    labels = load_frame_labels(root, "ped2", test_videos)      # one (N_v,) 0/1 array per video
    for video, lab in zip(test_videos, labels):
        for targets, clips in iter_video_clips(video, clip_len=4, image_size=256, batch_size=8):
            ...                                                  # clips: (B, T+1, 3, H, W) in [-1, 1]

This package imports OpenCV and torch; ``import m2s2l_edge`` does not import it.
"""

from .clips import ClipDataset, iter_video_clips, preprocess_frame
from .labels import (
    label_candidates,
    labels_for_scores,
    labels_from_avenue_masks,
    labels_from_frame_masks,
    labels_from_intervals,
    load_frame_labels,
    split_concatenated,
)
from .layouts import DATASETS, SPLITS, discover
from .sources import (
    FRAME_EXTENSIONS,
    VIDEO_EXTENSIONS,
    FrameFolderSource,
    VideoFileSource,
    VideoSource,
    extract_frames,
    natural_key,
    natural_sorted,
)
from .synthetic import KINDS, AnomalyEvent, SyntheticVideo, generate_dataset, render_video

__all__ = [
    "DATASETS",
    "FRAME_EXTENSIONS",
    "KINDS",
    "SPLITS",
    "VIDEO_EXTENSIONS",
    "AnomalyEvent",
    "ClipDataset",
    "FrameFolderSource",
    "SyntheticVideo",
    "VideoFileSource",
    "VideoSource",
    "discover",
    "extract_frames",
    "generate_dataset",
    "iter_video_clips",
    "label_candidates",
    "labels_for_scores",
    "labels_from_avenue_masks",
    "labels_from_frame_masks",
    "labels_from_intervals",
    "load_frame_labels",
    "natural_key",
    "natural_sorted",
    "preprocess_frame",
    "render_video",
    "split_concatenated",
]
