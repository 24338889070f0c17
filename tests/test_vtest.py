"""The vtest.avi validation set (frames 480+ never decoded), the model-free peers and the patch / stall scores."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from footage import vtest as V


class CountingReader:
    """cv2.VideoCapture that counts every frame handed out (the held-out frames must never be decoded)."""

    opened: list[CountingReader] = []

    def __init__(self, path: str) -> None:
        import cv2

        self.cap = cv2.VideoCapture(path)
        assert self.cap.isOpened(), path
        self.reads = 0
        self.released = False
        CountingReader.opened.append(self)

    def read(self):
        self.reads += 1
        return self.cap.read()

    def release(self) -> None:
        self.released = True
        self.cap.release()


@pytest.fixture
def counting():
    CountingReader.opened = []
    return CountingReader


@pytest.fixture(scope="module")
def vtest_path():
    path = V.find_vtest()
    if path is None:
        pytest.skip("vtest.avi not found: apt-get install -y opencv-doc (Debian package opencv-doc)")
    return path


def test_reader_stops_at_frame_480_of_a_longer_video(tmp_path, write_avi, counting):
    video = write_avi(tmp_path / "long.avi", 520, h=24, w=32)
    frames = V.read_source_frames(video, size=(32, 24), reader=counting)
    assert len(frames) == V.HELD_OUT_FROM == 480
    (reader,) = counting.opened
    assert reader.reads == 480 and reader.released  # frame 480 (the 481st) was never pulled from the decoder
    assert frames[0].shape == (24, 32, 3) and frames[0].dtype == np.uint8
    with pytest.raises(ValueError, match="held out"):
        V.read_source_frames(video, 481, reader=counting)
    assert len(counting.opened) == 1  # refused before opening the file


def test_reader_reports_a_short_video(tmp_path, write_avi):
    video = write_avi(tmp_path / "short.avi", 50)
    with pytest.raises(ValueError, match="ended after 50 frames"):
        V.read_source_frames(video, 100, size=(32, 24))


def test_config_keeps_train_and_test_disjoint_and_inside_0_479():
    with pytest.raises(ValueError, match="disjoint"):
        V.VtestConfig(train_range=(0, 320), test_range=(300, 480))
    with pytest.raises(ValueError, match="disjoint"):
        V.VtestConfig(test_range=(300, 481))
    with pytest.raises(ValueError, match="skips through"):
        V.VtestConfig(test_range=(300, 420), video_len=100)
    with pytest.raises(ValueError, match="unknown anomaly kinds"):
        V.VtestConfig(kinds=("loitering",))


def test_build_reads_480_frames_and_writes_labelled_kinds(tmp_path, vtest_path, counting):
    from m2s2l_edge.data import discover, load_frame_labels

    out = tmp_path / "vtest"
    meta = V.build_vtest_set(vtest_path, out, reader=counting)
    assert sum(r.reads for r in counting.opened) == 480 and all(r.released for r in counting.opened)
    assert meta["source_frames_read"] == 480

    train = discover(out, "custom", "train")
    test = discover(out, "custom", "test")
    assert [len(v) for v in train] == [300]
    assert len(test) == len(V.KINDS) * 3 and all(len(v) == 120 for v in test)
    labels = np.load(out / V.LABELS_FILE)
    assert labels.shape == (1, 1800) and labels.dtype == np.uint8
    per_video = load_frame_labels(out, "custom", test, path=out / V.LABELS_FILE)  # what `eval --labels` reads
    kinds = V.kinds_by_video(json.loads((out / V.META_FILE).read_text()))
    assert sorted(set(kinds.values())) == sorted(V.KINDS)
    for video, lab, row in zip(test, per_video, meta["test_videos"], strict=True):
        assert video.name == row["name"] and kinds[video.name] == row["kind"]
        assert 10 <= lab.sum() < len(lab) - 40  # each video holds both classes, mostly normal
        assert np.flatnonzero(lab).tolist() == row["labelled"]
        assert all(300 <= s < 480 for s in row["sources"])  # test videos never touch the training frames
    frozen = next(r for r in meta["test_videos"] if r["kind"] == "frozen")
    stalled = np.array(frozen["sources"])[frozen["labelled"]]
    assert (stalled == stalled[0]).all()  # one repeated frame during the stall
    fast = next(r for r in meta["test_videos"] if r["kind"] == "fast")
    steps = np.diff(fast["sources"])
    assert set(steps[np.array(fast["labelled"]) - 1]) <= {3, 4} and (np.delete(steps, np.array(fast["labelled"]) - 1)
                                                                  == 1).all()
    reverse = next(r for r in meta["test_videos"] if r["kind"] == "wrong_direction")
    assert (np.diff(reverse["sources"])[np.array(reverse["labelled"]) - 1] == -1).all()
    # The recoloured person's size and height are recorded, and they are the pixels that differ from the same
    # source frame shown unchanged in another video.
    recoloured = next(r for r in meta["test_videos"] if r["kind"] == "appearance")
    params = recoloured["params"]
    frame = recoloured["labelled"][len(recoloured["labelled"]) // 2]
    source = recoloured["sources"][frame]
    plain = next((r, r["sources"].index(source)) for r in meta["test_videos"]
                 if r["kind"] == "frozen" and source in r["sources"]
                 and r["sources"].index(source) not in r["labelled"])
    import cv2

    a = cv2.imread(str(out / "testing" / "frames" / recoloured["name"] / f"{frame:04d}.jpg")).astype(int)
    b = cv2.imread(str(out / "testing" / "frames" / plain[0]["name"] / f"{plain[1]:04d}.jpg")).astype(int)
    changed = np.abs(a - b).max(axis=2) > 40
    assert 0.5 * params["region_px"] < changed.sum() < 2 * params["region_px"]
    assert abs(np.nonzero(changed)[0].mean() - params["region_row"]) < 30


def test_build_is_deterministic_per_seed(tmp_path, vtest_path):
    small = dict(train_range=(0, 100), test_range=(100, 260), per_kind=1, video_len=100)
    a = V.build_vtest_set(vtest_path, tmp_path / "a", V.VtestConfig(seed=3, **small))
    b = V.build_vtest_set(vtest_path, tmp_path / "b", V.VtestConfig(seed=3, **small))
    c = V.build_vtest_set(vtest_path, tmp_path / "c", V.VtestConfig(seed=4, **small))
    assert a["test_videos"] == b["test_videos"] and a["test_videos"] != c["test_videos"]
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.jpg"))
    assert len(files) == 100 + 5 * 100
    for rel in files[::37]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    assert (tmp_path / "a" / V.LABELS_FILE).read_bytes() == (tmp_path / "b" / V.LABELS_FILE).read_bytes()
    with pytest.raises(ValueError, match="already exists"):
        V.build_vtest_set(vtest_path, tmp_path / "a", V.VtestConfig(seed=3, **small))


# --- peers and scores --------------------------------------------------------------------------------------------


def _walking_video(folder, n: int, stall: range = range(0), size: int = 32):
    """A bright square walking 2 px per frame over a textured background; frames in ``stall`` repeat."""
    import cv2

    from m2s2l_edge.data import FrameFolderSource

    rng = np.random.default_rng(0)
    background = rng.integers(60, 120, (size, size, 3), dtype=np.uint8)
    folder.mkdir(parents=True)
    shown = 0
    for i in range(n):
        if i not in stall:
            shown = i
        frame = background.copy()
        x = (2 * shown) % (size - 6)
        frame[10:16, x:x + 6] = 250
        cv2.imwrite(str(folder / f"{i:04d}.png"), frame)
    return FrameFolderSource(folder)


def test_two_sided_motion_statistic_flags_a_stall_that_frame_differencing_calls_normal(tmp_path):
    from footage.model_free import baseline_scores

    train = [_walking_video(tmp_path / "train", 30)]
    test = [_walking_video(tmp_path / "test", 30, stall=range(12, 20))]
    diff = baseline_scores("frame_difference", test, 4, 32)[0]
    stat = baseline_scores("motion_statistic", test, 4, 32, train_videos=train)[0]
    assert diff.shape == stat.shape == (26,)
    frames = np.arange(4, 30)
    stalled = (frames >= 12) & (frames < 20)  # frames 12..19 repeat frame 11
    assert diff[stalled].max() < diff[~stalled].min()  # no change at all: the lowest score
    assert stat[stalled].min() > np.median(stat[~stalled])
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_scores("optical_flow", test, 4, 32)


def test_patch_psnr_sees_a_small_error_that_the_frame_mean_dilutes():
    from m2s2l_edge.scoring.terms import patch_psnr, psnr

    target = torch.zeros(2, 3, 64, 64)
    pred = target.clone()
    pred[0, :, :8, :8] = 1.0  # a person-sized error in a corner
    pred[1] += 0.125  # the same squared error spread over the whole frame
    frame, patch = psnr(pred, target), patch_psnr(pred, target, 8)
    assert frame[0] == pytest.approx(frame[1].item(), abs=1e-4)  # the frame mean cannot tell them apart
    assert patch[0] < patch[1] - 15  # the worst 8×8 window can
    assert patch_psnr(pred, target, 64) == pytest.approx(frame, abs=1e-4)


def test_stalled_frames_score_one_and_leave_the_min_max_to_the_rest():
    from m2s2l_edge.config import ScoreConfig
    from m2s2l_edge.scoring.video import video_scores

    def published(psnr):  # 1 − min-max of the PSNR (both streams equal here, so λ drops out)
        return 1 - (psnr - psnr.min()) / (psnr.max() - psnr.min())

    app = np.array([30.0, 31.0, 45.0, 45.0, 29.0, 32.0])
    terms = {"psnr_app": app, "psnr_mot": app, "patch_app": app - 5, "patch_mot": app - 5,
             "change": np.array([0.02, 0.03, 0.0, 0.0, 0.025, 0.02])}
    paper = video_scores(terms, ScoreConfig("paper", 0.5))
    np.testing.assert_allclose(paper, published(app))
    assert paper[2] == 0.0  # the published score ranks the stall as the most normal frame
    stall = video_scores(terms, ScoreConfig("paper", 0.5, stall_ratio=0.1))
    np.testing.assert_allclose(stall[[2, 3]], 1.0)
    keep = [0, 1, 4, 5]
    np.testing.assert_allclose(stall[keep], published(app[keep]))
    with pytest.raises(ValueError, match="unknown score"):
        ScoreConfig("psnr")


def test_quantile_floor_ranks_a_mild_anomaly_above_another_videos_normal_frames():
    """Two videos: in A the anomaly is far from the normal frames, in B it is mild. After the min-max alone B's
    ordinary frames sit near the top and outrank A's anomaly's weaker frames; floored at the median they sit at 0."""
    from sklearn.metrics import roc_auc_score

    from m2s2l_edge.config import ScoreConfig
    from m2s2l_edge.scoring.video import quantile_floor, video_scores

    rng = np.random.default_rng(0)
    psnr_a = np.r_[30 + 0.3 * rng.standard_normal(40), 24.0, 25.0, 27.0, 28.0]  # clear anomaly at the end
    psnr_b = np.r_[30 + 0.3 * rng.standard_normal(40), 31.5, 29.0, 28.7, 28.8]  # one very easy frame, mild anomaly
    labels = np.r_[np.zeros(40), np.ones(4), np.zeros(40), np.ones(4)]

    def auc(cfg):
        scores = [video_scores({"patch_app": p, "patch_mot": p, "psnr_app": p, "psnr_mot": p,
                                "change": np.ones_like(p)}, cfg) for p in (psnr_a, psnr_b)]
        return roc_auc_score(labels, np.concatenate(scores)), scores

    plain, _ = auc(ScoreConfig("patch", 1.0))
    floored, (score_a, score_b) = auc(ScoreConfig("patch", 1.0, floor_quantile=0.5))
    assert floored > plain + 0.05
    for s in (score_a, score_b):
        assert s.max() == 1.0 and s.min() == 0.0 and (s == 0).sum() >= 20  # still [0, 1]; half the frames at 0
    # within one video the order is kept (ties below the floor aside)
    s = np.array([0.0, 0.2, 0.6, 1.0, 0.4])
    np.testing.assert_allclose(quantile_floor(s, 0.5), [0.0, 0.0, 1 / 3, 1.0, 0.0])
    np.testing.assert_array_equal(quantile_floor(s, 0.0), s)
    np.testing.assert_array_equal(quantile_floor(np.full(4, 0.5), 0.5), np.zeros(4))
    with pytest.raises(ValueError, match="floor_quantile"):
        ScoreConfig("patch", floor_quantile=1.0)


def test_motion_term_flags_footage_quieter_or_busier_than_the_training_footage():
    """Prediction error flat (a predictor that copes), change low in frames 10-19 and high in 30-39: only the motion
    term sees them, both ways, against the stored training median; without one it falls back to the video's."""
    from sklearn.metrics import roc_auc_score

    from m2s2l_edge.config import ScoreConfig
    from m2s2l_edge.scoring.video import video_scores

    rng = np.random.default_rng(0)
    psnr = 30 + 0.2 * rng.standard_normal(60)
    change = np.full(60, 0.010) + 0.0005 * rng.standard_normal(60)
    change[10:20], change[30:40] = 0.004, 0.020  # a quiet stretch (not a stall: above 0.1 x the median) and a busy one
    terms = {"patch_app": psnr, "patch_mot": psnr, "psnr_app": psnr, "psnr_mot": psnr, "change": change}
    odd = np.zeros(60, bool)
    odd[10:20] = odd[30:40] = True
    plain = video_scores(terms, ScoreConfig("patch", 1.0, stall_ratio=0.1))
    with_motion = video_scores(terms, ScoreConfig("patch", 1.0, stall_ratio=0.1, motion_weight=0.25), 0.010)
    assert roc_auc_score(odd, plain) < 0.7  # the prediction error alone does not separate them
    assert roc_auc_score(odd, with_motion) > 0.85
    assert roc_auc_score(odd[10:30], with_motion[10:30]) > 0.85  # the quiet stretch too, not only the busy one
    assert with_motion.min() == 0.0 and with_motion.max() == 1.0
    # A reference far above this footage (a model trained on a busier camera) ranks the quiet stretch above the busy.
    busy = video_scores(terms, ScoreConfig("patch", 1.0, motion_weight=0.25), 0.03)
    assert busy[10:20].mean() > busy[30:40].mean() + 0.1
    # No stored reference: the video's own median (about 0.010 here) separates them as the training one does.
    own = video_scores(terms, ScoreConfig("patch", 1.0, stall_ratio=0.1, motion_weight=0.25))
    assert roc_auc_score(odd, own) > 0.85
    with pytest.raises(ValueError, match="motion_weight"):
        ScoreConfig("patch", motion_weight=1.5)


# --- defaults that follow the validation: train's custom-data recipe, eval's score -------------------------------


@pytest.fixture(scope="module")
def custom_root(tmp_path_factory):
    """A custom MNAD tree: one normal training video and one test video whose frames 14..17 repeat frame 13."""
    import cv2

    root = tmp_path_factory.mktemp("custom")
    rng = np.random.default_rng(1)
    background = rng.integers(40, 200, (48, 48, 3), dtype=np.uint8)
    for split, name, n in (("training", "train", 16), ("testing", "cam", 24)):
        folder = root / split / "frames" / name
        folder.mkdir(parents=True)
        for i in range(n):
            shown = 13 if split == "testing" and 14 <= i < 18 else i
            frame = background.copy()
            frame[20:28, (3 * shown) % 40:(3 * shown) % 40 + 8] = 255
            cv2.imwrite(str(folder / f"{i:03d}.png"), frame)
    labels = np.zeros((1, 24), np.uint8)
    labels[0, 14:18] = 1
    np.save(root / "frame_labels.npy", labels)
    return root


def _invoke(*args):
    from typer.testing import CliRunner

    from m2s2l_edge.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_train_on_custom_data_applies_the_recipe_unless_options_say_otherwise(custom_root, tmp_path):
    from m2s2l_edge.artifacts.checkpoint import read_checkpoint
    from m2s2l_edge.config import training_recipe

    recipe = training_recipe("custom", "small")
    assert recipe.model and training_recipe("ped2", "small").model == {}
    result = _invoke("train", "--data", custom_root, "--dataset", "custom", "--preset", "small", "--epochs", 1,
                     "--stride", 4, "--out", tmp_path / "a")
    assert result.exit_code == 0, result.stdout + result.stderr
    state = read_checkpoint(tmp_path / "a" / "last.pt")
    for key, value in recipe.model.items():
        assert state["config"][key] == value
    assert state["extra"]["train_config"]["lr"] == recipe.lr
    assert state["extra"]["train_config"]["batch_size"] == recipe.batch_size
    assert state["extra"]["train_config"]["loss"]["foreground_weight"] == recipe.foreground_weight
    # The motion term's reference: the median change between consecutive training frames at the model's size,
    # recomputed here from the frame files with OpenCV alone.
    import cv2

    size = recipe.model["image_size"]
    frames = [cv2.resize(cv2.imread(str(p))[..., ::-1], (size, size), interpolation=cv2.INTER_LINEAR) / 127.5 - 1
              for p in sorted((custom_root / "training" / "frames" / "train").glob("*.png"))]
    changes = [np.abs(b - a).mean() for a, b in zip(frames, frames[1:], strict=False)]
    assert state["extra"]["normal_change"] == pytest.approx(float(np.median(changes)), rel=0.25)

    result = _invoke("train", "--data", custom_root, "--dataset", "custom", "--preset", "small", "--epochs", 1,
                     "--stride", 4, "--set", "image_size=32", "--lr", "5e-4", "--foreground-weight", 2.5,
                     "--out", tmp_path / "b")
    assert result.exit_code == 0, result.stdout + result.stderr
    state = read_checkpoint(tmp_path / "b" / "last.pt")
    assert state["config"]["image_size"] == 32 and state["extra"]["train_config"]["lr"] == 5e-4
    assert state["extra"]["train_config"]["loss"]["foreground_weight"] == 2.5
    assert state["extra"]["train_config"]["batch_size"] == recipe.batch_size  # what no option set stays the recipe's

    # eval on custom data: the validated patch score by default, the published one on request.
    default, paper = tmp_path / "eval_default", tmp_path / "eval_paper"
    for out, extra in ((default, ()), (paper, ("--score", "paper"))):
        result = _invoke("eval", "--data", custom_root, "--dataset", "custom", "--weights", tmp_path / "b" / "last.pt",
                         "--labels", custom_root / "frame_labels.npy", "--no-plots", "--out", out, *extra)
        assert result.exit_code == 0, result.stdout + result.stderr
    got = json.loads((default / "results.json").read_text())
    assert got["score"]["method"] == "patch" and got["score"]["stall_ratio"] > 0
    assert got["score"]["motion_weight"] > 0 and got["score"]["floor_quantile"] > 0
    stored = read_checkpoint(tmp_path / "b" / "last.pt")["extra"]["normal_change"]
    assert got["normal_change"] == stored and got["motion_reference"].startswith("training footage")
    assert json.loads((paper / "results.json").read_text())["motion_reference"] is None
    assert json.loads((paper / "results.json").read_text())["score"]["method"] == "paper"
    scores = np.load(default / "scores" / "cam.npy")
    np.testing.assert_allclose(scores[np.arange(14, 18) - 4], 1.0)  # frames 14..17 repeat frame 13: flagged
    assert got["micro_auc"] > json.loads((paper / "results.json").read_text())["micro_auc"]
    result = _invoke("eval", "--data", custom_root, "--dataset", "custom", "--weights", tmp_path / "b" / "last.pt",
                     "--labels", custom_root / "frame_labels.npy", "--out", tmp_path / "c", "--score", "psnr")
    assert result.exit_code == 1 and "unknown score 'psnr'" in result.stderr
    # A checkpoint whose stored reference is no number the score can use: one clear line, no scores written.
    from m2s2l_edge.artifacts.checkpoint import load_model, save_checkpoint

    model, _ = load_model(tmp_path / "b" / "last.pt")
    save_checkpoint(tmp_path / "bad.pt", model, extra={"dataset": "custom", "normal_change": float("nan")})
    result = _invoke("eval", "--data", custom_root, "--dataset", "custom", "--weights", tmp_path / "bad.pt",
                     "--labels", custom_root / "frame_labels.npy", "--no-plots", "--out", tmp_path / "d")
    assert result.exit_code == 1, result.stdout + result.stderr
    assert result.stderr.startswith("error:") and "normal frame change" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "d" / "results.json").exists()


def test_input_corruption_acts_on_training_clips_only_and_is_validated():
    """corruption_prob (the custom recipe's 0.5): a training forward sees the corrupted clip, inference the clip
    itself; out-of-range settings are refused by the config, and configs written before corruption_min_side load."""
    from m2s2l_edge.config import ModelConfig, get_preset
    from m2s2l_edge.models import M2S2L

    torch.manual_seed(0)
    clip = torch.rand(3, 4, 3, 64, 64) * 2 - 1
    plain = M2S2L(get_preset("tiny"))
    initial = {k: v.clone() for k, v in plain.state_dict().items()}
    corrupting = M2S2L(get_preset("tiny", corruption_prob=0.999))
    corrupting.load_state_dict(initial)
    for m in (plain, corrupting):
        m.train()
    torch.manual_seed(1)
    corrupted = corrupting(clip)["frame_pred"]
    torch.manual_seed(1)
    assert not torch.allclose(corrupted, plain(clip)["frame_pred"])
    # Inference sees the clip itself (the weights reset first: the training passes moved BatchNorm and the memory).
    for m in (plain, corrupting):
        m.load_state_dict(initial)
        m.eval()
    torch.testing.assert_close(corrupting.predict(clip)[0], plain.predict(clip)[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="corruption_prob"):
        get_preset("tiny", corruption_prob=1.0)
    with pytest.raises(ValueError, match="corruption_min_side"):
        get_preset("tiny", corruption_min_side=0.5)
    # fields added after checkpoints were written
    newer = ("corruption_min_side", "decoder_conv", "level_query", "spatial_input")
    legacy = {k: v for k, v in get_preset("tiny").to_dict().items() if k not in newer}
    loaded = ModelConfig.from_dict(legacy)
    assert (loaded.corruption_min_side, loaded.decoder_conv, loaded.level_query, loaded.spatial_input) == (
        0.125, "dense", True, "clip")


def test_ablate_interventions_zero_the_part_they_name():
    """benchmarks/vtest_validation.py ablate: 'none' is the model itself; each intervention changes the prediction
    (the tiny preset has every part an intervention removes: both streams, the decomposition, memory with the
    query, one encoder level)."""
    import importlib.util
    from pathlib import Path

    import torch

    from m2s2l_edge.models import create_model
    from m2s2l_edge.runtime.base import TensorSpec

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "vtest_validation.py"
    spec = importlib.util.spec_from_file_location("vtest_validation", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    model = create_model("tiny", seed=0).eval()
    cfg = model.cfg
    clips = np.random.default_rng(0).uniform(-1, 1, (2, cfg.clip_len, 3, cfg.image_size, cfg.image_size))
    with torch.no_grad():
        plain = model.predict(torch.from_numpy(clips.astype(np.float32)))[0].numpy()

    class Backend:
        inputs = (TensorSpec("clip", ("batch", cfg.clip_len, 3, cfg.image_size, cfg.image_size), "float32"),)

    Backend.model = model
    intervened = module.Intervened(Backend())
    change = {}
    for mode in module.INTERVENTIONS:
        intervened.mode = mode
        change[mode] = float(np.abs(intervened.run(clips)["frame_pred"] - plain).max())
    assert change.pop("none") == 0.0
    assert all(v > 0 for v in change.values()), change
    assert all(intervened.applicable(mode) for mode in module.INTERVENTIONS)


def test_appearance_rows_give_each_recoloured_video_its_size_and_its_own_auc():
    """benchmarks/vtest_validation.py appearance: one row per appearance video, the region scaled to the model's
    resolution, the AUC of that video alone; a build without the recorded region is refused in one line."""
    import vtest_validation as VV

    meta = {"test_videos": [
        {"name": "01_appearance", "kind": "appearance", "params": {"hue": 10, "region_px": 1104, "region_row": 90}},
        {"name": "02_fast", "kind": "fast", "params": {}},
        {"name": "03_appearance", "kind": "appearance", "params": {"hue": 99, "region_px": 276, "region_row": 140}}]}
    lab = np.r_[np.zeros(6), np.ones(4)].astype(np.uint8)
    good, bad = np.r_[np.zeros(6), np.ones(4)], np.r_[np.ones(6), np.zeros(4)]
    rows = VV.appearance_rows(meta, ["01_appearance", "02_fast", "03_appearance"], [lab, lab, lab],
                              [good, bad, bad], (64, 64))
    assert [r["video"] for r in rows] == ["01_appearance", "03_appearance"]
    assert [r["auc"] for r in rows] == [1.0, 0.0]
    assert [r["region_px_model"] for r in rows] == [40.9, 10.2]  # 1104 and 276 of 384x288 pixels at 64x64
    assert rows[1]["region_row"] == 140 and rows[0]["hue"] == 10
    del meta["test_videos"][0]["params"]["region_px"]
    with pytest.raises(ValueError, match="build it again"):
        VV.appearance_rows(meta, ["01_appearance"], [lab], [good], (64, 64))


def test_colour_row_tells_a_model_that_copies_a_new_colour_from_one_that_refuses_it():
    """benchmarks/vtest_validation.py appearance --weights: at the pixels whose saturation rose in the anomalous
    frames, a prediction that copies the target has the target's saturation and no error there; one that predicts
    the grey person it saw before has none of the saturation and the error sits there, above the rest. The context
    row reports the frame change inside and outside the recoloured stretch and the video's AUC of the raw worst window
    and of the saturation deficit."""
    import vtest_validation as VV

    rng = np.random.default_rng(0)
    grey = np.repeat(rng.uniform(-0.6, 0.2, (10, 1, 16, 16)), 3, axis=1).astype(np.float32)  # (N, 3, H, W)
    labels = np.r_[np.zeros(6), np.ones(4)].astype(np.uint8)
    target = grey.copy()
    target[6:, 0, 4:8, 4:8], target[6:, 1, 4:8, 4:8], target[6:, 2, 4:8, 4:8] = 0.9, -0.7, -0.7  # a red coat
    noisy = target + rng.normal(0, 0.02, target.shape).astype(np.float32)  # small errors everywhere else

    copies = VV.colour_row(labels, target, noisy)
    refuses = noisy.copy()
    refuses[6:, :, 4:8, 4:8] = grey[6:, :, 4:8, 4:8]
    refused = VV.colour_row(labels, target, refuses)

    assert copies["px_per_frame"] == refused["px_per_frame"] == 16.0  # the 4x4 coat, found from saturation alone
    assert copies["target_saturation"] == refused["target_saturation"] == 0.8
    assert abs(copies["pred_saturation"] - 0.8) < 0.1 and refused["pred_saturation"] < 0.05
    assert copies["error_there"] < copies["error_elsewhere_p999"]
    assert refused["error_there"] > 10 * refused["error_elsewhere_p999"]
    def video(preds):  # a _predictions entry: its patch_app term is the worst 4-px window's PSNR, as eval's
        from m2s2l_edge.scoring.terms import patch_psnr

        worst = patch_psnr(torch.from_numpy(preds), torch.from_numpy(target), 4).numpy()
        return {"labels": labels, "targets": target, "preds": preds, "patch": 4,
                "terms": {"change": np.r_[np.full(6, 0.01), np.full(4, 0.004)],  # a quieter scene while recoloured
                          "patch_app": worst}}

    context = VV.context_row(video(refuses))
    assert (context["change_anomalous"], context["change_normal"]) == (0.004, 0.01)
    assert context["error_auc"] == context["saturation_deficit_auc"] == 1.0  # the refused coat tops every frame
    assert VV.context_row(video(noisy))["error_auc"] < 0.8  # a copied coat leaves only the noise every frame has
    none = VV.colour_row(labels, grey, grey)  # nothing was recoloured
    assert none["px_per_frame"] == 0.0 and none["target_saturation"] is None
    with pytest.raises(ValueError, match="normal and anomalous"):
        VV.colour_row(np.ones(10, np.uint8), target, noisy)


def test_rescore_error_maps_keep_what_they_are_meant_to_and_forgive_the_rest():
    """benchmarks/vtest_validation.py rescore: the local-mean error cancels a zero-mean detail error but not a colour
    shift; the chroma error ignores a grey (brightness-only) error; the saturation deficit sees only colour the
    prediction lacks; the shift-tolerant error forgives a one-pixel misplacement at r = 1 and not at r = 0."""
    import vtest_validation as VV

    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2 * 0.4 - 0.2  # zero mean over 2x2 boxes
    assert VV.local_mean_error(target + checker, target, 2).max() < 1e-10
    assert VV.local_mean_error(target + torch.tensor([0.3, 0.0, 0.0])[:, None, None], target, 2).min() > 1e-3
    assert VV.chroma_error(target + 0.3, target).max() < 1e-10  # the same change in every channel: grey
    assert VV.chroma_error(target + torch.tensor([0.3, 0.0, 0.0])[:, None, None], target).min() > 1e-3

    grey = torch.full((1, 3, 4, 4), -0.2)
    red = grey.clone()
    red[:, 0] = 0.8
    assert VV.saturation_deficit(red, red).max() == 0 and VV.saturation_deficit(red, grey).max() == 0
    assert torch.allclose(VV.saturation_deficit(grey, red), torch.full((1, 4, 4), 0.25))  # (0.5 - 0)^2

    moved = torch.roll(target, shifts=1, dims=-1)
    inner = (..., slice(2, -2), slice(2, -2))  # away from the replicated edges
    assert VV.shift_tolerant_error(moved, target, 1)[inner].max() < 1e-10
    assert VV.shift_tolerant_error(moved, target, 0)[inner].mean() > 1e-2
    assert set(VV.RESCORE_VARIANTS) >= {"local mean k=2", "saturation deficit, add 0.25", "shift-tolerant r=2"}


def test_rescore_calibrated_variants_take_out_what_they_fit_and_leave_quiet_videos_alone():
    """benchmarks/vtest_validation.py rescore, the variants calibrated on the training video: the activity fit
    recovers a worst-window PSNR that falls linearly in ln(change), ignoring stalled frames, and its residual is then
    flat; the trimmed activity leaves out a spot that changes alone and keeps a change of the whole scene; the
    colour exceedance is zero up to the training frames' quantile and counts beyond it in units of the quantile's
    distance from their median; a video that never lacks more colour than the training frames keeps the
    shipped scores exactly, one that does scores highest where it does."""
    import vtest_validation as VV

    from m2s2l_edge.config import get_score
    from m2s2l_edge.scoring.terms import TERMS

    rng = np.random.default_rng(0)
    change = rng.uniform(0.002, 0.02, 60)
    worst = 9.0 - 3.5 * np.log(change)
    terms = {k: rng.normal(30, 1, 60) for k in TERMS} | {"change": change.copy(), "patch_app": worst.copy()}
    terms["change"][10] = 0.0  # a stalled frame: set aside by the fit
    terms["patch_app"][10] = 99.0
    a, b = VV.activity_fit(terms, stall_ratio=0.1)
    assert abs(a - 9.0) < 1e-6 and abs(b + 3.5) < 1e-6
    residual = VV.activity_residual(terms, (a, b))["patch_app"]
    assert np.abs(np.delete(residual, 10)).max() < 1e-6

    frames = np.random.default_rng(1).normal(0, 0.01, (4, 3, 32, 32)).astype(np.float32)
    spot = frames.copy()
    spot[2:, :, :4, :4] += 1.0  # one bright spot appears in frame 2: a few windows change a lot
    scene = frames + np.arange(4, dtype=np.float32)[:, None, None, None] * 0.1  # the whole scene changes
    quiet = VV.trimmed_activity(frames, 4, 0.02)
    np.testing.assert_allclose(VV.trimmed_activity(spot, 4, 0.02), quiet, rtol=0.05)  # trimmed away
    assert VV.trimmed_activity(spot, 4, 0.0)[2] > 1.5 * quiet[2]  # kept without trimming
    assert np.all(VV.trimmed_activity(scene, 4, 0.02)[1:] > 5 * quiet[1:])  # activity everywhere stays
    reference = np.linspace(0.0, 1.0, 101)  # median 0.5, 0.99-quantile 0.99
    e = VV.colour_exceedance(np.array([0.2, 0.99, 1.48]), reference, 0.99)
    np.testing.assert_allclose(e, [0.0, 0.0, 1.0], atol=1e-9)

    cfg = get_score("patch")
    train = {"saturation_worst": reference * 0.01}

    def video(saturation):
        return {"score": cfg, "normal_change": 0.01, "terms": {k: v.copy() for k, v in terms.items()},
                "saturation_worst": np.asarray(saturation, np.float64)}

    quiet = video(np.full(60, 0.005))
    shipped = VV.rescore_video(quiet, "shipped")
    for variant in ("colour exceedance Q=0.99 w=0.5", "colour exceedance Q=1.0 w=1.0"):
        np.testing.assert_array_equal(VV.rescore_video(quiet, variant, train), shipped)
    coloured = np.full(60, 0.005)
    coloured[40:46] = 0.05  # five times the training maximum
    scores = VV.rescore_video(video(coloured), "colour exceedance Q=1.0 w=1.0", train)
    assert 40 <= int(np.argmax(scores)) < 46 and not np.array_equal(scores, shipped)
    with pytest.raises(ValueError, match="calibrated on the training video"):
        VV.rescore_video(quiet, "activity residual, training fit")


def test_live_table_protocol_matches_events_to_segments():
    """benchmarks/vtest_validation.py live: an event counts for a segment it overlaps (or the T + window frames
    after it, where the model and the smoothing still see the anomaly); an event starting right after a cut between
    two test videos is a cut event; any other is a false event; watch's and eval's frame AUCs come from one
    function."""
    import vtest_validation as VV

    fps, T, window = 10.0, 4, 5
    labels = [np.zeros(40, np.uint8), np.zeros(40, np.uint8)]
    labels[0][10:15] = 1  # stream frames 10..14
    labels[1][20:25] = 1  # stream frames 60..64
    stream = {"names": ["01_fast", "02_frozen"], "labels": labels, "starts": np.array([0, 40, 80]),
              "kinds": {"01_fast": "fast", "02_frozen": "frozen"}}

    def event(eid, first, last, sent):
        start = {"id": eid, "kind": "anomaly", "state": "start", "first": {"frame": first},
                 "last": {"frame": sent, "stream_time": sent / fps}}
        end = {"id": eid, "kind": "anomaly", "state": "end", "first": {"frame": first}, "last": {"frame": last}}
        return [start, end]

    events = (event("a", 12, 16, 13) + event("b", 70, 72, 71)  # in the grace after segment 2 (64 + 9)
              + event("c", 42, 44, 43) + event("d", 30, 33, 31))  # after the cut at 40; in normal footage
    frames = np.arange(80)
    score = np.r_[[5.0 if lab else 0.0 for lab in labels[0]], [5.0 if lab else 0.0 for lab in labels[1]]]
    eval_scores = [np.asarray(lab[T:], float) for lab in labels]
    row = VV.live_row(stream, events, {"frame": frames, "score": score}, eval_scores, fps=fps, clip_len=T,
                      window=window)
    assert (row["detected"], row["segments"]) == (2, 2) and row["per_kind"] == {"fast": "1/1", "frozen": "1/1"}
    assert (row["false_events"], row["cut_events"], row["false_event_frames"]) == (1, 1, [30])
    assert row["median_delay_s"] == pytest.approx(np.median([(13 - 10) / fps, (71 - 60) / fps]))
    # Normal footage: 80 frames less the first T, the segments with their grace and the cut's span.
    assert row["normal_hours"] == pytest.approx((80 - T - (5 + 9) - (5 + 9) - (T + window)) / fps / 3600)
    assert row["auc_watch"]["all"] == row["auc_eval"]["all"] == 1.0
    assert row["auc_eval_camera"] is None
    inverted = [1.0 - s for s in eval_scores]  # eval --calibration's scores get their own column
    row = VV.live_row(stream, events, {"frame": frames, "score": score}, eval_scores, fps=fps, clip_len=T,
                      window=window, camera_scores=inverted)
    assert row["auc_eval_camera"]["all"] == 0.0
    row.update(build=0, seed=0, threshold=2.0)
    assert VV.live_markdown([row]).splitlines()[2].endswith("| 1.000 / 1.000 | 0.000 / 0.000 |")
