"""Tests for diffusion.py: schedule, forward process, loss (paper Eq. 1) and DDIM sampler.

The sampler is compared against an independent loop over diffusers' DDIMScheduler with
classifier-free guidance done separately for cond / uncond and diffusers' own
rescale_noise_cfg, on a deterministic toy model.
"""

import os
import sys

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from diffusion import (  # noqa: E402
    ddim_sample,
    ddim_timesteps,
    diffusion_loss,
    make_alphas_cumprod,
    outline_weights,
    q_sample,
    rescale_cfg,
    v_target,
)

diffusers = pytest.importorskip("diffusers")
from diffusers import DDIMScheduler  # noqa: E402
try:  # diffusers' own guidance rescale (Lin et al. 2023), the independent reference
    from diffusers.guiders.guider_utils import rescale_noise_cfg
except ImportError:  # older diffusers
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg


def make_scheduler(zero_snr=True, prediction_type="v", spacing="leading"):
    return DDIMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1, timestep_spacing=spacing,
        rescale_betas_zero_snr=zero_snr, prediction_type={"v": "v_prediction", "eps": "epsilon"}[prediction_type],
    )


# ----------------------------------------------------------------------------- schedule

@pytest.mark.parametrize("zero_snr", [True, False])
def test_alphas_cumprod_match_diffusers(zero_snr):
    ours = make_alphas_cumprod(zero_terminal_snr=zero_snr)
    ref = make_scheduler(zero_snr).alphas_cumprod
    assert ours.shape == (1000,) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
    assert torch.all(ours[1:] < ours[:-1])  # strictly decreasing
    if zero_snr:
        assert ours[-1].item() == 0.0  # zero terminal SNR, exactly
        torch.testing.assert_close(ours[0], make_alphas_cumprod(zero_terminal_snr=False)[0])  # first unchanged
    else:
        assert ours[-1].item() > 1e-3


# ----------------------------------------------------------------------------- timesteps

def test_ddim_timesteps_values():
    assert ddim_timesteps(50, "leading").tolist() == list(range(981, 0, -20))
    assert ddim_timesteps(50, "trailing").tolist() == list(range(999, 0, -20))
    assert ddim_timesteps(10, "trailing").tolist()[:2] == [999, 899]


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("n", [1, 7, 10, 16, 30, 50, 250])
def test_ddim_timesteps_match_diffusers(spacing, n):
    sched = make_scheduler(spacing=spacing)
    sched.set_timesteps(n)
    assert ddim_timesteps(n, spacing).tolist() == sched.timesteps.tolist()


# ----------------------------------------------------------------------------- forward process

def test_q_sample_and_v_target_match_diffusers():
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 3, 2, 5, 5, generator=g), torch.randn(4, 3, 2, 5, 5, generator=g)
    t = torch.tensor([0, 500, 981, 999])
    ac = make_alphas_cumprod()
    sched = make_scheduler()
    torch.testing.assert_close(q_sample(x0, t, noise, ac), sched.add_noise(x0, noise, t), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(v_target(x0, noise, t, ac), sched.get_velocity(x0, noise, t), rtol=1e-5, atol=1e-5)
    # zero terminal SNR: x_999 is pure noise and v = -x0 there
    torch.testing.assert_close(q_sample(x0, t, noise, ac)[3], noise[3])
    torch.testing.assert_close(v_target(x0, noise, t, ac)[3], -x0[3])


# ----------------------------------------------------------------------------- loss (Eq. 1)

class OracleDenoiser(torch.nn.Module):
    """Knows x0, so it recovers the exact target from x_t; `scale` (1.0) carries a gradient."""

    def __init__(self, x0, ac, prediction_type):
        super().__init__()
        self.x0, self.ac, self.prediction_type = x0, ac, prediction_type
        self.scale = torch.nn.Parameter(torch.tensor(1.0))
        self.seen_stride = None

    def forward(self, x_t, t, cond, frame_stride):
        self.seen_stride = frame_stride
        a = self.ac[t].view(-1, *([1] * (x_t.dim() - 1)))
        eps = (x_t - a.sqrt() * self.x0) / (1 - a).sqrt()
        if self.prediction_type == "v":  # v = sqrt(a) eps - sqrt(1-a) x0 = (sqrt(a) x_t - x0) / sqrt(1-a)
            out = (a.sqrt() * x_t - self.x0) / (1 - a).sqrt()
        else:
            out = eps
        return self.scale * out


@pytest.mark.parametrize("prediction_type", ["v", "eps"])
def test_diffusion_loss_oracle_zero_and_gradients(prediction_type):
    ac = make_alphas_cumprod()
    x0 = torch.randn(6, 3, 3, 8, 8, generator=torch.Generator().manual_seed(1))  # (B, T, C, H, W)
    cond = torch.randn(6, 8, 16)
    den = OracleDenoiser(x0, ac, prediction_type)
    stride = torch.tensor([1, 2, 3, 4, 5, 6])
    loss = diffusion_loss(den, x0, cond, stride, ac, prediction_type, generator=torch.Generator().manual_seed(2))
    assert loss.dim() == 0
    assert loss.item() < 1e-8
    assert den.seen_stride is stride
    # a wrong scale gives a positive loss and a gradient on the parameter inside the denoiser
    with torch.no_grad():
        den.scale.fill_(0.5)
    loss = diffusion_loss(den, x0, cond, stride, ac, prediction_type, generator=torch.Generator().manual_seed(2))
    assert loss.item() > 0.05
    loss.backward()
    assert den.scale.grad is not None and den.scale.grad.item() < 0  # increasing scale lowers the loss


def test_diffusion_loss_is_eq1_with_the_drawn_t_and_noise():
    """Recompute the loss by hand from the same generator draws (t first, then noise)."""
    ac = make_alphas_cumprod()
    x0 = torch.randn(5, 2, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    lin = torch.nn.Linear(4, 4)

    def den(x_t, t, cond, stride):
        return lin(x_t) * (t.float() / 1000).view(-1, 1, 1, 1, 1)

    loss = diffusion_loss(den, x0, None, 1, ac, "v", generator=torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    t = torch.randint(0, 1000, (5,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    a = ac[t].view(-1, 1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    v = a.sqrt() * noise - (1 - a).sqrt() * x0
    torch.testing.assert_close(loss, ((den(x_t, t, None, 1) - v) ** 2).mean())
    with pytest.raises(ValueError):
        diffusion_loss(den, x0, None, 1, ac, "x0")


def test_weighted_diffusion_loss_is_the_weighted_mean_of_eq1():
    """weights: the same draws, each element's squared error weighted, divided by the summed weight."""
    ac = make_alphas_cumprod()
    x0 = torch.randn(3, 2, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    weights = torch.rand(3, 2, 1, 4, 4, generator=torch.Generator().manual_seed(5)) * 4 + 1  # (B, T, 1, H, W)
    lin = torch.nn.Linear(4, 4)

    def den(x_t, t, cond, stride):
        return lin(x_t)

    loss = diffusion_loss(den, x0, None, 1, ac, "v", generator=torch.Generator().manual_seed(4), weights=weights)
    g = torch.Generator().manual_seed(4)
    t = torch.randint(0, 1000, (3,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    a = ac[t].view(-1, 1, 1, 1, 1)
    err = (den(a.sqrt() * x0 + (1 - a).sqrt() * noise, t, None, 1) - (a.sqrt() * noise - (1 - a).sqrt() * x0)) ** 2
    torch.testing.assert_close(loss, (err * weights).sum() / (3 * weights.sum()))  # 3 channels share a weight
    plain = diffusion_loss(den, x0, None, 1, ac, "v", generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(plain, err.mean())
    assert not torch.isclose(loss, plain)
    # uniform weights, of any size, are the plain mean
    torch.testing.assert_close(diffusion_loss(den, x0, None, 1, ac, "v", generator=torch.Generator().manual_seed(4),
                                              weights=torch.full((1, 1, 1, 1, 1), 7.0)), plain)


def test_outline_weights_are_the_band_around_a_rectangle():
    """A filled rectangle rows r0..r1, columns c0..c1 on black: the 3 x 3 dilation minus the erosion is the rectangle
    grown by one pixel minus the rectangle shrunk by one (closed form), whatever the object's colour."""
    frames = -torch.ones(2, 3, 3, 16, 16)  # (B, T, 3, H, W), black
    boxes = {(0, 0): (2, 6, 3, 9), (0, 2): (8, 14, 1, 4), (1, 1): (5, 10, 5, 12)}
    for (b, t), (r0, r1, c0, c1) in boxes.items():
        frames[b, t, (b + t) % 3, r0:r1 + 1, c0:c1 + 1] = 0.3  # one channel, dim: the channel max sees it
    w = outline_weights(frames, 4.0)
    assert w.shape == (2, 3, 1, 16, 16)
    for b in range(2):
        for t in range(3):
            band = torch.zeros(16, 16)
            if (b, t) in boxes:
                r0, r1, c0, c1 = boxes[(b, t)]
                band[r0 - 1:r1 + 2, c0 - 1:c1 + 2] = 1
                band[r0 + 1:r1, c0 + 1:c1] = 0
            assert torch.equal(w[b, t, 0], 1 + 4.0 * band), (b, t)
    assert torch.equal(outline_weights(frames, 0.0), torch.ones_like(w))


# ----------------------------------------------------------------------------- guidance rescale

def test_rescale_cfg_closed_form():
    cond = torch.randn(3, 2, 4, 5, 5, generator=torch.Generator().manual_seed(5))
    guided = 2 * cond  # std doubles, so the rescaled guided output is cond itself
    out = rescale_cfg(guided, cond, 0.7)
    torch.testing.assert_close(out, 0.7 * cond + 0.3 * 2 * cond)
    torch.testing.assert_close(rescale_cfg(guided, cond, 0.0), guided)
    torch.testing.assert_close(rescale_cfg(guided, cond, 1.0), cond)
    # per-sample std: scaling only sample 0 leaves sample 1 unchanged
    guided = cond.clone()
    guided[0] *= 3
    out = rescale_cfg(guided, cond, 0.5)
    torch.testing.assert_close(out[0], 0.5 * cond[0] + 0.5 * 3 * cond[0])
    torch.testing.assert_close(out[1:], cond[1:])


def test_rescale_cfg_matches_diffusers():
    g = torch.Generator().manual_seed(6)
    guided, cond = torch.randn(4, 3, 2, 6, 6, generator=g), torch.randn(4, 3, 2, 6, 6, generator=g) * 0.3
    torch.testing.assert_close(rescale_cfg(guided, cond, 0.7), rescale_noise_cfg(guided, cond, 0.7))


# ----------------------------------------------------------------------------- DDIM sampler

SHAPE = (2, 3, 2, 4, 4)  # (B, T, C, H, W)


def toy_model():
    """A fixed function of (x_t, t, cond), non-linear in t, so cond vs uncond matters."""
    g = torch.Generator().manual_seed(7)
    pattern = torch.randn(SHAPE[1:], generator=g)  # (T, C, H, W)
    w = torch.randn(8, generator=g)

    def model(x_t, t, cond):  # x_t (B', T, C, H, W), t (B',), cond (B', N, 8)
        s = (t.float() / 1000).view(-1, 1, 1, 1, 1)
        c = (cond @ w).mean(1).view(-1, 1, 1, 1, 1)  # (B', 1, 1, 1, 1)
        return 0.3 * x_t * (1 + s) + 0.2 * torch.tanh(c + pattern) * torch.cos(3 * s) + 0.05 * s

    return model


def reference_loop(model, x, cond, uncond, sched, num_steps, eta, cfg_scale, guidance_rescale, generator):
    """Plain diffusers loop: separate cond / uncond calls, diffusers' rescale and step().

    Runs in float64, and clamps diffusers' sigma^2 a hair (1e-12 relative) below its analytic
    bound 1 - a_prev: at the zero-SNR step with eta = 1 the "direction" coefficient
    sqrt(1 - a_prev - sigma^2) is exactly 0, and rounding makes step() take the sqrt of -6e-8
    (float32) or -1e-17 (float64) and return NaN, e.g. for 50 trailing steps. The step noise is
    drawn in float32 from `generator`, one x-shaped draw per step, and handed to step() as
    variance_noise (ddim_sample draws in the same order).
    """
    sched.alphas_cumprod = sched.alphas_cumprod.double()
    sched.final_alpha_cumprod = sched.final_alpha_cumprod.double()
    get_variance = sched._get_variance

    def bounded_variance(t, prev_t):  # analytically sigma^2 <= 1 - a_prev; keep float rounding from crossing it
        a_prev = sched.alphas_cumprod[prev_t] if prev_t >= 0 else sched.final_alpha_cumprod
        return get_variance(t, prev_t).clamp_max((1 - a_prev) * (1 - 1e-12))

    sched._get_variance = bounded_variance
    sched.set_timesteps(num_steps)
    x = x.double()
    for t in sched.timesteps:
        tt = torch.full((x.shape[0],), int(t), dtype=torch.long)
        out = model(x, tt, cond)
        if uncond is not None and cfg_scale != 1.0:
            out_u = model(x, tt, uncond)
            out_c = out
            out = out_u + cfg_scale * (out_c - out_u)
            if guidance_rescale > 0:
                out = rescale_noise_cfg(out, out_c, guidance_rescale)
        z = torch.randn(x.shape, generator=generator).double() if eta > 0 else None
        x = sched.step(out, t, x, eta=eta, variance_noise=z).prev_sample
    return x.float()


CASES = [  # (zero_snr, prediction_type, spacing, num_steps)
    (True, "v", "leading", 50),
    (True, "v", "leading", 10),
    (True, "v", "trailing", 50),
    (True, "v", "trailing", 10),
    (True, "eps", "leading", 50),
    (False, "eps", "leading", 10),
    (False, "eps", "trailing", 50),
    (False, "v", "trailing", 10),
]


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("zero_snr,prediction_type,spacing,num_steps", CASES)
def test_ddim_sample_matches_diffusers(zero_snr, prediction_type, spacing, num_steps, eta):
    model = toy_model()
    g = torch.Generator().manual_seed(8)
    x = torch.randn(SHAPE, generator=g)
    cond, uncond = torch.randn(2, 5, 8, generator=g), torch.randn(2, 5, 8, generator=g)
    kw = dict(num_steps=num_steps, eta=eta, cfg_scale=7.5, guidance_rescale=0.7)
    ours = ddim_sample(model, x, cond, uncond, alphas_cumprod=make_alphas_cumprod(zero_terminal_snr=zero_snr),
                       timestep_spacing=spacing, prediction_type=prediction_type,
                       generator=torch.Generator().manual_seed(9), **kw)
    sched = make_scheduler(zero_snr, prediction_type, spacing)
    ref = reference_loop(model, x, cond, uncond, sched, generator=torch.Generator().manual_seed(9), **kw)
    assert torch.isfinite(ref).all()
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cfg_scale,guidance_rescale,use_uncond", [(1.0, 0.7, True), (7.5, 0.7, False),
                                                                    (3.0, 0.0, True)])
def test_ddim_sample_guidance_variants_match_diffusers(cfg_scale, guidance_rescale, use_uncond):
    model = toy_model()
    g = torch.Generator().manual_seed(10)
    x = torch.randn(SHAPE, generator=g)
    cond, uncond = torch.randn(2, 5, 8, generator=g), torch.randn(2, 5, 8, generator=g)
    uncond = uncond if use_uncond else None
    kw = dict(num_steps=20, eta=1.0, cfg_scale=cfg_scale, guidance_rescale=guidance_rescale)
    ours = ddim_sample(model, x, cond, uncond, alphas_cumprod=make_alphas_cumprod(),
                       generator=torch.Generator().manual_seed(11), **kw)
    ref = reference_loop(model, x, cond, uncond, make_scheduler(), generator=torch.Generator().manual_seed(11), **kw)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_ddim_sample_noise_and_guidance_matter():
    """Guards against the comparisons above passing vacuously."""
    model = toy_model()
    g = torch.Generator().manual_seed(12)
    x = torch.randn(SHAPE, generator=g)
    cond, uncond = torch.randn(2, 5, 8, generator=g), torch.randn(2, 5, 8, generator=g)
    ac = make_alphas_cumprod()

    def run(seed=0, **kw):
        return ddim_sample(model, x, cond, uncond, alphas_cumprod=ac, num_steps=10,
                           generator=torch.Generator().manual_seed(seed), **kw)

    torch.testing.assert_close(run(0), run(0))  # reproducible for a seed
    assert (run(0) - run(1)).abs().max() > 1e-2  # eta = 1 uses the generator
    torch.testing.assert_close(run(0, eta=0.0), run(1, eta=0.0))  # eta = 0 is deterministic
    assert (run(0, eta=0.0) - run(0, eta=0.0, cfg_scale=1.0)).abs().max() > 1e-2
    assert (run(0, eta=0.0) - run(0, eta=0.0, guidance_rescale=0.0)).abs().max() > 1e-2


def test_ddim_sample_eps_at_zero_snr_raises():
    model = toy_model()
    x, cond = torch.randn(SHAPE), torch.randn(2, 5, 8)
    with pytest.raises(ValueError):
        ddim_sample(model, x, cond, alphas_cumprod=make_alphas_cumprod(), num_steps=10,
                    timestep_spacing="trailing", prediction_type="eps")


@pytest.mark.parametrize("num_steps", [6, 10, 13])
def test_ddim_sample_zero_snr_first_step(num_steps):
    """Trailing spacing starts at a_t = 0: x0 = -v, and with eta = 1 the first step is
    x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev) z exactly (no eps direction, no NaN)."""
    ac = make_alphas_cumprod()
    g = torch.Generator().manual_seed(13)
    x, v = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
    seen = []

    def model(x_t, t, cond):
        seen.append((x_t.clone(), t.clone()))
        return v

    ours = ddim_sample(model, x, None, alphas_cumprod=ac, num_steps=num_steps, timestep_spacing="trailing",
                       generator=torch.Generator().manual_seed(14))
    assert torch.isfinite(ours).all()
    ts = ddim_timesteps(num_steps, "trailing")
    assert seen[0][1].tolist() == [999, 999] and ac[999] == 0
    a_prev = ac[ts[1]].double()
    z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(14))
    expected = a_prev.sqrt() * (-v) + (1 - a_prev).sqrt() * z
    torch.testing.assert_close(seen[1][0], expected.float())


@pytest.mark.parametrize("num_frames,head_frames", [(9, 5), (16, 8), (2, 1)])
def test_video_unet_per_frame_context_reads_own_keyframe_only(num_frames, head_frames):
    """In the per-frame mode every cross-attention layer of frame f reads only its own keyframe's N_q tokens:
    the first half of the clip (the middle frame of an odd count included) the head's, the rest the rear's."""
    from diffusion import CrossAttention, VideoUNet
    B, N_q, D = 2, 4, 16
    cond = torch.randn(B, 2 * N_q, D)
    for per_frame in (True, False):
        torch.manual_seed(0)
        unet = VideoUNet(D, N_q, num_frames, 16, (16, 32), 4, 4, per_frame_context=per_frame)
        contexts = []
        hooks = [m.register_forward_hook(lambda mod, inp, out: contexts.append(inp[1]))
                 for m in unet.modules() if isinstance(m, CrossAttention)]
        unet(torch.randn(B, num_frames, 3, 16, 16), torch.tensor([3, 700]), cond, torch.tensor([1, 2]))
        for h in hooks:
            h.remove()
        head, rear = cond[:, :N_q] + unet.head_rear[0], cond[:, N_q:] + unet.head_rear[1]
        assert len(contexts) == 3  # level 1 down, mid, level 1 up
        for context in contexts:
            if per_frame:
                context = context.view(B, num_frames, N_q, D)
                for f in range(num_frames):
                    assert torch.equal(context[:, f], head if f < head_frames else rear), f
            else:
                assert torch.equal(context.view(B, num_frames, 2 * N_q, D),
                                   torch.cat([head, rear], 1)[:, None].expand(-1, num_frames, -1, -1))
