"""
Train the DiCoDe AR model (ar_model.py) on deep-token shards, nanoGPT style.

$ python train_ar.py config/ar_shapes_stage1.py                       # one process, CPU or GPU
$ python train_ar.py config/ar_shapes_stage1.py --max_iters=100 --batch_size=8
$ torchrun --standalone --nproc_per_node=4 train_ar.py config/ar_paper_llama1b.py   # 4 GPUs, DDP

Data: `data_dir` holds the shards `tokenizer.py encode` writes (data.save_token_shard):
images_*.safetensors (one keyframe per row) and videos_*.safetensors. Their tokens stay on disk, memory-mapped
(data.TokenRows): a batch reads its rows, so memory does not grow with the data.
The paper trains in stages (supp. Sec. 6): images with L2, images with GMM, image:video 1:1,
then motion-filtered videos; config/ar_shapes_stage{1,2,3,4}.py do the same, each starting
from the previous stage's checkpoint (init_from=<path>).

Checkpoint out_dir/ckpt.pt (written atomically; torch.load(..., weights_only=True) reads it):
    model         state dict of ar_model.ARModel
    model_config  ARConfig as a dict: ARModel.from_checkpoint(path) rebuilds the model from it
    optimizer, iter_num, val_loss, config (this run's settings, sample_* included: sample.py's defaults),
    rng           per-rank RNG states (torch, cuda, batch sampler) for exact resume
    best_score    the lowest generated keyframes' error / still so far (held-out val loss without videos)
out_dir/best.pt is the checkpoint of that best evaluation (the NLL can fall while what the model generates
worsens). init_from="resume" continues from ckpt.pt exactly (same batches, same drops, same updates).
"""
import glob
import math
import os
import sys
import time
import zlib
from dataclasses import asdict

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

import training
from ar_model import ARConfig, ARModel
from configurator import check_resume, configure
from data import TokenRows, load_token_shard, map_token_shard, shard_nonfinite_rows

# -----------------------------------------------------------------------------
# default config: stage 1 of the tiny CPU configuration the demo trains (config/ar_shapes_stage1.py says why)
# I/O
out_dir = "out/shapes/ar_stage1"
init_from = "scratch"  # "scratch", "resume" (out_dir/ckpt.pt) or a checkpoint path to start from (next stage)
override_on_resume = ""  # settings (comma-separated) a resume may change; any other difference is an error
eval_interval = 200  # held-out loss, rank sync check and checkpoint every eval_interval steps and at the end
eval_iters = 10
log_interval = 50
# data
data_dir = "data/shapes_tokens"
image_video_ratio = 1.0  # fraction of image rows in a batch: 1.0 images only, 0.0 videos only
min_motion = None  # keep videos whose motion score lies in [min_motion, max_motion]; None = no bound
max_motion = None
max_keyframes = 5  # videos are cut to this many keyframes; also the model's frame-embedding size
val_fraction = 0.05  # held-out rows (chosen by a hash of shard name and row: deterministic)
# model (ar_model.ARConfig); n_queries and token_dim come from the data
backbone = "mini-gpt2"  # ar_model.BACKBONES name or a local HF directory with weights (+ tokenizer)
text_len = 16
loss = "l2"  # "gmm" | "gaussian" | "l2" (paper Table 4)
gmm_k = 16
text_drop_prob = 0.1
visual_drop_prob = 0.05
token_norm = True  # standardise deep tokens per (token, channel) with the training set's statistics (scratch only)
gmm_means_from_l2 = True  # L2 -> GMM stage: every component's mean starts at the L2 head's prediction (else fresh)
from_scratch = True  # False: the backbone must come with weights (a local directory), as the paper's does
# sampling defaults, stored in the checkpoint's config for sample.py (its flags override); the paper's release values
sample_temperature = 1.0  # mixture-component temperature (0 = the most likely component)
sample_var_scale = 0.01  # GMM variance scale
sample_cfg_scale = 1.0  # AR classifier-free guidance (1 = off)
sample_cfg_mode = "params"  # guide the predicted distributions; "samples": guide two drawn tokens (the release)
# optimizer: AdamW (fused kernel on CUDA and CPU), warm-up + cosine (paper: lr 1e-4, betas (0.9, 0.98), eps 1e-6, wd 0.05)
batch_size = 32  # micro-batch per process
gradient_accumulation_steps = 1  # micro-batches per optimizer step over ALL processes (global batch / batch_size)
learning_rate = 1e-3
min_lr = 1e-4
max_iters = 400
warmup_iters = 50
lr_decay_iters = 400
weight_decay = 0.05  # matrices and embeddings only (dim >= 2)
beta1 = 0.9
beta2 = 0.98
adam_eps = 1e-6
grad_clip = 1.0  # 0 = off
max_bad_steps = 10  # a non-finite loss or gradient skips the update; this many in a row stop the run
# system
device = "cuda" if torch.cuda.is_available() else "cpu"
dtype = "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"
compile = False
peak_flops = 0.0  # peak FLOP/s of one device for MFU (e.g. CPU); 0 = PEAK_FLOPS by CUDA device name
seed = 0  # demo.py --seed N passes --seed=N

PEAK_FLOPS = {"A100": 312e12, "H100": 989e12}  # dense bf16 tensor-core peaks

# -----------------------------------------------------------------------------
# data


def load_tokens(data_dir, kind, max_keyframes, val_fraction, min_motion=None, max_motion=None):
    """All `{kind}_*.safetensors` shards -> {"train": set, "val": set}, or None if there are none.

    A set is {"tokens": TokenRows (N, T, N_q, C), left on disk, "num_keyframes": (N,), "captions": [N]},
    T <= max_keyframes. Videos outside [min_motion, max_motion] are dropped (a NaN score fails any bound), and
    rows whose tokens are not all finite, with a warning. A row is held out when crc32("shard:row") / 2^32 <
    val_fraction, whatever the other rows and filters."""
    paths = sorted(glob.glob(os.path.join(data_dir, f"{kind}_*.safetensors")))
    if not paths:
        return None
    parts = {"train": [], "val": []}
    for path in paths:
        _, nk, captions, motion = load_token_shard(path, with_tokens=False)  # (N,), [N], (N,)
        listed = shard_nonfinite_rows(path)  # written with the shard; a shard without the list is read to check
        if listed is None:
            tokens = map_token_shard(path)  # (N, K, N_q, C) on disk, checked 256 rows at a time
            finite = torch.cat([torch.from_numpy(np.isfinite(chunk).reshape(len(chunk), -1).all(1))
                                for chunk in (tokens[i:i + 256] for i in range(0, len(tokens), 256))])
        else:
            finite = torch.ones(len(nk), dtype=torch.bool)
            finite[listed] = False
        if not finite.all():
            print(f"warning: {path}: {int((~finite).sum())} of {len(nk)} rows hold NaN/inf tokens; skipped")
        keep = (nk > 0) & finite
        if min_motion is not None:
            keep &= motion >= min_motion
        if max_motion is not None:
            keep &= motion <= max_motion
        name = os.path.basename(path)
        held = torch.tensor([zlib.crc32(f"{name}:{i}".encode()) < val_fraction * 2 ** 32 for i in range(len(nk))])
        for split, rows in (("train", keep & ~held), ("val", keep & held)):
            idx = rows.nonzero().flatten()
            parts[split].append((path, idx, nk[idx].clamp(max=max_keyframes), [captions[i] for i in idx]))
    out = {}
    for split, chunks in parts.items():
        nk = torch.cat([c[2] for c in chunks])
        out[split] = {"tokens": TokenRows([(c[0], c[1]) for c in chunks], nk), "num_keyframes": nk,
                      "captions": sum((c[3] for c in chunks), [])}
    return out


def token_stats(*sets, chunk=256):
    """Mean and std (unbiased) per (token, channel) over every real (not padding) training keyframe of the
    token sets, read `chunk` rows at a time: (N_q, C) each."""
    total = total_sq = count = 0
    for d in sets:
        if d is None:
            continue
        s = d["train"]
        for start in range(0, len(s["tokens"]), chunk):
            rows = torch.arange(start, min(start + chunk, len(s["tokens"])))
            tokens = s["tokens"][rows].double()  # (n, T, N_q, C)
            real = tokens[torch.arange(tokens.shape[1]) < s["num_keyframes"][rows, None]]  # (m, N_q, C)
            total, total_sq, count = total + real.sum(0), total_sq + real.square().sum(0), count + len(real)
    mean = total / count
    return mean.float(), ((total_sq - count * mean ** 2) / (count - 1)).clamp(min=0).sqrt().float()


class Batches:
    """Random batches drawn from token sets with a generator seeded per rank.

    Each batch holds round(batch_size * image_ratio) image rows then video rows, uniformly with
    replacement; keyframes are zero-padded to the longest row (or to pad_to); captions are tokenized by
    `tokenize` (ARModel.tokenize_text). Returns text_ids, text_mask (B, L), tokens (B, T, N_q, C),
    num_keyframes (B,) on `device`."""

    def __init__(self, images, videos, batch_size, image_ratio, seed, device, tokenize, pad_to=None):
        n_img = round(batch_size * image_ratio)
        self.sets = []
        for name, s, n in (("image", images, n_img), ("video", videos, batch_size - n_img)):
            if n > 0 and (s is None or len(s["tokens"]) == 0):
                raise ValueError(f"image_video_ratio={image_ratio} needs {name} rows, but there are none "
                                 f"(check data_dir, the motion bounds and val_fraction)")
            if n > 0:
                self.sets.append((s, n))
        self.gen = torch.Generator().manual_seed(seed)
        self.device, self.tokenize, self.pad_to = device, tokenize, pad_to

    def next(self):
        picks = [(s, torch.randint(len(s["tokens"]), (n,), generator=self.gen)) for s, n in self.sets]
        nk = torch.cat([s["num_keyframes"][i] for s, i in picks])  # (B,)
        T = self.pad_to or int(nk.max())
        tokens = torch.cat([F.pad(s["tokens"][i][:, :T], (0, 0, 0, 0, 0, T - min(T, s["tokens"].shape[1])))
                            for s, i in picks])  # (B, T, N_q, C)
        text_ids, text_mask = self.tokenize([s["captions"][j] for s, i in picks for j in i.tolist()])
        batch = (text_ids, text_mask, tokens, nk)
        if self.device.startswith("cuda"):
            return tuple(x.pin_memory().to(self.device, non_blocking=True) for x in batch)
        return batch


def load_matching(model, state, source, source_loss=None, means_from_l2=True):
    """Load a state dict into `model`, except a mismatched last layer of the output projection
    (the head's size changes with loss / K, e.g. stage 2 L2 -> stage 3 GMM). Returns the skipped
    keys and how their layer was initialised (for the log).

    L2 -> GMM (source_loss "l2") with means_from_l2: the L2 head's prediction becomes every component's
    mean (plus a tenth of the fresh init, to tell components apart); variances and mixture logits start
    fresh. So the GMM stage starts from what the L2 stage learned to predict. Without it the whole
    layer starts fresh, as the authors' release does."""
    own, last = model.state_dict(), f"out_proj.{len(model.out_proj) - 1}."
    skipped = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    for k in skipped:
        if not k.startswith(last):
            raise ValueError(f"{source}: {k} has shape {tuple(state[k].shape)} but this model's is {tuple(own[k].shape)}")
    missing, unexpected = model.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
    if set(missing) != set(skipped) or unexpected:
        raise ValueError(f"{source}: missing keys {sorted(set(missing) - set(skipped))}, unexpected keys {unexpected}")
    if not (skipped and source_loss == "l2" and model.cfg.loss == "gmm" and means_from_l2):
        return skipped, "freshly initialised"
    K, C, layer = model.cfg.gmm_k, model.cfg.token_dim, model.out_proj[-1]
    with torch.no_grad():
        for name in ("weight", "bias"):  # rows [means K*C | raw variances K*C | logits K]
            fresh = getattr(layer, name)[:K * C]
            fresh.copy_(state[last + name].repeat(K, *[1] * (fresh.dim() - 1)) + 0.1 * fresh)
    return skipped, "GMM means from the L2 prediction"


# -----------------------------------------------------------------------------

def main(config):
    ddp, rank, local_rank, world, dev, accum = training.setup(device, gradient_accumulation_steps, "train_ar.py")
    master, device_type = rank == 0, dev.split(":")[0]
    log = (lambda msg: print(msg, flush=True)) if master else (lambda msg: None)
    torch.manual_seed(seed + rank)
    ctx = training.autocast(dtype, device_type, "train_ar.py")

    # data (tokens memory-mapped from the shards)
    images = load_tokens(data_dir, "images", 1, val_fraction)
    videos = load_tokens(data_dir, "videos", max_keyframes, val_fraction, min_motion, max_motion)
    if images is None and videos is None:
        raise FileNotFoundError(f"no images_*.safetensors or videos_*.safetensors shards in {data_dir}")
    n_queries, token_dim = (images or videos)["train"]["tokens"].shape[2:]

    # model: scratch, resume, or the previous stage's weights (architecture from its checkpoint)
    ckpt, iter_num, start_iter, best_score = None, 0, 0, math.inf
    if init_from == "scratch":
        if not from_scratch and not os.path.isdir(backbone):
            sys.exit(f"config error: backbone {backbone!r} is not a directory with weights, and from_scratch=False: this "
                     f"config trains from a pretrained LM (the paper's). Set backbone to a local directory holding its "
                     f"weights (save_pretrained / the released files), or from_scratch=True to train a random one")
        cfg = ARConfig(backbone=backbone, n_queries=n_queries, token_dim=token_dim, max_keyframes=max_keyframes,
                       text_len=text_len, loss=loss, gmm_k=gmm_k, text_drop_prob=text_drop_prob, visual_drop_prob=visual_drop_prob,
                       token_norm=token_norm)
        source = backbone
    else:
        source = os.path.join(out_dir, "ckpt.pt") if init_from == "resume" else init_from
        ckpt = torch.load(source, map_location="cpu", weights_only=True)
        cfg = source_cfg = ARConfig.from_dict(ckpt["model_config"])
        if init_from == "resume":
            check_resume(ckpt["config"], config, source)
        else:  # a new stage: new loss / drops, same architecture
            cfg = ARConfig(**(asdict(cfg) | dict(loss=loss, gmm_k=gmm_k, text_drop_prob=text_drop_prob,
                                                 visual_drop_prob=visual_drop_prob)))
    if (cfg.n_queries, cfg.token_dim) != (n_queries, token_dim) or cfg.max_keyframes < max_keyframes:
        raise ValueError(f"{source} has N_q={cfg.n_queries}, C={cfg.token_dim}, max_keyframes={cfg.max_keyframes} but "
                         f"{data_dir} has N_q={n_queries}, C={token_dim} and max_keyframes={max_keyframes} is asked for")
    raw_model = ARModel(cfg)
    if init_from == "resume":
        raw_model.load_state_dict(ckpt["model"])
        iter_num = start_iter = ckpt["iter_num"]
        log(f"resuming from {source} at step {iter_num}")
    elif ckpt is not None:
        skipped, head_init = load_matching(raw_model, ckpt["model"], source, source_cfg.loss, gmm_means_from_l2)
        log(f"init_from {source}: backbone, text_len={cfg.text_len}, max_keyframes={cfg.max_keyframes} from there; "
            f"loaded {len(ckpt['model']) - len(skipped)} tensors" + (
            f"; output projection last layer {', '.join(skipped)} NOT loaded (shape changed: loss "
            f"{source_cfg.loss} k={source_cfg.gmm_k} -> {cfg.loss} k={cfg.gmm_k}), {head_init}" if skipped else ""))
    if init_from == "scratch" and token_norm:
        raw_model.set_token_stats(*token_stats(images, videos))
        log(f"token_norm: deep-token std per (token, channel) from {raw_model.token_std.min():.3g} to "
            f"{raw_model.token_std.max():.3g} over the training keyframes")
    raw_model.to(dev)
    n_params, n_flop_params = sum(p.numel() for p in raw_model.parameters()), raw_model.flop_params()
    log(f"AR model: {n_params / 1e6:.2f}M parameters ({n_flop_params / 1e6:.2f}M outside lookup tables), "
        f"backbone {cfg.backbone}, loss {cfg.loss}, N_q={n_queries}, C={token_dim}")
    pad_to = (1 if image_video_ratio == 1.0 else max_keyframes) if compile else None  # static shapes for compile
    train_batches = Batches(images and images["train"], videos and videos["train"], batch_size, image_video_ratio,
                            seed + rank, dev, raw_model.tokenize_text, pad_to)
    try:
        val_batches = Batches(images and images["val"], videos and videos["val"], batch_size, image_video_ratio,
                              seed + 10_000 + rank, dev, raw_model.tokenize_text, pad_to)
    except ValueError:
        val_batches = None
        log("no held-out rows for this image_video_ratio: no val loss (raise val_fraction)")

    decay = [p for p in raw_model.parameters() if p.dim() >= 2]
    no_decay = [p for p in raw_model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=learning_rate, betas=(beta1, beta2), eps=adam_eps,
                                  fused=device_type in ("cuda", "cpu"))
    scaler = torch.amp.GradScaler(device_type, enabled=dtype == "float16")
    if init_from == "resume":
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):  # float16: the loss scale carries on where it was
            scaler.load_state_dict(ckpt["scaler"])
        training.restore_rng(ckpt["rng"], rank, world, log, train_batches.gen)
        best_score = ckpt.get("best_score", math.inf)
    ckpt = None
    model = fwd_model = torch.compile(raw_model) if compile else raw_model  # compile before the DDP wrap
    if ddp:
        model = DDP(model, device_ids=[local_rank] if device_type == "cuda" else None)

    gpu_name = torch.cuda.get_device_name() if device_type == "cuda" else ""
    peak = peak_flops or next((v for k, v in PEAK_FLOPS.items() if k in gpu_name), 0.0)  # 0: MFU not logged

    @torch.no_grad()
    def estimate_loss():
        """Mean held-out loss over eval_iters fixed batches and all ranks (no drops in eval mode)."""
        if val_batches is None:
            return float("nan")
        model.eval()
        val_batches.gen.manual_seed(seed + 10_000 + rank)  # the same held-out batches every time
        total = torch.zeros((), device=dev)
        for _ in range(eval_iters):
            with ctx:
                total += fwd_model(*val_batches.next()).float()
        model.train()
        if ddp:
            dist.all_reduce(total)
        return total.item() / (eval_iters * world)

    gen_rows = None
    if videos is not None and len(videos["val"]["tokens"]):
        full = (videos["val"]["num_keyframes"] == max_keyframes).nonzero().flatten()[:64]  # whole-length videos
        gen_rows = (videos["val"]["tokens"][full], [videos["val"]["captions"][i] for i in full]) if len(full) else None

    @torch.no_grad()
    def continuation_error():
        """What the model generates, where the NLL does not show it (it fell while generated motion was lost,
        NOTES.md): from the first real keyframe of up to 64 held-out videos, the most likely continuation
        (temperature 0, no noise, no guidance) against the real keyframes, as the ratio of its squared error
        to that of repeating keyframe 0 (standardised units when token_norm). < 1: the model moves things."""
        if gen_rows is None:
            return float("nan")
        real, captions = gen_rows[0].to(dev), gen_rows[1]  # (n, T, N_q, C)
        made = raw_model.generate(captions, real.shape[1], var_scale=0.0, temperature=0.0, prefix=real[:, :1],
                                  generator=torch.Generator(dev).manual_seed(0))  # the training RNG stays put
        scale = raw_model.token_std
        err = (((made - real) / scale)[:, 1:] ** 2).mean()
        still = (((real[:, :1] - real) / scale)[:, 1:] ** 2).mean()
        return (err / still).item()

    log(f"{world} process(es), {accum} micro-batches of {batch_size} each per step: global batch "
        f"{batch_size * accum * world}; device {dev}, dtype {dtype}, compile {compile}")
    def new_window():  # start time, tokens, FLOPs, summed loss, steps since the last log line
        return time.time(), 0, 0.0, torch.zeros((), device=dev), 0

    t0, tokens_seen, flops, loss_sum, steps = new_window()
    t_start, csv_log = t0, training.CsvLog(out_dir, master)
    guard = training.BadStepGuard(max_bad_steps, "train_ar.py", f"Check the data in {data_dir} for NaN/inf, or "
                                  "lower learning_rate", log)
    while True:
        lr = training.get_lr(iter_num, learning_rate, min_lr, warmup_iters, lr_decay_iters)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if iter_num % eval_interval == 0 or iter_num == max_iters:
            val_loss, checksum = estimate_loss(), training.checksum(raw_model, ddp)
            gen_error = continuation_error() if master else float("nan")
            log(f"step {iter_num}: val loss {val_loss:.4f}, generated keyframes' error / still {gen_error:.3f}, "
                f"parameter checksum {checksum:.6f}"
                + (f" (same on all {world} ranks)" if ddp else ""))
            csv_log.write("eval", iter_num, time.time() - t_start, {"val_loss": val_loss, "gen_error": gen_error})
            if iter_num > start_iter:  # best.pt: the best generated continuation (the NLL can fall while it worsens)
                score = gen_error if gen_rows is not None else val_loss
                best = score < best_score
                best_score = score if best else best_score
                rngs = training.rng_states(ddp, world, train_batches.gen)
                if master:
                    training.save_checkpoint(out_dir, {
                        "model": raw_model.state_dict(), "model_config": asdict(raw_model.cfg),
                        "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "iter_num": iter_num,
                        "val_loss": val_loss, "best_score": best_score, "config": config, "rng": rngs}, best)
                    log(f"saved {out_dir}/ckpt.pt" + (" and best.pt" if best else ""))
            t0, tokens_seen, flops, loss_sum, steps = new_window()  # eval time is not training time
        if iter_num >= max_iters:
            break
        for micro_step in range(accum):
            if ddp:  # gradients sync on the last micro-step only
                model.require_backward_grad_sync = micro_step == accum - 1
            batch = train_batches.next()
            with ctx:
                loss_value = model(*batch) / accum
            scaler.scale(loss_value).backward()
            B, S = batch[0].shape[0], batch[0].shape[1] + batch[2].shape[1] * (n_queries + 1)
            tokens_seen += B * S
            flops += B * S * raw_model.flops_per_token(S, n_flop_params)
            loss_sum += loss_value.detach().float()  # no host sync until the log line
        scaler.unscale_(optimizer)  # true gradients for the norm (and the clip)
        grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), grad_clip if grad_clip > 0 else math.inf)
        if guard.ok(grad_norm, iter_num):
            scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        iter_num, steps = iter_num + 1, steps + 1
        if iter_num % log_interval == 0 and steps:
            if device_type == "cuda":
                torch.cuda.synchronize()
            dt = time.time() - t0
            mfu = f", mfu {100 * flops / dt / peak:.1f}%" if peak else ""
            log(f"iter {iter_num}: loss {loss_sum.item() / steps:.4f}, lr {lr:.2e}, {tokens_seen * world / dt:,.0f} tok/s, "
                f"{1000 * dt / steps:.0f} ms/iter{mfu}")
            csv_log.write("train", iter_num, time.time() - t_start, {"loss": loss_sum.item() / steps})
            t0, tokens_seen, flops, loss_sum, steps = new_window()
    if ddp:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(configure(globals(), sys.argv[1:]))
