"""
The video diffusion decoder of DiCoDe: noise schedule, training loss, DDIM sampler.

DiCoDe (paper Sec. 3.2) trains a video diffusion model to rebuild the clip between two
keyframes from their deep tokens only; the gradient of its loss (paper Eq. 1) is what
teaches the query transformer. The paper's decoder is DynamiCrafter, trained with
v-prediction on a 1000-step "scaled linear" schedule (betas 0.00085 -> 0.012) rescaled
to zero terminal SNR, and sampled with DDIM: 50 steps, eta 1.0, "leading"/"uniform"
spacing, classifier-free guidance 7.5 and guidance rescale 0.7 (supp. Sec. 6).

Notation: a_t = alphas_cumprod[t] ("alpha bar" in DDPM), so
    x_t = sqrt(a_t) * x0 + sqrt(1 - a_t) * eps              (forward process)
    v   = sqrt(a_t) * eps - sqrt(1 - a_t) * x0              (Salimans & Ho, 2022)
and, given x_t, either of eps / v determines x0 and the other:
    eps-prediction: x0 = (x_t - sqrt(1 - a_t) * eps) / sqrt(a_t)
    v-prediction:   x0 = sqrt(a_t) * x_t - sqrt(1 - a_t) * v,  eps = sqrt(a_t) * v + sqrt(1 - a_t) * x_t

Tensors may have any shape with the batch first; videos are (B, T, C, H, W).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# -----------------------------------------------------------------------------
# noise schedule


def make_alphas_cumprod(num_steps=1000, beta_start=0.00085, beta_end=0.012, zero_terminal_snr=True):
    """a_t = prod_{s<=t} (1 - beta_s) for the "scaled linear" betas of latent diffusion.

    scaled linear: sqrt(beta_t) is linear in t. With zero_terminal_snr, apply Algorithm 1
    of Lin et al. 2023 ("Common Diffusion Noise Schedules and Sample Steps are Flawed"):
    shift sqrt(a_t) so the last one is 0 (pure noise at t = T-1, SNR 0), then scale so
    the first one is unchanged. Computed in float64, returned as float32 (num_steps,).
    Equals diffusers' DDIMScheduler(beta_schedule="scaled_linear",
    rescale_betas_zero_snr=...).alphas_cumprod to ~1e-7 (diffusers works in float32 and
    round-trips through betas; the last value is exactly 0 in both: DDIMScheduler does
    not clamp it, unlike diffusers' Euler/DPM-Solver schedulers which set it to 2**-24).
    """
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, num_steps, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    if zero_terminal_snr:
        sqrt_ac = alphas_cumprod.sqrt()
        first, last = sqrt_ac[0].clone(), sqrt_ac[-1].clone()
        sqrt_ac = (sqrt_ac - last) * first / (first - last)  # last -> 0, first unchanged
        alphas_cumprod = sqrt_ac ** 2
    return alphas_cumprod.float()


# -----------------------------------------------------------------------------
# forward process and training loss (paper Eq. 1)


def _at(alphas_cumprod, t, like):
    """a_t gathered per sample and shaped to broadcast against `like`: (B, 1, 1, ...)."""
    a = alphas_cumprod.to(device=like.device)[t].to(like.dtype)  # (B,)
    return a.view(-1, *([1] * (like.dim() - 1)))


def q_sample(x0, t, noise, alphas_cumprod):
    """Forward process q(x_t | x0): x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps. t: (B,) ints."""
    a = _at(alphas_cumprod, t, x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def v_target(x0, noise, t, alphas_cumprod):
    """The v-prediction target v = sqrt(a_t) eps - sqrt(1 - a_t) x0."""
    a = _at(alphas_cumprod, t, x0)
    return a.sqrt() * noise - (1 - a).sqrt() * x0


def diffusion_loss(denoiser, x0, cond, frame_stride, alphas_cumprod, prediction_type="v", generator=None,
                   weights=None):
    """Paper Eq. (1): E_{eps, t} || target - f_theta(x_t, t, Q_s, Q_e, stride) ||^2.

    The paper writes Eq. (1) with the eps target; its decoder is trained with
    v-prediction (the default here), i.e. the same loss with target v.
    x0: (B, T, C, H, W) clean clips (or any shape, batch first); cond: the deep tokens,
    passed through to `denoiser(x_t, t, cond, frame_stride)`. Draws t ~ U{0, ..., N-1}
    first and then the noise, both from `generator`. Returns a scalar: the mean over all
    elements, or with `weights` (broadcastable to x0, e.g. outline_weights) their weighted mean.
    """
    B = x0.shape[0]
    t = torch.randint(0, len(alphas_cumprod), (B,), generator=generator, device=x0.device)  # (B,)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t = q_sample(x0, t, noise, alphas_cumprod)
    if prediction_type == "v":
        target = v_target(x0, noise, t, alphas_cumprod)
    elif prediction_type == "eps":
        target = noise
    else:
        raise ValueError(f"unknown prediction_type {prediction_type!r}")
    pred = denoiser(x_t, t, cond, frame_stride)
    if weights is None:
        return F.mse_loss(pred.float(), target.float())
    err = (pred.float() - target.float()).square()
    return (err * weights).sum() / weights.expand_as(err).sum()


def outline_weights(frames, weight, level=-0.5):
    """Per-pixel loss weights (B, T, 1, H, W) for frames (B, T, 3, H, W) in [-1, 1]: 1, plus `weight` on a ~2 px
    band around the outline of every region brighter than `level` (channel max): the 3 x 3 dilation minus the
    erosion of that mask. On a dark background this band is the objects' edges (~9% of a shapes frame's pixels),
    where a circle and a square differ (in ~1% of the pixels, so ~1% of the plain mean)."""
    B, T = frames.shape[:2]
    mask = (frames.amax(2) > level).float().flatten(0, 1)[:, None]  # (B T, 1, H, W)
    band = F.max_pool2d(mask, 3, 1, 1) + F.max_pool2d(-mask, 3, 1, 1)  # dilation - erosion: 1 on the outline
    return 1 + weight * band.view(B, T, 1, *frames.shape[3:])


# -----------------------------------------------------------------------------
# denoiser networks
#
# Both denoisers are called as denoiser(x_t, t, cond, frame_stride) with x_t (B, T, 3, H, W),
# t (B,) long, cond (B, 2 * N_q, C) = [head deep tokens, rear deep tokens], frame_stride (B,).


def timestep_embedding(t, dim, max_period=10000.0):
    """Sinusoidal embedding of (B,) timesteps -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class ResBlock(nn.Module):
    """Per-frame 2D residual block; emb (B*T, E) sets a scale and shift after the second norm (FiLM)."""

    def __init__(self, c_in, c_out, emb_dim):
        super().__init__()
        self.norm1 = nn.GroupNorm(8, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(8, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, emb):  # x (B*T, C, h, w), emb (B*T, E)
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.conv2(F.silu(self.norm2(h) * (1 + scale) + shift))
        return self.skip(x) + h


class TemporalConv(nn.Module):
    """Mixes neighbouring frames: a (3, 1, 1) convolution over time, residual, zero-initialised."""

    def __init__(self, channels):
        super().__init__()
        self.norm = nn.GroupNorm(8, channels)
        self.conv = nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0))
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x, T):  # x (B*T, C, h, w)
        BT, C, h, w = x.shape
        y = self.norm(x).view(BT // T, T, C, h, w).transpose(1, 2)  # (B, C, T, h, w)
        return x + self.conv(F.silu(y)).transpose(1, 2).reshape(BT, C, h, w)


class CrossAttention(nn.Module):
    """Pixels attend to the deep tokens: x (B*T, C, h, w), context (B*T, L, D). Residual, zero-initialised."""

    def __init__(self, channels, context_dim, n_heads=4):
        super().__init__()
        self.n_heads = n_heads
        self.norm = nn.GroupNorm(8, channels)
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.out = nn.Linear(channels, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x, context):
        BT, C, h, w = x.shape
        heads = lambda z: z.view(BT, -1, self.n_heads, C // self.n_heads).transpose(1, 2)  # (BT, heads, L, C/heads)
        q = heads(self.q(self.norm(x).flatten(2).transpose(1, 2)))  # pixels as queries
        k, v = (heads(z) for z in self.kv(context).chunk(2, dim=-1))
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(BT, h * w, C)
        return x + self.out(y).transpose(1, 2).view(BT, C, h, w)


def own_keyframe(num_frames):
    """Which keyframe each frame of a clip is conditioned on in the release's split: (T,) long, 0 = head for
    the first half of the frames (the middle one of an odd count included), 1 = rear for the second half."""
    return (torch.arange(num_frames) >= (num_frames + 1) // 2).long()


def own_keyframe_context(head, rear, num_frames):
    """Per-frame cross-attention context: head (B, N_q, D), rear (B, N_q, D) -> (B*T, N_q, D), frame f of each
    clip holding the tokens of keyframe own_keyframe(T)[f] only."""
    return torch.stack([head, rear], 1)[:, own_keyframe(num_frames).to(head.device)].flatten(0, 1)


class TokenMap(nn.Module):
    """Renders one keyframe's deep tokens (B, N_q, D) as a coarse feature map (B, c_map, S, S).

    S x S learned spatial queries cross-attend to the tokens (two attention + MLP layers).
    Concatenated to the denoiser's input, the head and rear maps hand the network a
    spatially aligned picture of where and what the object is, which a cross-attention
    alone has to discover slowly (measured: see config/shapes.py).
    """

    def __init__(self, dim, size, c_map, n_layers=2, n_heads=4, render=False):
        super().__init__()
        self.size = size
        self.queries = nn.Parameter(torch.randn(size * size, dim) * 0.02)
        self.attn = nn.ModuleList(nn.MultiheadAttention(dim, n_heads, batch_first=True) for _ in range(n_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(n_layers))
        self.mlps = nn.ModuleList(nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
                                  for _ in range(n_layers))
        self.out = nn.Linear(dim, c_map)
        self.to_rgb = nn.Conv2d(c_map, 12, 1) if render else None  # a picture of the map, for the auxiliary loss

    def render(self, tokens):
        """The keyframe as this map sees it: (B, N_q, D) -> (B, 3, 2S, 2S)."""
        return F.pixel_shuffle(self.to_rgb(self(tokens)), 2)

    def forward(self, tokens):
        x = self.queries.expand(tokens.shape[0], -1, -1)  # (B, S*S, D)
        for attn, norm, mlp in zip(self.attn, self.norms, self.mlps):
            x = x + attn(norm(x), tokens, tokens, need_weights=False)[0]
            x = x + mlp(x)
        return self.out(x).transpose(1, 2).reshape(tokens.shape[0], -1, self.size, self.size)


class VideoUNet(nn.Module):
    """The compact (2+1)D conv UNet denoiser for training from scratch, in pixel space.

    Frames are folded 2 x 2 into channels (space-to-depth) so the UNet runs at H/2; each
    level has a per-frame ResBlock with FiLM from (timestep + frame stride + pooled
    tokens + frame index), a temporal convolution, and from the second level on a
    cross-attention to the 2 x N_q deep tokens. The head and rear tokens are also
    rendered as feature maps (TokenMap) concatenated to the input of every frame.
    per_frame_context: each frame's cross-attentions read only its own keyframe's N_q tokens
    (own_keyframe_context), as in the authors' release; else every frame reads all 2 x N_q.
    """

    def __init__(self, token_dim, n_queries, num_frames, image_size, channels=(32, 64, 128), map_channels=8,
                 max_stride=16, emb_dim=128, render_maps=False, per_frame_context=False):
        super().__init__()
        self.num_frames, self.image_size, self.per_frame_context = num_frames, image_size, per_frame_context
        d = token_dim
        self.head_rear = nn.Parameter(torch.randn(2, 1, d) * 0.02)  # learned head / rear embedding
        self.token_map = TokenMap(d, image_size // 2, map_channels, render=render_maps)
        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.stride_emb = nn.Embedding(max_stride + 1, emb_dim)
        self.frame_emb = nn.Embedding(num_frames, emb_dim)
        self.pool_mlp = nn.Sequential(nn.Linear(2 * d, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.emb_dim = emb_dim
        self.conv_in = nn.Conv2d(12 + 2 * map_channels, channels[0], 3, padding=1)
        self.down, self.up = nn.ModuleList(), nn.ModuleList()
        skips = []
        for i, c in enumerate(channels):  # down path: ResBlock, temporal conv, cross-attention (levels >= 1)
            c_prev = channels[max(i - 1, 0)]
            self.down.append(nn.ModuleDict({
                "res": ResBlock(c_prev, c, emb_dim), "temporal": TemporalConv(c),
                "attn": CrossAttention(c, d) if i > 0 else nn.Identity(),
                "downsample": nn.Conv2d(c, c, 3, stride=2, padding=1) if i < len(channels) - 1 else nn.Identity()}))
            skips.append(c)
        self.mid = ResBlock(channels[-1], channels[-1], emb_dim)
        self.mid_attn = CrossAttention(channels[-1], d)
        for i in reversed(range(len(channels))):  # up path mirrors it, with skip connections
            c_in = channels[min(i + 1, len(channels) - 1)] + skips[i]
            self.up.append(nn.ModuleDict({
                "res": ResBlock(c_in, channels[i], emb_dim), "temporal": TemporalConv(channels[i]),
                "attn": CrossAttention(channels[i], d) if i > 0 else nn.Identity(),
                "upsample": nn.Upsample(scale_factor=2, mode="nearest") if i > 0 else nn.Identity()}))
        self.norm_out = nn.GroupNorm(8, channels[0])
        self.conv_out = nn.Conv2d(channels[0], 12, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x_t, t, cond, frame_stride):
        B, T, _, H, W = x_t.shape
        if T != self.num_frames or H != self.image_size:
            raise ValueError(f"VideoUNet built for {self.num_frames} frames of {self.image_size}px, got {tuple(x_t.shape)}")
        head, rear = cond.view(B, 2, -1, cond.shape[-1]).unbind(1)  # (B, N_q, D) each
        maps = torch.cat([self.token_map(head), self.token_map(rear)], 1)  # (B, 2 c_map, H/2, W/2)
        head, rear = head + self.head_rear[0], rear + self.head_rear[1]
        if self.per_frame_context:
            context = own_keyframe_context(head, rear, T)  # (B*T, N_q, D)
        else:
            context = torch.cat([head, rear], 1).repeat_interleave(T, dim=0)  # (B*T, 2 N_q, D)
        emb = (self.time_mlp(timestep_embedding(t, self.emb_dim)) + self.stride_emb(frame_stride)
               + self.pool_mlp(torch.cat([head.mean(1), rear.mean(1)], -1)))  # (B, E)
        emb = (emb[:, None] + self.frame_emb.weight[None, :T]).flatten(0, 1)  # (B*T, E)
        x = F.pixel_unshuffle(x_t.flatten(0, 1), 2)  # (B*T, 12, H/2, W/2)
        h = self.conv_in(torch.cat([x, maps.repeat_interleave(T, dim=0)], 1))
        skips = []
        for level in self.down:
            h = level["temporal"](level["res"](h, emb), T)
            if isinstance(level["attn"], CrossAttention):
                h = level["attn"](h, context)
            skips.append(h)
            h = level["downsample"](h)
        h = self.mid_attn(self.mid(h, emb), context)
        for level in self.up:
            h = level["temporal"](level["res"](torch.cat([h, skips.pop()], 1), emb), T)
            if isinstance(level["attn"], CrossAttention):
                h = level["attn"](h, context)
            h = level["upsample"](h)
        out = self.conv_out(F.silu(self.norm_out(h)))  # (B*T, 12, H/2, W/2)
        return F.pixel_shuffle(out, 2).view(B, T, 3, H, W)


class OwnKeyframeAttnProcessor:
    """A diffusers cross-attention processor for the release's per-frame split. The UNet hands every frame
    the same (B*T, 2 N_q, D) context; this keeps frame f's own keyframe's N_q tokens (own_keyframe) and runs
    diffusers' own scaled-dot-product processor on them. `num_frames` is set before each UNet call."""

    def __init__(self):
        from diffusers.models.attention_processor import AttnProcessor2_0
        self.attend, self.num_frames = AttnProcessor2_0(), None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, **kwargs):
        T = self.num_frames
        BT, L, D = encoder_hidden_states.shape  # (B*T, 2 N_q, D): head tokens, then rear tokens
        tokens = encoder_hidden_states.view(BT // T, T, 2, L // 2, D)
        frames = torch.arange(T, device=tokens.device)
        own = tokens[:, frames, own_keyframe(T).to(tokens.device)]  # (B, T, N_q, D)
        return self.attend(attn, hidden_states, own.flatten(0, 1), **kwargs)


class LatentVideoDenoiser(nn.Module):
    """The paper-size denoiser: a pretrained latent video UNet and its frozen VAE (diffusers).

    The paper fine-tunes DynamiCrafter with the text prompt set empty and the deep tokens as
    its cross-attention condition (Sec. 4.1, supp. 6). This is the same trick on a diffusers
    `UNet3DConditionModel` in the ModelScope-T2V / zeroscope layout: the 2 x N_q deep tokens
    (plus a learned head / rear embedding, projected if token_dim != cross_attention_dim) take
    the place of the 1024-d text embeddings in every cross-attention. The frame stride enters
    through `timestep_cond`: a sinusoidal embedding of the stride, projected by the UNet's
    `time_embedding.cond_proj` and added to the timestep's. A pretrained UNet without that
    projection gets a zero-initialised one, so fine-tuning starts from its exact behaviour.

    It works in the VAE's latent space: denoiser(z_t, t, cond, frame_stride) with z_t
    (B, T, 4, h, w). `latent = True` tells the training loop to diffuse `encode_frames(clips)`
    instead of pixels, and samples come back to frames through `decode_latents`.
    per_frame_context: each frame's cross-attentions read only its own keyframe's tokens (OwnKeyframeAttnProcessor).
    """

    latent = True

    def __init__(self, unet, vae, token_dim, max_stride, per_frame_context=False):
        super().__init__()
        self.split_processors = []
        if per_frame_context:
            from diffusers.models.attention_processor import Attention
            for module in unet.modules():
                if isinstance(module, Attention) and module.is_cross_attention:
                    self.split_processors.append(OwnKeyframeAttnProcessor())
                    module.set_processor(self.split_processors[-1])
        if vae.config.latent_channels != unet.config.in_channels or unet.config.in_channels != unet.config.out_channels:
            raise ValueError(f"the UNet maps {unet.config.in_channels} -> {unet.config.out_channels} channels, "
                             f"the VAE has {vae.config.latent_channels} latent channels: they must all be equal")
        self.unet, self.vae = unet, vae
        self.vae.requires_grad_(False).eval()  # frozen, as in the paper
        self.max_stride = max_stride  # the largest stride drawn in training (the sinusoid takes any integer)
        self.head_rear = nn.Parameter(torch.randn(2, 1, token_dim) * 0.02)  # learned head / rear embedding
        context_dim = unet.config.cross_attention_dim
        self.proj = nn.Linear(token_dim, context_dim) if token_dim != context_dim else nn.Identity()
        te = unet.time_embedding
        if te.cond_proj is None:  # no stride input in the pretrained UNet: add a zero one
            dim = te.linear_1.in_features  # the stride embedding is added to the timestep's sinusoid
            te.cond_proj = nn.Linear(dim, dim, bias=False, device=te.linear_1.weight.device,
                                     dtype=te.linear_1.weight.dtype)
            nn.init.zeros_(te.cond_proj.weight)
            unet.register_to_config(time_cond_proj_dim=dim)  # so save_pretrained / from_config rebuild it
        self.stride_dim = te.cond_proj.in_features
        if self.stride_dim % 2:
            raise ValueError(f"time_cond_proj_dim must be even for the sinusoidal stride embedding, got {self.stride_dim}")
        self.scaling_factor = vae.config.scaling_factor
        self.shift_factor = getattr(vae.config, "shift_factor", None) or 0.0
        self.downsample = 2 ** (len(vae.config.block_out_channels) - 1)

    @classmethod
    def from_pretrained(cls, local_dir, token_dim, max_stride, per_frame_context=False):
        """Load `local_dir`/unet (UNet3DConditionModel) and `local_dir`/vae (AutoencoderKL), local files only."""
        import os
        from diffusers import AutoencoderKL, UNet3DConditionModel
        for sub in ("unet", "vae"):
            if not os.path.isfile(os.path.join(local_dir, sub, "config.json")):
                raise FileNotFoundError(f"{os.path.join(local_dir, sub)} holds no diffusers model (config.json); "
                                        f"expected a zeroscope / ModelScope-T2V style directory with unet/ and vae/")
        unet = UNet3DConditionModel.from_pretrained(local_dir, subfolder="unet", local_files_only=True)
        vae = AutoencoderKL.from_pretrained(local_dir, subfolder="vae", local_files_only=True)
        return cls(unet, vae, token_dim, max_stride, per_frame_context)

    @classmethod
    def from_config(cls, unet_config, vae_config, token_dim, max_stride, per_frame_context=False):
        """Random weights from diffusers config dicts (the unet/ and vae/ config.json contents)."""
        from diffusers import AutoencoderKL, UNet3DConditionModel
        return cls(UNet3DConditionModel.from_config(unet_config), AutoencoderKL.from_config(vae_config),
                   token_dim, max_stride, per_frame_context)

    def train(self, mode=True):
        super().train(mode)
        self.vae.eval()  # the frozen VAE stays in eval mode
        return self

    def latent_shape(self, frames_shape):
        """(B, T, 3, H, W) -> the (B, T, C_latent, H / f, W / f) shape encode_frames returns."""
        B, T, _, H, W = frames_shape
        return (B, T, self.vae.config.latent_channels, H // self.downsample, W // self.downsample)

    @torch.no_grad()
    def encode_frames(self, frames, chunk=32):
        """Frames (B, T, 3, H, W) in [-1, 1] -> latents (B, T, C, h, w): the VAE posterior mean,
        shifted and scaled to about unit variance. In the VAE's own precision, `chunk` frames at a time."""
        B, T = frames.shape[:2]
        x = frames.flatten(0, 1).to(self.vae.dtype)
        with torch.autocast(frames.device.type, enabled=False):
            z = torch.cat([self.vae.encode(c).latent_dist.mean for c in x.split(chunk)])
        return ((z - self.shift_factor) * self.scaling_factor).view(B, T, *z.shape[1:])

    @torch.no_grad()
    def decode_latents(self, latents, chunk=16):
        """Latents (B, T, C, h, w) -> frames (B, T, 3, H, W), about [-1, 1] (not clamped)."""
        B, T = latents.shape[:2]
        z = latents.flatten(0, 1).to(self.vae.dtype) / self.scaling_factor + self.shift_factor
        with torch.autocast(latents.device.type, enabled=False):
            x = torch.cat([self.vae.decode(c).sample for c in z.split(chunk)])
        return x.view(B, T, *x.shape[1:])

    def forward(self, z_t, t, cond, frame_stride):
        B = z_t.shape[0]
        tokens = cond.view(B, 2, -1, cond.shape[-1]) + self.head_rear[None]  # (B, 2, N_q, D): head, rear
        context = self.proj(tokens.flatten(1, 2))  # (B, 2 N_q, cross_attention_dim): the "text" slot
        stride_emb = timestep_embedding(frame_stride, self.stride_dim).to(context.dtype)  # (B, stride_dim)
        for processor in self.split_processors:
            processor.num_frames = z_t.shape[1]
        out = self.unet(z_t.transpose(1, 2), t, encoder_hidden_states=context, timestep_cond=stride_emb,
                        return_dict=False)[0]  # diffusers wants (B, C, T, h, w)
        return out.transpose(1, 2)


# -----------------------------------------------------------------------------
# sampling: DDIM (Song et al. 2021) with classifier-free guidance and guidance rescale


def ddim_timesteps(num_steps, spacing="leading", num_train_steps=1000):
    """The descending timesteps visited by the sampler, as in Lin et al. 2023, Table 2.

    "leading" (DynamiCrafter's "uniform", with steps_offset 1): 0, k, 2k, ... plus 1 with
    k = N // num_steps, so 50 steps -> 981, 961, ..., 1; it never visits t = N-1.
    "trailing": round(N - i * N / num_steps) - 1, so 50 steps -> 999, 979, ..., 19; it
    starts at the zero-SNR step. Same values as diffusers' DDIMScheduler.set_timesteps.
    """
    N = num_train_steps
    if spacing == "leading":
        t = torch.arange(num_steps, dtype=torch.float64) * (N // num_steps) + 1
    elif spacing == "trailing":
        t = torch.round(N - torch.arange(num_steps, dtype=torch.float64) * (N / num_steps)) - 1
    else:
        raise ValueError(f"unknown timestep spacing {spacing!r}")
    return t.long().sort(descending=True).values  # (num_steps,)


def rescale_cfg(guided, cond_out, guidance_rescale):
    """Guidance rescale, Lin et al. 2023, Sec. 3.4 / Eq. (15-16).

    Rescale the guided prediction so its std over all non-batch dims matches the
    conditional prediction's, then mix: phi * rescaled + (1 - phi) * guided.
    torch.std is the unbiased (n-1) estimator, as in diffusers' rescale_noise_cfg.
    """
    dims = list(range(1, guided.dim()))
    std_cond = cond_out.std(dim=dims, keepdim=True)  # (B, 1, 1, ...)
    std_guided = guided.std(dim=dims, keepdim=True)
    rescaled = guided * (std_cond / std_guided.clamp_min(1e-12))  # an all-zero guided output stays zero
    return guidance_rescale * rescaled + (1 - guidance_rescale) * guided


@torch.no_grad()
def ddim_sample(model, x, cond, uncond=None, *, alphas_cumprod, num_steps=50, eta=1.0, cfg_scale=7.5,
                guidance_rescale=0.7, timestep_spacing="leading", prediction_type="v", generator=None):
    """DDIM sampling (DDIM paper Eq. 12 and 16) from the noise `x` (B, ...) to a sample x0.

    model(x_t, t, cond) -> raw prediction (v or eps) for x_t (B', ...), t (B',) long.
    With `uncond` and cfg_scale != 1, cond and uncond go through the model in one batch
    and guided = uncond_out + cfg_scale * (cond_out - uncond_out) (on the raw v / eps
    output, as DynamiCrafter does), followed by guidance rescale if guidance_rescale > 0.
    Each step, from a_t to the next visited timestep's a_prev:
        sigma_t = eta * sqrt((1 - a_prev) / (1 - a_t)) * sqrt(1 - a_t / a_prev)
        x_prev  = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma_t^2) eps + sigma_t z
    with z = torch.randn(x.shape, generator=generator) (a generator on x's device), drawn
    once per step (also on the last) when eta > 0. After the last step a_prev =
    alphas_cumprod[0], as DynamiCrafter and diffusers' DDIMScheduler(set_alpha_to_one=False)
    do. With 1000 % num_steps == 0 this equals a loop over DDIMScheduler(clip_sample=False, set_alpha_to_one=False,
    steps_offset=1, timestep_spacing=...); otherwise (e.g. 30 trailing steps) diffusers
    jumps to t - N // num_steps instead of the next visited timestep.
    Zero terminal SNR: a_t = 0 at t = N-1, which "trailing" visits. v-prediction handles
    it (x0 = -v, eps = x_t); eps-prediction cannot recover x0 there (x_t is pure noise,
    x0 = (x_t - eps) / 0; diffusers returns inf/nan), so it raises a ValueError.
    """
    ts = ddim_timesteps(num_steps, timestep_spacing, len(alphas_cumprod)).tolist()
    ac = alphas_cumprod.double().tolist()  # python floats: exact a_t per step
    if prediction_type not in ("v", "eps"):
        raise ValueError(f"unknown prediction_type {prediction_type!r}")
    if prediction_type == "eps" and min(ac[t] for t in ts) == 0.0:
        raise ValueError("eps-prediction cannot sample from the zero-SNR step t = N-1 (a_t = 0); use v-prediction")
    guide = uncond is not None and cfg_scale != 1.0
    B = x.shape[0]
    for i, t in enumerate(ts):
        a_t = ac[t]
        a_prev = ac[ts[i + 1]] if i + 1 < len(ts) else ac[0]
        if guide:  # one batched call: first half conditional, second half unconditional
            tt = torch.full((2 * B,), t, dtype=torch.long, device=x.device)
            cond_out, uncond_out = model(torch.cat([x, x]), tt, torch.cat([cond, uncond])).chunk(2)
            out = uncond_out + cfg_scale * (cond_out - uncond_out)
            if guidance_rescale > 0:
                out = rescale_cfg(out, cond_out, guidance_rescale)
        else:
            out = model(x, torch.full((B,), t, dtype=torch.long, device=x.device), cond)
        if prediction_type == "v":
            x0 = a_t ** 0.5 * x - (1 - a_t) ** 0.5 * out
            eps = a_t ** 0.5 * out + (1 - a_t) ** 0.5 * x
        else:  # eps
            x0 = (x - (1 - a_t) ** 0.5 * out) / a_t ** 0.5
            eps = out
        sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) ** 0.5
        x = a_prev ** 0.5 * x0 + max(1 - a_prev - sigma ** 2, 0.0) ** 0.5 * eps
        if eta > 0:
            x = x + sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x
