"""
Sample videos from a trained DiCoDe (paper Sec. 3, Fig. 2): the AR model writes deep tokens keyframe by
keyframe after the text prompt, the diffusion decoder turns each two consecutive keyframes into the clip
between them, and the clips are joined (the shared keyframe once).

    python sample.py --prompt "a red circle moving right" --num_keyframes 5 --out out/samples
    python sample.py --prompts_file prompts.txt --out out/samples          # one prompt per line

Checkpoints default to where `python demo.py` puts them (out/shapes/tokenizer/ckpt.pt, out/shapes/ar/ckpt.pt).
Writes per prompt NNN_<prompt>.mp4 (H.264, upscaled to >= --min_size px) and .gif, frames.npz (every video
at its true size, for evaluate.py) and samples.csv (path,caption); same flags and seed, same videos. Sampling
settings left unset are the trained models' (`model_defaults`). A one-minute video is 60 keyframes at one a
second: an AR model trained with max_keyframes >= 60, or --sliding_window past a shorter model's length
(each next keyframe generated after the model's max_keyframes - 1 before it). A real video through the
tokenizer and back (paper Fig. 3, 4): reconstruct.py.
"""
import argparse
import os
import re
import sys

import numpy as np
import torch
from tqdm import tqdm

import data
import tokenizer as tok

DEFAULT_TOKENIZER_CKPT = "out/shapes/tokenizer/ckpt.pt"
DEFAULT_AR_CKPT = "out/shapes/ar/ckpt.pt"
FORMATS = ("mp4", "gif", "npz")
# (flag, checkpoint config key, the paper's value for checkpoints without the key, how it is printed)
DECODER_SETTINGS = (("ddim_steps", "ddim_steps", 50, "DDIM {:g} steps"), ("cfg_scale", "cfg_scale", 7.5, "CFG {:g}"),
                    ("guidance_rescale", "guidance_rescale", 0.7, "rescale {:g}"))
AR_SETTINGS = (("temperature", "sample_temperature", 1.0, "temperature {:g}"),
               ("var_scale", "sample_var_scale", 0.01, "var_scale {:g}"),
               ("ar_cfg_scale", "sample_cfg_scale", 1.0, "CFG {:g}"),
               ("ar_cfg_mode", "sample_cfg_mode", "samples", "CFG on {}"))
FLAG_RANGES = {  # flag: (low, high), inclusive, None = unbounded; sample.py and reconstruct.py (unset: checkpoint)
    "num_keyframes": (2, None), "var_scale": (0, None), "temperature": (0, None), "ar_cfg_scale": (0, None),
    "ar_batch": (1, None), "cfg_scale": (0, None), "guidance_rescale": (0, 1), "ddim_steps": (1, 1000),
    "eta": (0, 1), "keyframe_interval": (1, None), "frame_stride": (1, None), "decode_batch": (1, None),
    "fps": (1e-3, None), "source_fps": (1e-3, None), "min_size": (1, None), "zero_tokens": (0, None),
}


class SampleError(Exception):
    """A user mistake (missing file, mismatched checkpoints, bad flag value): reported in one line."""


def first_line(error):
    """The first line of an exception's message, or its type when it has none (an empty file: EOFError())."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


# -----------------------------------------------------------------------------
# text -> deep tokens -> clips -> videos (paper Fig. 2)


def generate_tokens(ar, prompts, num_keyframes, *, seed=0, batch_size=64, progress=True, **sampling):
    """The AR model's deep tokens (B, K, N_q, C) for B prompts (paper Eq. 2), `batch_size` prompts at a time;
    past the model's max_keyframes with a sliding window (ARModel.generate_long). sampling: ARModel.generate's
    var_scale, temperature, cfg_scale and cfg_mode."""
    generator = torch.Generator(ar.bov.device).manual_seed(seed)
    starts = tqdm(range(0, len(prompts), batch_size), desc=f"AR: {len(prompts)} prompts", unit="batch",
                  disable=not progress)
    generate = ar.generate if num_keyframes <= ar.cfg.max_keyframes else ar.generate_long
    return torch.cat([generate(prompts[i:i + batch_size], num_keyframes, generator=generator, **sampling)
                      for i in starts])


def join_clips(clips):
    """(B, K-1, T, ...) clips -> (B, (K-1)(T-1) + 1, ...): clip i's last frame is clip i+1's first, kept once."""
    return torch.cat([clips[:, 0, :1], clips[:, :, 1:].flatten(1, 2)], dim=1)


def decode_videos(tokenizer, denoiser, cfg, tokens, frame_stride, *, seed=0, **decode_kw):
    """Deep tokens of keyframes (B, K, N_q, C) -> uint8 videos (B, (K-1) clip_frames + 1, S, S, 3): the clip
    between every two consecutive keyframes (tokenizer.decode_clips, which takes decode_kw), joined."""
    uncond = tok.uncond_tokens(tokenizer, cfg["image_size"], tokens.device)  # (1, 2 N_q, C)
    clips = tok.decode_clips(denoiser, tokens, uncond, cfg, frame_stride=frame_stride, seed=seed, **decode_kw)
    return data.to_uint8(join_clips(clips))  # (B, K-1, T, 3, S, S) -> (B, F, S, S, 3)


# -----------------------------------------------------------------------------
# files


def slug(prompt, max_len=60):
    return re.sub(r"[^A-Za-z0-9]+", "_", prompt).strip("_")[:max_len] or "prompt"


def write_samples(out_dir, prompts, videos, fps, formats=FORMATS, min_size=128, **meta):
    """NNN_<prompt>.{mp4,gif} per video, samples.csv (path,caption) and frames.npz (videos + prompts + meta)."""
    os.makedirs(out_dir, exist_ok=True)
    names, exts = [f"{i:03d}_{slug(p)}" for i, p in enumerate(prompts)], [e for e in ("mp4", "gif") if e in formats]
    for name, video in zip(names, videos):
        for ext in exts:
            data.write_video(os.path.join(out_dir, f"{name}.{ext}"), video, fps, min_size)
    if exts:
        rows = [{"path": f"{name}.{exts[0]}", "caption": prompt} for name, prompt in zip(names, prompts)]
        data.write_manifest(os.path.join(out_dir, "samples.csv"), rows, ["path", "caption"])
    if "npz" in formats:
        tmp = os.path.join(out_dir, "frames.tmp.npz")
        np.savez_compressed(tmp, frames=np.asarray(videos), prompts=np.array(list(prompts)), fps=fps,
                            **{k: np.asarray(v) for k, v in meta.items()})
        os.replace(tmp, os.path.join(out_dir, "frames.npz"))  # written last and atomically: marks a finished run


# -----------------------------------------------------------------------------
# checks, each made once, by an entrance: run (command line) or generate_videos (Python)


def check_flags(args):
    """--formats known and every numeric flag in its range, before anything is loaded: one line naming the flag."""
    unknown = sorted(set(args.formats) - set(FORMATS))
    if unknown:
        raise SampleError(f"--formats {','.join(args.formats)!r}: unknown {unknown}; choose from {','.join(FORMATS)}")
    for name, (low, high) in FLAG_RANGES.items():
        values = getattr(args, name, None)  # each script has its own subset of the flags; some take several values
        for value in values if isinstance(values, list) else [values]:
            if value is not None and ((low is not None and value < low) or (high is not None and value > high)):
                bounds = f"[{low}, {high}]" if high is not None else f">= {low}"
                raise SampleError(f"--{name} must be {bounds}, got {value}" + (
                    " (the decoder was trained on 1000 diffusion steps)" if name == "ddim_steps" else ""))


def read_prompts(prompts=(), prompts_file=None):
    """--prompt values then the lines of --prompts_file (blank lines and # comments skipped); at least one."""
    out = [p.strip() for p in prompts or () if p.strip()]
    if prompts_file:
        if not os.path.isfile(prompts_file):
            raise SampleError(f"prompts file {prompts_file} does not exist")
        with open(prompts_file) as f:
            found = [line.strip() for line in f if line.strip() and not line.strip().startswith("#")]
        if not found:
            raise SampleError(f"prompts file {prompts_file} holds no prompts (one prompt per line expected)")
        out += found
    if not out:
        raise SampleError("no prompt: give --prompt TEXT (repeatable) or --prompts_file FILE")
    return out


def load_tokenizer(path, device="cpu"):
    """(tokenizer, denoiser, cfg) of a train_tokenizer.py checkpoint, or SampleError."""
    if not os.path.isfile(path):
        raise SampleError(f"tokenizer checkpoint {path} does not exist (train one: python train_tokenizer.py "
                          f"config/shapes.py, or run python demo.py)")
    try:
        return tok.load_autoencoder(path, device)
    except Exception as e:  # empty, truncated or not a checkpoint, or one of another shape
        raise SampleError(f"cannot load tokenizer checkpoint {path}: {first_line(e)}") from None


def load_ar(path, device="cpu"):
    """(ARModel in eval mode, the run's config: {} if not saved) of a train_ar.py checkpoint, or SampleError."""
    from ar_model import ARModel
    if not os.path.isfile(path):
        raise SampleError(f"AR checkpoint {path} does not exist (train one: python train_ar.py "
                          f"config/ar_shapes_stage1.py ... stage4.py, or run python demo.py)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(ckpt, dict) or "model" not in ckpt or "model_config" not in ckpt:
            raise ValueError("not a train_ar.py checkpoint (it has no 'model' and 'model_config')")
        return ARModel.from_checkpoint(ckpt).to(device), ckpt.get("config", {})
    except Exception as e:  # empty, truncated, not a torch file or not train_ar.py's, or of another shape
        raise SampleError(f"cannot load AR checkpoint {path}: {first_line(e)}") from None


def check_num_keyframes(ar, n, keyframe_interval=8, ar_path="the AR model", sliding_window=False):
    m = ar.cfg.max_keyframes
    if n < 2:
        raise SampleError(f"--num_keyframes must be at least 2 (one clip lies between two keyframes), got {n}")
    if n > m and not sliding_window:
        need = (n - 1) * keyframe_interval + 1
        raise SampleError(
            f"{ar_path} supports at most {m} keyframes (its max_keyframes), {n} were asked for. To make longer "
            f"videos, train an AR model for {n}: videos of >= {need} frames (python data.py shapes --num_frames "
            f"{need} ...), python tokenizer.py encode ... --max_keyframes {n}, and every train_ar.py stage with "
            f"--max_keyframes={n} and a backbone of >= text_len + {n} x (1 + N_q) = "
            f"{ar.cfg.text_len + n * (1 + ar.cfg.n_queries)} positions; or pass --sliding_window to continue past "
            f"the trained length, each keyframe after the {m}th generated after the {m - 1} before it")


def check_compatible(ar, cfg, ar_path="the AR checkpoint", tokenizer_path="the tokenizer checkpoint"):
    """The AR model must write deep tokens of the tokenizer's shape (N_q tokens of C channels)."""
    a, t = (ar.cfg.n_queries, ar.cfg.token_dim), (cfg["n_queries"], cfg["token_dim"])
    if a != t:
        raise SampleError(f"the checkpoints do not fit together: tokenizer {tokenizer_path} makes deep tokens with "
                          f"N_q={t[0]}, C={t[1]} but AR model {ar_path} writes N_q={a[0]}, C={a[1]} "
                          f"(train the AR model on tokens of this tokenizer)")


def check_stride(cfg, keyframe_interval, frame_stride=None):
    """The decoder's frame stride: by default keyframe_interval // clip_frames, so a clip spans one interval; where
    a clip has more frames than the interval (the paper's 16-frame decoder) the stride the tokenizer was scored at
    (its eval_stride: the paper's 6)."""
    clip_frames = cfg["clip_frames"]
    stride = frame_stride if frame_stride is not None else keyframe_interval // clip_frames or cfg.get("eval_stride", 0)
    if stride < 1:
        raise SampleError(f"frame stride {stride} < 1: keyframe_interval {keyframe_interval} is shorter than the "
                          f"decoder's {clip_frames} frames per clip; pass --frame_stride")
    if cfg["denoiser"] == "unet" and stride > cfg["max_stride"]:  # VideoUNet has one stride embedding per value
        raise SampleError(f"frame stride {stride} exceeds the decoder's max_stride {cfg['max_stride']} (the largest "
                          f"it was trained with); pass --frame_stride <= {cfg['max_stride']}")
    return stride


def model_defaults(args, tokenizer_cfg, ar_config=None):
    """Fill the sampling flags left at None (argparse namespace, in place) with the trained model's settings:
    the decoder's (ddim_steps, cfg_scale, guidance_rescale) from the tokenizer checkpoint's config, the AR
    model's (temperature, var_scale, ar_cfg_scale, ar_cfg_mode) from the AR checkpoint's sample_*; the paper's values
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


# -----------------------------------------------------------------------------
# entrances: every check first, then the steps above


def generate_videos(ar, tokenizer, denoiser, cfg, prompts, num_keyframes, *, seed=0, keyframe_interval=8,
                    frame_stride=None, var_scale=0.01, temperature=1.0, ar_cfg_scale=1.0, ar_cfg_mode="samples",
                    ar_batch=64, sliding_window=False, progress=True, **decode_kw):
    """Text -> uint8 videos (B, (K-1) clip_frames + 1, S, S, 3) in one call from Python: `run`'s model checks,
    then its steps. decode_kw go to tokenizer.decode_clips (num_steps, eta, cfg_scale, batch_size, ...)."""
    check_num_keyframes(ar, num_keyframes, keyframe_interval, sliding_window=sliding_window)
    check_compatible(ar, cfg)
    stride = check_stride(cfg, keyframe_interval, frame_stride)
    tokens = generate_tokens(ar, list(prompts), num_keyframes, seed=seed, batch_size=ar_batch, progress=progress,
                             var_scale=var_scale, temperature=temperature, cfg_scale=ar_cfg_scale, cfg_mode=ar_cfg_mode)
    return decode_videos(tokenizer, denoiser, cfg, tokens, stride, seed=seed + 1, progress=progress, **decode_kw)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompt", action="append", default=[], help="a text prompt (repeat for several)")
    p.add_argument("--prompts_file", help="a text file, one prompt per line")
    p.add_argument("--num_keyframes", type=int, help="keyframes K per video (default: the AR model's max_keyframes)")
    p.add_argument("--out", default="out/samples", help="output directory")
    p.add_argument("--tokenizer_ckpt", default=DEFAULT_TOKENIZER_CKPT, help="train_tokenizer.py checkpoint")
    p.add_argument("--ar_ckpt", default=DEFAULT_AR_CKPT, help="train_ar.py checkpoint")
    p.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("AR model (unset: the checkpoint's settings)")
    g.add_argument("--var_scale", type=float, help="GMM variance scale (paper's release: 0.01)")
    g.add_argument("--temperature", type=float, help="mixture-component temperature, 0 = argmax")
    g.add_argument("--ar_cfg_scale", type=float, help="AR classifier-free guidance, 1 = off")
    g.add_argument("--ar_cfg_mode", choices=["params", "samples"],
                   help="guide the predicted distributions, or two drawn tokens (the release)")
    g.add_argument("--ar_batch", type=int, default=64, help="prompts per AR generate call")
    g.add_argument("--sliding_window", action="store_true",
                   help="--num_keyframes past the model's max_keyframes: each next one after the last max_keyframes - 1")
    add_decoder_and_output_flags(p)
    return p.parse_args(argv)


def add_decoder_and_output_flags(p):
    """The flags sample.py and reconstruct.py share: how clips are decoded, and how the videos are written."""
    g = p.add_argument_group("diffusion decoder")
    g.add_argument("--cfg_scale", type=float, help="default: the checkpoint's (paper: 7.5)")
    g.add_argument("--guidance_rescale", type=float, help="default: the checkpoint's (paper: 0.7)")
    g.add_argument("--ddim_steps", type=int, help="default: the checkpoint's (paper: 50)")
    g.add_argument("--eta", type=float, default=1.0)
    g.add_argument("--timestep_spacing", default="leading", choices=["leading", "trailing"])
    g.add_argument("--keyframe_interval", type=int, default=8, help="frames between the AR data's keyframes (8: 1/s)")
    g.add_argument("--frame_stride", type=int,
                   help="default: keyframe_interval // clip_frames, or the tokenizer's eval_stride if that is 0 (paper: 6)")
    g.add_argument("--decode_batch", type=int, default=32, help="clips per DDIM batch")
    g = p.add_argument_group("output")
    g.add_argument("--fps", type=float, help="default: --source_fps / frame stride (real time)")
    g.add_argument("--source_fps", type=float, default=data.FPS, help="frame rate of the training videos")
    g.add_argument("--formats", default=",".join(FORMATS), type=lambda s: tuple(f for f in s.split(",") if f),
                   help=f"comma-separated subset of {','.join(FORMATS)}")
    g.add_argument("--min_size", type=int, default=128, help="upscale written frames to at least this many px")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def decode_kwargs(args):
    """tokenizer.decode_clips' settings from the flags, once model_defaults has filled in the checkpoint's."""
    return dict(num_steps=args.ddim_steps, eta=args.eta, cfg_scale=args.cfg_scale,
                guidance_rescale=args.guidance_rescale, timestep_spacing=args.timestep_spacing,
                batch_size=args.decode_batch)


def run(args):
    """Every check first, once; then text -> deep tokens -> clips -> files."""
    check_flags(args)
    prompts = read_prompts(args.prompt, args.prompts_file)
    ar, ar_config = load_ar(args.ar_ckpt, args.device)
    num_keyframes = args.num_keyframes or ar.cfg.max_keyframes
    check_num_keyframes(ar, num_keyframes, args.keyframe_interval, f"AR model {args.ar_ckpt}", args.sliding_window)
    tokenizer, denoiser, cfg = load_tokenizer(args.tokenizer_ckpt, args.device)
    check_compatible(ar, cfg, args.ar_ckpt, args.tokenizer_ckpt)
    stride = check_stride(cfg, args.keyframe_interval, args.frame_stride)
    print(model_defaults(args, cfg, ar_config))
    tokens = generate_tokens(ar, prompts, num_keyframes, seed=args.seed, batch_size=args.ar_batch,
                             var_scale=args.var_scale, temperature=args.temperature, cfg_scale=args.ar_cfg_scale,
                             cfg_mode=args.ar_cfg_mode)
    videos = decode_videos(tokenizer, denoiser, cfg, tokens, stride, seed=args.seed + 1, **decode_kwargs(args))
    fps = args.fps or args.source_fps / stride
    write_samples(args.out, prompts, videos, fps, args.formats, args.min_size, clip_frames=cfg["clip_frames"],
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
