"""The deep-token bottleneck learns what the decoder needs (a small trained model, probed linearly)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import data
import diffusion
import tokenizer as tok
import train_tokenizer

STEPS = 800
OVERFIT_STEPS = 1000

def draw_frames(n, size=32, seed=0):
    """n still shapes frames (n, 3, size, size) in [-1, 1], drawn as data.generate_shapes draws them."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        color, shape = list(data.COLORS)[rng.integers(len(data.COLORS))], data.SHAPES[rng.integers(len(data.SHAPES))]
        radius = rng.uniform(size * 0.12, size * 0.18)
        track = data.object_track("still", 1, size, radius, 0.0, rng)
        frames.append(data.draw_video(shape, color, track, size, radius)[0])
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1


@pytest.fixture(scope="module")
def trained():
    """A 2-layer Q (8 deep tokens of 32 channels) on a random frozen tiny E, trained STEPS steps through the
    decoder's token map with the per-frame redraw loss (train_tokenizer.Autoencoder's keyframe loss)."""
    torch.manual_seed(0)
    tokenizer = tok.DeepTokenizer(tok.create_clip("nanodicode-tiny"), n_queries=8, dim=32, q_layers=2, q_heads=2)
    token_map = diffusion.TokenMap(32, 16, 8, render=True)
    untrained = {k: v.clone() for k, v in tokenizer.state_dict().items()}
    frames = draw_frames(2000)
    train, held_out = frames[:1000], frames[1000:]
    with torch.no_grad():
        encoder_tokens = tokenizer.encoder(train)  # E is frozen: encode the training frames once
    params = list(tokenizer.query.parameters()) + list(token_map.parameters())
    opt = torch.optim.AdamW(params, lr=2e-3)
    losses = []
    for step in range(STEPS):
        idx = torch.randint(len(train), (32,))
        loss = F.mse_loss(token_map.render(tokenizer.query(encoder_tokens[idx])), train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return tokenizer, untrained, held_out, losses


def test_linear_probe_recovers_color_and_position(trained):
    tokenizer, untrained, held_out, losses = trained
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20])
    color_acc, centroid_err = train_tokenizer.probe_deep_tokens(tokenizer.eval(), held_out)
    assert color_acc >= 0.95 and centroid_err <= 1.5, (color_acc, centroid_err)
    tokenizer.load_state_dict(untrained)  # the same probe on the untrained Q: position is not there yet
    _, centroid_before = train_tokenizer.probe_deep_tokens(tokenizer, held_out)
    assert centroid_before > 3.0, centroid_before


def test_overfit_a_few_clips_beats_the_black_baseline(shapes_dir, monkeypatch):
    """E + Q + VideoUNet on 4 shapes clips: the loss (Eq. 1 + redraw) falls well below its start, and DDIM
    reconstructions from the head/rear deep tokens alone beat an all-black video in PSNR by 3 dB."""
    torch.manual_seed(0)
    cfg = dict(clip_model="nanodicode-tiny", clip_pretrained="", n_queries=8, token_dim=32, q_layers=2, q_heads=2,
               train_encoder=False, denoiser="unet", clip_frames=4, image_size=32, unet_channels=(16, 32),
               map_channels=4, max_stride=1, keyframe_loss_weight=1.0)
    tokenizer, denoiser = tok.build_autoencoder(cfg)
    model = train_tokenizer.Autoencoder(tokenizer, denoiser, diffusion.make_alphas_cumprod(), "v", 1.0)
    clips_set = data.ClipDataset(f"{shapes_dir}/videos.csv", 32, 4, 1, cache=True)
    clips = torch.stack([clips_set[i]["frames"] for i in range(4)])  # (4, 5, 3, 32, 32)
    stride, keep = torch.ones(4, dtype=torch.long), torch.zeros(4, dtype=torch.bool)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)

    @torch.no_grad()
    def fixed_draws_loss():  # the same 8 (timestep, noise) draws each time: a step's own loss swings 0.15-0.7
        losses = []
        for seed in range(8):
            torch.manual_seed(seed)
            losses.append(model(clips, stride, keep).item())
        return np.mean(losses)

    before = fixed_draws_loss()
    torch.manual_seed(0)
    for step in range(OVERFIT_STEPS):
        loss = model(clips, stride, keep)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    after = fixed_draws_loss()
    assert after < 0.3 * before, (before, after)
    model.eval()
    monkeypatch.setattr(train_tokenizer, "cfg_scale", 2.0)  # decode as config/shapes.py does
    uncond = model.condition(torch.zeros(1, 2, 3, 32, 32))
    recon = train_tokenizer.reconstruct(model, clips, stride, uncond, torch.Generator().manual_seed(0))
    metrics = train_tokenizer.reconstruction_metrics(clips, recon)
    assert metrics["psnr"] > metrics["psnr_black"] + 3.0, metrics
