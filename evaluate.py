"""
Evaluate nanoDiCoDe: tokenizer reconstruction (PSNR, SSIM), text-to-video accuracy on the
shapes set (a deterministic frame analyser), CLIPSIM and FVD (paper Sec. 4.2).

    python evaluate.py --samples out/samples/frames.npz                          # shapes accuracy
    python evaluate.py --tokenizer_ckpt out/shapes/tokenizer/ckpt.pt --recon_manifest data/shapes/videos.csv
    python evaluate.py --samples out/samples/frames.npz --real data/shapes/videos.csv \\
        --clip_model ViT-B-32 --clip_pretrained /path/open_clip_weights.bin --i3d /path/i3d_torchscript.pt
    ... --out metrics.json

--samples is sample.py's frames.npz (videos at their true size) or any `path,caption`
manifest of videos. CLIPSIM is the mean cosine between every frame's CLIP image embedding
and its prompt's text embedding (open_clip; any model name or config in config/open_clip/
with a local weights file). FVD is the Frechet distance between Gaussians fitted to video
features of the real and the generated videos, from an I3D TorchScript file (the common
one, StyleGAN-V's i3d_torchscript.pt, is called with rescale/resize/return_features). No
weights can be downloaded here: real CLIPSIM and FVD numbers need the real weights; the
tests run both on randomly initialised stand-ins, which proves the plumbing only.
"""
import argparse
import collections
import json
import os
import re
import sys

import numpy as np
import torch
import torch.nn.functional as F

import data
import tokenizer as tok

# -----------------------------------------------------------------------------
# pixel metrics


def psnr(a, b, data_range=255.0):
    """Mean over the first dim (images, or clips) of 10 log10(range^2 / MSE over the rest), capped at 100 dB
    (identical items), as train_tokenizer.py logs it. a, b: arrays of the same shape."""
    a, b = torch.as_tensor(np.asarray(a), dtype=torch.float64), torch.as_tensor(np.asarray(b), dtype=torch.float64)
    mse = (a - b).square().flatten(1).mean(1)
    return (10 * torch.log10(data_range ** 2 / mse.clamp_min(data_range ** 2 * 1e-10))).mean().item()


def gaussian_window(size=11, sigma=1.5):
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    w = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return w / w.sum()


def ssim(a, b, data_range=255.0, window_size=11, sigma=1.5, k1=0.01, k2=0.03, reduce=True):
    """SSIM (Wang et al. 2004) of images (..., H, W, C): Gaussian window 11, sigma 1.5, C1 = (0.01 L)^2,
    C2 = (0.03 L)^2, local statistics over the window's 'valid' positions (as the reference MATLAB
    code), averaged over positions and channels; then the mean over images (reduce) or per image."""
    a, b = (torch.as_tensor(np.asarray(x), dtype=torch.float64) for x in (a, b))
    shape = a.shape
    a, b = (x.reshape(-1, *shape[-3:]).permute(0, 3, 1, 2) for x in (a, b))  # (N, C, H, W)
    if min(shape[-3:-1]) < window_size:
        raise ValueError(f"SSIM needs images of at least {window_size} px, got {tuple(shape[-3:-1])}")
    C = a.shape[1]
    w = gaussian_window(window_size, sigma)

    def filt(x):  # separable Gaussian filter per channel, valid positions only
        x = F.conv2d(x, w.view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)
        return F.conv2d(x, w.view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)

    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mu_a, mu_b = filt(a), filt(b)
    var_a, var_b = filt(a * a) - mu_a ** 2, filt(b * b) - mu_b ** 2
    cov = filt(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    per_image = s.flatten(1).mean(1)
    return per_image.mean().item() if reduce else per_image.view(shape[:-3]).numpy()


# -----------------------------------------------------------------------------
# Frechet distance (FID / FVD)


def sqrtm_psd(a):
    """Square root of a symmetric positive semi-definite matrix by eigendecomposition (negative
    eigenvalues from round-off clamped to 0)."""
    a = torch.as_tensor(a, dtype=torch.float64)
    vals, vecs = torch.linalg.eigh((a + a.T) / 2)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """d^2 between N(mu1, sigma1) and N(mu2, sigma2):
        |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2)),
    with tr((s1 s2)^(1/2)) = tr((s1^(1/2) s2 s1^(1/2))^(1/2)): the same eigenvalues, but a
    symmetric PSD matrix, so both roots are eigendecompositions (no scipy.linalg.sqrtm)."""
    mu1, mu2, sigma1, sigma2 = (torch.as_tensor(np.asarray(x), dtype=torch.float64) for x in (mu1, mu2, sigma1, sigma2))
    root1 = sqrtm_psd(sigma1)
    cross = sqrtm_psd(root1 @ sigma2 @ root1)
    d2 = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * cross.trace()
    return max(d2.item(), 0.0)


def feature_stats(features):
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), float64."""
    f = torch.as_tensor(np.asarray(features), dtype=torch.float64)
    if len(f) < 2:
        raise ValueError(f"feature statistics need at least 2 samples, got {len(f)}")
    mu = f.mean(0)
    centred = f - mu
    return mu, centred.T @ centred / (len(f) - 1)


# -----------------------------------------------------------------------------
# the shapes analyser: what a generated shapes video shows, read off its pixels

TRIANGLE_MAX_FILL = 0.655  # median fill per video on ground truth: triangle 0.50-0.64, circle 0.67-0.84,
SQUARE_MIN_FILL = 0.905  # square 0.97-1.0 (data.analyze_frame's fill = object px / bounding-box px)
STILL_MAX_PX = 2.0  # objects move 0.75 px/frame: 6 px over an 8-frame keyframe interval
SPEED_PX = 0.75  # data.generate_shapes' speed: px per frame of the source videos
OBJECT_THRESHOLD = 96  # data.analyze_frame's: object pixels have a channel above it
AREA_PER_R2 = {"circle": np.pi, "square": 1.7 ** 2, "triangle": 2.0}  # data.shape_mask's area / radius^2
CENTROID_BELOW = {"circle": 0.0, "square": 0.0, "triangle": 1 / 3}  # centroid - centre in y, in radii (wide base)
PROMPT_RE = re.compile(r"^an? (\w+) (\w+) (?:moving (\w+)|standing (still))$")


def shapes_prompts(still=True):
    """Every shapes caption: 7 colors x 3 shapes x 4 directions moving, plus the 21 still ones."""
    moving = [d for d in data.DIRECTIONS if d != "still"]
    prompts = [data.caption_for(c, s, d) for c in data.COLORS for s in data.SHAPES for d in moving]
    return prompts + ([data.caption_for(c, s, "still") for c in data.COLORS for s in data.SHAPES] if still else [])


def parse_prompt(prompt):
    """'a red circle moving right' -> {'color': 'red', 'shape': 'circle', 'direction': 'right'}; None if not a
    shapes caption."""
    m = PROMPT_RE.match(prompt.strip().lower())
    if not m or m.group(1) not in data.COLORS or m.group(2) not in data.SHAPES:
        return None
    direction = m.group(3) or m.group(4)
    return {"color": m.group(1), "shape": m.group(2), "direction": direction} if direction in data.DIRECTIONS else None


def direction_name(dx, dy, still_px=STILL_MAX_PX):
    """A displacement in pixels -> 'still' below still_px, else the sign of the dominant axis (image y points down)."""
    if max(abs(dx), abs(dy)) < still_px:
        return "still"
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def line_direction(track, span, still_px=STILL_MAX_PX):
    """A least-squares line through centroids [(t, (x, y))] -> (direction (`direction_name`), (dx, dy) over
    `span` frames); (None, None) under 2 points."""
    if len(track) < 2:
        return None, None
    t = np.array([p[0] for p in track], dtype=np.float64)
    xy = np.array([p[1] for p in track], dtype=np.float64)  # (n, 2)
    slope = ((t - t.mean())[:, None] * (xy - xy.mean(0))).sum(0) / np.square(t - t.mean()).sum()
    dx, dy = (float(v) for v in slope * span)
    return direction_name(dx, dy, still_px), (dx, dy)


def analyze_video(frames, first_clip_frames=9, still_px=STILL_MAX_PX):
    """uint8 frames (F, H, W, 3) -> {'color', 'shape', 'fill', 'direction', 'displacement', 'one_object',
    'one_object_video', 'objects', 'centroids', 'area'}.

    color: the majority of the frames' nearest palette colors; shape: from the median fill ratio;
    direction: a least-squares line through the object's centroid over the first clip (the first
    `first_clip_frames` frames), its displacement over the clip (`line_direction`); one_object: the fraction
    of frames holding exactly one object (one_object_video: all of them); objects, centroids: per frame
    (centroid None where no object); area: object pixels in frame 0. Attributes are None when no object is seen.
    """
    infos = [data.analyze_frame(f) for f in frames]
    seen = [i for i in infos if i["num_objects"] > 0]
    single = [i["num_objects"] == 1 for i in infos]
    out = {"one_object": float(np.mean(single)) if infos else 0.0, "one_object_video": bool(infos) and all(single),
           "objects": [i["num_objects"] for i in infos], "centroids": [i["centroid"] for i in infos],
           "area": int((frames[0].max(axis=-1) > OBJECT_THRESHOLD).sum()) if len(frames) else 0,
           "color": None, "shape": None, "direction": None, "fill": None, "displacement": None}
    if not seen:
        return out
    out["color"] = collections.Counter(i["color"] for i in seen).most_common(1)[0][0]
    fill = float(np.median([i["fill"] for i in seen]))
    out["fill"] = fill
    out["shape"] = "triangle" if fill < TRIANGLE_MAX_FILL else "square" if fill > SQUARE_MIN_FILL else "circle"
    track = [(t, c) for t, c in enumerate(out["centroids"][:first_clip_frames]) if c is not None]
    span = min(first_clip_frames, len(infos)) - 1
    out["direction"], out["displacement"] = line_direction(track, span, still_px)
    return out


def clip_directions(centroids, clip_frames=8, still_px=STILL_MAX_PX):
    """The direction of each whole clip (frames k clip_frames .. (k + 1) clip_frames) of a video from its
    per-frame centroids (None where no object): a line through the centroids seen in it (`line_direction`)."""
    out = []
    for k in range((len(centroids) - 1) // clip_frames):
        ts = range(k * clip_frames, (k + 1) * clip_frames + 1)
        out.append(line_direction([(t, centroids[t]) for t in ts if centroids[t] is not None], clip_frames,
                                  still_px)[0])
    return out


def bounce_track(start, direction, radius, size, num_frames, speed=SPEED_PX):
    """Centres (num_frames, 2) of an object leaving `start` (x, y) in `direction` at `speed` px/frame and
    reflecting off the walls as data.object_track does, and whether it reflected on the step after each frame
    (num_frames,). size: (width, height)."""
    lo, hi = radius + 0.5, np.asarray(size, dtype=np.float64) - radius - 0.5
    pos = np.clip(np.asarray(start, dtype=np.float64), lo, hi)  # a misread start beyond a wall would bounce forever
    vel = np.array(data.DIRECTIONS[direction], dtype=np.float64) * speed
    track, bounced = np.empty((num_frames, 2)), np.zeros(num_frames, dtype=bool)
    for i in range(num_frames):
        track[i] = pos
        pos = pos + vel
        over, under = pos > hi, pos < lo
        pos = np.where(over, 2 * hi - pos, np.where(under, 2 * lo - pos, pos))
        vel = np.where(over | under, -vel, vel)
        bounced[i] = (over | under).any()
    return track, bounced


def expected_directions(direction, got, size, num_frames, clip_frames=8, speed=SPEED_PX, still_px=STILL_MAX_PX):
    """What each whole clip should show for a caption's direction, None where ambiguous. A still caption: 'still'
    throughout. A moving one: the caption's direction in the first clip; later clips the direction
    (`line_direction`) of the track `bounce_track` simulates from the object seen in frame 0 (`analyze_video`'s
    `got`), None where it bounces inside the clip or frame 0 holds no object."""
    num_clips = max((num_frames - 1) // clip_frames, 0)
    if direction == "still":
        return ["still"] * num_clips
    # the first clip whatever the walls: ground truth reaches no wall in its first clip (data.object_track); an
    # object that turns at once never shows its caption's motion
    out = [direction]
    if got["shape"] is None or got["centroids"][0] is None:
        return (out + [None] * num_clips)[:num_clips]
    # the radius from the object's pixel area: ~50-100 px, so a few % off, where a bounding box is off by up to 1 px
    radius = float(np.sqrt(got["area"] / AREA_PER_R2[got["shape"]]))
    x, y = got["centroids"][0]
    start = (x, y - CENTROID_BELOW[got["shape"]] * radius)  # walls hold back the shape's centre, not its centroid
    track, bounced = bounce_track(start, direction, radius, size, num_frames, speed)
    for k in range(1, num_clips):
        ts = range(k * clip_frames, (k + 1) * clip_frames + 1)
        if bounced[ts[0]:ts[-1]].any():  # reflected on a step inside the clip: either leg may dominate
            out.append(None)
        else:
            out.append(line_direction([(t, track[t]) for t in ts], clip_frames, still_px)[0])
    return out[:num_clips]


def score_shapes(videos, prompts, clip_frames=8, still_px=STILL_MAX_PX, keyframe_interval=8):
    """Per-attribute accuracy of videos (F, H, W, 3) against their shapes prompts, every frame read.

    clip_frames: video frames between keyframes; keyframe_interval: source frames between keyframes (the
    object moves SPEED_PX px per source frame). Per video: color, shape (`analyze_video`); one_object: the
    fraction of frames with exactly one object, one_object_video: all of them; present: an object in every
    keyframe; direction: every clip that `expected_directions` scores reads its expected direction, at least one
    scored. Returns ({'color', 'shape', 'direction', 'direction_clips' (scored clips right, over all videos),
    'one_object', 'one_object_video', 'present', 'all', 'videos', 'unparsed'}, per-video rows); 'all' = color,
    shape, direction, one_object_video and present right. Prompts that are not shapes captions are skipped and
    counted."""
    rows, unparsed, clips_right = [], 0, []
    speed = SPEED_PX * keyframe_interval / clip_frames  # px per video frame: a decoder's clip may stride frames
    for video, prompt in zip(videos, prompts):
        want = parse_prompt(prompt)
        if want is None:
            unparsed += 1
            continue
        video = np.asarray(video)
        got = analyze_video(video, clip_frames + 1, still_px)
        seen = clip_directions(got["centroids"], clip_frames, still_px)
        expected = expected_directions(want["direction"], got, (video.shape[2], video.shape[1]), len(video),
                                       clip_frames, speed, still_px)
        right = [s == e for s, e in zip(seen, expected) if e is not None]
        clips_right += right
        row = {"prompt": prompt, "got_color": got["color"], "got_shape": got["shape"], "got_directions": seen,
               "want_directions": expected}
        for k in ("color", "shape"):
            row[k] = got[k] == want[k]
        row["direction"] = bool(right) and all(right)
        row["one_object"], row["one_object_video"] = got["one_object"], got["one_object_video"]
        row["present"] = len(video) > 0 and all(got["objects"][t] >= 1 for t in range(0, len(video), clip_frames))
        row["all"] = all(row[k] for k in ("color", "shape", "direction", "one_object_video", "present"))
        rows.append(row)
    keys = ("color", "shape", "direction", "one_object", "one_object_video", "present", "all")
    scores = {k: float(np.mean([r[k] for r in rows])) if rows else float("nan") for k in keys}
    scores["direction_clips"] = float(np.mean(clips_right)) if clips_right else float("nan")
    scores["direction_by_clip"] = by_position([[s == e if e is not None else None for s, e in
                                                zip(r["got_directions"], r["want_directions"])] for r in rows])
    return scores | {"videos": len(rows), "unparsed": unparsed}, rows


def by_position(values):
    """Per-video lists of True / False / None (not scored) -> the fraction True at each position, over the videos
    scored there (None where none is): e.g. the direction of clip i, for quality along a long video."""
    width = max((len(v) for v in values), default=0)
    at = [[x for v in values if i < len(v) and (x := v[i]) is not None] for i in range(width)]
    return [float(np.mean(a)) if a else None for a in at]


# -----------------------------------------------------------------------------
# CLIPSIM


def load_clip(name, pretrained=""):
    """(open_clip model in eval mode, its text tokenizer). `name`: an open_clip model or a config in
    config/open_clip/; `pretrained`: a local weights file or an open_clip tag ('' = random weights)."""
    import open_clip
    model = tok.create_clip(name, pretrained).eval()
    return model, open_clip.get_tokenizer(name, context_length=model.context_length)


@torch.no_grad()
def clipsim(videos, prompts, model, tokenize, batch_size=64, device="cpu"):
    """Mean over videos of the mean over frames of cos(CLIP image embedding, CLIP text embedding)."""
    pre = model.visual.preprocess_cfg
    size = pre["size"][0] if isinstance(pre["size"], (tuple, list)) else pre["size"]
    mean, std = (torch.tensor(pre[k], device=device).view(1, 3, 1, 1) for k in ("mean", "std"))
    model = model.to(device)
    text = F.normalize(model.encode_text(tokenize(list(prompts)).to(device)).float(), dim=-1)  # (B, D)
    scores = []
    for i, video in enumerate(videos):
        x = (data.to_tensor(np.asarray(video), size).to(device) + 1) / 2  # resize short side, centre crop; [0, 1]
        image = torch.cat([model.encode_image((x[j:j + batch_size] - mean) / std).float()
                           for j in range(0, len(x), batch_size)])
        scores.append((F.normalize(image, dim=-1) @ text[i]).mean().item())
    return float(np.mean(scores))


# -----------------------------------------------------------------------------
# FVD


def load_i3d(path, device="cpu"):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"I3D TorchScript file {path} does not exist")
    import warnings
    with warnings.catch_warnings():  # TorchScript is deprecated in torch 2.x, but it is the format I3D files come in
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(path, map_location=device).eval()


@torch.no_grad()
def video_features(model, videos, num_frames=16, size=None, batch_size=8, device="cpu"):
    """Features (N, D) of uint8 videos (F, H, W, 3), each cut to its first num_frames frames and
    resized to size (default: the first video's short side), fed as float (B, 3, T, H, W) in [0, 255].
    A model whose forward takes rescale / resize / return_features (StyleGAN-V's I3D) gets all three
    True: it scales to [-1, 1] and resizes to 224 itself, and returns the pre-logit features."""
    names = [a.name for a in model.forward.schema.arguments] if hasattr(model.forward, "schema") else []
    kwargs = {k: True for k in ("rescale", "resize", "return_features") if k in names}
    short = [v for v in videos if len(v) < num_frames]
    if short:
        raise ValueError(f"FVD uses the first {num_frames} frames of each video; {len(short)} video(s) have fewer "
                         f"(e.g. {len(short[0])}): lower --fvd_frames or sample more keyframes")
    size = size or min(np.asarray(videos[0]).shape[1:3])
    clips = [(data.to_tensor(np.asarray(v[:num_frames]), size) + 1) * 127.5 for v in videos]  # (T, 3, S, S)
    feats = []
    for i in range(0, len(clips), batch_size):
        x = torch.stack(clips[i:i + batch_size]).transpose(1, 2).to(device)  # (B, 3, T, S, S)
        feats.append(model(x, **kwargs).float().flatten(1).cpu())
    return torch.cat(feats)


def fvd(real_videos, fake_videos, model, num_frames=16, size=None, device="cpu"):
    """Frechet distance between the feature statistics of real and generated videos."""
    size = size or min(np.asarray(real_videos[0]).shape[1:3])
    real = video_features(model, real_videos, num_frames, size, device=device)
    fake = video_features(model, fake_videos, num_frames, size, device=device)
    return frechet_distance(*feature_stats(real), *feature_stats(fake))


# -----------------------------------------------------------------------------
# tokenizer reconstruction


def held_out_clips(manifest, size, clip_frames, stride, val_fraction, num_clips, seed=0):
    """Up to num_clips clips (N, clip_frames + 1, 3, size, size) in [-1, 1] from the held-out split of a
    manifest (data.in_split, as train_tokenizer.py splits), one per video, at a seeded random start."""
    rows = [r for r in data.read_manifest(manifest) if data.in_split(r["path"], "val", val_fraction)]
    rng = np.random.default_rng(seed)
    clips = []
    for row in rows:
        if len(clips) == num_clips:
            break
        try:
            frames = data.read_frames(row["path"])
        except Exception:
            continue  # unreadable files are skipped, as the training readers do
        span = clip_frames * stride
        if len(frames) <= span:
            continue
        start = int(rng.integers(len(frames) - span))
        clips.append(data.to_tensor(frames[start:start + span + 1:stride], size))
    if not clips:
        raise ValueError(f"no held-out clip of {clip_frames + 1} frames at stride {stride} in {manifest} "
                         f"(val_fraction {val_fraction})")
    return torch.stack(clips)


@torch.no_grad()
def tokenizer_metrics(tokenizer, denoiser, cfg, clips, frame_stride=1, seed=0, **decode_kw):
    """Decode clips (N, T, 3, S, S) from their head and rear deep tokens alone; PSNR (per clip, then the
    mean) and SSIM (per frame) of the in-between frames, on uint8 frames, next to the same numbers for the
    cross-fade of the true head and rear frames (a baseline that sees pixels)."""
    recon = tok.reconstruct_clips(tokenizer, denoiser, clips, cfg, frame_stride=frame_stride, seed=seed, **decode_kw)
    true_clips, made_clips = data.to_uint8(clips), data.to_uint8(recon)  # (N, T, H, W, 3)
    truth, made = true_clips[:, 1:-1], made_clips[:, 1:-1]  # the in-between frames
    fade = data.to_uint8(crossfade(clips))
    seen = recon_analysis(true_clips, made_clips)
    out = {"recon_psnr": psnr(made, truth), "recon_ssim": ssim(made, truth),
           "recon_psnr_crossfade": psnr(fade, truth), "recon_ssim_crossfade": ssim(fade, truth),
           "recon_clips": len(clips)} | {f"recon_{k}": v for k, v in seen.items()}
    # the mean above is dominated by still clips (identical frames cap at 100 dB): the moving clips alone
    moving = (true_clips != true_clips[:, :1]).reshape(len(clips), -1).any(1)
    if moving.any():
        out |= {"recon_psnr_moving": psnr(made[moving], truth[moving]),
                "recon_psnr_crossfade_moving": psnr(fade[moving], truth[moving])}
    return out


def crossfade(clips):
    """The baseline that sees the true head and rear frames: their linear blend at each in-between
    frame. clips (N, T, 3, H, W) -> (N, T - 2, 3, H, W)."""
    alpha = torch.linspace(0, 1, clips.shape[1])[1:-1].view(1, -1, 1, 1, 1)
    return (1 - alpha) * clips[:, :1] + alpha * clips[:, -1:]


def recon_analysis(truth, made):
    """The analyser on reconstructed clips against the true ones, uint8 (N, T, H, W, 3) each: the middle
    frame's color right ('color', a fraction of clips), its centroid error in pixels ('centroid_err', over
    clips where both show an object; NaN if none), frames with exactly one object ('one_object'), the
    clip's shape (median fill, `analyze_video`) right ('shape') and the direction of the in-between frames
    alone (a line through their centroids) equal to the true clip's ('direction', stills included)."""
    mid, color, err, single, shape, direction = truth.shape[1] // 2, [], [], [], [], []
    for true_clip, made_clip in zip(truth, made):
        want, got = data.analyze_frame(true_clip[mid]), data.analyze_frame(made_clip[mid])
        color.append(got["color"] == want["color"])
        if got["centroid"] is not None and want["centroid"] is not None:
            err.append(float(np.hypot(*np.subtract(got["centroid"], want["centroid"]))))
        made_video = analyze_video(made_clip)
        single += [n == 1 for n in made_video["objects"]]
        shape.append(made_video["shape"] == analyze_video(true_clip)["shape"])
        between = len(true_clip) - 2  # the frames the decoder invents: 1 .. T-2
        direction.append(analyze_video(made_clip[1:-1], between)["direction"]
                         == analyze_video(true_clip[1:-1], between)["direction"])
    return {"color": float(np.mean(color)), "centroid_err": float(np.mean(err)) if err else float("nan"),
            "one_object": float(np.mean(single)), "shape": float(np.mean(shape)),
            "direction": float(np.mean(direction))}


# -----------------------------------------------------------------------------


def load_videos(path, max_videos=None, split="all", val_fraction=0.05, size=None, fps=None, num_frames=None):
    """(videos [uint8 (F, H, W, 3)], captions, meta) from sample.py's frames.npz or a path,caption manifest;
    a manifest's videos read at `size` x `size` and `fps` (None: as stored), their first `num_frames` (None: all)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist")
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as z:
            if "frames" not in z or "prompts" not in z:
                raise ValueError(f"{path} is not sample.py's frames.npz (no 'frames' and 'prompts')")
            meta = {k: z[k].item() for k in z.files if z[k].ndim == 0}
            videos, captions = list(z["frames"][:max_videos]), [str(p) for p in z["prompts"][:max_videos]]
        return videos, captions, meta
    rows = [r for r in data.read_manifest(path) if data.in_split(r["path"], split, val_fraction)]
    videos, captions = [], []
    for row in rows[:max_videos]:
        try:
            videos.append(data.read_frames(row["path"], size, fps, None if num_frames is None else range(num_frames)))
            captions.append(row["caption"])
        except Exception as e:
            print(f"skipping {row['path']}: {(str(e).strip().splitlines() or [type(e).__name__])[0]}")
    if not videos:
        raise ValueError(f"no readable video in {path} (split {split})")
    return videos, captions, {}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", help="generated videos: sample.py's frames.npz or a path,caption manifest")
    p.add_argument("--real", help="real videos (path,caption manifest) for FVD and reference scores")
    p.add_argument("--real_split", default="all", choices=["all", "train", "val"])
    p.add_argument("--val_fraction", type=float, default=0.05, help="the split's held-out fraction")
    p.add_argument("--max_real", type=int, default=256)
    p.add_argument("--keyframe_interval", type=int, default=8,
                   help="manifest videos: frames between keyframes, the clips the direction read-out scores")
    p.add_argument("--still_px", type=float, default=STILL_MAX_PX)
    g = p.add_argument_group("tokenizer reconstruction")
    g.add_argument("--tokenizer_ckpt")
    g.add_argument("--recon_manifest", help="videos to take held-out clips from (the tokenizer's val split)")
    g.add_argument("--recon_clips", type=int, default=32)
    g.add_argument("--frame_stride", type=int, default=1)
    g.add_argument("--ddim_steps", type=int, default=None, help="default: the checkpoint's (paper: 50)")
    g.add_argument("--cfg_scale", type=float, default=None, help="default: the checkpoint's (paper: 7.5)")
    g.add_argument("--guidance_rescale", type=float, default=None, help="default: the checkpoint's (paper: 0.7)")
    g.add_argument("--decode_batch", type=int, default=32)
    g = p.add_argument_group("CLIPSIM / FVD")
    g.add_argument("--clip_model", help="open_clip model name or config/open_clip/ config, e.g. ViT-B-32")
    g.add_argument("--clip_pretrained", default="", help="its local weights file (or an open_clip tag)")
    g.add_argument("--i3d", help="I3D TorchScript file (e.g. StyleGAN-V's i3d_torchscript.pt)")
    g.add_argument("--fvd_frames", type=int, default=16)
    g.add_argument("--fvd_size", type=int, default=None, help="resize videos to this (default: the real size)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", help="write the metrics here as JSON")
    return p.parse_args(argv)


def run(args):
    metrics = {}
    if args.tokenizer_ckpt or args.recon_manifest:
        import sample
        if not (args.tokenizer_ckpt and args.recon_manifest):
            raise ValueError("tokenizer reconstruction needs both --tokenizer_ckpt and --recon_manifest")
        tokenizer, denoiser, cfg = sample.load_tokenizer(args.tokenizer_ckpt, args.device)
        print(sample.model_defaults(args, cfg))
        clips = held_out_clips(args.recon_manifest, cfg["image_size"], cfg["clip_frames"], args.frame_stride,
                               cfg["val_fraction"], args.recon_clips, args.seed)
        metrics |= tokenizer_metrics(tokenizer, denoiser, cfg, clips, args.frame_stride, args.seed,
                                     num_steps=args.ddim_steps, cfg_scale=args.cfg_scale,
                                     guidance_rescale=args.guidance_rescale, batch_size=args.decode_batch)
    fake = real = None
    interval = clip_frames = args.keyframe_interval  # real videos as stored: a keyframe every interval frames
    if args.samples:
        fake = load_videos(args.samples)
        meta = fake[2]  # sample.py's frames.npz: clip_frames video frames per keyframe_interval source frames
        interval = meta.get("keyframe_interval", args.keyframe_interval)
        clip_frames = meta.get("clip_frames", interval)
        scores, rows = score_shapes(fake[0], fake[1], clip_frames, args.still_px, interval)
        metrics |= {f"shapes_{k}": v for k, v in scores.items()}
        if rows and args.out:  # what the analyser saw, per video
            with open(os.path.splitext(args.out)[0] + "_videos.json", "w") as f:
                json.dump(rows, f, indent=1)
    if args.real:  # read as the samples are (their size, frame rate and length), not whole at full size
        like = {} if fake is None else dict(size=fake[0][0].shape[1], fps=fake[2].get("fps"),
                                            num_frames=max(len(v) for v in fake[0]))
        real = load_videos(args.real, args.max_real, args.real_split, args.val_fraction, **like)
        scores, _ = score_shapes(real[0], real[1], clip_frames, args.still_px, interval)
        if scores["videos"]:  # the analyser on ground truth: its own ceiling (~1.0)
            metrics |= {f"real_shapes_{k}": v for k, v in scores.items()}
    if args.clip_model:
        model, tokenize = load_clip(args.clip_model, args.clip_pretrained)
        for name, videos in (("clipsim", fake), ("clipsim_real", real)):
            if videos is not None:
                metrics[name] = clipsim(videos[0], videos[1], model, tokenize, device=args.device)
    if args.i3d:
        if fake is None or real is None:
            raise ValueError("FVD needs both --samples and --real")
        model = load_i3d(args.i3d, args.device)
        metrics["fvd"] = fvd(real[0], fake[0], model, args.fvd_frames, args.fvd_size, args.device)
        metrics["fvd_real_videos"], metrics["fvd_fake_videos"] = len(real[0]), len(fake[0])
    if not metrics:
        raise ValueError("nothing to evaluate: give --samples, --tokenizer_ckpt + --recon_manifest, or --real")
    return metrics


def main(argv=None):
    args = parse_args(argv)
    import sample
    try:
        metrics = run(args)
    except (FileNotFoundError, ValueError, sample.SampleError) as e:  # user mistakes: one line, no traceback
        sys.exit(f"error: {e}")
    width = max(len(k) for k in metrics)
    for k, v in metrics.items():
        print(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out + ".tmp", "w") as f:
            json.dump(metrics, f, indent=2)
        os.replace(args.out + ".tmp", args.out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
