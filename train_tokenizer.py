"""
Train the deep tokenizer (paper Sec. 3.2): the query transformer Q and a video diffusion
decoder that rebuilds the clip between two keyframes from their 2 x N_q deep tokens
(the diffusion loss, paper Eq. 1; with keyframe_loss_weight > 0 also a redraw of the two
keyframes from their own tokens). The encoder E stays frozen. nanoGPT style, and the same
skeleton as train_ar.py (training.py holds what the two share).

    python train_tokenizer.py                                  # the tiny CPU configuration (config/shapes.py)
    torchrun --standalone --nproc_per_node=4 train_tokenizer.py config/tokenizer_paper.py
    python train_tokenizer.py config/shapes.py config/shapes_decoder_ft.py   # then the decoder on AR tokens

The last stage of the paper's pipeline (supp. Sec. 6), with `ar_ckpt` and `init_from` a trained tokenizer:
E and Q frozen, the decoder learns to rebuild clips from the deep tokens the AR model predicts for their
keyframes (teacher-forced: given the caption and the true keyframes before), so it tolerates the AR model's errors.

Every `eval_interval` (rank 0): reconstruct held-out clips from their head/rear deep tokens with
DDIM, log PSNR (next to baselines that see the true pixels) and a linear probe of the deep
tokens, write a ground truth | reconstruction gif, check the ranks agree, save a checkpoint.

Checkpoint out_dir/ckpt.pt (written atomically; torch.load(..., weights_only=True) reads it):
    tokenizer, denoiser, optimizer   state dicts; config: this run's settings (sample.py's decoder defaults)
    iter_num, rng (per-rank RNG states: init_from="resume" continues exactly), best_psnr
out_dir/best.pt is the checkpoint with the best held-out PSNR so far.
"""
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

import data
import diffusion
from evaluate import crossfade, direction_name, parse_prompt, psnr, recon_analysis
import tokenizer as tok
import training
from configurator import check_resume, configure

# -----------------------------------------------------------------------------
# default config: the tiny CPU configuration the demo trains (config/shapes.py names each choice and why)
out_dir = "out/shapes/tokenizer"
data_dir = "data/shapes"  # holds videos.csv (clips) and images.csv (encoder stand-in pre-training)
init_from = "scratch"  # "scratch", "resume" (from out_dir/ckpt.pt) or a checkpoint path to start from (fine-tuning)
override_on_resume = ""  # settings (comma-separated) a resume may change; any other difference is an error
eval_interval = 1300
log_interval = 25
eval_clips = 16  # held-out clips reconstructed at each eval
probe_videos = 400  # training videos whose keyframes the linear probes of the deep tokens read (0 = no probe)
probe_keyframes = 5  # keyframes per probe video, clip_frames apart
# encoder E (open_clip)
clip_model = "nanodicode-tiny"  # an open_clip model name, or a config in config/open_clip/
clip_pretrained = ""  # open_clip tag or local weights file; "" = stand-in pre-training below
clip_pretrain_iters = 0  # > 0: contrastive pre-training of the tiny CLIP on images.csv (0 = random frozen E)
clip_pretrain_batch = 128
clip_pretrain_lr = 1e-3
train_encoder = False  # the paper keeps E frozen
# query transformer Q
q_type = "transformer"  # or "perceiver": the release's resampler (only the queries update)
n_queries = 16
token_dim = 64
q_layers = 2
q_heads = 4
q_head_dim = 64  # q_type "perceiver": the width of each head
q_pretrained = ""  # q_type "perceiver": a pretrained resampler's weights (e.g. DynamiCrafter's checkpoint)
# denoiser
denoiser = "unet"  # the compact VideoUNet of diffusion.py, pixel space
unet_channels = (32, 48, 96)
map_channels = 8
per_frame_context = False  # True: a frame cross-attends to its own keyframe's tokens only (the release's split)
pretrained_dir = ""  # denoiser "unet3d": local diffusers directory with unet/ and vae/ (zeroscope / ModelScope-T2V layout)
# clips
image_size = 32
clip_frames = 8  # a clip is clip_frames + 1 frames: head, in-between, rear
max_stride = 4  # frame stride drawn from [1, max_stride], given to the decoder
val_fraction = 0.05
cache_mib = 2048  # decoded videos (at image_size, data_fps) stay in RAM when all fit in this; else each clip seeks
data_fps = 8  # videos are read at this rate, whatever their own: a frame stride is the same time in every file
loader_threads = 4  # clips read from their files (not cached): this many decoded at once (ffmpeg processes)
# diffusion
prediction_type = "v"
zero_terminal_snr = True
cond_drop_prob = 0.05  # classifier-free guidance: condition on the tokens of an all-zero image
keyframe_loss_weight = 1.0  # auxiliary loss: the decoder's token maps redraw the head/rear frames (0 = the paper's)
outline_loss_weight = 0.0  # > 0: pixels on a bright object's outline weigh 1 + this in the diffusion loss (0 = the paper's)
order_clips = 192  # > 0: at the end, renumber the deep tokens by how much the decoder needs them, on this many clips
ddim_steps = 25  # eval reconstructions; stored in the checkpoint with cfg_scale and guidance_rescale as sample.py's default
cfg_scale = 2.0  # the paper's 7.5 turns this small decoder's errors into speckle
guidance_rescale = 0.7
eval_stride = 1
# decoder fine-tuning on the AR model's tokens (supp. Sec. 6): init_from a tokenizer checkpoint, E and Q frozen
ar_ckpt = ""  # a train_ar.py checkpoint: the decoder rebuilds clips from the tokens it predicts for their keyframes
ar_token_prob = 1.0  # clips conditioned on the AR model's tokens; the rest on their own
ar_keyframe_interval = 8  # frames at data_fps between the AR data's keyframes (tokenizer.py encode --keyframe_interval)
# optimisation
batch_size = 12  # micro-batch per process
gradient_accumulation_steps = 1  # micro-batches per optimizer step over ALL processes (global batch / batch_size)
learning_rate = 2e-3
min_lr = 1e-4  # the cosine's floor (min_lr = learning_rate keeps the rate constant: config/tokenizer_paper.py)
max_iters = 2600
warmup_iters = 100
lr_decay_iters = 2600  # cosine from learning_rate to min_lr over these steps
weight_decay = 0.0
beta1 = 0.9
beta2 = 0.999
grad_clip = 1.0  # 0 = off
max_bad_steps = 10  # a non-finite loss or gradient skips the update; this many in a row stop the run
# system
device = "cuda" if torch.cuda.is_available() else "cpu"
dtype = "float32"  # or "bfloat16" (autocast)
compile = False
seed = 0  # demo.py --seed N passes --seed=N
# -----------------------------------------------------------------------------


class Autoencoder(nn.Module):
    """E + Q + denoiser; forward(clips, frame_stride, drop) = paper Eq. (1) on a batch of clips (with
    outline_loss_weight > 0 weighted toward the objects' outlines), plus keyframe_loss_weight x the MSE of the
    head/rear frames redrawn from their own deep tokens."""

    def __init__(self, tokenizer, denoiser, alphas_cumprod, prediction_type, keyframe_loss_weight=0.0,
                 outline_loss_weight=0.0):
        super().__init__()
        token_map = getattr(denoiser, "token_map", None)
        if keyframe_loss_weight > 0 and getattr(token_map, "to_rgb", None) is None:
            raise ValueError("keyframe_loss_weight > 0 needs the VideoUNet denoiser built with render_maps=True "
                             f"(tokenizer.build_autoencoder does that); {type(denoiser).__name__} has no token map")
        if outline_loss_weight > 0 and getattr(denoiser, "latent", False):
            raise ValueError(f"outline_loss_weight > 0 weighs pixels; {type(denoiser).__name__} denoises VAE latents")
        self.tokenizer, self.denoiser, self.prediction_type = tokenizer, denoiser, prediction_type
        self.keyframe_loss_weight, self.outline_loss_weight = keyframe_loss_weight, outline_loss_weight
        self.register_buffer("alphas_cumprod", alphas_cumprod, persistent=False)

    def condition(self, clips):
        """Head and rear deep tokens of clips (B, T, 3, H, W) -> (B, 2 N_q, C)."""
        return self.tokenizer.encode(clips[:, [0, -1]]).flatten(1, 2)

    def forward(self, clips, frame_stride, drop, cond=None):
        """cond: given deep tokens (B, 2 N_q, C) instead of the clips' own (fine-tuning on the AR model's)."""
        seen = torch.where(drop[:, None, None, None, None], torch.zeros_like(clips), clips)  # CFG: zero image
        if cond is None:
            cond = self.condition(seen)
        elif drop.any():  # the dropped rows get the zero frames' tokens, as above
            cond = torch.where(drop[:, None, None], self.condition(torch.zeros_like(clips[:1])), cond)
        x0 = self.denoiser.encode_frames(clips) if getattr(self.denoiser, "latent", False) else clips  # latent space
        weights = diffusion.outline_weights(clips, self.outline_loss_weight) if self.outline_loss_weight > 0 else None
        loss = diffusion.diffusion_loss(self.denoiser, x0, cond, frame_stride, self.alphas_cumprod,
                                        self.prediction_type, weights=weights)
        if self.keyframe_loss_weight > 0 and self.tokenizer.query.queries.requires_grad:  # redraw: teaches Q
            # (B, 2 N_q, C) -> (2B, N_q, C): redraw head and rear frames
            drawn = self.denoiser.token_map.render(cond.view(-1, self.tokenizer.n_queries, cond.shape[-1]))
            loss = loss + self.keyframe_loss_weight * F.mse_loss(drawn, seen[:, [0, -1]].flatten(0, 1))
        return loss


def draw_items(dataset, n, pool=None):
    """n random items of a dataset. With a thread pool (videos read from their files) they are decoded in
    parallel, each with its own seed drawn here: the batch, like the run, does not depend on the threads' timing."""
    index = torch.randint(len(dataset), (n,)).tolist()
    if pool is None:
        return [dataset[i] for i in index]
    return list(pool.map(dataset.get, index, torch.randint(2 ** 62, (n,)).tolist()))


def get_batch(dataset, n, pool=None):
    """n random clips (B, T, 3, H, W) and their frame strides (B,)."""
    items = draw_items(dataset, n, pool)
    clips = torch.stack([it["frames"] for it in items]).to(device)  # (B, T, 3, H, W)
    return clips, torch.tensor([it["frame_stride"] for it in items], device=device)


@torch.no_grad()
def get_ar_batch(dataset, n, pool, tokenizer, ar, stride, sampling):
    """Fine-tuning on the AR model's tokens: n random keyframe pairs of videos (dataset: every `stride`-th frame
    from the start), the clips between them (B, T, 3, H, W), and as their condition the deep tokens the AR model
    draws for the two keyframes given the video's caption and its true keyframes before (teacher forcing), for
    a fraction ar_token_prob of them; the clips' own tokens for the rest. -> clips, strides (B,), cond (B, 2 N_q, C)."""
    items = draw_items(dataset, n, pool)
    T = clip_frames + 1
    counts = [1 + (len(it["frames"]) - 1) // clip_frames for it in items]  # keyframes of each video
    K = max(counts)
    keyframes = torch.zeros(n, K, 3, image_size, image_size)
    for b, it in enumerate(items):
        keyframes[b, :counts[b]] = it["frames"][::clip_frames][:counts[b]]
    keyframes = keyframes.to(device)
    own = tokenizer.encode(keyframes)  # (B, K, N_q, C); padded keyframes only follow the real ones
    drawn = ar.predict([it["caption"] for it in items], own, **sampling)
    pair = [torch.randint(c - 1, ()).item() for c in counts]  # the clip between keyframes i and i + 1
    clips = torch.stack([it["frames"][i * clip_frames:i * clip_frames + T] for it, i in zip(items, pair)]).to(device)
    use_ar = torch.rand(n, device=device) < ar_token_prob
    rows = torch.arange(n, device=device)[:, None]
    pairs = torch.tensor(pair, device=device)[:, None] + torch.arange(2, device=device)  # (B, 2)
    cond = torch.where(use_ar[:, None, None, None], drawn[rows, pairs], own[rows, pairs])  # (B, 2, N_q, C)
    return clips, torch.full((n,), stride, device=device), cond.flatten(1, 2)


def where(frame):
    """Where the object of a shapes frame (3, H, W) lies, in words: 'at the top left', ..., 'in the middle'."""
    info = data.analyze_frame(data.to_uint8(frame))
    if info["centroid"] is None:
        return ""
    size = frame.shape[-1]
    row, col = (min(int(3 * c / size), 2) for c in reversed(info["centroid"]))
    words = " ".join(w for w in (("top", "", "bottom")[row], ("left", "", "right")[col]) if w)
    return f"at the {words}" if words else "in the middle"


def pretrain_clip(out_path):
    """Stand-in for CLIP's web-scale pre-training: a short contrastive run of the tiny
    open_clip model on the image-text set, saved as an open_clip weights file. Captions
    also say where the object is ('a red circle at the top left'), as web captions often
    do: with its position in the text, the encoder's tokens carry it too, and Q learns
    position from them (without: deep-token centroid probe 4.7 px at step 650, NOTES.md)."""
    import open_clip
    model = tok.create_clip(clip_model).to(device).train()
    tokenize = open_clip.get_tokenizer("ViT-B-32", context_length=model.context_length)  # bundled BPE, offline
    images = data.ImageTextDataset(os.path.join(data_dir, "images.csv"), image_size, cache=True)
    encoder = tok.FrameEncoder(model, trainable=True).to(device)  # same resize + normalisation as at encode time
    loss_fn = open_clip.loss.ClipLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=clip_pretrain_lr, weight_decay=0.1)
    captions = [f"{images[i]['caption']} {where(images[i]['frames'][0])}".strip() for i in range(len(images))]
    for it in range(clip_pretrain_iters):
        batch = torch.randint(len(images), (clip_pretrain_batch,)).tolist()
        x = encoder.preprocess(torch.cat([images[i]["frames"] for i in batch]).to(device))
        text = tokenize([captions[i] for i in batch]).to(device)
        image_features = nn.functional.normalize(model.encode_image(x), dim=-1)
        text_features = nn.functional.normalize(model.encode_text(text), dim=-1)
        loss = loss_fn(image_features, text_features, model.logit_scale.exp())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if it % log_interval == 0 or it == clip_pretrain_iters - 1:
            said = np.array([captions[i] for i in batch])  # a hit: the best text has the same caption
            hits = said[(image_features @ text_features.T).argmax(1).cpu().numpy()] == said
            print(f"clip pre-train {it}: loss {loss.item():.3f}, image->text caption retrieval {hits.mean():.2f}")
    tmp = out_path + ".tmp"
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, out_path)


def ridge_probe(features, targets):
    """Linear probe with a ridge penalty fit on the first 60% of the samples, its penalty picked on the next
    20% (least squared error), predicting the last 20%: features (N, F), targets (N, D) ->
    (predictions, targets) of the last 20%. Samples in video order keep the parts mostly apart by video."""
    n = len(features)
    fit, pick, score = slice(0, 3 * n // 5), slice(3 * n // 5, 4 * n // 5), slice(4 * n // 5, n)
    f = features - features[fit].mean(0)
    f = f / f[fit].std()  # one global scale: per-feature scaling blows up features that are rarely on
    f = torch.cat([f, torch.ones(n, 1)], 1).double()
    y = targets.double()
    a = f[fit]
    best = None
    for lam in (1e-2, 1e-1, 1, 10, 100, 1000):
        w = torch.linalg.solve(a.T @ a + lam * torch.eye(a.shape[1], dtype=a.dtype), a.T @ y[fit])
        err = (f[pick] @ w - y[pick]).square().sum().item()
        if best is None or err < best[0]:
            best = (err, w)
    return f[score] @ best[1], y[score]


@torch.no_grad()
def probe_deep_tokens(tokenizer, keyframes, captions):
    """What a linear read-out finds in the deep tokens of N videos' consecutive keyframes (N, K, 3, H, W):
    color and shape (from the captions), centroid (px error) per keyframe, and the motion between two
    keyframes (displacement error in px, and its direction) from the pair's tokens."""
    N, K = keyframes.shape[:2]
    frames = keyframes.flatten(0, 1)
    tokens = torch.cat([tokenizer.encode(frames[i:i + 256].to(device)).flatten(1).float().cpu()
                        for i in range(0, len(frames), 256)]).view(N, K, -1)  # (N, K, N_q * C)
    infos = [data.analyze_frame(f) for f in data.to_uint8(frames)]
    nan = (float("nan"),) * 2  # keyframes without exactly one object are left out of the probes
    centroid = torch.tensor([i["centroid"] if i["num_objects"] == 1 else nan for i in infos]).view(N, K, 2)
    parsed = [parse_prompt(c) for c in captions]
    color = torch.tensor([list(data.COLORS).index(p["color"]) for p in parsed]).repeat_interleave(K)
    shape = torch.tensor([data.SHAPES.index(p["shape"]) for p in parsed]).repeat_interleave(K)
    seen = ~centroid.flatten(0, 1).isnan().any(1)  # keyframes showing exactly one object
    flat = tokens.flatten(0, 1)[seen]
    accuracy = lambda pred, y: (pred.argmax(1) == y.argmax(1)).double().mean().item()
    out = {"probe_color": accuracy(*ridge_probe(flat, F.one_hot(color[seen], len(data.COLORS)))),
           "probe_shape": accuracy(*ridge_probe(flat, F.one_hot(shape[seen], len(data.SHAPES))))}
    pred, y = ridge_probe(flat, centroid.flatten(0, 1)[seen])
    out["probe_centroid"] = (pred - y).norm(dim=1).mean().item()
    if K > 1:
        pairs = torch.cat([tokens[:, :-1], tokens[:, 1:]], 2).flatten(0, 1)  # (N (K-1), 2 N_q C): head, rear
        motion = (centroid[:, 1:] - centroid[:, :-1]).flatten(0, 1)  # (N (K-1), 2)
        both = ~motion.isnan().any(1)
        pred, y = ridge_probe(pairs[both], motion[both])
        out["probe_motion"] = (pred - y).norm(dim=1).mean().item()
        out["probe_direction"] = float(np.mean([direction_name(*p) == direction_name(*t)
                                                 for p, t in zip(pred.tolist(), y.tolist())]))
    return out


def reconstruction_metrics(clips, recon):
    """PSNR of the in-between frames (with the pixel-seeing baselines) and analyser scores; clips and their
    reconstructions (B, T, 3, H, W) in [-1, 1]."""
    mid = clips[:, 1:-1]
    db = lambda x: psnr(x, mid, data_range=2.0)  # per clip, then the mean
    out = {"psnr": db(recon[:, 1:-1]), "psnr_crossfade": db(crossfade(clips)),
           "psnr_repeat_head": db(clips[:, :1].expand_as(mid)), "psnr_black": db(-torch.ones_like(mid))}
    seen = recon_analysis(data.to_uint8(clips), data.to_uint8(recon))
    return out | {"color_acc": seen["color"], "centroid_err": seen["centroid_err"], "one_object": seen["one_object"],
                  "shape_acc": seen["shape"], "direction_acc": seen["direction"]}


def write_side_by_side(path, clips, recon, scale=4):
    """gif: ground truth on top, reconstruction below, one column per clip."""
    import imageio
    truth, made = data.to_uint8(clips[:8]), data.to_uint8(recon[:8])  # (B, T, H, W, 3)
    grid = np.concatenate([np.concatenate(list(truth), axis=2), np.concatenate(list(made), axis=2)], axis=1)
    grid = grid.repeat(scale, axis=1).repeat(scale, axis=2)  # (T, 2H, B W, 3)
    imageio.mimsave(path, list(grid), duration=125, loop=0)


# -----------------------------------------------------------------------------

def main(config):
    global device  # the helpers above read it; under torchrun on GPUs it names this process's GPU
    ddp, rank, local_rank, world, device, accum = training.setup(device, gradient_accumulation_steps,
                                                                   "train_tokenizer.py")
    master, device_type = rank == 0, device.split(":")[0]
    log = (lambda msg: print(msg, flush=True)) if master else (lambda msg: None)
    ctx = training.autocast(dtype, device_type, "train_tokenizer.py", allowed=("float32", "bfloat16"))
    os.makedirs(out_dir, exist_ok=True)
    ckpt_path = os.path.join(out_dir, "ckpt.pt")

    # encoder stand-in pre-training (rank 0 writes it once; re-runs reuse the file)
    torch.manual_seed(seed)
    encoder_weights = clip_pretrained
    if not clip_pretrained and clip_pretrain_iters > 0:
        encoder_weights = os.path.join(out_dir, "clip_pretrained.pt")
        if master and not os.path.isfile(encoder_weights):
            t0 = time.time()
            pretrain_clip(encoder_weights)
            log(f"clip pre-training: {time.time() - t0:.0f}s -> {encoder_weights}")
        if ddp:
            dist.barrier()

    # model: E + Q + denoiser, from scratch or resumed
    tokenizer, denoiser = tok.build_autoencoder(config | {"clip_pretrained": encoder_weights})
    alphas_cumprod = diffusion.make_alphas_cumprod(zero_terminal_snr=zero_terminal_snr)
    try:
        model = Autoencoder(tokenizer, denoiser, alphas_cumprod, prediction_type, keyframe_loss_weight,
                            outline_loss_weight).to(device)
    except ValueError as e:
        sys.exit(f"config error: {e}")
    ar, ar_sampling = None, None
    if ar_ckpt:  # fine-tuning the decoder on the AR model's tokens: E and Q, whose tokens it was trained on, stay
        if init_from == "scratch" or ar_keyframe_interval % clip_frames:
            sys.exit(f"config error: ar_ckpt fine-tunes a trained decoder: init_from must name its checkpoint (is "
                     f"{init_from!r}) and ar_keyframe_interval ({ar_keyframe_interval}) be a multiple of clip_frames "
                     f"({clip_frames})")
        from ar_model import ARModel
        saved = torch.load(ar_ckpt, map_location=device, weights_only=True)
        ar = ARModel.from_checkpoint(saved).to(device).requires_grad_(False)
        ar_sampling = dict(var_scale=saved["config"].get("sample_var_scale", 0.01),
                           temperature=saved["config"].get("sample_temperature", 1.0))
        if (ar.cfg.n_queries, ar.cfg.token_dim) != (n_queries, token_dim):
            sys.exit(f"config error: {ar_ckpt} writes N_q={ar.cfg.n_queries}, C={ar.cfg.token_dim} deep tokens; this "
                     f"tokenizer makes N_q={n_queries}, C={token_dim}")
        tokenizer.requires_grad_(False)
        if getattr(getattr(denoiser, "token_map", None), "to_rgb", None) is not None:
            denoiser.token_map.to_rgb.requires_grad_(False)  # the redraw teaches Q, which is frozen here
        log(f"fine-tuning the decoder on {ar_ckpt}'s tokens ({ar_token_prob:.0%} of clips; its sampling: "
            f"var_scale {ar_sampling['var_scale']:g}, temperature {ar_sampling['temperature']:g}); E and Q frozen")
        saved = None
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, betas=(beta1, beta2), weight_decay=weight_decay)
    ckpt, iter_num, start_iter, best_psnr = None, 0, 0, -math.inf
    if init_from == "resume":
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        check_resume(ckpt["config"], config, ckpt_path)
        tokenizer.load_state_dict(ckpt["tokenizer"])
        denoiser.load_state_dict(ckpt["denoiser"])
        optimizer.load_state_dict(ckpt["optimizer"])
        iter_num = start_iter = ckpt["iter_num"]
        best_psnr = ckpt.get("best_psnr", -math.inf)
        log(f"resumed from {ckpt_path} at iter {iter_num}")
    elif init_from != "scratch":  # a trained tokenizer to fine-tune
        if not os.path.isfile(init_from):
            sys.exit(f"config error: init_from must be 'scratch', 'resume' or a checkpoint file; {init_from!r} is none")
        source = torch.load(init_from, map_location=device, weights_only=True)
        try:
            tokenizer.load_state_dict(source["tokenizer"])
            denoiser.load_state_dict(source["denoiser"])
        except RuntimeError as e:
            sys.exit(f"config error: {init_from} does not fit this config's model: {str(e).splitlines()[1].strip()}")
        log(f"init_from {init_from}: tokenizer and decoder weights (iter {source['iter_num']}), a fresh optimizer")
        source = None
    log(f"E {sum(p.numel() for p in tokenizer.encoder.parameters()) / 1e6:.2f}M (frozen: {not train_encoder}), "
        f"Q {sum(p.numel() for p in tokenizer.query.parameters()) / 1e6:.2f}M, "
        f"denoiser {sum(p.numel() for p in denoiser.parameters()) / 1e6:.2f}M; "
        f"trainable {sum(p.numel() for p in params) / 1e6:.2f}M")
    train_model = torch.compile(model) if compile else model  # compile before the DDP wrap
    if ddp:
        train_model = DDP(train_model, device_ids=[local_rank] if device_type == "cuda" else None)

    # data: clips of the training videos; fixed held-out clips for the evaluations
    manifest = os.path.join(data_dir, "videos.csv")
    need = data.decoded_mib([r["path"] for r in data.read_manifest(manifest)], image_size, data_fps)
    frames_cache = {} if need <= cache_mib else None  # one cache for the training, held-out and probe readers
    log(f"decoded videos ~{need:.0f} MiB (from 16 files' headers): " + (f"held in RAM (cache_mib {cache_mib})"
        if frames_cache is not None else f"over cache_mib {cache_mib}, so each clip is decoded from its file"))
    ar_stride = ar_keyframe_interval // clip_frames  # ar_ckpt: every ar_stride-th frame, keyframes clip_frames apart
    train_set = (data.ClipDataset(manifest, image_size, clip_frames, max_stride, split="train",
                                  val_fraction=val_fraction, cache=frames_cache, fps=data_fps) if ar is None else
                 data.KeyframeDataset(manifest, image_size, ar_stride, (ar.cfg.max_keyframes - 1) * clip_frames + 1,
                                      clip_frames + 1, split="train", val_fraction=val_fraction, cache=frames_cache,
                                      fps=data_fps))
    val_set = data.ClipDataset(manifest, image_size, clip_frames, eval_stride, split="val",
                               val_fraction=val_fraction, cache=frames_cache, fps=data_fps)
    pool = ThreadPoolExecutor(loader_threads) if frames_cache is None and loader_threads > 0 else None
    if frames_cache is not None:  # decode everything once, several files at a time, instead of one file per sample
        t_load = time.time()
        n_files = train_set.preload() + val_set.preload()
        log(f"decoded {n_files} videos into RAM in {time.time() - t_load:.0f}s")
    with torch.random.fork_rng(devices=[]):  # the same held-out clips at every eval and in every run
        torch.manual_seed(seed)
        val_clips = torch.stack([val_set[i % len(val_set)]["frames"] for i in range(eval_clips)])
    probe_set = data.KeyframeDataset(manifest, image_size, clip_frames, probe_keyframes, split="train",
                                     val_fraction=val_fraction, cache=frames_cache, fps=data_fps) if probe_videos else None
    if probe_set is not None and not any(parse_prompt(r["caption"]) for r in probe_set.rows[:probe_videos]):
        probe_set = None  # the probes read color, shape and motion from shapes captions
        log("linear probes of the deep tokens off: the captions are not the shapes set's")
    torch.manual_seed(seed + rank)  # each rank its own batches, noise and drops
    if ckpt is not None:
        training.restore_rng(ckpt["rng"], rank, world, log)
    ckpt = None

    @torch.no_grad()
    def evaluate():
        """Rank 0: held-out clips decoded from their head/rear deep tokens alone (PSNR, analyser), a gif, probes."""
        model.eval()
        recon = tok.reconstruct_clips(tokenizer, denoiser, val_clips, config, frame_stride=eval_stride,
                                      num_steps=ddim_steps, cfg_scale=cfg_scale, guidance_rescale=guidance_rescale,
                                      seed=seed, progress=False)  # (N, T, 3, S, S)
        metrics = reconstruction_metrics(val_clips, recon)
        write_side_by_side(os.path.join(out_dir, f"recon_{iter_num:06d}.gif"), val_clips, recon)
        if probe_set is not None:
            items = [probe_set[i] for i in range(min(probe_videos, len(probe_set)))]
            items = [it for it in items if len(it["frames"]) == probe_keyframes  # long enough, shapes captions
                     and parse_prompt(it["caption"])]
            metrics |= probe_deep_tokens(tokenizer, torch.stack([it["frames"] for it in items]),
                                         [it["caption"] for it in items])
        model.train()
        return metrics

    def renumber_queries():
        """The decoder reads the deep tokens as a set, the AR model in order: put first the ones the decoder needs
        most (tokenizer.order_queries), chosen on rank 0 and broadcast. AdamW's moments follow their rows."""
        queries, order = tokenizer.query.queries, torch.empty(n_queries, dtype=torch.long, device=device)
        if master:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model.eval()
                order = tok.order_queries(tokenizer, denoiser, get_batch(train_set, order_clips, pool)[0],
                                          model.alphas_cumprod, prediction_type).to(device)
                model.train()
        if ddp:
            dist.broadcast(order, 0)
            if not master:
                with torch.no_grad():
                    queries.copy_(queries[order])
        for moment in optimizer.state[queries].values():
            if moment.shape == queries.shape:
                moment.copy_(moment[order])  # indexing copies first
        log(f"deep tokens renumbered by the decoder's need (tokenizer.order_queries): order {order.tolist()}")

    log(f"{world} process(es), {accum} micro-batches of {batch_size} clips each per step: global batch "
        f"{batch_size * accum * world}; device {device}, dtype {dtype}, compile {compile}")
    csv_log = training.CsvLog(out_dir, master)
    guard = training.BadStepGuard(max_bad_steps, "train_tokenizer.py", f"Lower learning_rate, or check the videos "
                                  f"in {manifest}", log)
    t0, train_time, clips_seen = time.time(), 0.0, 0
    model.train()
    while True:
        lr = training.get_lr(iter_num, learning_rate, min_lr, warmup_iters, lr_decay_iters)
        for group in optimizer.param_groups:
            group["lr"] = lr
        # no eval before a step was taken: at 0 it reconstructs noise, on resume it repeats the last
        if iter_num > start_iter and (iter_num % eval_interval == 0 or iter_num == max_iters):
            if iter_num == max_iters and order_clips > 0 and ar is None:  # (the AR model reads them in order)
                renumber_queries()
            checksum = training.checksum(model, ddp)
            metrics = evaluate() if master else None
            rngs = training.rng_states(ddp, world)  # after the evaluation: a resume carries on from these states
            if master:
                log(f"eval {iter_num}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
                log(f"parameter checksum {checksum:.6f}" + (f" (same on all {world} ranks)" if ddp else ""))
                csv_log.write("eval", iter_num, time.time() - t0, metrics)
                best = metrics["psnr"] > best_psnr  # best.pt: the best held-out reconstructions
                best_psnr = max(best_psnr, metrics["psnr"])
                training.save_checkpoint(out_dir, dict(
                    tokenizer=tokenizer.state_dict(), denoiser=denoiser.state_dict(), optimizer=optimizer.state_dict(),
                    iter_num=iter_num, best_psnr=best_psnr, config=config, rng=rngs), best)
                log(f"saved {ckpt_path}" + (" and best.pt" if best else ""))
        if iter_num >= max_iters:
            break
        t_iter = time.time()
        for micro_step in range(accum):
            if ddp:  # gradients sync on the last micro-step only
                train_model.require_backward_grad_sync = micro_step == accum - 1
            if ar is None:
                clips, stride, cond = *get_batch(train_set, batch_size, pool), None
            else:
                clips, stride, cond = get_ar_batch(train_set, batch_size, pool, tokenizer, ar, ar_stride, ar_sampling)
            drop = torch.rand(batch_size, device=device) < cond_drop_prob
            with ctx:
                loss = train_model(clips, stride, drop, cond) / accum
            loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else math.inf)
        if guard.ok(grad_norm, iter_num):
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        iter_num += 1
        clips_seen += batch_size * accum * world
        train_time += time.time() - t_iter
        if master and iter_num % log_interval == 0:
            dt = time.time() - t0
            log(f"iter {iter_num}: loss {loss.item() * accum:.4f}, lr {lr:.2e}, "
                f"{clips_seen / train_time:.1f} clips/s, {dt:.0f}s")
            csv_log.write("train", iter_num, dt, {"loss": loss.item() * accum})
    if ddp:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(configure(globals(), sys.argv[1:]))
