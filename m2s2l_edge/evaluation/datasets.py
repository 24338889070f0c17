"""The test videos of a data set (or a user's footage) and their frame labels, checked against the frame counts."""

from __future__ import annotations

import numpy as np


def load_test_set(root, dataset: str, *, name: str | None = None, labels_path=None) -> tuple[list, list[np.ndarray]]:
    """The test videos of a data set and one full-length 0/1 label array per video (checked against frame counts)."""
    from m2s2l_edge.data import discover, load_frame_labels

    videos = discover(root, dataset, "test", name=name)
    labels = load_frame_labels(root, dataset, videos, path=labels_path, name=name)
    return videos, labels


def load_footage(root, dataset: str = "custom", *, name: str | None = None,
                 labels_path=None) -> tuple[list, list[np.ndarray] | None]:
    """Like :func:`load_test_set`, but custom footage without labels is accepted: labels are then None.

    A standard data set (or an explicit ``labels_path``) still needs its labels: their absence is an error there.
    """
    from m2s2l_edge.data import discover, label_candidates, load_frame_labels

    videos = discover(root, dataset, "test", name=name)
    if dataset == "custom" and labels_path is None and not any(c.exists() for c in label_candidates(
            root, dataset, name)):
        return videos, None
    return videos, load_frame_labels(root, dataset, videos, path=labels_path, name=name)
