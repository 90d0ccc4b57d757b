"""The deep-token bottleneck learns what the decoder needs (a small trained model, probed linearly)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import data
import diffusion
import tokenizer as tok
import train_tokenizer

STEPS = 500
OVERFIT_STEPS = 1000  # (500: 2 of 5 seeds miss the clips' colors, NOTES.md stop 30)
# Over seeds 0-4 (2 threads; NOTES.md, stop 30; 1 thread gives the same to 3 decimals): trained color 1.0, centroid
# 0.58-0.68 px, direction 0.995-1.0; untrained centroid 2.02-2.20 px, direction 0.805-0.875 (objects of radius
# 0.20-0.26 frame: a random Q already reads some position). Each bound keeps a margin of at least the seeds' spread
# from the worst.
PROBE_BOUNDS = dict(color=0.97, centroid=0.9, direction=0.95, untrained_centroid=1.6, untrained_direction=0.95)
# Over seeds 0-4 (1 thread; NOTES.md): loss ratio 0.038-0.057; PSNR 3.98-5.69 dB above all-black (stop 21's smaller
# objects: 0.82-3.23 dB, reconstructions' color right in 4 of 4 clips, centroid error 0.22-1.26 px).
OVERFIT_BOUNDS = dict(loss_ratio=0.15, color=0.75, centroid=2.5, psnr_over_black=2.0)

def draw_keyframes(n, size=32, interval=8, seed=0):
    """n shapes videos' first two keyframes, `interval` frames apart, drawn as data.generate_shapes draws
    them: (n, 2, 3, size, size) in [-1, 1], and their captions."""
    rng = np.random.default_rng(seed)
    frames, captions = [], []
    for _ in range(n):
        color, shape = list(data.COLORS)[rng.integers(len(data.COLORS))], data.SHAPES[rng.integers(len(data.SHAPES))]
        direction = list(data.DIRECTIONS)[rng.integers(len(data.DIRECTIONS))]
        radius = rng.uniform(size * data.RADIUS[0], size * data.RADIUS[1])
        track = data.object_track(direction, interval + 1, size, radius, 0.75, rng)[[0, interval]]
        frames.append(data.draw_video(shape, color, track, size, radius))
        captions.append(data.caption_for(color, shape, direction))
    return torch.from_numpy(np.stack(frames)).permute(0, 1, 4, 2, 3).float() / 127.5 - 1, captions


def train_probe_model(seed, steps=STEPS):
    """A 2-layer Q (8 deep tokens of 32 channels) on a random frozen tiny E, trained `steps` steps through the
    decoder's token map with the per-frame redraw loss (train_tokenizer.Autoencoder's keyframe loss), on the
    keyframes of 1,000 videos; 1,000 other videos held out. Returns (tokenizer, untrained state, held-out
    keyframes, their captions, losses)."""
    torch.manual_seed(seed)
    tokenizer = tok.DeepTokenizer(tok.create_clip("nanodicode-tiny"), n_queries=8, dim=32, q_layers=2, q_heads=2)
    token_map = diffusion.TokenMap(32, 16, 8, render=True)
    untrained = {k: v.clone() for k, v in tokenizer.state_dict().items()}
    keyframes, captions = draw_keyframes(2000, seed=seed)
    train = keyframes[:1000].flatten(0, 1)
    with torch.no_grad():
        encoder_tokens = tokenizer.encoder(train)  # E is frozen: encode the training frames once
    params = list(tokenizer.query.parameters()) + list(token_map.parameters())
    opt = torch.optim.AdamW(params, lr=2e-3)
    losses = []
    for step in range(steps):
        idx = torch.randint(len(train), (32,))
        loss = F.mse_loss(token_map.render(tokenizer.query(encoder_tokens[idx])), train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return tokenizer.eval(), untrained, keyframes[1000:], captions[1000:], losses


@pytest.fixture(scope="module")
def trained():
    return train_probe_model(seed=0)


def test_linear_probe_recovers_color_position_and_motion(trained):
    """Bounds: PROBE_BOUNDS, set from the spread over seeds (see its comment)."""
    tokenizer, untrained, held_out, captions, losses = trained
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20])
    probe = train_tokenizer.probe_deep_tokens(tokenizer, held_out, captions)
    assert probe["probe_color"] >= PROBE_BOUNDS["color"], probe
    assert probe["probe_centroid"] <= PROBE_BOUNDS["centroid"], probe
    assert probe["probe_direction"] >= PROBE_BOUNDS["direction"], probe
    tokenizer.load_state_dict(untrained)  # the same probe on the untrained Q: position is not there yet
    before = train_tokenizer.probe_deep_tokens(tokenizer, held_out, captions)
    assert before["probe_centroid"] > PROBE_BOUNDS["untrained_centroid"], before
    assert before["probe_direction"] < PROBE_BOUNDS["untrained_direction"], before


def overfit_clips(clips, seed, steps=OVERFIT_STEPS):
    """E + Q + VideoUNet trained `steps` steps on a few clips (N, 5, 3, 32, 32). Returns the loss (Eq. 1 + redraw)
    over 8 fixed (timestep, noise) draws before and after, and the metrics of DDIM reconstructions from the
    head/rear deep tokens alone, decoded as config/shapes.py does (CFG 2.0)."""
    torch.manual_seed(seed)
    cfg = dict(clip_model="nanodicode-tiny", clip_pretrained="", n_queries=8, token_dim=32, q_layers=2, q_heads=2,
               train_encoder=False, denoiser="unet", clip_frames=4, image_size=32, unet_channels=(16, 32),
               map_channels=4, max_stride=1, keyframe_loss_weight=1.0)
    tokenizer, denoiser = tok.build_autoencoder(cfg)
    model = train_tokenizer.Autoencoder(tokenizer, denoiser, diffusion.make_alphas_cumprod(), "v", 1.0)
    stride, keep = torch.ones(len(clips), dtype=torch.long), torch.zeros(len(clips), dtype=torch.bool)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)

    @torch.no_grad()
    def fixed_draws_loss():  # the same 8 (timestep, noise) draws each time: a step's own loss swings 0.15-0.7
        losses = []
        for draw in range(8):
            torch.manual_seed(draw)
            losses.append(model(clips, stride, keep).item())
        return np.mean(losses)

    before = fixed_draws_loss()
    torch.manual_seed(seed)
    for step in range(steps):
        loss = model(clips, stride, keep)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    after = fixed_draws_loss()
    model.eval()
    decoder_cfg = cfg | dict(zero_terminal_snr=True, prediction_type="v")
    with torch.no_grad():  # as train_tokenizer.py's evals decode, with config/shapes.py's guidance
        recon = tok.reconstruct_clips(tokenizer, denoiser, clips, decoder_cfg, num_steps=20, cfg_scale=2.0,
                                      guidance_rescale=0.7, seed=seed, progress=False)  # as the bounds were measured
    return before, after, train_tokenizer.reconstruction_metrics(clips, recon)


def test_overfit_a_few_clips_redraws_them(shapes_dir):
    """On 4 shapes clips the loss falls well below its start, and reconstructions from the deep tokens show the
    clips' colors at their places, above an all-black video in PSNR. Bounds: OVERFIT_BOUNDS, set from the
    spread over seeds (see its comment)."""
    clips_set = data.ClipDataset(f"{shapes_dir}/videos.csv", 32, 4, 1, cache=True)
    clips = torch.stack([clips_set[i]["frames"] for i in range(4)])  # (4, 5, 3, 32, 32)
    before, after, metrics = overfit_clips(clips, seed=0)
    assert after < OVERFIT_BOUNDS["loss_ratio"] * before, (before, after)
    assert metrics["color_acc"] >= OVERFIT_BOUNDS["color"], metrics
    assert metrics["centroid_err"] <= OVERFIT_BOUNDS["centroid"], metrics
    assert metrics["psnr"] > metrics["psnr_black"] + OVERFIT_BOUNDS["psnr_over_black"], metrics


if __name__ == "__main__":  # the spread behind the bounds: python -m tests.test_tokenizer_learns 0 1 2 3 4
    import json
    import sys
    import tempfile
    shapes = tempfile.mkdtemp()
    data.generate_shapes(shapes, num_videos=24, size=32, num_frames=33, seed=0)
    clips_set = data.ClipDataset(f"{shapes}/videos.csv", 32, 4, 1, cache=True)
    few_clips = torch.stack([clips_set[i]["frames"] for i in range(4)])
    for seed in map(int, sys.argv[1:]):
        probed, untrained, held_out, captions, _ = train_probe_model(seed)
        row = {"seed": seed, "threads": torch.get_num_threads()}
        row |= train_tokenizer.probe_deep_tokens(probed, held_out, captions)
        probed.load_state_dict(untrained)
        row |= {f"untrained_{k}": v for k, v in train_tokenizer.probe_deep_tokens(probed, held_out, captions).items()}
        before, after, metrics = overfit_clips(few_clips, seed)
        row |= {"overfit_loss_ratio": after / before, "overfit_psnr_over_black": metrics["psnr"] - metrics["psnr_black"],
                "overfit_color": metrics["color_acc"], "overfit_centroid": metrics["centroid_err"]}
        print(json.dumps(row), flush=True)
