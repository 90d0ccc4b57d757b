"""
Output heads for continuous deep tokens: Gaussian-mixture (GMM), single Gaussian and L2.

paper Sec. 3.4 ("Explicitly Introducing the Variance") and supp. Algorithm 1: the AR model
predicts the parameters of a distribution over the next deep token q (D channels) and is
trained with the negative log-likelihood L_NLL = -log p(q). One position of the GMM head is

    [means K*D | raw variances K*D | mixture logits K]    (K=16, D=1024: 32784 numbers)

with variance = clamp(softplus(raw), min=min_var) (min_var=1e-5 in the released model),
weights w = softmax(logits) and diagonal covariances:

    NLL(x) = -log sum_k w_k N(x | mu_k, diag var_k) / D        (logsumexp over k)

All losses return one value per position, shape (...), divided by D; average them yourself.
"""
import math

import torch
import torch.nn.functional as F

LOG_2PI = math.log(2 * math.pi)

def head_dim(loss, k, d):
    """Number of outputs per position of the head for `loss`: gmm 2kd+k, gaussian 2d, l2 d."""
    if loss == "gmm":
        return 2 * k * d + k
    if loss == "gaussian":
        return 2 * d
    if loss == "l2":
        return d
    raise ValueError(f"unknown loss {loss!r}, expected 'gmm', 'gaussian' or 'l2'")

def _gmm_d(params, k):
    """Infer D from a GMM params tensor (..., 2*K*D+K) when it is not given."""
    p = params.shape[-1]
    if p <= k or (p - k) % (2 * k) != 0:
        raise ValueError(f"gmm params last dim is {p}, expected 2*k*d+k for k={k} (some d >= 1)")
    return (p - k) // (2 * k)

def _at_least_f32(t):
    return t.to(torch.promote_types(t.dtype, torch.float32))  # bf16/fp16 -> fp32, fp64 stays

def _variance(raw, min_var):
    return F.softplus(raw).clamp(min=min_var)

def split_gmm(params, k, d, min_var=1e-5):
    """(..., 2KD+K) -> means (..., K, D), variances (..., K, D), logits (..., K)."""
    p = params.shape[-1]
    if p != 2 * k * d + k:
        raise ValueError(f"gmm params last dim is {p}, expected 2*k*d+k = "
                         f"2*{k}*{d}+{k} = {2 * k * d + k}")
    means, raw, logits = params.split([k * d, k * d, k], dim=-1)  # views, no copies
    return means.unflatten(-1, (k, d)), _variance(raw.unflatten(-1, (k, d)), min_var), logits

def gmm_nll(params, target, k, min_var=1e-5):
    """GMM negative log-likelihood / D, paper Sec. 3.4, supp. Algorithm 1.

    params (..., 2KD+K), target (..., D) -> (...). Computed in float32 (float64 for float64
    inputs) with autocast disabled, so bf16 autocast training gets a float32 loss.
    log N(x | mu_k, var_k) = -0.5 * sum_d [(x_d - mu_kd)^2 / var_kd + log var_kd + log 2pi]
    NLL = -logsumexp_k(log_softmax(logits)_k + log N(x | mu_k, var_k)) / D
    """
    d = target.shape[-1]
    with torch.autocast(device_type=params.device.type, enabled=False):
        mu, var, logits = split_gmm(_at_least_f32(params), k, d, min_var)  # (...,K,D) x2, (...,K)
        x = _at_least_f32(target).unsqueeze(-2)  # (..., 1, D)
        sq = ((x - mu) ** 2 / var + var.log()).sum(-1)  # (..., K)
        log_px = -0.5 * (sq + d * LOG_2PI)  # (..., K) log N(x | mu_k, var_k)
        return -torch.logsumexp(logits.log_softmax(-1) + log_px, dim=-1) / d  # (...)

_compiled_gmm_nll = None
def gmm_nll_compiled(params, target, k, min_var=1e-5):
    """gmm_nll under torch.compile, built on first call (which takes seconds). Fuses the
    (..., K, D) elementwise work: fwd+bwd on a 2-core CPU 4.5-5.5x faster than the
    torch.distributions formulation at 0.3x its peak memory (eager gmm_nll: ~1.5x, 0.9x);
    see bench.py --section=gmm."""
    global _compiled_gmm_nll
    if _compiled_gmm_nll is None:
        _compiled_gmm_nll = torch.compile(gmm_nll)
    return _compiled_gmm_nll(params, target, k, min_var)

def gaussian_nll(params, target, min_var=1e-5):
    """Single diagonal Gaussian NLL / D (paper Sec. 3.4 "Gaussian loss").

    params (..., 2D) laid out [mean D | raw variance D], target (..., D) -> (...), >= float32.
    Same as gmm_nll with K=1 (whose layout has one extra, irrelevant logit).
    """
    d = target.shape[-1]
    if params.shape[-1] != 2 * d:
        raise ValueError(f"gaussian params last dim is {params.shape[-1]}, "
                         f"expected 2*d = 2*{d} = {2 * d}")
    with torch.autocast(device_type=params.device.type, enabled=False):
        mu, raw = _at_least_f32(params).split([d, d], dim=-1)  # (..., D) x2
        var = _variance(raw, min_var)
        nll = 0.5 * ((_at_least_f32(target) - mu) ** 2 / var + var.log() + LOG_2PI)  # (..., D)
        return nll.mean(-1)  # (...)

def l2_loss(pred, target):
    """Per-position mean squared error, pred and target (..., D) -> (...), >= float32.

    L2 is the Gaussian NLL with fixed unit variance up to an affine map (paper Sec. 3.4):
        gaussian NLL / D with var=1  =  0.5 * l2_loss + 0.5 * log(2*pi)
    """
    if pred.shape[-1] != target.shape[-1]:
        raise ValueError(f"l2 pred last dim is {pred.shape[-1]}, expected d = {target.shape[-1]}")
    with torch.autocast(device_type=pred.device.type, enabled=False):
        return ((_at_least_f32(pred) - _at_least_f32(target)) ** 2).mean(-1)

@torch.no_grad()
def gmm_sample(params, k, var_scale=1.0, temperature=1.0, generator=None, min_var=1e-5):
    """Draw x (..., D) from the GMM with params (..., 2KD+K).

    Pick a component from softmax(logits / temperature) (temperature=0: argmax), then
    x = mu_k + sqrt(var_scale * var_k) * eps, eps ~ N(0, I). var_scale=0 returns mu_k
    exactly; the released model samples with var_scale=0.01 (std x 0.1).
    """
    d = _gmm_d(params, k)
    mu, var, logits = split_gmm(params, k, d, min_var)  # (..., K, D) x2, (..., K)
    if temperature == 0:
        idx = logits.argmax(-1)  # (...)
    else:
        probs = (logits.float() / temperature).softmax(-1).reshape(-1, k)  # (N, K)
        idx = torch.multinomial(probs, 1, generator=generator).reshape(logits.shape[:-1])
    idx = idx[..., None, None].expand(*idx.shape, 1, d)  # (..., 1, D)
    mu, var = mu.gather(-2, idx).squeeze(-2), var.gather(-2, idx).squeeze(-2)  # (..., D)
    if var_scale == 0:
        return mu
    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
    return mu + (var_scale * var).sqrt() * eps

@torch.no_grad()
def gmm_mean(params, k):
    """Mixture mean sum_k w_k mu_k, params (..., 2KD+K) -> (..., D). Deterministic."""
    mu, _, logits = split_gmm(params, k, _gmm_d(params, k))
    return (logits.float().softmax(-1).to(mu.dtype).unsqueeze(-1) * mu).sum(-2)

@torch.no_grad()
def gaussian_sample(params, var_scale=1.0, generator=None, min_var=1e-5):
    """Draw x (..., D) from the Gaussian head, params (..., 2D) = [mean D | raw variance D]."""
    if params.shape[-1] % 2:
        raise ValueError(f"gaussian params last dim is {params.shape[-1]}, expected 2*d (even)")
    mu, raw = params.chunk(2, dim=-1)  # (..., D) x2
    if var_scale == 0:
        return mu.clone()
    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
    return mu + (var_scale * _variance(raw, min_var)).sqrt() * eps
