"""
A real video through the deep tokenizer and back (paper Fig. 3 and 4): its keyframes -> deep tokens -> the
diffusion decoder's clip between every two keyframes, written beside the original, with the PSNR between them.

    python reconstruct.py data/shapes/videos/000000.mp4 --out out/recon     # Fig. 3
    python reconstruct.py data/shapes/videos/000000.mp4 --zero_tokens 8     # Fig. 4: half of the 16 tokens zeroed
    python reconstruct.py data/shapes/videos/000000.mp4 --zero_tokens 0 4 8 12  # several, one model load

Writes <video>_recon[_zeroN].mp4 and .gif (original | reconstruction) for each N. The tokenizer checkpoint
defaults to where `python demo.py` puts it; decoder settings left unset are the checkpoint's, as in sample.py
(whose decoder and output flags this script shares).
"""
import argparse
import os
import sys

import numpy as np
import torch

import data
import evaluate
import sample
from sample import SampleError


@torch.no_grad()
def reconstruct_video(tokenizer, denoiser, cfg, frames, *, keyframe_interval=8, frame_stride=None, zero_tokens=0,
                      zero_last=False, num_keyframes=None, seed=0, **decode_kw):
    """A real video (T, H, W, 3) uint8 -> (original, reconstruction), uint8 (F, S, S, 3) each (paper Fig. 3, 4).

    Keyframes every `keyframe_interval` frames (at most num_keyframes) are tokenized and decoded pairwise like
    generated tokens (sample.decode_videos, which takes decode_kw); with zero_tokens = n the first n of each
    keyframe's N_q deep tokens are set to 0 first (as the authors' release draws Fig. 4), or the last n with
    zero_last (the ones the decoder needs least, when train_tokenizer.py renumbered them: order_clips).
    `original` holds the frames at the decoder's time positions (keyframe + j * stride). frame_stride: a
    checked one, as sample.check_stride returns it; None: the default, checked here.
    """
    stride = frame_stride or sample.check_stride(cfg, keyframe_interval)
    Nq, S, cf = cfg["n_queries"], cfg["image_size"], cfg["clip_frames"]
    check_zero_tokens([zero_tokens], Nq)
    K = 1 + (len(frames) - 1) // keyframe_interval
    K = min(K, num_keyframes) if num_keyframes else K
    if K < 2:
        raise SampleError(f"the video has {len(frames)} frames; 2 keyframes {keyframe_interval} frames apart need "
                          f">= {keyframe_interval + 1}")
    dev = next(denoiser.parameters()).device
    keyframes = data.to_tensor(frames[:(K - 1) * keyframe_interval + 1:keyframe_interval], S).to(dev)  # (K, 3, S, S)
    tokens = tokenizer.encode(keyframes)[None]  # (1, K, N_q, C)
    (tokens[:, :, Nq - zero_tokens:] if zero_last else tokens[:, :, :zero_tokens]).zero_()
    recon = sample.decode_videos(tokenizer, denoiser, cfg, tokens, stride, seed=seed, **decode_kw)[0]
    index = [i * keyframe_interval + j * stride for i in range(K - 1) for j in range(0 if i == 0 else 1, cf + 1)]
    return data.to_uint8(data.to_tensor(frames[np.minimum(index, len(frames) - 1)], S)), recon


def check_zero_tokens(counts, n_queries):
    for n in counts:
        if not 0 <= n <= n_queries:
            raise SampleError(f"--zero_tokens must lie in [0, N_q={n_queries}], got {n}")


def read_video(path):
    """uint8 frames (T, H, W, 3) of the video to reconstruct, or SampleError."""
    if not os.path.isfile(path):
        raise SampleError(f"video {path} does not exist")
    try:
        return data.read_frames(path)
    except Exception as e:
        raise SampleError(f"cannot read video {path}: {sample.first_line(e)}") from None


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video", help="the video to reconstruct (any container/codec ffmpeg reads)")
    p.add_argument("--out", default="out/recon", help="output directory")
    p.add_argument("--tokenizer_ckpt", default=sample.DEFAULT_TOKENIZER_CKPT, help="train_tokenizer.py checkpoint")
    p.add_argument("--num_keyframes", type=int, help="at most this many keyframes (default: all of the video's)")
    p.add_argument("--zero_tokens", type=int, nargs="+", default=[0],
                   help="zero the first n deep tokens of each keyframe (Fig. 4); several n: one video each")
    p.add_argument("--zero_last", action="store_true", help="zero the last n instead (renumbered: the least needed)")
    p.add_argument("--seed", type=int, default=0)
    sample.add_decoder_and_output_flags(p)
    return p.parse_args(argv)


def run(args):
    """Every check first, once; then the video's keyframes -> deep tokens -> clips -> files, for each zero_tokens."""
    sample.check_flags(args)
    frames = read_video(args.video)
    tokenizer, denoiser, cfg = sample.load_tokenizer(args.tokenizer_ckpt, args.device)
    stride = sample.check_stride(cfg, args.keyframe_interval, args.frame_stride)
    check_zero_tokens(args.zero_tokens, cfg["n_queries"])
    print(sample.model_defaults(args, cfg))
    for zero_tokens in args.zero_tokens:
        original, recon = reconstruct_video(
            tokenizer, denoiser, cfg, frames, keyframe_interval=args.keyframe_interval, frame_stride=stride,
            zero_tokens=zero_tokens, zero_last=args.zero_last, num_keyframes=args.num_keyframes, seed=args.seed,
            **sample.decode_kwargs(args))
        name = os.path.splitext(os.path.basename(args.video))[0] + "_recon"
        name += f"_zero{'last' if args.zero_last else ''}{zero_tokens}" if zero_tokens else ""
        fps = args.fps or args.source_fps / stride
        for ext in [e for e in ("mp4", "gif") if e in args.formats] or ["mp4"]:
            data.write_video(os.path.join(args.out, f"{name}.{ext}"), data.side_by_side(original, recon), fps,
                             args.min_size)
        which = "last" if args.zero_last else "first"
        print(f"original | reconstruction ({len(recon)} frames, {which} {zero_tokens} of {cfg['n_queries']} tokens "
              f"zeroed): PSNR {evaluate.psnr(original[None], recon[None]):.2f} dB -> {os.path.join(args.out, name)}.*")


def main(argv=None):
    args = parse_args(argv)
    try:
        run(args)
    except SampleError as e:  # user mistakes: one clear line, no traceback
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
