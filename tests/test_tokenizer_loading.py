"""Loading pretrained parts of the tokenizer: open_clip weights files, the diffusers latent video
denoiser (UNet3DConditionModel + AutoencoderKL saved with save_pretrained), and the paper-size
configuration's parameter counts, built on the meta device (no memory, no weights)."""
import os

import pytest
import torch

import configurator
import diffusion
import tokenizer as tok
import train_tokenizer
from conftest import ROOT

PAPER_CONFIG = os.path.join(ROOT, "config", "tokenizer_paper.py")

# tiny diffusers models: 2 UNet levels (cross-attention in the first), a VAE that halves the frame size
TINY_UNET = dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
                 down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
                 up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
                 norm_num_groups=8, cross_attention_dim=32, attention_head_dim=8)
TINY_VAE = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(16, 32), layers_per_block=1,
                latent_channels=4, norm_num_groups=8, sample_size=16)
# the ModelScope-T2V UNet as diffusers ships it (damo-vilab/text-to-video-ms-1.7b and zeroscope_v2 unet/config.json,
# which are diffusers' UNet3DConditionModel defaults) and the Stable Diffusion VAE it uses
MODELSCOPE_UNET = dict(sample_size=32, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
                       layers_per_block=2, cross_attention_dim=1024, attention_head_dim=64, norm_num_groups=32,
                       down_block_types=("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",),
                       up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3)
SD_VAE = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
              up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
              latent_channels=4, norm_num_groups=32, sample_size=256, scaling_factor=0.18215)


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_open_clip_weights_file_round_trip(tmp_path):
    torch.manual_seed(0)
    saved = tok.create_clip("nanodicode-tiny")
    path = str(tmp_path / "clip.pt")
    torch.save(saved.state_dict(), path)
    torch.manual_seed(1)  # another random init: only the file can make the weights equal
    loaded = tok.create_clip("nanodicode-tiny", pretrained=path)
    fresh = tok.create_clip("nanodicode-tiny")
    ref = saved.state_dict()
    assert loaded.state_dict().keys() == ref.keys()
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, ref[k]), k
    assert not torch.equal(fresh.visual.conv1.weight, saved.visual.conv1.weight)  # the check can fail
    frames = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        want = tok.FrameEncoder(saved).eval()(frames)
        got = tok.FrameEncoder(loaded).eval()(frames)
        other = tok.FrameEncoder(fresh).eval()(frames)
    assert got.shape == (3, 65, 128)  # 8 x 8 patches + class token, width 128
    assert torch.equal(got, want)
    assert not torch.allclose(other, want)


@pytest.fixture
def tiny_pretrained_dir(tmp_path):
    """A zeroscope-style directory: <dir>/unet and <dir>/vae written by save_pretrained."""
    from diffusers import AutoencoderKL, UNet3DConditionModel
    torch.manual_seed(0)
    unet, vae = UNet3DConditionModel(**TINY_UNET), AutoencoderKL(**TINY_VAE)
    unet.save_pretrained(str(tmp_path / "unet"))
    vae.save_pretrained(str(tmp_path / "vae"))
    return str(tmp_path), unet.state_dict(), vae.state_dict()


def test_latent_denoiser_loads_and_trains(tiny_pretrained_dir):
    local_dir, unet_state, vae_state = tiny_pretrained_dir
    torch.manual_seed(1)
    den = diffusion.LatentVideoDenoiser.from_pretrained(local_dir, token_dim=24, max_stride=6).train()
    # the saved weights came back; the stride projection is new and starts at zero (pretrained behaviour kept)
    got = den.unet.state_dict()
    assert set(got) - set(unet_state) == {"time_embedding.cond_proj.weight"}
    for k, v in unet_state.items():
        assert torch.equal(got[k], v), k
    for k, v in vae_state.items():
        assert torch.equal(den.vae.state_dict()[k], v), k
    assert torch.count_nonzero(den.unet.time_embedding.cond_proj.weight) == 0
    assert den.latent and isinstance(den.proj, torch.nn.Linear)  # token_dim 24 -> cross_attention_dim 32
    assert not den.vae.training and not any(p.requires_grad for p in den.vae.parameters())

    B, T, N_q = 2, 5, 4
    frames = torch.rand(B, T, 3, 16, 16) * 2 - 1
    z0 = den.encode_frames(frames)
    assert z0.shape == (B, T, 4, 8, 8) == den.latent_shape(frames.shape) and not z0.requires_grad
    with torch.no_grad():
        mean = den.vae.encode(frames.flatten(0, 1)).latent_dist.mean
    torch.testing.assert_close(z0, (mean * den.vae.config.scaling_factor).view(B, T, 4, 8, 8))
    assert den.decode_latents(z0).shape == frames.shape

    cond = torch.randn(B, 2 * N_q, 24)
    stride = torch.tensor([1, 6])
    t = torch.tensor([10, 900])
    assert den(z0, t, cond, stride).shape == z0.shape
    alphas_cumprod = diffusion.make_alphas_cumprod()
    unet_before = {k: v.clone() for k, v in den.unet.state_dict().items()}
    vae_before = {k: v.clone() for k, v in den.vae.state_dict().items()}
    opt = torch.optim.AdamW([p for p in den.parameters() if p.requires_grad], lr=1e-3)
    loss = diffusion.diffusion_loss(den, z0, cond, stride, alphas_cumprod, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in [("conv_in", den.unet.conv_in.weight), ("conv_out", den.unet.conv_out.weight),
                    ("cond_proj", den.unet.time_embedding.cond_proj.weight), ("head_rear", den.head_rear),
                    ("proj", den.proj.weight)]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in den.vae.parameters())
    opt.step()
    changed = [k for k, v in den.unet.state_dict().items() if not torch.equal(v, unet_before[k])]
    assert "conv_in.weight" in changed and "time_embedding.cond_proj.weight" in changed
    assert all(torch.equal(v, vae_before[k]) for k, v in den.vae.state_dict().items())
    with torch.no_grad():  # the (now nonzero) stride projection makes the output depend on the stride
        a = den(z0, t, cond, torch.tensor([1, 1]))
        b = den(z0, t, cond, torch.tensor([6, 6]))
    assert not torch.allclose(a, b)


def test_build_autoencoder_unet3d(tiny_pretrained_dir):
    local_dir = tiny_pretrained_dir[0]
    cfg = dict(clip_model="nanodicode-tiny", clip_pretrained="", n_queries=4, token_dim=32, q_layers=1, q_heads=4,
               train_encoder=False, denoiser="unet3d", image_size=16, clip_frames=4, max_stride=6)
    with pytest.raises(ValueError, match="pretrained_dir.*not a key"):
        tok.build_autoencoder(cfg)
    with pytest.raises(ValueError, match="pretrained_dir.*empty"):
        tok.build_autoencoder(dict(cfg, pretrained_dir=""))
    tokenizer, den = tok.build_autoencoder(dict(cfg, pretrained_dir=local_dir))
    assert isinstance(den, diffusion.LatentVideoDenoiser) and isinstance(den.proj, torch.nn.Identity)
    clips = torch.rand(2, 5, 3, 16, 16) * 2 - 1
    cond = tokenizer.encode(clips[:, [0, -1]]).flatten(1, 2)  # (B, 2 N_q, C), as train_tokenizer.Autoencoder
    loss = diffusion.diffusion_loss(den, den.encode_frames(clips), cond, torch.tensor([2, 3]),
                                    diffusion.make_alphas_cumprod())
    loss.backward()
    assert tokenizer.query.queries.grad.abs().sum() > 0  # the diffusion loss teaches Q through the UNet
    with pytest.raises(ValueError, match="outline_loss_weight.*latents"):  # the outline is in pixels, not latents
        train_tokenizer.Autoencoder(tokenizer, den, diffusion.make_alphas_cumprod(), "v", outline_loss_weight=4.0)


def test_paper_config_applies_to_train_tokenizer():
    import train_tokenizer
    settings = configurator.apply_config(dict(vars(train_tokenizer)), [PAPER_CONFIG])
    assert settings["denoiser"] == "unet3d" and settings["pretrained_dir"]
    assert (settings["clip_frames"] + 1, settings["image_size"], settings["max_stride"]) == (16, 256, 6)
    assert settings["learning_rate"] == 1e-5 and settings["max_iters"] == 100000
    assert settings["batch_size"] * settings["gradient_accumulation_steps"] == 64  # global, over all processes
    assert settings["min_lr"] == settings["learning_rate"]  # constant
    assert (settings["keyframe_loss_weight"], settings["outline_loss_weight"]) == (0.0, 0.0)  # Eq. (1) alone
    assert (settings["order_clips"], settings["cfg_scale"]) == (0, 7.5)
    assert (settings["q_type"], settings["q_heads"], settings["q_head_dim"]) == ("perceiver", 12, 64)  # the release's
    assert settings["per_frame_context"] and settings["cond_drop_prob"] == 0.1


def test_paper_size_parameter_counts():
    import open_clip
    from diffusers import UNet2DConditionModel
    cfg = {}
    exec(open(PAPER_CONFIG).read(), cfg)
    with torch.device("meta"):
        clip = open_clip.create_model(cfg["clip_model"], device="meta")  # pretrained=None: random init, on meta
        tokenizer = tok.DeepTokenizer(clip, cfg["n_queries"], cfg["token_dim"], cfg["q_layers"], cfg["q_heads"],
                                      q_type=cfg["q_type"], q_head_dim=cfg["q_head_dim"])
        query = tokenizer.query
        den = diffusion.LatentVideoDenoiser.from_config(MODELSCOPE_UNET, SD_VAE, cfg["token_dim"], cfg["max_stride"],
                                                        cfg["per_frame_context"])
        # Stable Diffusion 2.1's UNet: the spatial half of ModelScope-T2V's
        sd21 = UNet2DConditionModel(sample_size=96, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
                                    cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
                                    use_linear_projection=True)
    assert next(den.unet.parameters()).is_meta and next(clip.visual.parameters()).is_meta
    # E: ViT-H/14 visual tower, 32 layers of width 1280, 257 tokens: 632.08M (open_clip's model table says 632.08M)
    assert clip.visual.transformer.width == 1280 and clip.visual.grid_size == (16, 16)
    assert n_params(clip.visual) == 632_076_800
    # Q: the release's resampler, 4 layers of width C = 1024 with 12 heads of 64 (inner width 768): per layer
    # 2 LayerNorms + to_q (C x 768) + to_kv (C x 1536) + to_out (768 x C), all bias-free, then a LayerNorm and a
    # bias-free 4x MLP; + proj_in 1280 -> 1024, 16 queries, proj_out C -> C, final LayerNorm = 48.5M
    C, inner = cfg["token_dim"], cfg["q_heads"] * cfg["q_head_dim"]
    assert isinstance(query, tok.PerceiverResampler) and inner == 768
    per_layer = 4 * C + 4 * C * inner + 2 * C + 8 * C * C
    assert n_params(query) == 4 * per_layer + (1280 * C + C) + 16 * C + (C * C + C) + 2 * C == 48_541_696
    assert len(den.split_processors) == 16  # every spatial cross-attention of the UNet reads its frame's keyframe
    # decoder: ModelScope-T2V's UNet3D is 1,411,233,860 parameters. Its report gives ~1.7B for the whole model
    # (VAE + OpenCLIP-H text encoder ~354M + UNet; the 1.7B is rounded), "0.5B of them temporal": the UNet minus
    # SD 2.1's 2D UNet (865.9M) is 0.545B, the temporal convolutions and attentions.
    unet = n_params(den.unet) - den.unet.time_embedding.cond_proj.weight.numel()  # without the added stride input
    assert unet == pytest.approx(1.411e9, rel=1e-3)
    assert n_params(sd21) == pytest.approx(865.9e6, rel=1e-3)
    assert unet - n_params(sd21) == pytest.approx(0.5e9, rel=0.15)
    assert den.unet.time_embedding.cond_proj.weight.shape == (320, 320)  # the stride: sinusoid -> timestep sinusoid
    assert isinstance(den.proj, torch.nn.Identity)  # 1024-d deep tokens fit the 1024-d text slot as they are
    assert n_params(den.vae) == 83_653_863  # the Stable Diffusion VAE, frozen
    assert n_params(den) == n_params(den.unet) + n_params(den.vae) + 2 * C


def test_latent_denoiser_per_frame_context_at_the_attention_layer():
    """OwnKeyframeAttnProcessor: each frame's cross-attention equals attention over its own keyframe's tokens
    alone (an independent masked attention over all 2 N_q is the reference), and the rear tokens cannot reach
    the first half of the clip at the first cross-attention layer; without the split they do."""
    import torch.nn.functional as F
    from diffusers.models.attention_processor import Attention
    B, T, N_q, D = 2, 5, 3, 32
    z = torch.randn(B, T, 4, 8, 8)
    t, stride = torch.tensor([10, 900]), torch.tensor([1, 4])
    cond = torch.randn(B, 2 * N_q, D)
    moved = cond.clone()
    moved[:, N_q:] += 1.0  # other rear tokens
    outputs = {}
    for per_frame in (True, False):
        torch.manual_seed(0)
        den = diffusion.LatentVideoDenoiser.from_config(TINY_UNET, TINY_VAE, D, 6, per_frame_context=per_frame)
        cross = [m for m in den.unet.modules() if isinstance(m, Attention) and m.is_cross_attention]
        assert len(den.split_processors) == (len(cross) if per_frame else 0) and len(cross) == 4
        seen = []
        hook = cross[0].register_forward_hook(
            lambda mod, args, kwargs, out: seen.append((args[0], kwargs["encoder_hidden_states"], out)),
            with_kwargs=True)
        with torch.no_grad():
            den(z, t, cond, stride)
            den(z, t, moved, stride)
        hook.remove()
        (x, context, out), (x2, _, out_moved) = seen
        assert torch.equal(x, x2)  # the first cross-attention's input does not depend on the tokens
        outputs[per_frame] = out, out_moved
        # independent reference: attention over all 2 N_q tokens, masked to the frame's own keyframe
        attn = cross[0]
        own = (torch.arange(T) >= (T + 1) // 2).repeat(B)  # (B*T,): 1 = rear
        allowed = (torch.arange(2 * N_q)[None] >= N_q) == own[:, None]  # (B*T, 2 N_q)
        heads = lambda y: y.view(y.shape[0], y.shape[1], attn.heads, -1).transpose(1, 2)
        mask = allowed[:, None, None] if per_frame else None
        ref = F.scaled_dot_product_attention(heads(attn.to_q(x)), heads(attn.to_k(context)),
                                             heads(attn.to_v(context)), attn_mask=mask)
        ref = attn.to_out[0](ref.transpose(1, 2).flatten(2))
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    out, out_moved = (y.view(B, T, *y.shape[1:]) for y in outputs[True])
    assert torch.equal(out[:, :3], out_moved[:, :3])  # frames 0-2 read the head's tokens only
    assert not torch.allclose(out[:, 3:], out_moved[:, 3:])
    out, out_moved = (y.view(B, T, *y.shape[1:]) for y in outputs[False])
    assert not torch.allclose(out[:, :3], out_moved[:, :3])  # every frame reads the rear's tokens
