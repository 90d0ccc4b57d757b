"""
Sample videos from a trained DiCoDe: the AR model writes deep tokens keyframe by keyframe
after the text prompt, and the diffusion decoder turns each consecutive pair of keyframes
into the clip between them (paper Sec. 3, Fig. 2); the clips are joined, the shared
keyframe once.

    python sample.py --prompt "a red circle moving right" --num_keyframes 5 --out out/samples
    python sample.py --prompts_file prompts.txt --out out/samples          # one prompt per line
    python sample.py --reconstruct data/shapes/videos/000000.mp4 --out out/recon   # paper Fig. 3
    python sample.py --reconstruct data/shapes/videos/000000.mp4 --zero_tokens 8    # paper Fig. 4

A one-minute video is 60 keyframes at one per second of 8 fps video (59 clips, 473 frames); it
needs an AR model trained with max_keyframes >= 60 (asking a shorter one for more keyframes is
an error that says how to train one):

    python sample.py --prompt "a red circle moving right" --num_keyframes 60 \
        --ar_ckpt out/shapes_long/ar/ckpt.pt --out out/long

Checkpoints: --tokenizer_ckpt (train_tokenizer.py; default out/shapes/tokenizer/ckpt.pt, the
out_dir of config/shapes.py) and --ar_ckpt (train_ar.py; default out/shapes/ar/ckpt.pt, where
`python demo.py` puts the last AR stage). Writes per prompt NNN_<prompt>.mp4 (H.264, yuv420p,
frames upscaled with nearest-neighbour to >= --min_size px) and .gif, plus frames.npz (all
videos as uint8 at their true size, for evaluate.py) and samples.csv (path,caption).
Same flags and seed, same videos. Sampling settings left unset are the trained model's, stored in
its checkpoint (`model_defaults`): the decoder's DDIM steps and guidance from the tokenizer's
config, the AR model's temperature, variance scale and guidance from train_ar.py's sample_*.
"""
import argparse
import math
import os
import re
import sys

import numpy as np
import torch

import data
import diffusion

DEFAULT_TOKENIZER_CKPT = "out/shapes/tokenizer/ckpt.pt"
DEFAULT_AR_CKPT = "out/shapes/ar/ckpt.pt"
FORMATS = ("mp4", "gif", "npz")
# (flag, checkpoint config key, the paper's value for checkpoints without the key, how it is printed)
DECODER_SETTINGS = (("ddim_steps", "ddim_steps", 50, "DDIM {:g} steps"), ("cfg_scale", "cfg_scale", 7.5, "CFG {:g}"),
                    ("guidance_rescale", "guidance_rescale", 0.7, "rescale {:g}"))
AR_SETTINGS = (("temperature", "sample_temperature", 1.0, "temperature {:g}"),
               ("var_scale", "sample_var_scale", 0.01, "var_scale {:g}"),
               ("ar_cfg_scale", "sample_cfg_scale", 1.0, "CFG {:g}"))


class SampleError(Exception):
    """A user mistake (missing file, mismatched checkpoints, bad flag value): reported in one line."""


# -----------------------------------------------------------------------------
# loading


def load_tokenizer(path, device="cpu"):
    """(tokenizer, denoiser, cfg) of a train_tokenizer.py checkpoint, or SampleError."""
    import tokenizer as tok
    if not os.path.isfile(path):
        raise SampleError(f"tokenizer checkpoint {path} does not exist (train one: python train_tokenizer.py "
                          f"config/shapes.py, or run python demo.py)")
    import logging
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # open_clip warns "no pretrained weights loaded": the checkpoint holds them
    try:
        return tok.load_autoencoder(path, device)
    except Exception as e:  # empty, truncated or not a checkpoint, or one of another shape
        raise SampleError(f"cannot load tokenizer checkpoint {path}: {first_line(e)}") from None
    finally:
        root.setLevel(level)


def load_ar(path, device="cpu"):
    """(ARModel in eval mode, the run's config: {} if not saved) of a train_ar.py checkpoint, or SampleError."""
    from ar_model import ARModel
    if not os.path.isfile(path):
        raise SampleError(f"AR checkpoint {path} does not exist (train one: python train_ar.py "
                          f"config/ar_shapes_stage1.py ... stage4.py, or run python demo.py)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # empty, truncated or not a torch file
        raise SampleError(f"cannot read AR checkpoint {path}: {first_line(e)}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_config" not in ckpt:
        raise SampleError(f"{path} is not a train_ar.py checkpoint (it has no 'model' and 'model_config')")
    try:
        return ARModel.from_checkpoint(ckpt).to(device), ckpt.get("config", {})
    except (ValueError, KeyError, RuntimeError, TypeError) as e:
        raise SampleError(f"cannot load AR checkpoint {path}: {first_line(e)}") from None


def first_line(error):
    """The first line of an exception's message, or its type when it has none (an empty file: EOFError())."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def check_compatible(ar, cfg, ar_path="the AR checkpoint", tokenizer_path="the tokenizer checkpoint"):
    """The AR model must write deep tokens of the tokenizer's shape (N_q tokens of C channels)."""
    a, t = (ar.cfg.n_q, ar.cfg.token_dim), (cfg["n_queries"], cfg["token_dim"])
    if a != t:
        raise SampleError(f"the checkpoints do not fit together: tokenizer {tokenizer_path} makes deep tokens with "
                          f"N_q={t[0]}, C={t[1]} but AR model {ar_path} writes N_q={a[0]}, C={a[1]} "
                          f"(train the AR model on tokens of this tokenizer)")


def check_num_keyframes(ar, n, keyframe_interval=8, ar_path="the AR model"):
    m = ar.cfg.max_keyframes
    if n < 2:
        raise SampleError(f"--num_keyframes must be at least 2 (one clip lies between two keyframes), got {n}")
    if n > m:
        need = (n - 1) * keyframe_interval + 1
        raise SampleError(
            f"{ar_path} supports at most {m} keyframes (its max_keyframes), {n} were asked for. To make longer "
            f"videos, train an AR model for {n}: videos of >= {need} frames (python data.py shapes --num_frames "
            f"{need} ...), python tokenizer.py encode ... --max_keyframes {n}, and every train_ar.py stage with "
            f"--max_keyframes={n} and a backbone of >= text_len + {n} x (1 + N_q) = "
            f"{ar.cfg.text_len + n * (1 + ar.cfg.n_q)} positions")


def model_defaults(args, tokenizer_cfg, ar_config=None):
    """Fill the sampling flags left at None (argparse namespace, in place) with the trained model's settings:
    the decoder's (ddim_steps, cfg_scale, guidance_rescale) from the tokenizer checkpoint's config, the AR
    model's (temperature, var_scale, ar_cfg_scale) from the AR checkpoint's sample_*; the paper's values
    where a config lacks the key. Returns one line saying what is used and where it came from."""
    parts = []
    for name, config, settings in (("decoder", tokenizer_cfg, DECODER_SETTINGS), ("AR", ar_config, AR_SETTINGS)):
        if config is None:
            continue
        used = []
        for flag, key, paper, label in settings:
            source = "flag" if getattr(args, flag) is not None else "checkpoint" if key in config else "paper"
            if source != "flag":
                setattr(args, flag, config.get(key, paper))
            used.append(f"{label.format(getattr(args, flag))} ({source})")
        parts.append(f"{name}: {', '.join(used)}")
    return "; ".join(parts)


def read_prompts(prompts=(), prompts_file=None):
    """--prompt values then the lines of --prompts_file (blank lines and # comments skipped)."""
    out = [p.strip() for p in prompts or () if p.strip()]
    if prompts_file:
        if not os.path.isfile(prompts_file):
            raise SampleError(f"prompts file {prompts_file} does not exist")
        with open(prompts_file) as f:
            lines = [line.strip() for line in f]
        found = [line for line in lines if line and not line.startswith("#")]
        if not found:
            raise SampleError(f"prompts file {prompts_file} holds no prompts (one prompt per line expected)")
        out += found
    return out


# -----------------------------------------------------------------------------
# deep tokens -> frames


def uncond_tokens(tokenizer, cfg, device="cpu"):
    """The classifier-free guidance condition (1, 2 N_q, C): the deep tokens of two all-zero frames,
    exactly as train_tokenizer.py drops conditions in training."""
    S = cfg["image_size"]
    with torch.no_grad():
        return tokenizer.encode(torch.zeros(2, 3, S, S, device=device)).reshape(1, -1, cfg["token_dim"])


def join_clips(clips):
    """(B, K-1, T, ...) clips -> (B, (K-1)(T-1) + 1, ...): clip i's last frame is clip i+1's first, kept once."""
    return torch.cat([clips[:, 0]] + [clips[:, i, 1:] for i in range(1, clips.shape[1])], dim=1)


@torch.no_grad()
def decode_keyframes(denoiser, keyframe_tokens, uncond, cfg, *, frame_stride=1, num_steps=50, eta=1.0,
                     cfg_scale=7.5, guidance_rescale=0.7, timestep_spacing="leading", batch_size=32,
                     generator=None, progress=True):
    """Deep tokens of keyframes (B, K, N_q, C) -> videos (B, (K-1) clip_frames + 1, 3, H, W) in [-1, 1].

    Every consecutive pair (k, k+1) is one clip, decoded with DDIM from [tokens_k, tokens_k+1]
    (2 N_q, C) and the frame stride; all B (K-1) clips go through the sampler `batch_size` at a
    time. uncond: (1, 2 N_q, C) from `uncond_tokens`. The noise is drawn from `generator`, which
    must live on the tokens' device.
    """
    from tqdm import tqdm
    B, K, Nq, C = keyframe_tokens.shape
    if K < 2:
        raise SampleError(f"decoding needs at least 2 keyframes, got {K}")
    T, S, dev = cfg["clip_frames"] + 1, cfg["image_size"], keyframe_tokens.device
    cond = torch.cat([keyframe_tokens[:, :-1], keyframe_tokens[:, 1:]], dim=2).flatten(0, 1)  # (B (K-1), 2 N_q, C)
    alphas_cumprod = diffusion.make_alphas_cumprod(zero_terminal_snr=cfg["zero_terminal_snr"])
    latent = getattr(denoiser, "latent", False)
    guided = cfg_scale != 1.0
    batches = range(0, len(cond), batch_size)
    bar = tqdm(total=len(batches) * num_steps, desc=f"decoding {len(cond)} clips", unit="step", disable=not progress)
    clips = []
    for start in batches:
        c = cond[start:start + batch_size]
        n = len(c)
        shape = denoiser.latent_shape((n, T, 3, S, S)) if latent else (n, T, 3, S, S)
        noise = torch.randn(shape, generator=generator, device=dev)
        stride = torch.full((2 * n if guided else n,), frame_stride, dtype=torch.long, device=dev)

        def net(x_t, t, c_):  # ddim_sample batches cond + uncond: the stride goes with every row
            bar.update(1)
            return denoiser(x_t, t, c_, stride[:len(x_t)])

        x = diffusion.ddim_sample(net, noise, c, uncond.expand(n, -1, -1), alphas_cumprod=alphas_cumprod,
                                  num_steps=num_steps, eta=eta, cfg_scale=cfg_scale, guidance_rescale=guidance_rescale,
                                  timestep_spacing=timestep_spacing, prediction_type=cfg["prediction_type"],
                                  generator=generator)
        clips.append((denoiser.decode_latents(x) if latent else x).clamp(-1, 1).float().cpu())
    bar.close()
    return join_clips(torch.cat(clips).view(B, K - 1, T, 3, S, S))


def generate_tokens(ar, prompts, num_keyframes, *, var_scale=0.01, temperature=1.0, cfg_scale=1.0, generator=None,
                    batch_size=64, progress=True):
    """The AR model's deep tokens (B, K, N_q, C) for B prompts, `batch_size` prompts at a time."""
    from tqdm import tqdm
    bar = tqdm(total=math.ceil(len(prompts) / batch_size) * num_keyframes, desc=f"AR: {len(prompts)} prompts",
               unit="keyframe", disable=not progress)
    calls = [0]

    def count(module, inputs, output):  # generate() calls the head once per deep token
        calls[0] += 1
        if calls[0] % ar.cfg.n_q == 0:
            bar.update(1)

    hook = ar.out_proj.register_forward_hook(count)
    try:
        out = [ar.generate(prompts[i:i + batch_size], num_keyframes, var_scale=var_scale, temperature=temperature,
                           cfg_scale=cfg_scale, generator=generator)
               for i in range(0, len(prompts), batch_size)]
    finally:
        hook.remove()
        bar.close()
    return torch.cat(out)


def generate_videos(ar, tokenizer, denoiser, cfg, prompts, num_keyframes, *, seed=0, var_scale=0.01,
                    temperature=1.0, ar_cfg_scale=1.0, keyframe_interval=8, frame_stride=None, progress=True,
                    **decode_kw):
    """Text -> videos: uint8 (B, (K-1) clip_frames + 1, H, W, 3) for B prompts and K keyframes.

    decode_kw go to `decode_keyframes` (num_steps, eta, cfg_scale, guidance_rescale, batch_size, ...).
    """
    check_compatible(ar, cfg)
    check_num_keyframes(ar, num_keyframes, keyframe_interval)
    stride = check_stride(cfg, keyframe_interval, frame_stride)
    dev = ar.bov.device
    tokens = generate_tokens(ar, list(prompts), num_keyframes, var_scale=var_scale, temperature=temperature,
                             cfg_scale=ar_cfg_scale, generator=torch.Generator(dev).manual_seed(seed), progress=progress)
    tokenizer, denoiser = tokenizer.to(dev), denoiser.to(dev)
    frames = decode_keyframes(denoiser, tokens, uncond_tokens(tokenizer, cfg, dev), cfg, frame_stride=stride,
                              generator=torch.Generator(dev).manual_seed(seed + 1), progress=progress, **decode_kw)
    return data.to_uint8(frames)


def check_stride(cfg, keyframe_interval, frame_stride=None):
    """The decoder's frame stride: by default keyframe_interval // clip_frames, so a clip spans one interval."""
    clip_frames = cfg["clip_frames"]
    stride = frame_stride if frame_stride is not None else keyframe_interval // clip_frames
    if stride < 1:
        raise SampleError(f"frame stride {stride} < 1: keyframe_interval {keyframe_interval} is shorter than the "
                          f"decoder's {clip_frames} frames per clip; pass --frame_stride")
    if cfg["denoiser"] == "unet" and stride > cfg["max_stride"]:  # VideoUNet has one stride embedding per value
        raise SampleError(f"frame stride {stride} exceeds the decoder's max_stride {cfg['max_stride']} (the largest "
                          f"it was trained with); pass --frame_stride <= {cfg['max_stride']}")
    return stride


# -----------------------------------------------------------------------------
# reconstruction: real keyframes -> deep tokens -> frames (paper Fig. 3 and 4)


@torch.no_grad()
def reconstruct_video(tokenizer, denoiser, cfg, frames, *, keyframe_interval=8, frame_stride=None, zero_tokens=0,
                      num_keyframes=None, seed=0, progress=True, **decode_kw):
    """A real video (T, H, W, 3) uint8 -> (original, reconstruction), uint8 (F, S, S, 3) each.

    Keyframes every `keyframe_interval` frames are tokenized and decoded pairwise like generated
    tokens; with zero_tokens = n the last n of each keyframe's N_q deep tokens are set to 0 first.
    `original` holds the frames at the decoder's time positions (keyframe + j * stride).
    """
    stride = check_stride(cfg, keyframe_interval, frame_stride)
    Nq, S, cf = cfg["n_queries"], cfg["image_size"], cfg["clip_frames"]
    if not 0 <= zero_tokens <= Nq:
        raise SampleError(f"--zero_tokens must lie in [0, N_q={Nq}], got {zero_tokens}")
    K = 1 + (len(frames) - 1) // keyframe_interval
    K = min(K, num_keyframes) if num_keyframes else K
    if K < 2:
        raise SampleError(f"the video has {len(frames)} frames; 2 keyframes {keyframe_interval} frames apart need "
                          f">= {keyframe_interval + 1}")
    dev = next(denoiser.parameters()).device
    keyframes = data.to_tensor(frames[:(K - 1) * keyframe_interval + 1:keyframe_interval], S).to(dev)  # (K, 3, S, S)
    tokens = tokenizer.encode(keyframes)[None]  # (1, K, N_q, C)
    if zero_tokens:
        tokens[:, :, Nq - zero_tokens:] = 0
    recon = decode_keyframes(denoiser, tokens, uncond_tokens(tokenizer, cfg, dev), cfg, frame_stride=stride,
                             generator=torch.Generator(dev).manual_seed(seed), progress=progress, **decode_kw)
    index = [i * keyframe_interval + j * stride for i in range(K - 1) for j in range(0 if i == 0 else 1, cf + 1)]
    original = data.to_tensor(frames[np.minimum(index, len(frames) - 1)], S)
    return data.to_uint8(original), data.to_uint8(recon[0])


def side_by_side(*videos, gap=1):
    """uint8 videos (F, H, W, 3) of the same shape -> one (F, H, n W + gaps, 3), with gray separators."""
    F, H = videos[0].shape[:2]
    sep = np.full((F, H, gap, 3), 128, np.uint8)
    parts = [videos[0]]
    for v in videos[1:]:
        parts += [sep, v]
    return np.concatenate(parts, axis=2)


# -----------------------------------------------------------------------------
# writing


def upscale(frames, min_size=128):
    """Nearest-neighbour upscaling (..., H, W, 3) by the smallest integer factor making both sides >= min_size."""
    scale = max(1, math.ceil(min_size / min(frames.shape[-3:-1])))
    return frames.repeat(scale, axis=-3).repeat(scale, axis=-2)


def write_video(path, frames, fps=8, min_size=128):
    """uint8 frames (F, H, W, 3) -> .mp4 (H.264, yuv420p: plays everywhere) or .gif, chosen by the extension.

    Frames are upscaled (nearest neighbour) to >= min_size px so a 32 px video is viewable, and
    padded with black to even sides, which yuv420p needs.
    """
    import imageio
    frames = upscale(np.asarray(frames, dtype=np.uint8), min_size)
    H, W = frames.shape[1:3]
    frames = np.pad(frames, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if path.endswith(".mp4"):
        with imageio.get_writer(path, format="FFMPEG", fps=fps, codec="libx264", pixelformat="yuv420p",
                                macro_block_size=2, ffmpeg_log_level="error", quality=None,
                                output_params=["-crf", "18"]) as writer:
            for frame in frames:
                writer.append_data(frame)
    elif path.endswith(".gif"):
        imageio.mimsave(path, list(frames), duration=1000 / fps, loop=0)
    else:
        raise SampleError(f"unknown video extension in {path}; expected .mp4 or .gif")


def slug(prompt, max_len=60):
    return re.sub(r"[^A-Za-z0-9]+", "_", prompt).strip("_")[:max_len] or "prompt"


def write_samples(out_dir, prompts, videos, fps, formats=FORMATS, min_size=128, **meta):
    """NNN_<prompt>.{mp4,gif} per video, samples.csv (path,caption) and frames.npz (videos + prompts + meta)."""
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for i, (prompt, video) in enumerate(zip(prompts, videos)):
        name = f"{i:03d}_{slug(prompt)}"
        for ext in ("mp4", "gif"):
            if ext in formats:
                write_video(os.path.join(out_dir, f"{name}.{ext}"), video, fps, min_size)
        if "mp4" in formats or "gif" in formats:
            rows.append({"path": f"{name}.{'mp4' if 'mp4' in formats else 'gif'}", "caption": prompt})
    if rows:
        data.write_manifest(os.path.join(out_dir, "samples.csv"), rows, ["path", "caption"])
    if "npz" in formats:
        tmp = os.path.join(out_dir, "frames.tmp.npz")
        np.savez_compressed(tmp, frames=np.asarray(videos), prompts=np.array(list(prompts)), fps=fps,
                            **{k: np.asarray(v) for k, v in meta.items()})
        os.replace(tmp, os.path.join(out_dir, "frames.npz"))  # written last and atomically: marks a finished run


# -----------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompt", action="append", default=[], help="a text prompt (repeat for several)")
    p.add_argument("--prompts_file", help="a text file, one prompt per line")
    p.add_argument("--num_keyframes", type=int, default=None,
                   help="keyframes per video (default: the AR model's max_keyframes); frames = (K-1) clip_frames + 1")
    p.add_argument("--out", default="out/samples", help="output directory")
    p.add_argument("--tokenizer_ckpt", default=DEFAULT_TOKENIZER_CKPT, help="train_tokenizer.py checkpoint")
    p.add_argument("--ar_ckpt", default=DEFAULT_AR_CKPT, help="train_ar.py checkpoint")
    p.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("AR model")
    g.add_argument("--var_scale", type=float, default=None,
                   help="GMM variance scale (default: the checkpoint's; paper's release: 0.01)")
    g.add_argument("--temperature", type=float, default=None,
                   help="mixture-component temperature, 0 = argmax (default: the checkpoint's)")
    g.add_argument("--ar_cfg_scale", type=float, default=None,
                   help="AR classifier-free guidance, 1 = off (default: the checkpoint's)")
    g.add_argument("--ar_batch", type=int, default=64, help="prompts per AR generate call")
    g = p.add_argument_group("diffusion decoder")
    g.add_argument("--cfg_scale", type=float, default=None, help="default: the checkpoint's (paper: 7.5)")
    g.add_argument("--guidance_rescale", type=float, default=None, help="default: the checkpoint's (paper: 0.7)")
    g.add_argument("--ddim_steps", type=int, default=None, help="default: the checkpoint's (paper: 50)")
    g.add_argument("--eta", type=float, default=1.0)
    g.add_argument("--timestep_spacing", default="leading", choices=["leading", "trailing"])
    g.add_argument("--keyframe_interval", type=int, default=8,
                   help="frames between keyframes in the AR model's data (tokenizer.py encode; 8 = 1/s at 8 fps)")
    g.add_argument("--frame_stride", type=int, default=None,
                   help="decoder frame stride (default keyframe_interval // clip_frames; the paper samples with 6)")
    g.add_argument("--decode_batch", type=int, default=32, help="clips per DDIM batch")
    g = p.add_argument_group("output")
    g.add_argument("--fps", type=float, default=None, help="default: --source_fps / frame stride (real time)")
    g.add_argument("--source_fps", type=float, default=data.FPS, help="frame rate of the training videos")
    g.add_argument("--formats", default="mp4,gif,npz", help=f"comma-separated subset of {','.join(FORMATS)}")
    g.add_argument("--min_size", type=int, default=128, help="upscale written frames to at least this many px")
    g = p.add_argument_group("reconstruction")
    g.add_argument("--reconstruct", metavar="VIDEO", help="tokenize this video's keyframes and decode them back")
    g.add_argument("--zero_tokens", type=int, default=0, help="zero the last n deep tokens of each keyframe first")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p.parse_args(argv)


def decode_kwargs(args):
    """decode_keyframes' settings from the flags, once model_defaults has filled in the checkpoint's."""
    return dict(num_steps=args.ddim_steps, eta=args.eta, cfg_scale=args.cfg_scale,
                guidance_rescale=args.guidance_rescale, timestep_spacing=args.timestep_spacing,
                batch_size=args.decode_batch)


FLAG_RANGES = {  # flag: (low, high), inclusive; None = unbounded. Flags left unset take the checkpoint's values.
    "num_keyframes": (2, None), "var_scale": (0, None), "temperature": (0, None), "ar_cfg_scale": (0, None),
    "ar_batch": (1, None), "cfg_scale": (0, None), "guidance_rescale": (0, 1), "ddim_steps": (1, 1000),
    "eta": (0, 1), "keyframe_interval": (1, None), "frame_stride": (1, None), "decode_batch": (1, None),
    "fps": (1e-3, None), "source_fps": (1e-3, None), "min_size": (1, None), "zero_tokens": (0, None),
}


def check_flags(args):
    """Every numeric flag in its range, before anything is loaded: one line naming the flag otherwise."""
    for name, (low, high) in FLAG_RANGES.items():
        value = getattr(args, name)
        if value is not None and ((low is not None and value < low) or (high is not None and value > high)):
            bounds = f"[{low}, {high}]" if high is not None else f">= {low}"
            raise SampleError(f"--{name} must be {bounds}, got {value}"
                              + (" (the decoder was trained on 1000 diffusion steps)" if name == "ddim_steps" else ""))


def run(args):
    formats = tuple(f for f in args.formats.split(",") if f)
    if set(formats) - set(FORMATS):
        raise SampleError(f"--formats {args.formats!r}: unknown {sorted(set(formats) - set(FORMATS))}; "
                          f"choose from {','.join(FORMATS)}")
    check_flags(args)
    if args.reconstruct:
        if not os.path.isfile(args.reconstruct):
            raise SampleError(f"video {args.reconstruct} does not exist")
        try:
            frames = data.read_frames(args.reconstruct)
        except Exception as e:
            raise SampleError(f"cannot read video {args.reconstruct}: {first_line(e)}") from None
        tokenizer, denoiser, cfg = load_tokenizer(args.tokenizer_ckpt, args.device)
        stride = check_stride(cfg, args.keyframe_interval, args.frame_stride)
        print(model_defaults(args, cfg))
        original, recon = reconstruct_video(tokenizer, denoiser, cfg, frames, keyframe_interval=args.keyframe_interval,
                                            frame_stride=stride, zero_tokens=args.zero_tokens,
                                            num_keyframes=args.num_keyframes, seed=args.seed, **decode_kwargs(args))
        mse = np.mean((original.astype(np.float64) - recon) ** 2)
        name = os.path.splitext(os.path.basename(args.reconstruct))[0] + "_recon"
        name += f"_zero{args.zero_tokens}" if args.zero_tokens else ""
        fps = args.fps or args.source_fps / stride
        for ext in [e for e in ("mp4", "gif") if e in formats] or ["mp4"]:
            write_video(os.path.join(args.out, f"{name}.{ext}"), side_by_side(original, recon), fps, args.min_size)
        print(f"original | reconstruction ({len(recon)} frames, {args.zero_tokens} of {cfg['n_queries']} tokens "
              f"zeroed): PSNR {10 * np.log10(255 ** 2 / max(mse, 1e-10)):.2f} dB -> {os.path.join(args.out, name)}.*")
        return
    prompts = read_prompts(args.prompt, args.prompts_file)
    if not prompts:
        raise SampleError("no prompt: give --prompt TEXT (repeatable) or --prompts_file FILE, or --reconstruct VIDEO")
    ar, ar_config = load_ar(args.ar_ckpt, args.device)
    num_keyframes = ar.cfg.max_keyframes if args.num_keyframes is None else args.num_keyframes
    check_num_keyframes(ar, num_keyframes, args.keyframe_interval, f"AR model {args.ar_ckpt}")
    tokenizer, denoiser, cfg = load_tokenizer(args.tokenizer_ckpt, args.device)
    check_compatible(ar, cfg, args.ar_ckpt, args.tokenizer_ckpt)
    stride = check_stride(cfg, args.keyframe_interval, args.frame_stride)
    print(model_defaults(args, cfg, ar_config))
    videos = generate_videos(ar, tokenizer, denoiser, cfg, prompts, num_keyframes, seed=args.seed,
                             var_scale=args.var_scale, temperature=args.temperature, ar_cfg_scale=args.ar_cfg_scale,
                             keyframe_interval=args.keyframe_interval, frame_stride=stride, **decode_kwargs(args))
    fps = args.fps or args.source_fps / stride
    write_samples(args.out, prompts, videos, fps, formats, args.min_size, clip_frames=cfg["clip_frames"],
                  frame_stride=stride, keyframe_interval=args.keyframe_interval, num_keyframes=num_keyframes)
    print(f"wrote {len(prompts)} video(s) of {videos.shape[1]} frames ({num_keyframes} keyframes, "
          f"{videos.shape[1] / fps:.1f} s at {fps:g} fps) to {args.out}")


def main(argv=None):
    args = parse_args(argv)
    try:
        run(args)
    except SampleError as e:  # user mistakes: one clear line, no traceback
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
