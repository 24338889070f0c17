"""Model shapes, gradients, presets and ablations; configuration errors."""

from __future__ import annotations

import pytest
import torch

from m2s2l_edge.config import ABLATIONS, LOSS_SETS, LossConfig, ModelConfig, get_preset, preset_names
from m2s2l_edge.models import create_model
from m2s2l_edge.models.losses import foreground_weights, intensity_loss, total_loss


def clip_for(cfg: ModelConfig, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(batch, cfg.clip_len + 1, 3, cfg.image_size, cfg.image_size, generator=g) * 2 - 1


@pytest.mark.parametrize("ablation", ABLATIONS)
def test_tiny_forward_backward_every_ablation(ablation):
    model = create_model("tiny", ablation=ablation, seed=0)
    cfg = model.cfg
    frames = clip_for(cfg)
    clip, target = frames[:, :-1], frames[:, -1]
    out = model(clip)
    assert out["frame_pred"].shape == (2, 3, cfg.image_size, cfg.image_size)
    assert out["motion_pred"].shape == (2, 3, cfg.image_size, cfg.image_size)
    assert out["frame_pred"].abs().max() <= 1 and out["motion_pred"].abs().max() <= 2
    assert ("common" in out) == (ablation == "M4")
    loss, terms = total_loss(out, clip, target, LossConfig())
    loss.backward()
    assert torch.isfinite(loss)
    assert ("sep" in terms) == (ablation == "M4")
    # Every trainable parameter gets a gradient (no dead branch in any ablation).
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing


def test_ablations_change_the_architecture():
    sizes = {a: sum(p.numel() for p in create_model("tiny", ablation=a).parameters()) for a in ABLATIONS}
    assert sizes["M1"] < sizes["M2"] < sizes["M3"]  # each adds encoders
    m1 = create_model("tiny", ablation="M1")
    assert len(m1.patch_embeds) == 1 and len(m1.temporal_blocks) == 1 and m1.decomposition is None
    m4 = create_model("tiny", ablation="M4")
    assert len(m4.patch_embeds) == 3 and len(m4.temporal_blocks) == 3 and len(m4.memories) == 3


@pytest.mark.parametrize("loss_set,expected", [("L1", {"frame"}), ("L2", {"frame", "motion"}),
                                               ("L3", {"frame", "motion", "sep"})])
def test_loss_sets(loss_set, expected):
    model = create_model("tiny", seed=0)
    frames = clip_for(model.cfg)
    _, terms = total_loss(model(frames[:, :-1]), frames[:, :-1], frames[:, -1], LossConfig().with_loss_set(loss_set))
    assert set(terms) - {"compact", "separate"} == expected
    assert set(LOSS_SETS) == {"L1", "L2", "L3"}


def test_foreground_weight_counts_the_moving_pixels_more():
    """LossConfig.foreground_weight: the intensity term weighs the pixels that change from the last input frame,
    and their 3x3 neighbours, 1 + w times; with w = 0 an error costs the same wherever it is."""
    last = torch.zeros(1, 3, 16, 16)
    target = last.clone()
    target[:, :, 6:8, 6:8] = 0.5  # a 2x2 object appears; a change of 0.04 elsewhere stays under the threshold
    target[:, :, 12, 2] = 0.04
    expected = torch.ones(16, 16)
    expected[5:9, 5:9] = 5.0
    assert torch.equal(foreground_weights(target, last, 4.0, 0.05)[0, 0], expected)

    def frame_term(y: int, x: int, weight: float) -> float:
        pred = target.clone()
        pred[:, :, y, x] += 0.1  # one wrong pixel, inside the object or on the static background
        outputs = {"frame_pred": pred, "motion_pred": torch.zeros_like(pred)}
        clip = torch.stack([last, last], dim=1)
        return total_loss(outputs, clip, target, LossConfig(foreground_weight=weight).with_loss_set("L1"))[1]["frame"]

    # The same error inside the object (its gradient term alike: both pixels have the same neighbourhood change
    # in the error) and on the background: equal with w = 0, the moving one dearer with w = 4.
    assert frame_term(6, 6, 0.0) == pytest.approx(frame_term(2, 12, 0.0), rel=1e-6)
    assert frame_term(6, 6, 4.0) > frame_term(2, 12, 4.0) + 1e-5
    # The intensity term alone: exactly 1 + w times, normalised by the weights' sum.
    pred_in, pred_out = target.clone(), target.clone()
    pred_in[:, :, 6, 6] += 0.1
    pred_out[:, :, 2, 12] += 0.1
    w = foreground_weights(target, last, 4.0, 0.05)
    ratio = intensity_loss(pred_in, target, w) / intensity_loss(pred_out, target, w)
    assert float(ratio) == pytest.approx(5.0, rel=1e-5)
    assert float(intensity_loss(pred_out, target, w)) == pytest.approx(3 * 0.01 / (3 * float(w.sum())), rel=1e-5)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="foreground weight"):
            LossConfig(foreground_weight=bad)
    with pytest.raises(ValueError, match="foreground threshold"):
        LossConfig(foreground_threshold=0.0)


@pytest.mark.parametrize("preset", ["small", "paper"])
def test_larger_presets_forward_shapes(preset):
    model = create_model(preset, seed=0).eval()
    cfg = model.cfg
    with torch.no_grad():
        frame, motion = model.predict(clip_for(cfg, batch=1)[:, :-1])
    assert frame.shape == motion.shape == (1, 3, cfg.image_size, cfg.image_size)
    assert torch.isfinite(frame).all() and torch.isfinite(motion).all()


def test_small_preset_backward():
    model = create_model("small", seed=0)
    frames = clip_for(model.cfg, batch=1)
    loss, _ = total_loss(model(frames[:, :-1]), frames[:, :-1], frames[:, -1], LossConfig())
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_memory_items_move_only_in_training():
    model = create_model("tiny", seed=0)
    frames = clip_for(model.cfg)
    before = model.memories[0].items.clone()
    model.eval()
    with torch.no_grad():
        model(frames[:, :-1])
    assert torch.equal(before, model.memories[0].items)
    model.train()
    model(frames[:, :-1])
    assert not torch.equal(before, model.memories[0].items)
    torch.testing.assert_close(model.memories[0].items.norm(dim=1), torch.ones(before.shape[0]))


def test_presets_registered_and_unknown_rejected():
    assert {"paper", "small", "tiny"} <= set(preset_names())
    paper = get_preset("paper")
    assert (paper.image_size, paper.clip_len, paper.dim) == (256, 4, 256)
    with pytest.raises(ValueError, match="unknown preset 'huge'; valid: paper, small, tiny"):
        get_preset("huge")
    with pytest.raises(ValueError, match="unknown ablation"):
        get_preset("tiny").with_ablation("M9")


def test_resolution_must_divide_by_coarsest_patch():
    with pytest.raises(ValueError, match="not divisible by the coarsest patch size 32"):
        get_preset("paper", image_size=250)
    assert get_preset("paper", image_size=320).fused_size == 20


def test_wrong_input_shape_names_the_dimension():
    model = create_model("tiny")
    with pytest.raises(ValueError, match=r"dimension 3 \(H\) is 32, expected 64"):
        model(torch.zeros(1, 4, 3, 32, 64))
    with pytest.raises(ValueError, match=r"dimension 1 \(T\) is 3, expected 4"):
        model(torch.zeros(1, 3, 3, 64, 64))
    with pytest.raises(ValueError, match="must be \\(B, T, C, H, W\\)"):
        model(torch.zeros(4, 3, 64, 64))


def test_config_round_trips_through_dict():
    cfg = get_preset("small").with_ablation("M2")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_scan_backends_give_the_same_model_output():
    torch.manual_seed(0)
    ref_model = create_model("tiny", scan_backend="ref", seed=1).eval()
    frames = clip_for(ref_model.cfg)[:, :-1]
    with torch.no_grad():
        ref = ref_model.predict(frames)
        for backend in ("torch", "op", "auto"):
            m = create_model("tiny", scan_backend=backend)
            m.load_state_dict(ref_model.state_dict())
            out = m.eval().predict(frames)
            for a, b in zip(out, ref, strict=True):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


# --- BatchNorm folding (inference copies) -----------------------------------------------------------------------------


def _randomise_batchnorm(model: torch.nn.Module, seed: int = 1) -> int:
    """Give every BatchNorm2d statistics and affine terms far from the identity, as after training."""
    g = torch.Generator().manual_seed(seed)
    count = 0
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.normal_(0.0, 0.5, generator=g)
            mod.running_var.uniform_(0.3, 3.0, generator=g)
            mod.weight.data.normal_(1.0, 0.3, generator=g)
            mod.bias.data.normal_(0.0, 0.3, generator=g)
            count += 1
    return count


def test_separable_decoder_cuts_the_decoders_work_and_folds_exactly():
    """decoder_conv=separable: every 3×3 block convolution of both decoders becomes depth-wise + 1×1 (the head stays
    dense), the decoders' multiply-adds fall to under half, the rest of the model is untouched, BatchNorm folding
    stays exact, and an unknown value is refused by the config."""
    import copy

    from m2s2l_edge.config import training_recipe
    from m2s2l_edge.efficiency.profile import profile_model
    from m2s2l_edge.models.fold import fold_batchnorm

    recipe = training_recipe("custom", "small").model
    dense = profile_model("small", **recipe).groups
    separable = profile_model("small", **recipe, decoder_conv="separable").groups
    assert separable["decoders"].macs < 0.5 * dense["decoders"].macs
    assert {k: v for k, v in separable.items() if k != "decoders"} == {k: v for k, v in dense.items()
                                                                        if k != "decoders"}
    model = create_model("tiny", seed=0, decoder_conv="separable")
    convs = [m for m in model.appearance_decoder.modules() if isinstance(m, torch.nn.Conv2d)]
    depthwise = [m for m in convs if m.groups > 1]
    assert depthwise and all(m.groups == m.in_channels == m.out_channels and m.kernel_size == (3, 3)
                             for m in depthwise)
    assert model.appearance_decoder.head.groups == 1
    n_bn = _randomise_batchnorm(model)
    model.eval()
    folded = copy.deepcopy(model)
    assert fold_batchnorm(folded) == n_bn
    cfg = model.cfg
    clip = torch.rand(2, cfg.clip_len, cfg.in_channels, cfg.image_size, cfg.image_size,
                      generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        for ref, out in zip(model.predict(clip), folded.predict(clip), strict=True):
            assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()
    with pytest.raises(ValueError, match="decoder_conv must be one of dense, separable"):
        create_model("tiny", decoder_conv="sparse")


def test_spatial_mlp_ratios_set_each_scale_own_mlp():
    """spatial_mlp_ratios gives each spatial scale its own MLP ratio (0 = SS2D alone): the blocks of that scale have
    no MLP and no second norm, the others the width asked; the model still runs, the multiply-adds of the spatial
    stream fall, the M1 ablation keeps the medium scale's ratio, and a wrong length or a negative ratio is refused."""
    from m2s2l_edge.config import get_preset, training_recipe
    from m2s2l_edge.efficiency.profile import profile_model

    model = create_model("tiny", seed=0, spatial_mlp_ratios=(0.0, 2.0, 1.0))
    c = model.cfg.dim
    blocks = [seq[0] for seq in model.spatial_blocks]
    assert blocks[0].mlp is None and blocks[0].norm2 is None
    assert blocks[1].mlp.fc1.out_features == 2 * c and blocks[2].mlp.fc1.out_features == c
    clip = torch.rand(2, model.cfg.clip_len, 3, model.cfg.image_size, model.cfg.image_size) * 2 - 1
    with torch.no_grad():
        frame, motion = model.eval().predict(clip)
    assert frame.shape == motion.shape == clip[:, 0].shape and torch.isfinite(frame).all()
    recipe = training_recipe("custom", "small").model
    full = profile_model("small", **{**recipe, "spatial_mlp_ratios": (4.0, 4.0, 4.0)}).groups
    lean = profile_model("small", **{**recipe, "spatial_mlp_ratios": (0.0, 4.0, 4.0)}).groups
    assert lean["spatial"].macs < full["spatial"].macs
    assert {k: v for k, v in lean.items() if k != "spatial"} == {k: v for k, v in full.items() if k != "spatial"}
    m1 = get_preset("tiny", spatial_mlp_ratios=(0.0, 2.0, 1.0)).with_ablation("M1")
    assert m1.active_spatial_mlp_ratios == (2.0,)
    assert get_preset("tiny").active_spatial_mlp_ratios == (get_preset("tiny").mlp_ratio,) * 3
    for bad in ((0.0, 4.0), (4.0, -1.0, 4.0)):
        with pytest.raises(ValueError, match="spatial_mlp_ratios needs one ratio >= 0 per patch size"):
            get_preset("tiny", spatial_mlp_ratios=bad)


def test_fold_batchnorm_keeps_the_model_output():
    import copy

    from m2s2l_edge.models.fold import fold_batchnorm

    model = create_model("tiny", seed=0)
    n_bn = _randomise_batchnorm(model)
    model.eval()
    folded = copy.deepcopy(model)
    assert fold_batchnorm(folded) == n_bn == 29  # every BatchNorm of the tiny model (fuse, decomposition, decoders)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    cfg = model.cfg
    clip = torch.rand(2, cfg.clip_len, cfg.in_channels, cfg.image_size, cfg.image_size, generator=torch.Generator()
                      .manual_seed(2)) * 2 - 1  # fmt: skip
    with torch.no_grad():
        for ref, out in zip(model.predict(clip), folded.predict(clip), strict=True):
            assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()
    assert fold_batchnorm(folded) == 0  # nothing left to fold


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("groups,bias", [(1, False), (2, True)])
def test_fold_batchnorm_conv_variants(transpose, groups, bias):
    from m2s2l_edge.models.fold import fold_batchnorm

    torch.manual_seed(0)
    if transpose:
        conv = torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=groups, bias=bias)
    else:
        conv = torch.nn.Conv2d(4, 6, 3, padding=1, groups=groups, bias=bias)
    seq = torch.nn.Sequential(conv, torch.nn.BatchNorm2d(6), torch.nn.ReLU())
    _randomise_batchnorm(seq, seed=groups)
    seq.eval()
    x = torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        ref = seq(x)
        assert fold_batchnorm(seq) == 1
        out = seq(x)
    assert isinstance(seq[1], torch.nn.Identity) and seq[0].bias is not None
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_fold_batchnorm_refuses_training_mode_and_folded_checkpoints(tmp_path):
    from m2s2l_edge.artifacts.checkpoint import save_checkpoint
    from m2s2l_edge.models.fold import fold_batchnorm

    model = create_model("tiny", seed=0)
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(model)
    fold_batchnorm(model.eval())
    with pytest.raises(ValueError, match="inference copy.*folded_batchnorm"):
        save_checkpoint(tmp_path / "folded.ckpt", model)
    assert not (tmp_path / "folded.ckpt").exists()


def test_merged_multiscale_convs_compute_the_same_map():
    import copy

    from m2s2l_edge.layers.ssm import SS2D
    from m2s2l_edge.models.fold import inference_rewrites, merge_multiscale_convs, optimize_for_inference

    torch.manual_seed(0)
    layer = SS2D(dim=16, d_state=4, ms_kernels=(3, 5, 7), scan_backend="torch")
    for conv in layer.ms_convs:  # non-zero biases so that their sum is checked too
        torch.nn.init.normal_(conv.bias, std=0.5)
    x = torch.randn(2, 6, 5, 16)
    merged = copy.deepcopy(layer)
    assert merged.merge_ms_convs() and len(merged.ms_convs) == 1
    assert merged.ms_convs[0].kernel_size == (7, 7) and merged.ms_convs[0].groups == layer.d_inner
    with torch.no_grad():
        torch.testing.assert_close(merged(x), layer(x), rtol=1e-5, atol=1e-6)
    assert not merged.merge_ms_convs()  # a single convolution: nothing to do
    strided = SS2D(dim=16, d_state=4, ms_kernels=(3, 5), scan_backend="torch")
    strided.ms_convs[1].stride = (2, 2)
    assert not strided.merge_ms_convs() and len(strided.ms_convs) == 2  # not of the mergeable form: untouched

    model = create_model("tiny", seed=0).eval()
    reference = copy.deepcopy(model)
    assert optimize_for_inference(model) == {"folded_batchnorm": 29, "merged_ms_convs": 3}
    assert inference_rewrites(model) == {"folded_batchnorm": 29, "merged_ms_convs": 3}
    assert merge_multiscale_convs(model) == 0
    cfg = model.cfg
    clip = torch.rand(1, cfg.clip_len, cfg.in_channels, cfg.image_size, cfg.image_size) * 2 - 1
    with torch.no_grad():
        for ref, out in zip(reference.predict(clip), model.predict(clip), strict=True):
            assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_the_clip_reaches_the_decoders_only_through_the_encoders():
    """No pixel path: with the spatial encoders' maps and the temporal stream's features pinned to those of clip A,
    clip B gets exactly clip A's predictions (nothing else of the input reaches the decoders)."""
    model = create_model("tiny", seed=0).eval()
    a, b = clip_for(model.cfg)[:1, :-1], clip_for(model.cfg)[1:, :-1]
    with torch.no_grad():
        want = model.predict(a)
        maps_a = model._spatial_maps(a.flatten(1, 2))
        temporal_a = model._temporal(a)
        model._spatial_maps = lambda stacked: maps_a
        model._temporal = lambda clip: temporal_a
        got = model.predict(b)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=0)
    assert not torch.equal(a, b)


def test_spatial_input_last_leaves_the_motion_to_the_temporal_stream():
    """spatial_input=last: the spatial encoders embed the last input frame alone, so changing the earlier frames
    leaves every spatial map as it was while the prediction still moves (the temporal stream sees them); with the
    default (clip) the same change moves the spatial maps. An unknown value is refused."""
    def maps_of(model, clip):
        """The spatial encoders' maps in a forward of ``clip``, and its frame prediction."""
        kept = []

        def spatial_maps(stacked, encode=model._spatial_maps):
            kept.append(encode(stacked))
            return kept[-1]

        model._spatial_maps = spatial_maps
        with torch.no_grad():
            frame, _ = model.predict(clip)
        del model._spatial_maps
        return kept[-1], frame

    for spatial_input in ("last", "clip"):
        model = create_model("tiny", seed=0, spatial_input=spatial_input).eval()
        a = clip_for(model.cfg)[:1, :-1]
        b = a.clone()
        b[:, :-1] = torch.flip(b[:, :-1], dims=(-1,))  # every frame but the last one changed
        maps_a, frame_a = maps_of(model, a)
        maps_b, frame_b = maps_of(model, b)
        same = all(torch.equal(x, y) for x, y in zip(maps_a, maps_b, strict=True))
        assert same == (spatial_input == "last")
        assert not torch.equal(frame_a, frame_b)
    assert create_model("tiny", spatial_input="last").patch_embeds[0].in_channels == 3
    with pytest.raises(ValueError, match="spatial_input must be one of clip, last"):
        get_preset("tiny", spatial_input="first")


def test_decoder_levels_are_the_finer_encoder_maps_read_through_memory():
    cfg = get_preset("tiny")
    model = create_model("tiny", seed=0)
    assert cfg.level_patch_sizes == (8,)  # tiny: patches 8 / 16 / 32, fused at 16: one finer grid
    assert len(model.level_memories) == 1 and model.appearance_decoder.level_channels == (2 * cfg.dim, 0, 0, 0)
    finer = get_preset("tiny", patch_sizes=(4, 8, 16), decoder_channels=(16, 8, 8, 8))
    assert finer.level_patch_sizes == (4,) and create_model(finer).appearance_decoder.level_channels[0] == 2 * cfg.dim
    read_only = create_model("tiny", memory_query=False)
    assert read_only.appearance_decoder.level_channels[0] == cfg.dim
    assert create_model("tiny", level_memory=False).level_memories is None
    # level_query=False: read-out only at the joined maps, the fused features keep their query.
    level_read_only = create_model("tiny", level_query=False)
    assert level_read_only.appearance_decoder.level_channels[0] == cfg.dim
    assert not level_read_only.level_memories[0].with_query and level_read_only.memories[0].with_query
    assert all(not bank.with_query for bank in read_only.level_memories)  # memory_query=False implies it
    assert create_model("tiny", ablation="M1").cfg.level_patch_sizes == ()  # one scale: nothing finer to join
    frames = clip_for(cfg)
    out = model(frames[:, :-1])
    assert {"memory_compactness_level8", "memory_separateness_level8"} <= set(out)


def test_input_corruption_pastes_a_recoloured_box_in_training_only():
    from m2s2l_edge.layers.corruption import InputCorruption

    g = torch.Generator().manual_seed(0)
    clip = torch.rand(4, 4, 3, 32, 32, generator=g) * 2 - 1
    layer = InputCorruption(0.999).eval()
    assert layer(clip) is clip  # identity outside training
    layer.train()
    torch.manual_seed(0)
    out = layer(clip)
    assert out.shape == clip.shape and not torch.equal(out, clip)
    for i in range(4):
        changed = (out[i] != clip[i]).any(dim=1)  # (T, H, W)
        assert changed.any()
        ys, xs = torch.nonzero(changed.any(dim=0), as_tuple=True)
        box = (slice(int(ys.min()), int(ys.max()) + 1), slice(int(xs.min()), int(xs.max()) + 1))
        assert 4 <= box[0].stop - box[0].start <= 8 and 4 <= box[1].stop - box[1].start <= 8  # 1/8..1/4 of 32
        outside = torch.ones(32, 32, dtype=torch.bool)
        outside[box] = False
        assert torch.equal(out[i][..., outside], clip[i][..., outside])
        # The box holds another place of some clip of the batch, colour channels permuted, in every frame.
        patch = out[i][:, :, box[0], box[1]]  # (T, 3, h, w)
        h, w = patch.shape[-2:]
        found = any(torch.equal(patch, clip[j][:, list(p), y:y + h, x:x + w])
                    for j in range(4) for p in ((0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))
                    for y in range(33 - h) for x in range(33 - w))
        assert found
    masked = InputCorruption(0.999, "mask").train()(clip)
    assert ((masked == 0) | (masked == clip)).all() and (masked == 0).any()
    with pytest.raises(ValueError, match="unknown corruption kind"):
        InputCorruption(0.5, "blur")
