"""Frame-level ground truth: one 0/1 array per test video (1 = anomalous), aligned with :func:`.discover`'s videos.

Formats read (docs/DESIGN.md §6):

* MNAD's ``frame_labels_{ped2,avenue,shanghai}.npy`` — all test videos concatenated in sorted (natural) order;
  Ped2 and Avenue are shaped (1, N), ShanghaiTech is 1-D (N,). Both shapes are accepted for every data set.
* ``ped2.mat`` / ``avenue.mat`` (the files shipped with FFP and most later code): a cell array ``gt`` with one
  entry per test video, each a 2×k matrix whose columns are [start; end] anomalous intervals, **1-based and
  inclusive** (frames ``start..end`` in MATLAB numbering, i.e. ``labels[start-1:end] = 1``). A 1-D entry of even
  length is read as the flattened [start; end] pairs; an empty entry means no anomaly in that video.
* Avenue's original ``testing_label_mask/<k>_label.mat``: ``volLabel`` is a cell array of per-frame pixel masks;
  we take a frame as anomalous iff its mask has any nonzero pixel. File ``<k>_label.mat`` belongs to the test video
  whose name is the number ``k`` (``01.avi`` ↔ ``1_label.mat``); when video names are not numbers, files and
  videos are paired in natural order.
* ShanghaiTech's ``testing/test_frame_mask/<video>.npy``: one 1-D array per video, matched by name.

Every array is checked against the number of frames found for its video; a mismatch is a ValueError that names the
video and both counts. MATLAB v7.3 (HDF5) files cannot be read by ``scipy.io.loadmat`` and raise a ValueError that
says so.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .layouts import MNAD_NAMES, check_dataset
from .sources import VideoSource, natural_key

logger = logging.getLogger(__name__)

# Key used in MNAD's label file names.
_MNAD_LABEL_KEY = {"ped2": "ped2", "avenue": "avenue", "shanghaitech": "shanghai", "synthetic": "synthetic"}


def _loadmat(path: Path) -> dict:
    import scipy.io

    try:
        return scipy.io.loadmat(str(path))
    except NotImplementedError as e:  # scipy's answer to a v7.3 (HDF5) file
        raise ValueError(
            f"{path} is a MATLAB v7.3 (HDF5) file, which scipy.io.loadmat cannot read; re-save it with "
            f"save(..., '-v7') or provide MNAD's frame_labels_*.npy instead"
        ) from e
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except Exception as e:  # noqa: BLE001 - scipy raises many types (MatReadError, ValueError, TypeError, ...) on junk
        raise ValueError(f"{path} is not a readable MATLAB .mat label file ({type(e).__name__}: {e})") from None


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except ValueError as e:
        if "allow_pickle" in str(e):  # numpy's text names neither the file nor what is wrong with it
            raise ValueError(f"{path} holds Python objects, not a numeric label array; save the labels with "
                             "np.save(path, labels.astype(np.uint8))") from None
        raise ValueError(f"{path} is not a readable .npy label file ({e})") from None
    except (OSError, EOFError) as e:
        raise ValueError(f"{path} is not a readable .npy label file ({e})") from None


def _check_length(video: VideoSource, labels: np.ndarray, source: str) -> np.ndarray:
    if labels.shape[0] != len(video):
        raise ValueError(
            f"label/frame count mismatch for video {video.name!r}: {labels.shape[0]} labels in {source} but "
            f"{len(video)} frames found in {video.path}"
        )
    return labels


def _binary(values: np.ndarray, source: str) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype == object or not np.issubdtype(values.dtype, np.number) and values.dtype != bool:
        raise ValueError(f"labels in {source} must be numeric 0/1, got dtype {values.dtype}")
    return (values != 0).astype(np.uint8)


def split_concatenated(labels: np.ndarray, videos: Sequence[VideoSource], source: str = "labels") -> list[np.ndarray]:
    """Cut MNAD-style concatenated labels, shaped (1, N) or (N,), into one array per video (in ``videos`` order)."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[0] == 1:
        labels = labels[0]  # (N,)
    elif labels.ndim != 1:
        raise ValueError(f"{source}: expected labels shaped (1, N) or (N,), got {labels.shape}")
    labels = _binary(labels, source)
    total = sum(len(v) for v in videos)
    out, offset = [], 0
    for video in videos:
        n = len(video)
        if offset + n > labels.shape[0]:
            raise ValueError(
                f"label/frame count mismatch for video {video.name!r}: {source} has {labels.shape[0]} labels in all, "
                f"only {labels.shape[0] - offset} left for this video's {n} frames "
                f"({len(videos)} test videos, {total} frames in total)"
            )
        out.append(labels[offset : offset + n])
        offset += n
    if offset != labels.shape[0]:
        raise ValueError(
            f"label/frame count mismatch: {source} has {labels.shape[0]} labels but the {len(videos)} test videos "
            f"have {total} frames in total (last video {videos[-1].name!r}: {len(videos[-1])} frames)"
        )
    return out


def labels_from_intervals(gt, videos: Sequence[VideoSource], source: str = "gt") -> list[np.ndarray]:
    """Per-video labels from a ``gt`` cell array of 1-based inclusive [start; end] intervals (see module doc)."""
    gt = np.asarray(gt)
    cells = list(gt.ravel()) if gt.dtype == object else [gt]
    if len(cells) != len(videos):
        raise ValueError(f"{source} has intervals for {len(cells)} videos but {len(videos)} test videos were found")
    out = []
    for video, cell in zip(videos, cells, strict=True):
        n = len(video)
        labels = np.zeros(n, dtype=np.uint8)
        intervals = np.asarray(cell, dtype=np.float64)
        if intervals.size:
            if intervals.ndim == 1:
                if intervals.size % 2:
                    raise ValueError(f"{source}, video {video.name!r}: odd number of interval bounds {intervals}")
                intervals = intervals.reshape(-1, 2).T  # (2, k): [start; end]
            elif intervals.shape[0] != 2 and intervals.shape[1] == 2:
                intervals = intervals.T  # (2, k)
            if intervals.ndim != 2 or intervals.shape[0] != 2:
                raise ValueError(
                    f"{source}, video {video.name!r}: expected 2×k [start; end] intervals, "
                    f"got shape {np.asarray(cell).shape}"
                )
            for start, end in intervals.T.astype(np.int64):
                if not 1 <= start <= end <= n:
                    raise ValueError(
                        f"label/frame count mismatch for video {video.name!r}: interval [{start}, {end}] in {source} "
                        f"(1-based, inclusive) does not fit the {n} frames found in {video.path}"
                    )
                labels[start - 1 : end] = 1
        out.append(labels)
    return out


def _mask_file_id(path: Path) -> int | None:
    m = re.match(r"(\d+)_label$", path.stem)
    return int(m.group(1)) if m else None


def _volume_labels(mat: dict, path: Path) -> np.ndarray:
    """A frame is anomalous iff its ``volLabel`` mask has any nonzero pixel."""
    if "volLabel" not in mat:
        raise ValueError(f"{path} has no 'volLabel' variable (found: {sorted(k for k in mat if k[0] != '_')})")
    masks = np.asarray(mat["volLabel"], dtype=object).ravel()
    return np.array([np.any(np.asarray(m) != 0) for m in masks], dtype=np.uint8)  # (N,)


def labels_from_avenue_masks(folder: Path, videos: Sequence[VideoSource]) -> list[np.ndarray]:
    """Per-video labels from Avenue's ``testing_label_mask/<k>_label.mat`` files (``volLabel`` per-frame masks)."""
    folder = Path(folder)
    files = sorted(folder.glob("*_label.mat"), key=lambda p: natural_key(p.name))
    if not files:
        raise FileNotFoundError(f"no *_label.mat files in {folder}")
    by_id = {_mask_file_id(f): f for f in files}
    try:
        ids = [int(v.name) for v in videos]
    except ValueError:
        ids = None
    if ids is not None and None not in by_id:
        missing = [v.name for v, i in zip(videos, ids, strict=True) if i not in by_id]
        if missing:
            raise FileNotFoundError(
                f"no label mask file for test videos {missing} in {folder} "
                f"(expected <number>_label.mat, found {[f.name for f in files]})"
            )
        paired = [by_id[i] for i in ids]
    else:
        if len(files) != len(videos):
            raise ValueError(f"{folder} has {len(files)} *_label.mat files but {len(videos)} test videos were found")
        paired = files
    out = []
    for video, path in zip(videos, paired, strict=True):
        out.append(_check_length(video, _volume_labels(_loadmat(path), path), str(path)))
    return out


def labels_from_frame_masks(folder: Path, videos: Sequence[VideoSource]) -> list[np.ndarray]:
    """Per-video labels from ShanghaiTech's ``test_frame_mask/<video>.npy`` (one 1-D 0/1 array per video)."""
    folder = Path(folder)
    out = []
    for video in videos:
        path = folder / f"{video.name}.npy"
        if not path.is_file():
            raise FileNotFoundError(f"no frame mask for test video {video.name!r}: {path} does not exist")
        labels = _load_npy(path)
        if labels.ndim == 2 and labels.shape[0] == 1:
            labels = labels[0]  # (N,)
        if labels.ndim != 1:
            raise ValueError(f"{path}: expected a 1-D per-frame mask, got shape {labels.shape}")
        out.append(_check_length(video, _binary(labels, str(path)), str(path)))
    return out


def _from_path(path: Path, videos: Sequence[VideoSource]) -> list[np.ndarray]:
    """Dispatch on what ``path`` is: a concatenated .npy, a ``gt`` .mat, or a folder of per-video files."""
    if path.is_dir():
        if any(path.glob("*_label.mat")):
            return labels_from_avenue_masks(path, videos)
        if any(path.glob("*.npy")):
            return labels_from_frame_masks(path, videos)
        raise FileNotFoundError(f"{path} holds neither *_label.mat (Avenue masks) nor <video>.npy (frame masks)")
    if not path.is_file():
        raise FileNotFoundError(f"label file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return split_concatenated(_load_npy(path), videos, str(path))
    if suffix == ".mat":
        mat = _loadmat(path)
        if "gt" in mat:
            return labels_from_intervals(mat["gt"], videos, str(path))
        if "volLabel" in mat and len(videos) == 1:
            return [_check_length(videos[0], _volume_labels(mat, path), str(path))]
        found = sorted(k for k in mat if not k.startswith("_"))
        raise ValueError(f"{path}: expected a 'gt' interval cell array (or 'volLabel' for one video), found {found}")
    raise ValueError(f"unsupported label file {path}; expected .npy, .mat or a folder of per-video files")


def label_candidates(root: str | Path, dataset: str, name: str | None = None) -> list[Path]:
    """Where :func:`load_frame_labels` looks, in order, when no explicit ``path`` is given."""
    check_dataset(dataset)
    root = Path(root).expanduser()
    names = (name,) if name is not None else MNAD_NAMES.get(dataset, ())
    key = name if dataset in ("synthetic", "custom") and name is not None else _MNAD_LABEL_KEY.get(dataset)
    dirs = [root, *(root / n for n in names), root.parent, root / "data", root.parent / "data"]
    out: list[Path] = []
    if key is not None:
        out += [d / f"frame_labels_{key}.npy" for d in dirs]
    if dataset == "ped2":
        out += [d / "ped2.mat" for d in (*dirs, root / "UCSDped2", root / "UCSDped2" / "Test")]
    elif dataset == "avenue":
        out += [d / "avenue.mat" for d in dirs]
        out += [d / "ground_truth_demo" / "testing_label_mask" for d in (root, root / "Avenue Dataset", root.parent)]
        out += [root / "testing_label_mask"]
    elif dataset == "shanghaitech":
        out += [
            root / "testing" / "test_frame_mask",
            root / "shanghaitech" / "testing" / "test_frame_mask",
            root / "test_frame_mask",
        ]
    return list(dict.fromkeys(out))


def load_frame_labels(
    root: str | Path,
    dataset: str,
    videos: Sequence[VideoSource],
    *,
    path: str | Path | None = None,
    name: str | None = None,
) -> list[np.ndarray]:
    """Frame labels for the test ``videos`` (as returned by ``discover(root, dataset, "test")``).

    Args:
        root: the data set root given to :func:`.discover`; searched as :func:`label_candidates` lists.
        dataset: ``ped2``, ``avenue``, ``shanghaitech``, ``synthetic`` or ``custom`` (custom needs ``path`` or a
            ``name`` whose ``frame_labels_<name>.npy`` can be found).
        videos: the test videos, in the order labels are wanted (normally natural order, as discovered).
        path: an explicit label file or folder (a concatenated .npy, a ``gt`` .mat, an Avenue mask folder or a
            folder of per-video .npy); skips the search.
        name: MNAD folder / label-file name when it is not the data set's usual one.

    Returns:
        One uint8 array (N_v,) per video, 1 = anomalous, aligned with ``videos``.

    Raises:
        FileNotFoundError: no label file found (the message lists the paths tried).
        ValueError: labels that do not fit the videos (the message names the video and both counts).
    """
    check_dataset(dataset)
    if not videos:
        raise ValueError("no test videos given: call discover(root, dataset, 'test') first")
    if path is not None:
        return _from_path(Path(path).expanduser(), videos)
    candidates = label_candidates(root, dataset, name)
    for candidate in candidates:
        if candidate.exists():
            logger.info("%s labels: %s", dataset, candidate)
            return _from_path(candidate, videos)
    looked = "\n  ".join(str(c) for c in candidates) or "(nothing to look for: pass path= or name=)"
    raise FileNotFoundError(f"no {dataset} frame labels found; looked for:\n  {looked}")


def labels_for_scores(labels: Sequence[np.ndarray], clip_len: int) -> list[np.ndarray]:
    """Drop the first ``clip_len`` labels of each video: those frames have no prediction (docs/DESIGN.md §6)."""
    if clip_len < 0:
        raise ValueError(f"clip_len must be >= 0, got {clip_len}")
    return [np.asarray(lab)[clip_len:] for lab in labels]
