"""Find the videos of a data set in the directory layouts it is distributed in (docs/DESIGN.md §6).

Layouts recognised, tried in this order for each data set (``<split>`` is ``training`` / ``testing``):

==============  ============================================================================================
data set        layouts
==============  ============================================================================================
ped2            MNAD ``<root>/ped2/<split>/frames/<video>/<index>.jpg`` (or ``<root>`` = the ``ped2`` folder);
                UCSD's original ``<root>/UCSDped2/{Train,Test}/<video>/*.tif`` (or ``<root>`` = ``UCSDped2``;
                ``*_gt`` folders are skipped)
avenue          MNAD ``<root>/avenue/<split>/frames/<video>/``; the original ``<root>/{training,testing}_videos/``
                holding ``*.avi`` files (decoded with OpenCV) and/or one frame folder per video
shanghaitech    MNAD ``<root>/shanghai/<split>/frames/<video>/``; the original ``<root>/training/videos/*.avi``
                and ``<root>/testing/frames/<video>/*.jpg`` (also under ``<root>/shanghaitech/``)
synthetic       MNAD ``<root>/synthetic/<split>/frames/<video>/``, as written by :mod:`.synthetic`
custom          a single video file; a folder of frames (one video); a folder of video files and/or frame
                folders (one video each); or an MNAD tree ``<root>/<split>/frames/`` (then ``split`` is used,
                otherwise it is ignored: a flat folder has no splits)
==============  ============================================================================================

Every MNAD layout also accepts ``name=`` for a folder name other than the default. Videos are returned in natural
order of their names (``2`` before ``10``), and so are the frames inside a video.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from .sources import (
    FRAME_EXTENSIONS,
    VIDEO_EXTENSIONS,
    FrameFolderSource,
    VideoFileSource,
    VideoSource,
    list_frame_files,
    list_video_files,
    natural_key,
)

logger = logging.getLogger(__name__)

DATASETS = ("ped2", "avenue", "shanghaitech", "synthetic", "custom")
SPLITS = ("train", "test")

# MNAD folder names (and the spellings people commonly use) per data set; the first is the default.
MNAD_NAMES = {
    "ped2": ("ped2", "Ped2", "UCSDped2"),
    "avenue": ("avenue", "Avenue"),
    "shanghaitech": ("shanghai", "shanghaitech", "ShanghaiTech"),
    "synthetic": ("synthetic",),
}
_MNAD_SPLIT = {"train": "training", "test": "testing"}
_UCSD_SPLIT = {"train": "Train", "test": "Test"}


def check_dataset(dataset: str) -> str:
    if dataset not in DATASETS:
        raise ValueError(f"unknown data set {dataset!r}; valid options: {', '.join(DATASETS)}")
    return dataset


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid options: {', '.join(SPLITS)}")
    return split


def _visible_dirs(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]


def _frame_dirs(folder: Path) -> list[VideoSource]:
    """One source per sub-folder (UCSD's ``*_gt`` mask folders skipped); an empty sub-folder is an empty video."""
    return [FrameFolderSource(d) for d in _visible_dirs(folder) if not d.name.endswith("_gt")]


def _videos_and_frame_dirs(folder: Path, exact_count: bool) -> list[VideoSource]:
    videos: list[VideoSource] = [VideoFileSource(p, exact_count=exact_count) for p in list_video_files(folder)]
    # Sub-folders that hold frames are videos too (e.g. Avenue extracted in place); others are ignored here.
    dirs = [d for d in _visible_dirs(folder) if not d.name.endswith("_gt") and list_frame_files(d)]
    return videos + [FrameFolderSource(d) for d in dirs]


def _mnad_candidates(root: Path, names: Sequence[str], split: str) -> list[Path]:
    sub = Path(_MNAD_SPLIT[split]) / "frames"
    return [root / n / sub for n in names] + [root / sub]


def _candidates(root: Path, dataset: str, split: str, name: str | None) -> list[tuple[str, Path, str]]:
    """(layout description, directory, how to read it) in the order they are tried."""
    names = (name,) if name is not None else MNAD_NAMES.get(dataset, ())
    mnad = [("MNAD frame folders", p, "frame_dirs") for p in _mnad_candidates(root, names, split)]
    if dataset == "ped2":
        ucsd = _UCSD_SPLIT[split]
        return mnad + [
            ("UCSD .tif folders", root / "UCSDped2" / ucsd, "frame_dirs"),
            ("UCSD .tif folders", root / "UCSD_Anomaly_Dataset.v1p2" / "UCSDped2" / ucsd, "frame_dirs"),
            ("UCSD .tif folders", root / ucsd, "frame_dirs"),
        ]
    if dataset == "avenue":
        videos = f"{_MNAD_SPLIT[split]}_videos"
        return mnad + [
            ("Avenue videos", root / videos, "videos"),
            ("Avenue videos", root / "Avenue Dataset" / videos, "videos"),
        ]
    if dataset == "shanghaitech":
        # The original release trains from videos; its test frames sit where MNAD puts them (testing/frames).
        if split == "test":
            return mnad
        originals = (root, root / "shanghaitech")
        return mnad + [("ShanghaiTech videos", r / "training" / "videos", "videos") for r in originals]
    if dataset == "synthetic":
        return mnad
    # custom: an MNAD tree first (honours split), then the flat forms.
    return mnad + [
        ("folder of frames", root, "frames"),
        ("folder of videos / frame folders", root, "videos"),
    ]


def discover(
    root: str | Path,
    dataset: str = "custom",
    split: str = "test",
    *,
    name: str | None = None,
    exact_count: bool = False,
) -> list[VideoSource]:
    """The videos of one split of a data set, in natural order of their names.

    Args:
        root: the data set directory (see the module docstring for what it may point at), or for ``custom`` also a
            single video file.
        dataset: one of ``ped2``, ``avenue``, ``shanghaitech``, ``synthetic``, ``custom``.
        split: ``train`` or ``test``.
        name: MNAD folder name to look for instead of the data set's usual one (e.g. a synthetic set written with
            ``generate_dataset(name="demo")``).
        exact_count: count the frames of video files by decoding them (see :class:`VideoFileSource`).

    Raises:
        ValueError: unknown ``dataset`` / ``split``; an empty video, or a video file OpenCV cannot open.
        FileNotFoundError: ``root`` does not exist, or no videos were found; the message lists the paths tried.
    """
    check_dataset(dataset)
    check_split(split)
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"data set root not found: {root}")

    if root.is_file():
        if dataset != "custom":
            raise ValueError(f"root {root} is a file; a single video file is only accepted with dataset='custom'")
        if root.suffix.lower() not in VIDEO_EXTENSIONS:
            raise ValueError(f"{root} is not a video file; expected one of: {', '.join(VIDEO_EXTENSIONS)}")
        return [VideoFileSource(root, exact_count=exact_count)]

    tried = []
    for layout, directory, kind in _candidates(root, dataset, split, name):
        tried.append(str(directory))
        if not directory.is_dir():
            continue
        if kind == "frames":
            sources = [FrameFolderSource(directory)] if list_frame_files(directory) else []
        elif kind == "frame_dirs":
            sources = _frame_dirs(directory)
        else:
            sources = _videos_and_frame_dirs(directory, exact_count)
        if sources:
            sources.sort(key=lambda s: natural_key(s.name))
            logger.info(
                "%s %s: %d videos, %d frames (%s, %s)",
                dataset,
                split,
                len(sources),
                sum(len(s) for s in sources),
                layout,
                directory,
            )
            return sources
    looked = "\n  ".join(dict.fromkeys(tried))
    raise FileNotFoundError(
        f"no {dataset} {split} videos found under {root}; looked for frame folders ({', '.join(FRAME_EXTENSIONS)}) "
        f"or video files ({', '.join(VIDEO_EXTENSIONS)}) in:\n  {looked}"
    )
