"""evaluate.py: SSIM/PSNR and the Frechet distance against closed forms, the shapes analyser on ground-truth
videos, and CLIPSIM / FVD end to end on randomly initialised stand-in networks."""
import csv
import json
import math
import os

import numpy as np
import pytest
import torch

import data
import evaluate as ev
from diffusion import make_alphas_cumprod

pytestmark = [pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning"),  # the I3D file format is TorchScript
              pytest.mark.usefixtures("one_thread")]



# ----------------------------------------------------------------------------- pixel metrics

def naive_ssim(a, b, L=255.0, size=11, sigma=1.5):
    """SSIM straight from the definition: every valid window, weighted statistics, one channel."""
    g = np.exp(-(np.arange(size) - (size - 1) / 2) ** 2 / (2 * sigma ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2, vals = (0.01 * L) ** 2, (0.03 * L) ** 2, []
    for y in range(a.shape[0] - size + 1):
        for x in range(a.shape[1] - size + 1):
            pa, pb = a[y:y + size, x:x + size], b[y:y + size, x:x + size]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va, vb, cov = (w * (pa - ma) ** 2).sum(), (w * (pb - mb) ** 2).sum(), (w * (pa - ma) * (pb - mb)).sum()
            vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_ssim_closed_forms_and_definition():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2, 20, 17, 3)).astype(np.float64)
    assert ev.ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    a, b = np.full((16, 16, 3), 100.0), np.full((16, 16, 3), 120.0)  # constants: only the luminance term is left
    c1 = (0.01 * 255) ** 2
    assert ev.ssim(a, b) == pytest.approx((2 * 100 * 120 + c1) / (100 ** 2 + 120 ** 2 + c1), rel=1e-12)
    y = np.clip(x + rng.normal(0, 30, x.shape), 0, 255)
    want = np.mean([naive_ssim(x[i, ..., c], y[i, ..., c]) for i in range(2) for c in range(3)])
    assert ev.ssim(x, y) == pytest.approx(want, rel=1e-9)
    assert ev.ssim(x, y) < 0.99 and ev.ssim(x, y, reduce=False).shape == (2,)


def test_psnr_known_value():
    a, b = np.zeros((3, 8, 8, 3)), np.full((3, 8, 8, 3), 10.0)  # MSE 100
    assert ev.psnr(a, b) == pytest.approx(10 * math.log10(255 ** 2 / 100), rel=1e-12)


# ----------------------------------------------------------------------------- Frechet distance

def test_frechet_identical_gaussians_is_zero():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(6, 6))
    s = a @ a.T + 0.1 * np.eye(6)
    assert ev.frechet_distance(np.ones(6), s, np.ones(6), s) == pytest.approx(0.0, abs=1e-9)


def test_frechet_diagonal_closed_form():
    rng = np.random.default_rng(2)
    mu1, mu2, s1, s2 = rng.normal(size=5), rng.normal(size=5), rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
    want = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert ev.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(want, rel=1e-10)


def test_frechet_full_covariance_against_eigenvalues_of_the_product():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(8, 8)), rng.normal(size=(8, 12))
    s1, s2 = a @ a.T, b @ b.T / 12 + 0.01 * np.eye(8)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    # independent route: tr sqrt(s1 s2) = sum of sqrt of the (real, >= 0) eigenvalues of the non-symmetric s1 s2
    eig = np.linalg.eigvals(s1 @ s2)
    want = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(np.clip(eig.real, 0, None)))
    assert ev.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-8)
    root = ev.sqrtm_psd(s1).numpy()
    np.testing.assert_allclose(root @ root, s1, atol=1e-9)


def test_feature_stats_match_numpy():
    f = np.random.default_rng(4).normal(size=(50, 4))
    mu, cov = ev.feature_stats(f)
    np.testing.assert_allclose(mu.numpy(), f.mean(0), atol=1e-12)
    np.testing.assert_allclose(cov.numpy(), np.cov(f, rowvar=False), atol=1e-12)


# ----------------------------------------------------------------------------- shapes analyser

@pytest.fixture(scope="module")
def truth(tmp_path_factory):
    """72 ground-truth shapes videos (all directions, stills included) and their captions."""
    out = str(tmp_path_factory.mktemp("truth"))
    data.generate_shapes(out, num_videos=72, seed=11)
    with open(os.path.join(out, "videos.csv")) as f:
        rows = list(csv.DictReader(f))
    return [data.read_frames(os.path.join(out, r["path"])) for r in rows], [r["caption"] for r in rows], out


def test_prompts_and_parser():
    prompts = ev.shapes_prompts()
    assert len(prompts) == 7 * 3 * 4 + 7 * 3 and len(set(prompts)) == len(prompts)
    parsed = [ev.parse_prompt(p) for p in prompts]
    assert {p["direction"] for p in parsed} == {"left", "right", "up", "down", "still"}
    assert ev.parse_prompt("a magenta triangle moving up") == {"color": "magenta", "shape": "triangle",
                                                               "direction": "up"}
    assert ev.parse_prompt("a purple circle moving up") is None and ev.parse_prompt("a dog running") is None


OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


def test_analyser_scores_ground_truth_perfectly(truth):
    videos, captions, _ = truth
    assert {ev.parse_prompt(c)["direction"] for c in captions} == {"left", "right", "up", "down", "still"}
    scores, rows = ev.score_shapes(videos, captions)
    assert scores["videos"] == 72 and scores["unparsed"] == 0
    for k in ("color", "shape", "direction", "direction_clips", "one_object", "one_object_video", "present", "all"):
        assert scores[k] == 1.0, (k, [r for r in rows if not r.get(k, False)])
    assert all(len(r["got_directions"]) == 4 for r in rows)  # 33 frames: every clip read
    halved, _ = ev.score_shapes([v[::2] for v in videos], captions, clip_frames=4)  # a 4-frame-clip decoder's videos
    assert halved["direction"] == 1.0 and halved["all"] == 1.0


def test_bounce_track_is_the_data_track():
    track = data.object_track("down", 33, 32, 4.5, 0.75, np.random.default_rng(0))
    sim, bounced = ev.bounce_track(track[0], "down", 4.5, (32, 32), 33)
    np.testing.assert_allclose(sim, track, atol=1e-12)
    t = int(np.argmax(bounced))  # one reflection, off the bottom wall: down before it, up after it
    assert bounced.sum() == 1 and (np.diff(track[:t + 1, 1]) > 0).all() and (np.diff(track[t + 1:, 1]) < 0).all()


def caption_axis_turns(video, direction):
    """Whether the object's centroid reverses along the caption's axis (a bounce), read frame by frame."""
    axis = 0 if direction in ("left", "right") else 1
    steps = np.sign(np.diff([data.analyze_frame(f)["centroid"][axis] for f in video]))
    steps = steps[steps != 0]
    return bool((steps != steps[0]).any())


def test_bouncing_ground_truth_scores_direction_right(truth):
    videos, captions, _ = truth
    # turned back by frame 24: its last clip is all after the bounce (every moving fixture video bounces: it
    # travels 24 px, its range is <= 23 px)
    bouncing = [i for i, c in enumerate(captions[:24])
                if "moving" in c and caption_axis_turns(videos[i][:25], c.split()[-1])]
    assert len(bouncing) >= 3
    scores, rows = ev.score_shapes([videos[i] for i in bouncing], [captions[i] for i in bouncing])
    assert scores["direction"] == 1.0 and scores["direction_clips"] == 1.0
    for r in rows:  # a clip after the bounce is scored, and expected the other way
        assert OPPOSITE[r["prompt"].split()[-1]] in r["want_directions"], r
        assert None in r["want_directions"]  # the clip with the bounce is not


def test_wrong_direction_fails(truth):
    videos, captions, _ = truth
    moving = [i for i, c in enumerate(captions) if "moving" in c]
    swapped = [captions[i].replace(captions[i].split()[-1], OPPOSITE[captions[i].split()[-1]]) for i in moving]
    scores, _ = ev.score_shapes([videos[i] for i in moving], swapped)
    assert scores["direction"] == 0.0 and scores["color"] == 1.0 and scores["shape"] == 1.0
    # backwards: the first clip reaches no wall (data.object_track); a whole bouncing video played backwards is a
    # lawful track of its caption again
    backwards = [videos[i][:9][::-1] for i in moving]
    scores, _ = ev.score_shapes(backwards, [captions[i] for i in moving])
    assert scores["direction"] == 0.0 and scores["all"] == 0.0 and scores["present"] == 1.0


def test_present_needs_the_object_in_every_keyframe(truth):
    videos, captions, _ = truth
    i = next(i for i, c in enumerate(captions) if "moving" in c)
    gone, between = videos[i].copy(), videos[i].copy()
    gone[16], between[12] = 0, 0  # the object vanishes in keyframe 2, or in a frame between keyframes
    scores, rows = ev.score_shapes([gone, between], [captions[i]] * 2)
    assert [r["present"] for r in rows] == [False, True] and [r["all"] for r in rows] == [False, False]
    assert all(r["direction"] and r["color"] and r["shape"] for r in rows)  # the rest still reads right
    assert scores["one_object"] == pytest.approx(1 - 1 / 33)


def test_one_object_is_the_fraction_of_frames(truth):
    videos, captions, _ = truth
    video = videos[0].copy()
    x, y = data.analyze_frame(video[5])["centroid"]
    cx, cy = (0 if x > 16 else 29), (0 if y > 16 else 29)  # the corner away from the object
    video[5, cy:cy + 3, cx:cx + 3] = 255  # a second object in one frame of 33
    scores, rows = ev.score_shapes([video], captions[:1])
    assert scores["one_object"] == pytest.approx(1 - 1 / 33) and scores["one_object_video"] == 0.0
    assert rows[0]["present"] and rows[0]["color"] and not rows[0]["all"]
    scores, _ = ev.score_shapes([video, videos[1]], captions[:2])  # the mean over videos
    assert scores["one_object"] == pytest.approx(1 - 1 / 66) and scores["one_object_video"] == 0.5


def test_analyser_detects_wrong_color_direction_shape_and_count(truth):
    videos, captions, _ = truth
    moving = [i for i, c in enumerate(captions) if "moving" in c and "white" not in c][:12]
    swapped = [videos[i][..., ::-1] for i in moving]  # RGB -> BGR: red <-> blue (green, cyan... change or not)
    wrong = [ev.parse_prompt(captions[i])["color"] not in ("green", "magenta") for i in moving]
    scores, rows = ev.score_shapes(swapped, [captions[i] for i in moving])
    assert [not r["color"] for r in rows] == wrong and scores["direction"] == 1.0
    reversed_ = [np.concatenate([videos[i][:9][::-1], videos[i][9:]]) for i in moving]  # first clip backwards
    scores, _ = ev.score_shapes(reversed_, [captions[i] for i in moving])
    assert scores["direction"] == 0.0 and scores["color"] == 1.0
    mismatched = [c.replace("circle", "X").replace("square", "circle").replace("X", "square") for c in captions]
    scores, rows = ev.score_shapes(videos, mismatched)
    assert all(r["shape"] == ("triangle" in c) for r, c in zip(rows, captions))
    two = [np.maximum(v, np.roll(v, (16, 16), axis=(1, 2))) for v in videos[:4]]  # a copy 16 px right, 16 px down
    assert all(ev.analyze_video(v)["one_object"] == 0.0 and not ev.analyze_video(v)["one_object_video"] for v in two)
    assert ev.analyze_video(np.zeros((9, 32, 32, 3), np.uint8))["color"] is None


# ----------------------------------------------------------------------------- CLIPSIM and FVD

class TinyI3D(torch.nn.Module):
    """A stand-in for the I3D file: two 3D convolutions, global average pool -> 16 features."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv3d(3, 8, 3, stride=2)
        self.conv2 = torch.nn.Conv3d(8, 16, 3, stride=2)

    def forward(self, x):
        return torch.relu(self.conv2(torch.relu(self.conv1(x / 127.5 - 1)))).mean((2, 3, 4))


class StyleGANVLike(torch.nn.Module):
    """The StyleGAN-V I3D calling convention: features only with return_features=True."""

    def forward(self, x, rescale: bool = False, resize: bool = False, return_features: bool = False):
        if not (rescale and resize and return_features):
            return torch.zeros(x.shape[0], 3)
        return x.mean((3, 4)).flatten(1)[:, :10]


def test_fvd_with_a_scripted_stand_in(truth, tmp_path):
    videos = truth[0]
    path = str(tmp_path / "i3d.pt")
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(TinyI3D()), path)
    model = ev.load_i3d(path)
    assert ev.fvd(videos[:20], videos[:20], model) == pytest.approx(0.0, abs=1e-6)
    noise = [np.random.default_rng(i).integers(0, 256, v.shape, dtype=np.uint8) for i, v in enumerate(videos[20:40])]
    far, near = ev.fvd(videos[:20], noise, model), ev.fvd(videos[:20], videos[20:40], model)
    assert near < far and math.isfinite(far)
    torch.jit.save(torch.jit.script(StyleGANVLike()), str(tmp_path / "sg.pt"))
    assert ev.video_features(ev.load_i3d(str(tmp_path / "sg.pt")), videos[:2]).shape == (2, 10)
    with pytest.raises(ValueError, match="first 16 frames"):
        ev.video_features(model, [videos[0][:9]])


def test_clipsim_is_the_mean_frame_text_cosine(truth):
    model, tokenize = ev.load_clip("nanodicode-tiny")
    videos, captions = [v[:5] for v in truth[0][:3]], truth[1][:3]
    got = ev.clipsim(videos, captions, model, tokenize)
    import tokenizer as tok
    mean, std = torch.tensor(tok.CLIP_MEAN), torch.tensor(tok.CLIP_STD)
    want = []
    with torch.no_grad():
        for v, c in zip(videos, captions):  # 32 px frames: the tiny CLIP's own size, no resize
            x = (torch.from_numpy(v).permute(0, 3, 1, 2).float() / 255 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
            img = torch.nn.functional.normalize(model.encode_image(x), dim=-1)
            txt = torch.nn.functional.normalize(model.encode_text(tokenize([c])), dim=-1)
            want.append((img @ txt.T).mean().item())
    assert got == pytest.approx(float(np.mean(want)), abs=1e-5)


def test_command_line_end_to_end(truth, tmp_path):
    """evaluate.py's main on a frames.npz (as sample.py writes it) against a real manifest: analyser, CLIPSIM, FVD
    (demo.py's evaluate stage runs it as a command)."""
    videos, captions, out = truth
    np.savez_compressed(tmp_path / "frames.npz", frames=np.stack([v[:17] for v in videos[:16]]),
                        prompts=np.array(captions[:16]), clip_frames=8, fps=8.0)
    import tokenizer as tok
    torch.manual_seed(0)
    torch.save(tok.create_clip("nanodicode-tiny").state_dict(), tmp_path / "clip.pt")  # a "weights file"
    torch.jit.save(torch.jit.script(TinyI3D()), str(tmp_path / "i3d.pt"))
    ev.main(["--samples", str(tmp_path / "frames.npz"), "--real", os.path.join(out, "videos.csv"), "--max_real", "24",
             "--clip_model", "nanodicode-tiny", "--clip_pretrained", str(tmp_path / "clip.pt"), "--i3d",
             str(tmp_path / "i3d.pt"), "--out", str(tmp_path / "m.json")])
    m = json.load(open(tmp_path / "m.json"))
    assert m["shapes_all"] == 1.0 and m["real_shapes_all"] == 1.0 and m["shapes_videos"] == 16
    assert all(math.isfinite(m[k]) for k in ("clipsim", "clipsim_real", "fvd")) and -1 <= m["clipsim"] <= 1
    assert m["fvd_real_videos"] == 24
    # the real videos are read as the samples are: 32 px, 8 fps, 17 frames (not whole, at full size)
    real, _, _ = ev.load_videos(os.path.join(out, "videos.csv"), 2, size=16, fps=4, num_frames=5)
    assert [v.shape for v in real] == [(5, 16, 16, 3)] * 2
    whole = data.read_frames(data.read_manifest(os.path.join(out, "videos.csv"))[0]["path"])
    assert np.abs(real[0][1].astype(int) - ev.load_videos(os.path.join(out, "videos.csv"), 1, size=16)[0][0][2]).max() == 0
    assert whole.shape == (33, 32, 32, 3)
    with pytest.raises(SystemExit, match=r"^error: .*nope\.npz"):  # a user mistake: one line
        ev.main(["--samples", str(tmp_path / "nope.npz")])


def test_tokenizer_metrics_on_a_perfect_and_a_blind_decoder(truth):
    """Reconstruction metrics see the decoder's output: a decoder that returns the truth scores high."""
    clips = ev.held_out_clips(os.path.join(truth[2], "videos.csv"), 32, 4, 2, 0.3, 4)
    assert clips.shape[1:] == (5, 3, 32, 32) and 1 <= len(clips) <= 4

    class Tok(torch.nn.Module):
        def encode(self, frames):  # (..., 3, H, W) -> tokens that are the frames themselves
            return frames.flatten(-3)[..., None, :]

    a0 = make_alphas_cumprod()[0].item()

    class Oracle(torch.nn.Module):
        """Draws the cross-fade of the two frames in the tokens (or black): one "trailing" DDIM step starts at
        a_t = 0, where x0 = -v and eps = x_t, and ends at sqrt(a0) x0 + sqrt(1 - a0) eps: v is chosen so that
        this lands exactly on the target."""

        def __init__(self, blind=False):
            super().__init__()
            self.w, self.blind = torch.nn.Parameter(torch.zeros(1)), blind

        def forward(self, x_t, t, cond, stride):
            head, rear = cond[:, 0].view(-1, 3, 32, 32), cond[:, 1].view(-1, 3, 32, 32)
            alpha = torch.linspace(0, 1, x_t.shape[1]).view(1, -1, 1, 1, 1)
            target = torch.zeros_like(x_t) - 1 if self.blind else (1 - alpha) * head[:, None] + alpha * rear[:, None]
            return -(target - (1 - a0) ** 0.5 * x_t) / a0 ** 0.5

    cfg = dict(image_size=32, clip_frames=4, zero_terminal_snr=True, prediction_type="v", token_dim=3 * 32 * 32)
    kw = dict(num_steps=1, timestep_spacing="trailing", cfg_scale=1.0, eta=0.0, progress=False)
    good = ev.tokenizer_metrics(Tok(), Oracle(), cfg, clips, **kw)
    bad = ev.tokenizer_metrics(Tok(), Oracle(blind=True), cfg, clips, **kw)
    assert good["recon_psnr"] == pytest.approx(good["recon_psnr_crossfade"], abs=0.2)  # the cross-fade, reproduced
    assert good["recon_ssim"] == pytest.approx(good["recon_ssim_crossfade"], abs=0.01)
    assert bad["recon_psnr"] < good["recon_psnr"] - 3 and bad["recon_ssim"] < good["recon_ssim"]
    assert good["recon_psnr_moving"] == pytest.approx(good["recon_psnr_crossfade_moving"], abs=0.2)
    truth_u8 = data.to_uint8(clips)
    moving = [i for i in range(len(clips)) if (truth_u8[i] != truth_u8[i, :1]).any()]  # PSNR of these clips only
    by_hand = ev.psnr(data.to_uint8(ev.crossfade(clips[moving])), truth_u8[moving, 1:-1])
    assert good["recon_psnr_crossfade_moving"] == pytest.approx(by_hand, abs=1e-9)


def test_recon_analysis_reads_color_place_and_object_count(truth):
    clips = np.stack([v[:9] for v in truth[0][:6]])  # (6, 9, 32, 32, 3) uint8
    same = ev.recon_analysis(clips, clips)
    assert same == {"color": 1.0, "centroid_err": 0.0, "one_object": 1.0, "shape": 1.0, "direction": 1.0}
    shifted = np.zeros_like(clips)
    shifted[:, :, 3:] = clips[:, :, :-3]  # everything 3 px lower
    moved = ev.recon_analysis(clips, shifted)
    assert moved["color"] == 1.0 and 2.0 < moved["centroid_err"] <= 3.01
    black = ev.recon_analysis(clips, np.zeros_like(clips))
    assert black["color"] == 0.0 and black["one_object"] == 0.0 and math.isnan(black["centroid_err"])
    two = clips.copy()
    two[:, 4, :3, :3] = 255  # a second object in the middle frame of every clip
    assert ev.recon_analysis(clips, two)["one_object"] == pytest.approx(8 / 9)


def test_recon_analysis_reads_shape_and_in_between_direction(truth):
    videos, captions, _ = truth
    clips = np.stack([v[:9] for v in videos])  # (72, 9, 32, 32, 3)
    moving = np.array(["still" not in c for c in captions])
    reversed_ = clips.copy()
    reversed_[:, 1:-1] = clips[:, 1:-1][:, ::-1]  # the in-between frames played backwards, the keyframes kept
    scores = ev.recon_analysis(clips[moving], reversed_[moving])
    assert scores["direction"] == 0.0 and scores["color"] == 1.0 and scores["shape"] == 1.0, scores
    frozen = clips.copy()
    frozen[:, 1:-1] = clips[:, :1]  # the head frame held: no motion in between
    assert ev.recon_analysis(clips[moving], frozen[moving])["direction"] == 0.0
    assert ev.recon_analysis(clips[~moving], frozen[~moving])["direction"] == 1.0  # still stays still
    squares = np.zeros_like(clips[:8])  # every clip drawn as a 10 px square of its own color and place
    for i, clip in enumerate(clips[:8]):
        for t, frame in enumerate(clip):
            info = data.analyze_frame(frame)
            x, y = (int(round(c)) for c in info["centroid"])
            squares[i, t, max(y - 5, 0):y + 5, max(x - 5, 0):x + 5] = data.COLORS[info["color"]]
    is_square = np.array(["square" in c for c in captions[:8]])
    assert ev.recon_analysis(clips[:8], squares)["shape"] == pytest.approx(is_square.mean())


def test_reconstruction_settings_default_to_the_tokenizer_checkpoint(truth, tmp_path, monkeypatch, capsys):
    """--ddim_steps, --cfg_scale and --guidance_rescale left unset are the ones saved with the tokenizer; a flag
    given wins (0 included)."""
    import tokenizer as tok
    import train_tokenizer
    from configurator import apply_config
    tiny = ["--clip_pretrain_iters=0", "--n_queries=4", "--token_dim=32", "--q_layers=1", "--q_heads=2",
            "--unet_channels=(16, 32)", "--map_channels=4", "--clip_frames=4", "--max_stride=3", "--val_fraction=0.3",
            "--ddim_steps=3", "--cfg_scale=2.5", "--guidance_rescale=0.2"]
    cfg = apply_config({k: v for k, v in vars(train_tokenizer).items() if not k.startswith("_")}, tiny)
    torch.manual_seed(0)
    tokenizer, denoiser = tok.build_autoencoder(cfg)
    torch.save({"tokenizer": tokenizer.state_dict(), "denoiser": denoiser.state_dict(), "iter_num": 1, "config": cfg},
               tmp_path / "tok.pt")
    seen = []  # what run() hands the decoder, instead of decoding
    monkeypatch.setattr(ev, "tokenizer_metrics", lambda *args, **kw: seen.append(kw) or {"recon_psnr": 0.0})
    base = ["--tokenizer_ckpt", str(tmp_path / "tok.pt"), "--recon_manifest", os.path.join(truth[2], "videos.csv"),
            "--recon_clips", "2"]
    ev.run(ev.parse_args(base))
    ev.run(ev.parse_args(base + ["--ddim_steps", "9", "--guidance_rescale", "0"]))
    keys = ("num_steps", "cfg_scale", "guidance_rescale")
    assert [tuple(kw[k] for k in keys) for kw in seen] == [(3, 2.5, 0.2), (9, 2.5, 0.0)]
    out = capsys.readouterr().out
    assert "decoder: DDIM 3 steps (checkpoint), CFG 2.5 (checkpoint), rescale 0.2 (checkpoint)" in out
    assert "decoder: DDIM 9 steps (flag), CFG 2.5 (checkpoint), rescale 0 (flag)" in out


def test_scores_by_clip_position(truth):
    """direction_by_clip: the share of videos whose clip i reads its expected direction (for long videos, quality
    along the video); clips not scored (None) count for neither side."""
    assert ev.by_position([[True, False, None], [True, True], [None]]) == [1.0, 0.5, None]
    assert ev.by_position([]) == []
    videos, captions, _ = truth
    scores, rows = ev.score_shapes(videos[:8], captions[:8])
    assert len(scores["direction_by_clip"]) == 4 and all(x in (None, 1.0) for x in scores["direction_by_clip"])
    flipped = [v[:, :, ::-1] for v in videos[:8]]  # mirrored: left <-> right, so moving ones read wrong
    wrong = ev.score_shapes(flipped, captions[:8])[0]["direction_by_clip"]
    moving = [c for c in captions[:8] if "left" in c or "right" in c]
    assert moving and any(x is not None and x < 1.0 for x in wrong)
