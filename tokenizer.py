"""
The deep tokenizer's encoder side (paper Sec. 3.1): a frozen CLIP-ViT E turns each
keyframe into N patch tokens, a query transformer Q compresses them into N_q
continuous deep tokens. The decoder side is the video diffusion model of diffusion.py;
`decode_clips` samples it: deep tokens of keyframes -> the clips between them.

    python tokenizer.py encode --ckpt out/shapes/tokenizer/ckpt.pt --manifest data/shapes/videos.csv --out data/shapes_tokens
    torchrun --standalone --nproc_per_node=4 tokenizer.py encode ...   # shards split over 4 processes / GPUs

writes the deep tokens of a whole manifest once, for the AR stage.
"""
import argparse
import logging
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
POS_EMB_STD = 0.5  # Q's position embedding, about a third of the projected tokens' scale
CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config")


# -----------------------------------------------------------------------------
# Encoder E: an open_clip ViT, all tokens of its last transformer block

def create_clip(name, pretrained=""):
    """open_clip.create_model(name, pretrained) where `name` may also be one of the tiny
    configs shipped in config/open_clip/*.json (e.g. 'nanodicode-tiny')."""
    import open_clip  # slow import (3-5 s): only when a model is built
    open_clip.add_model_config(os.path.join(CONFIG_DIR, "open_clip"))
    return open_clip.create_model(name, pretrained=pretrained or None)


class FrameEncoder(nn.Module):
    """E: frames in [-1, 1] (B, 3, H, W) -> all tokens of the ViT's last block (B, N, C_clip)."""

    def __init__(self, clip_model, trainable=False):
        super().__init__()
        self.visual = clip_model.visual
        self.image_size = self.visual.image_size[0] if isinstance(self.visual.image_size, tuple) else self.visual.image_size
        self.width = self.visual.transformer.width
        self.num_tokens = self.visual.grid_size[0] * self.visual.grid_size[1] + 1  # patches + class token
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        self.trainable = trainable
        self.visual.requires_grad_(trainable)
        for name in ("ln_post", "proj", "attn_pool", "head"):  # the pooling head after the last block: unused,
            part = getattr(self.visual, name, None)  # so no gradient (DDP stops on trainable parameters without one)
            if isinstance(part, (nn.Module, nn.Parameter)):
                part.requires_grad_(False)

    def preprocess(self, frames):
        """[-1, 1] frames (B, 3, H, W) -> CLIP input: resized to the ViT's size (bicubic, antialiased like
        open_clip's own preprocessing), CLIP-normalised."""
        x = (frames + 1) / 2
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False,
                              antialias=True)
        return (x - self.mean) / self.std

    def forward(self, frames):
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            x = self.visual._embeds(self.preprocess(frames))  # patch + class embeddings, (B, N, C_clip)
            return self.visual.transformer(x)  # all tokens of the last block, class token first

    def train(self, mode=True):
        super().train(mode)
        if not self.trainable:
            self.visual.eval()  # a frozen encoder stays in eval mode (no dropout)
        return self


# -----------------------------------------------------------------------------
# Query transformer Q (paper Sec. 3.1): [queries, projected E tokens] -> self-attention -> queries

class Attention(nn.Module):
    def __init__(self, dim, n_heads):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):  # (B, L, D)
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, heads, L, D/heads), bidirectional
        return self.proj(y.transpose(1, 2).reshape(B, L, D))


class Block(nn.Module):
    """Pre-norm transformer block, as in nanoGPT but without the causal mask."""

    def __init__(self, dim, n_heads, mlp_ratio=4):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, n_heads)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class QueryTransformer(nn.Module):
    """Q: encoder tokens (B, N, C_clip) -> deep tokens (B, N_q, C), layer-normed (as the released model).

    The projected encoder tokens get a learned position embedding of Q's own. Without it Q
    cannot find *where* the object is: a CLIP's last-block tokens of one frame are nearly
    alike (on the tiny stand-in CLIP, std 0.6 across the patches of a frame against 2.5
    across frames), so attention has nothing to select by. Measured on shapes frames, Q +
    a linear head regressing the object's centroid, 1,500 steps: 7.0 px error without it
    (8.2 px at 3x the learning rate), 0.77 px with it (chance is about 7.8 px).
    """

    def __init__(self, in_dim, dim, n_queries, n_layers, n_heads, n_tokens):
        super().__init__()
        self.n_queries = n_queries
        self.queries = nn.Parameter(torch.randn(n_queries, dim) * 0.02)
        self.proj_in = nn.Linear(in_dim, dim)
        self.pos_emb = nn.Parameter(torch.randn(n_tokens, dim) * POS_EMB_STD)
        self.blocks = nn.ModuleList(Block(dim, n_heads) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(dim)

    def forward(self, encoder_tokens):
        if encoder_tokens.shape[1] != len(self.pos_emb):
            raise ValueError(f"Q was built for {len(self.pos_emb)} encoder tokens, got {tuple(encoder_tokens.shape)}")
        x = self.proj_in(encoder_tokens) + self.pos_emb  # (B, N, C)
        x = torch.cat([self.queries.expand(x.shape[0], -1, -1), x], dim=1)  # (B, N_q + N, C)
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x[:, :self.n_queries])  # (B, N_q, C)


class QueryAttention(nn.Module):
    """The resampler's attention: only the queries ask; keys and values are [E tokens; queries]."""

    def __init__(self, dim, n_heads, head_dim):
        super().__init__()
        self.n_heads = n_heads
        self.norm_tokens, self.norm_queries = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, n_heads * head_dim, bias=False)
        self.to_kv = nn.Linear(dim, 2 * n_heads * head_dim, bias=False)
        self.to_out = nn.Linear(n_heads * head_dim, dim, bias=False)

    def forward(self, tokens, queries):  # tokens (B, N, C), queries (B, N_q, C)
        queries = self.norm_queries(queries)
        heads = lambda z: z.view(z.shape[0], z.shape[1], self.n_heads, -1).transpose(1, 2)  # (B, heads, L, d)
        k, v = self.to_kv(torch.cat([self.norm_tokens(tokens), queries], 1)).chunk(2, dim=-1)
        y = F.scaled_dot_product_attention(heads(self.to_q(queries)), heads(k), heads(v))  # (B, heads, N_q, d)
        return self.to_out(y.transpose(1, 2).flatten(2))


class PerceiverResampler(nn.Module):
    """Q as the authors' release builds it: a Perceiver-style resampler. Only the N_q queries are updated,
    each layer attending to [E tokens; queries] (QueryAttention, `head_dim`-wide heads) then a bias-free
    feed-forward; a final projection + LayerNorm. E's tokens get no position embedding. Same call as
    QueryTransformer: encoder tokens (B, N, C_clip) -> deep tokens (B, N_q, C)."""

    def __init__(self, in_dim, dim, n_queries, n_layers, n_heads, head_dim=64, mlp_ratio=4):
        super().__init__()
        self.n_queries = n_queries
        self.queries = nn.Parameter(torch.randn(n_queries, dim) / dim ** 0.5)
        self.proj_in = nn.Linear(in_dim, dim)
        self.layers = nn.ModuleList(nn.ModuleDict(dict(
            attn=QueryAttention(dim, n_heads, head_dim),
            mlp=nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, mlp_ratio * dim, bias=False), nn.GELU(),
                              nn.Linear(mlp_ratio * dim, dim, bias=False)))) for _ in range(n_layers))
        self.proj_out = nn.Linear(dim, dim)
        self.ln_f = nn.LayerNorm(dim)

    def forward(self, encoder_tokens):
        tokens = self.proj_in(encoder_tokens)  # (B, N, C)
        queries = self.queries.expand(tokens.shape[0], -1, -1)  # (B, N_q, C)
        for layer in self.layers:
            queries = queries + layer["attn"](tokens, queries)
            queries = queries + layer["mlp"](queries)
        return self.ln_f(self.proj_out(queries))  # (B, N_q, C)

    def load_pretrained(self, path):
        """Initialise from a pretrained resampler (the IP-Adapter / DynamiCrafter layout, e.g. DynamiCrafter's
        checkpoint, whose keys start with "image_proj_model."), keeping its first N_q queries, as the release
        does. Every weight of this module must be found, with its shape."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        prefixes = {k[:-len("latents")] for k in state if k.endswith("latents")}
        if len(prefixes) != 1:
            raise ValueError(f"{path}: expected one resampler (a key ending in 'latents'), found {len(prefixes)}")
        prefix = prefixes.pop()
        theirs = {name: resampler_name(name) for name in self.state_dict()}
        missing = [prefix + k for k in theirs.values() if prefix + k not in state]
        if missing:
            raise ValueError(f"{path}: no {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''} "
                             f"for this {len(self.layers)}-layer resampler")
        loaded = {name: state[prefix + key] for name, key in theirs.items()}
        loaded["queries"] = loaded["queries"].reshape(-1, loaded["queries"].shape[-1])[:self.n_queries]
        self.load_state_dict(loaded)  # raises on a shape that differs, naming the weight


def resampler_name(name):
    """A PerceiverResampler weight's name in the IP-Adapter / DynamiCrafter layout: layers.i.0 is the attention
    (norm1 on E's tokens, norm2 on the queries), layers.i.1 the MLP; latents, norm_out for queries, ln_f."""
    for ours, theirs in ((".attn.norm_tokens.", ".0.norm1."), (".attn.norm_queries.", ".0.norm2."),
                         (".attn.", ".0."), (".mlp.", ".1."), ("ln_f.", "norm_out.")):
        if ours in name:
            return name.replace(ours, theirs)
    return "latents" if name == "queries" else name


class DeepTokenizer(nn.Module):
    """E + Q. `encode` takes images (B, 3, H, W) -> (B, N_q, C) or keyframes (B, T, 3, H, W) -> (B, T, N_q, C)."""

    def __init__(self, clip_model, n_queries=16, dim=1024, q_layers=4, q_heads=16, train_encoder=False,
                 q_type="transformer", q_head_dim=64):
        super().__init__()
        self.encoder = FrameEncoder(clip_model, trainable=train_encoder)
        if q_type == "transformer":
            self.query = QueryTransformer(self.encoder.width, dim, n_queries, q_layers, q_heads, self.encoder.num_tokens)
        elif q_type == "perceiver":
            self.query = PerceiverResampler(self.encoder.width, dim, n_queries, q_layers, q_heads, q_head_dim)
        else:
            raise ValueError(f"unknown q_type {q_type!r}; expected 'transformer' or 'perceiver'")
        self.n_queries, self.dim = n_queries, dim

    def encode(self, frames):
        if frames.dim() == 5:  # keyframe sequences: flatten frames into the batch
            B, T = frames.shape[:2]
            return self.encode(frames.flatten(0, 1)).view(B, T, self.n_queries, self.dim)
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"encode expects (B, 3, H, W) or (B, T, 3, H, W) frames, got {tuple(frames.shape)}")
        return self.query(self.encoder(frames))

    forward = encode


@torch.no_grad()
def order_queries(tokenizer, denoiser, clips, alphas_cumprod, prediction_type="v", batch_size=32, seed=0):
    """Renumber Q's queries so that deep token 0 is the one the decoder needs most, token 1 the next, ...

    A token's need: how much the diffusion loss (paper Eq. 1) on clips (B, T, 3, H, W) rises when that token
    is zeroed in both keyframes (as paper Fig. 4 zeroes tokens), the same noise and timesteps for every token.
    The decoder reads the tokens as a set (cross-attention and pooling, no token index), so it is unchanged;
    the AR model, which writes a keyframe's tokens in order, then commits to what matters most first (the
    object's position on the shapes set; NOTES.md). Returns the order: new token i = old token order[i]."""
    import diffusion
    dev = tokenizer.query.queries.device
    cond = torch.cat([tokenizer.encode(c.to(dev)[:, [0, -1]]) for c in clips.split(batch_size)])  # (B, 2, N_q, C)
    x0 = torch.cat([denoiser.encode_frames(c.to(dev)) if getattr(denoiser, "latent", False) else c.to(dev)
                    for c in clips.split(batch_size)])

    def loss(tokens):  # summed over clips, frame stride 1
        gen = torch.Generator(dev).manual_seed(seed)  # the same noise and timesteps for every token
        return sum(len(x) * diffusion.diffusion_loss(denoiser, x, c.flatten(1, 2), x.new_ones(len(x), dtype=torch.long),
                                                     alphas_cumprod, prediction_type, gen)
                   for x, c in zip(x0.split(batch_size), tokens.split(batch_size)))

    base = loss(cond)
    need = torch.stack([loss(cond.index_fill(2, torch.tensor([j], device=dev), 0.0)) - base
                        for j in range(cond.shape[2])])  # (N_q,)
    order = torch.argsort(need, descending=True, stable=True)
    tokenizer.query.queries.copy_(tokenizer.query.queries[order])
    return order


# -----------------------------------------------------------------------------
# The whole autoencoder: E + Q + the video diffusion decoder, built from a config dict

def build_autoencoder(cfg):
    """(DeepTokenizer, denoiser) from a train_tokenizer.py config dict (random weights unless pretrained)."""
    from diffusion import VideoUNet
    tokenizer = DeepTokenizer(create_clip(cfg["clip_model"], cfg.get("clip_pretrained", "")), cfg["n_queries"],
                              cfg["token_dim"], cfg["q_layers"], cfg["q_heads"], cfg["train_encoder"],
                              cfg.get("q_type", "transformer"), cfg.get("q_head_dim", 64))
    if cfg.get("q_pretrained"):
        if not isinstance(tokenizer.query, PerceiverResampler):
            raise ValueError("q_pretrained (a pretrained resampler's weights) needs q_type='perceiver'")
        tokenizer.query.load_pretrained(cfg["q_pretrained"])
    if cfg["denoiser"] == "unet":
        denoiser = VideoUNet(cfg["token_dim"], cfg["n_queries"], cfg["clip_frames"] + 1, cfg["image_size"],
                             tuple(cfg["unet_channels"]), cfg["map_channels"], cfg["max_stride"],
                             render_maps=cfg.get("keyframe_loss_weight", 0) > 0,
                             per_frame_context=cfg.get("per_frame_context", False))
    elif cfg["denoiser"] == "unet3d":  # the paper-size latent video UNet + VAE, from a local diffusers directory
        from diffusion import LatentVideoDenoiser
        if not cfg.get("pretrained_dir"):
            raise ValueError("denoiser 'unet3d' needs cfg['pretrained_dir'] (a diffusers directory with unet/ and vae/), "
                             + ("which is empty" if "pretrained_dir" in cfg else "which is not a key of this config"))
        denoiser = LatentVideoDenoiser.from_pretrained(cfg["pretrained_dir"], cfg["token_dim"], cfg["max_stride"],
                                                       cfg.get("per_frame_context", False))
    else:
        raise ValueError(f"unknown denoiser {cfg['denoiser']!r}; expected 'unet' or 'unet3d'")
    return tokenizer, denoiser


def random_clip_warning(record):
    """logging filter: False for open_clip's "No pretrained weights loaded for model ..." warning."""
    return not record.getMessage().startswith("No pretrained weights loaded")


def load_autoencoder(ckpt_path, device="cpu"):
    """Rebuild (tokenizer, denoiser, config) from a train_tokenizer.py checkpoint."""
    if not os.path.isfile(ckpt_path):
        raise FileNotFoundError(f"tokenizer checkpoint {ckpt_path} does not exist (train it with train_tokenizer.py)")
    ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
    if "tokenizer" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{ckpt_path} is not a train_tokenizer.py checkpoint (keys: {sorted(ckpt)})")
    cfg = dict(ckpt["config"], clip_pretrained="", q_pretrained="")  # the checkpoint holds these weights itself
    root = logging.getLogger()  # open_clip warns here that the CLIP has random weights: true only until the
    root.addFilter(random_clip_warning)  # checkpoint's are loaded below, so that one warning is dropped
    try:
        tokenizer, denoiser = build_autoencoder(cfg)
    finally:
        root.removeFilter(random_clip_warning)
    try:
        tokenizer.load_state_dict(ckpt["tokenizer"])
        denoiser.load_state_dict(ckpt["denoiser"])
    except RuntimeError as e:  # missing / unexpected / resized weights: written by another version of the code
        details = " ".join(line.strip() for line in str(e).splitlines()[1:3])
        raise ValueError(f"{ckpt_path} does not fit this code's model (retrain it): {details}") from None
    return tokenizer.to(device).eval(), denoiser.to(device).eval(), cfg


# -----------------------------------------------------------------------------
# Deep tokens -> frames: the decoder sampled with DDIM and classifier-free guidance

@torch.no_grad()
def uncond_tokens(tokenizer, image_size, device="cpu"):
    """The classifier-free guidance condition (1, 2 N_q, C): the deep tokens of two all-zero frames, which
    train_tokenizer.py puts in place of a clip's head and rear when it drops the condition (cond_drop_prob)."""
    return tokenizer.encode(torch.zeros(2, 3, image_size, image_size, device=device)).flatten(0, 1)[None]


@torch.no_grad()
def decode_clips(denoiser, tokens, uncond, cfg, *, frame_stride=1, num_steps=50, eta=1.0, cfg_scale=7.5,
                 guidance_rescale=0.7, timestep_spacing="leading", batch_size=32, seed=0, progress=True):
    """Deep tokens of keyframes (B, K, N_q, C) -> the clips between consecutive keyframes, float32 on the CPU
    in [-1, 1], (B, K-1, clip_frames + 1, 3, S, S).

    As the decoder was trained (paper Sec. 3.2, Eq. 1), clip k is drawn from its head and rear keyframes'
    tokens [tokens_k, tokens_k+1] (2 N_q, C) and the frame stride: DDIM (diffusion.ddim_sample), guided
    against `uncond` (1, 2 N_q, C; `uncond_tokens`). The B (K-1) clips go `batch_size` at a time; the noise
    comes from a generator seeded with `seed` on the tokens' device. A latent denoiser (`denoiser.latent`)
    samples VAE latents, decoded to frames at the end. cfg: the tokenizer's config (clip_frames,
    image_size, zero_terminal_snr, prediction_type). progress: a tqdm bar over the sampler's steps.
    """
    import diffusion
    from tqdm import tqdm
    B, K = tokens.shape[:2]
    T, S, dev = cfg["clip_frames"] + 1, cfg["image_size"], tokens.device
    cond = torch.cat([tokens[:, :-1], tokens[:, 1:]], dim=2).flatten(0, 1)  # (B (K-1), 2 N_q, C): head, rear
    alphas_cumprod = diffusion.make_alphas_cumprod(zero_terminal_snr=cfg["zero_terminal_snr"])
    latent = getattr(denoiser, "latent", False)
    generator = torch.Generator(dev).manual_seed(seed)
    batches = cond.split(batch_size)
    bar = tqdm(total=len(batches) * num_steps, desc=f"decoding {len(cond)} clips", unit="step", disable=not progress)

    def net(x_t, t, c):  # ddim_sample stacks the cond and uncond rows: the stride goes with every row
        bar.update(1)
        return denoiser(x_t, t, c, torch.full((len(x_t),), frame_stride, device=dev))

    clips = []
    for c in batches:
        shape = (len(c), T, 3, S, S)
        noise = torch.randn(denoiser.latent_shape(shape) if latent else shape, generator=generator, device=dev)
        x = diffusion.ddim_sample(net, noise, c, uncond.expand(len(c), -1, -1), alphas_cumprod=alphas_cumprod,
                                  num_steps=num_steps, eta=eta, cfg_scale=cfg_scale, guidance_rescale=guidance_rescale,
                                  timestep_spacing=timestep_spacing, prediction_type=cfg["prediction_type"],
                                  generator=generator)
        clips.append((denoiser.decode_latents(x) if latent else x).clamp(-1, 1).float().cpu())
    bar.close()
    return torch.cat(clips).view(B, K - 1, T, 3, S, S)


@torch.no_grad()
def reconstruct_clips(tokenizer, denoiser, clips, cfg, **decode_kw):
    """Real clips (N, T, 3, S, S) in [-1, 1] -> the clips decoded from their head and rear deep tokens alone
    (N, T, 3, S, S), float32 on the CPU (paper Fig. 3). decode_kw: decode_clips' settings."""
    dev = next(denoiser.parameters()).device
    tokens = tokenizer.encode(clips[:, [0, -1]].to(dev))  # (N, 2, N_q, C): head, rear
    return decode_clips(denoiser, tokens, uncond_tokens(tokenizer, cfg["image_size"], dev), cfg, **decode_kw)[:, 0]


# -----------------------------------------------------------------------------
# `python tokenizer.py encode`: deep tokens of a whole manifest, once, for the AR stage

@torch.no_grad()
def encode_manifest(ckpt, manifest, out, keyframe_interval=8, max_keyframes=16, shard_size=1024, batch_size=64,
                    device="cpu", fps=8, rank=0, world=1, dtype=torch.float32):
    """Write `out/{name}_{shard:05d}.safetensors` (name = the manifest's file name without .csv).

    Videos, read at `fps` whatever their own rate, give one keyframe every `keyframe_interval` frames (8 at
    8 fps: one a second), at most `max_keyframes`; images give one. Unreadable files are skipped with a
    warning. A shard that already exists is kept (re-running resumes), and each is written atomically.
    Process `rank` of `world` writes shards rank, rank + world, ... (torchrun: one process per GPU, no messages).
    dtype: the stored tokens' (float16 halves the files; rounding moved decoded pixels by at most 1 level, NOTES.md).
    """
    from tqdm import tqdm
    import data
    log = logging.getLogger("tokenizer")
    tokenizer, _, cfg = load_autoencoder(ckpt, device)
    size = cfg["image_size"]
    rows = data.read_manifest(manifest)
    is_image = rows[0]["path"].lower().endswith(data.IMAGE_EXTENSIONS)
    reader = (data.ImageTextDataset(manifest, size) if is_image else
              data.KeyframeDataset(manifest, size, keyframe_interval, max_keyframes, fps=fps))
    name = os.path.splitext(os.path.basename(manifest))[0]
    os.makedirs(out, exist_ok=True)
    num_shards = math.ceil(len(rows) / shard_size)
    skipped = 0
    for shard in tqdm(range(rank, num_shards, world), desc=f"encoding {name}", disable=rank > 0):
        path = os.path.join(out, f"{name}_{shard:05d}.safetensors")
        if os.path.exists(path):
            continue
        sequences, captions, motion = [], [], []
        for row in rows[shard * shard_size:(shard + 1) * shard_size]:
            try:
                sequences.append(reader.load(row)["frames"])  # (K, 3, H, W)
            except Exception as e:
                skipped += 1
                log.warning("skipping %s: %s", row["path"], (str(e).strip().splitlines() or [type(e).__name__])[0])
                continue
            captions.append(row["caption"])
            motion.append(float(row.get("motion") or "nan"))
        if not sequences:
            continue
        lengths = [len(s) for s in sequences]
        frames = torch.cat(sequences)  # all keyframes of the shard, flattened into one batch
        tokens = torch.cat([tokenizer.encode(frames[i:i + batch_size].to(device)).cpu()
                            for i in range(0, len(frames), batch_size)])  # (sum K, N_q, C)
        padded = torch.zeros(len(sequences), max(lengths), tokenizer.n_queries, tokenizer.dim)
        for i, seq in enumerate(tokens.split(lengths)):
            padded[i, :len(seq)] = seq
        data.save_token_shard(path, padded, lengths, captions, motion, dtype)
    return skipped


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    enc = sub.add_parser("encode", help="write the deep tokens of a manifest (videos or images) to safetensors shards")
    enc.add_argument("--ckpt", required=True, help="train_tokenizer.py checkpoint")
    enc.add_argument("--manifest", required=True, action="append", help="path,caption CSV (repeat for several)")
    enc.add_argument("--out", required=True, help="output directory of the token shards")
    enc.add_argument("--keyframe_interval", type=int, default=8, help="frames at --fps between keyframes (8: one a second)")
    enc.add_argument("--fps", type=float, default=8, help="videos are read at this rate, whatever their own")
    enc.add_argument("--max_keyframes", type=int, default=16)
    enc.add_argument("--shard_size", type=int, default=1024)
    enc.add_argument("--batch_size", type=int, default=64)
    enc.add_argument("--dtype", default="float32", choices=["float32", "float16"], help="stored tokens' type")
    enc.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))  # set by torchrun
    if args.device == "cuda" and world > 1:
        args.device = f"cuda:{os.environ.get('LOCAL_RANK', 0)}"
    for manifest in args.manifest:
        try:
            skipped = encode_manifest(args.ckpt, manifest, args.out, args.keyframe_interval, args.max_keyframes,
                                      args.shard_size, args.batch_size, args.device, args.fps, rank, world,
                                      getattr(torch, args.dtype))
        except (FileNotFoundError, ValueError) as e:
            raise SystemExit(f"error: {e}")
        by = f" by process {rank} of {world}" if world > 1 else ""
        print(f"encoded {manifest} -> {args.out} ({skipped} files skipped{by})")


if __name__ == "__main__":
    main()
