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

import torch
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


def diffusion_loss(denoiser, x0, cond, frame_stride, alphas_cumprod, prediction_type="v", generator=None):
    """Paper Eq. (1): E_{eps, t} || target - f_theta(x_t, t, Q_s, Q_e, stride) ||^2.

    The paper writes Eq. (1) with the eps target; its decoder is trained with
    v-prediction (the default here), i.e. the same loss with target v.
    x0: (B, T, C, H, W) clean clips (or any shape, batch first); cond: the deep tokens,
    passed through to `denoiser(x_t, t, cond, frame_stride)`. Draws t ~ U{0, ..., N-1}
    first and then the noise, both from `generator`. Returns a scalar (mean over all).
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
    return F.mse_loss(pred.float(), target.float())


# -----------------------------------------------------------------------------
# denoiser networks


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
    rescaled = guided * (std_cond / std_guided)
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
    with z = torch.randn(x.shape, generator=generator), drawn once per step (also on the
    last) when eta > 0. After the last step a_prev = alphas_cumprod[0], as DynamiCrafter
    and diffusers' DDIMScheduler(set_alpha_to_one=False) do. With 1000 % num_steps == 0
    this equals a loop over DDIMScheduler(clip_sample=False, set_alpha_to_one=False,
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
