"""Tests for gmm.py: GMM / Gaussian / L2 heads (paper Sec. 3.4, supp. Algorithm 1)."""
import math
import os
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import gmm  # noqa: E402

# upper 1e-4 quantile of the chi-square distribution with 3 degrees of freedom
# (scipy.stats.chi2.isf(1e-4, 3) = 21.108); used for K=4 component-frequency tests
CHI2_DF3_P1E4 = 21.108

def reference_nll(params, target, k, min_var=1e-5):
    """Independent reference: torch.distributions, parameters split by plain slicing."""
    d = target.shape[-1]
    lead = params.shape[:-1]
    mu = params[..., :k * d].reshape(*lead, k, d)
    var = F.softplus(params[..., k * d:2 * k * d]).clamp(min=min_var).reshape(*lead, k, d)
    logits = params[..., 2 * k * d:]
    mix = MixtureSameFamily(Categorical(logits=logits), Independent(Normal(mu, var.sqrt()), 1))
    return -mix.log_prob(target) / d

def make_gmm(lead, k, d, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    params = torch.randn(*lead, gmm.head_dim("gmm", k, d), generator=g, dtype=dtype)
    target = torch.randn(*lead, d, generator=g, dtype=dtype)
    return params, target

# (leading dims, K, D): includes K=1, D=1, no leading dims and batch x time dims
SHAPES = [((), 1, 1), ((5,), 1, 1), ((3,), 1, 6), ((4,), 3, 1), ((2, 3), 4, 7),
          ((2, 5), 16, 32), ((7,), 16, 3)]

# -----------------------------------------------------------------------------
# head sizes and errors

def test_head_dim():
    assert gmm.head_dim("gmm", 16, 1024) == 32784  # paper: 16 x 1024 x 2 + 16
    assert gmm.head_dim("gaussian", 16, 1024) == 2048
    assert gmm.head_dim("l2", 16, 1024) == 1024
    assert gmm.head_dim("gmm", 1, 1) == 3
    with pytest.raises(ValueError, match="'diffusion'"):
        gmm.head_dim("diffusion", 16, 1024)

def test_bad_shapes_raise_with_expected_and_received():
    target = torch.randn(2, 3)
    with pytest.raises(ValueError) as e:
        gmm.gmm_nll(torch.randn(2, 100), target, k=16)
    assert str(e.value) == "gmm params last dim is 100, expected 2*k*d+k = 2*16*3+16 = 112"
    with pytest.raises(ValueError, match=r"is 7\b.*2\*d = 2\*3 = 6"):
        gmm.gaussian_nll(torch.randn(2, 7), target)
    with pytest.raises(ValueError, match=r"is 4\b.*expected d = 3"):
        gmm.l2_loss(torch.randn(2, 4), target)
    with pytest.raises(ValueError, match=r"is 100\b.*2\*k\*d\+k for k=16"):
        gmm.gmm_sample(torch.randn(2, 100), k=16)
    with pytest.raises(ValueError, match=r"is 100\b.*2\*k\*d\+k for k=16"):
        gmm.gmm_mean(torch.randn(2, 100), k=16)
    with pytest.raises(ValueError, match=r"is 5\b"):
        gmm.gaussian_sample(torch.randn(2, 5))

def test_split_gmm_layout():
    k, d = 3, 2
    params = torch.arange(gmm.head_dim("gmm", k, d), dtype=torch.float32)
    mu, var, logits = gmm.split_gmm(params, k, d)
    assert mu.shape == var.shape == (k, d) and logits.shape == (k,)
    assert torch.equal(mu.flatten(), params[:k * d])
    assert torch.allclose(var.flatten(), F.softplus(params[k * d:2 * k * d]))
    assert torch.equal(logits, params[2 * k * d:])
    _, var, _ = gmm.split_gmm(torch.full((gmm.head_dim("gmm", k, d),), -50.0), k, d, min_var=0.25)
    assert torch.all(var == 0.25)  # floored at min_var

# -----------------------------------------------------------------------------
# NLL values and gradients

@pytest.mark.parametrize("lead,k,d", SHAPES)
def test_gmm_nll_matches_torch_distributions(lead, k, d):
    params, target = make_gmm(lead, k, d, seed=k * 100 + d)
    params[..., :k * d] *= 0.5  # means near the targets: several components matter
    params.requires_grad_()
    ours, ref = gmm.gmm_nll(params, target, k), reference_nll(params, target, k)
    assert ours.shape == lead and ours.dtype == torch.float64
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=0)
    w = torch.rand(lead, dtype=torch.float64)  # random weights: a non-trivial upstream grad
    g_ours, = torch.autograd.grad((ours * w).sum(), params)
    g_ref, = torch.autograd.grad((ref * w).sum(), params)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-6, atol=1e-12)

def test_gmm_nll_float32_close_to_float64():
    params, target = make_gmm((4, 5), 16, 64, seed=1)
    ours = gmm.gmm_nll(params.float(), target.float(), 16)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), reference_nll(params, target, 16), rtol=1e-5, atol=1e-6)

def test_gmm_nll_min_var_is_used():
    params, target = make_gmm((6,), 2, 4, seed=2)
    params[..., 8:16] = -30.0  # softplus(-30) ~ 1e-13: the floor decides
    for min_var in (1e-5, 1e-2):
        torch.testing.assert_close(gmm.gmm_nll(params, target, 2, min_var=min_var),
                                   reference_nll(params, target, 2, min_var=min_var), rtol=1e-6, atol=0)
    assert not torch.allclose(gmm.gmm_nll(params, target, 2, 1e-5), gmm.gmm_nll(params, target, 2, 1e-2))

def test_k1_gmm_equals_gaussian_and_l2_is_unit_variance_gaussian():
    g = torch.Generator().manual_seed(3)
    d = 9
    mean, raw, target = (torch.randn(2, 3, d, generator=g, dtype=torch.float64) for _ in range(3))
    logit = torch.randn(2, 3, 1, generator=g, dtype=torch.float64)  # irrelevant for K=1
    gauss = gmm.gaussian_nll(torch.cat([mean, raw], -1), target)
    torch.testing.assert_close(gmm.gmm_nll(torch.cat([mean, raw, logit], -1), target, k=1),
                               gauss, rtol=1e-12, atol=0)
    torch.testing.assert_close(gmm.gmm_nll(torch.cat([mean, raw, logit + 7], -1), target, k=1),
                               gauss, rtol=1e-12, atol=0)
    # l2 = mean squared error; unit variance: softplus(raw) = 1 <=> raw = log(e - 1)
    l2 = gmm.l2_loss(mean, target)
    torch.testing.assert_close(l2, F.mse_loss(mean, target, reduction="none").mean(-1))
    unit = torch.cat([mean, torch.full_like(raw, math.log(math.e - 1))], -1)
    torch.testing.assert_close(gmm.gaussian_nll(unit, target), 0.5 * l2 + 0.5 * math.log(2 * math.pi),
                               rtol=1e-12, atol=1e-12)

# -----------------------------------------------------------------------------
# numerical stability and bf16 autocast

def extreme_params(n, k, d):
    """Targets of 1e4, logits of +-1e4, raw variances of -100 and +100."""
    params, target = make_gmm((n,), k, d, seed=4, dtype=torch.float32)
    mu, raw, logits = params.split([k * d, k * d, k], -1)
    raw[:, 0::2], raw[:, 1::2] = -100.0, 100.0
    logits[:, 0::2], logits[:, 1::2] = 1e4, -1e4
    mu[:, :k * d // 2] = 0.0
    target[0::2], target[1::2] = 1e4, -1e4
    return params, target

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gmm_nll_extreme_values_finite(dtype):
    k, d = 4, 8
    params, target = extreme_params(6, k, d)
    params = params.to(dtype).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        nll = gmm.gmm_nll(params, target.to(dtype), k)
        gparams = torch.cat([params[..., :d], params[..., k * d:k * d + d]], -1)  # mean | raw
        gnll = gmm.gaussian_nll(gparams, target.to(dtype))
        l2 = gmm.l2_loss(params[..., :d], target.to(dtype))
    for loss in (nll, gnll, l2):
        assert loss.dtype == torch.float32 and torch.isfinite(loss).all()
    grad, = torch.autograd.grad((nll + gnll + l2).sum(), params)
    assert grad.dtype == dtype and torch.isfinite(grad).all()

def test_gmm_nll_under_bf16_autocast_from_linear():
    k, d, n = 4, 16, 10
    torch.manual_seed(5)
    head = torch.nn.Linear(32, gmm.head_dim("gmm", k, d))
    h, target = torch.randn(n, 32), torch.randn(n, d)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        params = head(h)
        assert params.dtype == torch.bfloat16  # autocast is really on
        nll = gmm.gmm_nll(params, target, k)
    assert nll.dtype == torch.float32 and torch.isfinite(nll).all()
    # the loss is the float32 loss of the bf16 params, not a bf16-rounded loss
    torch.testing.assert_close(nll, gmm.gmm_nll(params.float(), target, k), rtol=0, atol=0)
    nll.mean().backward()
    assert torch.isfinite(head.weight.grad).all() and head.weight.grad.abs().sum() > 0

def test_compiled_matches_eager():
    params, target = make_gmm((3, 4), 2, 8, seed=6, dtype=torch.float32)
    torch.testing.assert_close(gmm.gmm_nll_compiled(params, target, 2), gmm.gmm_nll(params, target, 2))

# -----------------------------------------------------------------------------
# sampling

K4_LOGITS = torch.tensor([0.0, 1.0, -1.0, 0.5])

def separated_gmm(n, logits=K4_LOGITS, d=2):
    """n identical positions of a K=4 GMM whose means are 100 apart (std <= 2), so the
    component of any draw is its nearest mean. Returns params (n, 2KD+K), means, variances."""
    k = len(logits)
    means = torch.arange(k, dtype=torch.float32)[:, None].expand(k, d) * 100.0  # (K, D)
    var = torch.linspace(0.5, 4.0, k * d).reshape(k, d)  # (K, D)
    raw = var + torch.log(-torch.expm1(-var))  # inverse softplus
    params = torch.cat([means.flatten(), raw.flatten(), logits])
    return params.expand(n, -1).contiguous(), means, var

def component_of(x, means):
    return torch.cdist(x, means).argmin(-1)  # (N,)

def chi_square(counts, probs):
    expected = probs * counts.sum()
    return ((counts - expected) ** 2 / expected).sum().item()

@pytest.mark.parametrize("temperature", [1.0, 0.5, 3.0])
def test_component_frequencies_match_weights(temperature):
    n = 20000
    params, means, _ = separated_gmm(n)
    g = torch.Generator().manual_seed(7)
    x = gmm.gmm_sample(params, 4, temperature=temperature, generator=g)
    counts = torch.bincount(component_of(x, means), minlength=4).double()
    probs = (K4_LOGITS.double() / temperature).softmax(-1)
    assert chi_square(counts, probs) < CHI2_DF3_P1E4
    # and the test can fail: the untempered weights are rejected at temperature 0.5 / 3
    if temperature != 1.0:
        assert chi_square(counts, K4_LOGITS.double().softmax(-1)) > CHI2_DF3_P1E4

def test_per_component_mean_and_variance():
    n = 40000
    params, means, var = separated_gmm(n)
    for var_scale in (1.0, 0.01):
        g = torch.Generator().manual_seed(8)
        x = gmm.gmm_sample(params, 4, var_scale=var_scale, generator=g)
        comp = component_of(x, means)
        x = x.double()
        for c in range(4):
            xc = x[comp == c]  # (n_c, D)
            m = len(xc)
            v = var[c].double() * var_scale
            # within 5 standard errors: se(mean) = sqrt(v/m), se(var) ~ v*sqrt(2/(m-1))
            assert ((xc.mean(0) - means[c]).abs() < 5 * (v / m).sqrt()).all()
            assert ((xc.var(0) - v).abs() < 5 * v * math.sqrt(2 / (m - 1))).all()

def test_var_scale_zero_returns_chosen_mean_exactly():
    torch.manual_seed(9)
    k, d = 5, 6
    params = torch.randn(3, 4, gmm.head_dim("gmm", k, d))
    x = gmm.gmm_sample(params, k, var_scale=0.0, generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, 4, d)
    mu = params[..., :k * d].reshape(3, 4, k, d)
    hits = (mu == x.unsqueeze(-2)).all(-1)  # (3, 4, K): which component mean was returned
    assert hits.any(-1).all()

def test_temperature_zero_is_argmax_and_high_temperature_is_uniform():
    n = 20000
    params, means, _ = separated_gmm(n)
    x = gmm.gmm_sample(params, 4, var_scale=0.0, temperature=0.0)
    assert torch.equal(x, means[1].expand(n, -1))  # logit 1.0 is the largest
    g = torch.Generator().manual_seed(10)
    x = gmm.gmm_sample(params, 4, temperature=1e3, generator=g)
    counts = torch.bincount(component_of(x, means), minlength=4).double()
    assert chi_square(counts, torch.full((4,), 0.25, dtype=torch.float64)) < CHI2_DF3_P1E4

def test_sampling_is_reproducible_with_generator():
    params, _, _ = separated_gmm(100)
    a = gmm.gmm_sample(params, 4, generator=torch.Generator().manual_seed(11))
    b = gmm.gmm_sample(params, 4, generator=torch.Generator().manual_seed(11))
    c = gmm.gmm_sample(params, 4, generator=torch.Generator().manual_seed(12))
    assert torch.equal(a, b) and not torch.equal(a, c)

def test_gmm_mean():
    torch.manual_seed(13)
    k, d = 3, 4
    params = torch.randn(2, 5, gmm.head_dim("gmm", k, d))
    mu = params[..., :k * d].reshape(2, 5, k, d)
    w = params[..., 2 * k * d:].softmax(-1)
    torch.testing.assert_close(gmm.gmm_mean(params, k), (w[..., None] * mu).sum(-2))
    params1 = torch.randn(7, gmm.head_dim("gmm", 1, d))
    torch.testing.assert_close(gmm.gmm_mean(params1, 1), params1[:, :d])

def test_gaussian_sample():
    n, d = 40000, 3
    mean = torch.tensor([1.0, -2.0, 5.0])
    var = torch.tensor([0.5, 2.0, 1e-3])
    params = torch.cat([mean, var + torch.log(-torch.expm1(-var))]).expand(n, -1)
    assert torch.equal(gmm.gaussian_sample(params, var_scale=0.0), mean.expand(n, d))
    for var_scale in (1.0, 0.01):
        x = gmm.gaussian_sample(params, var_scale, generator=torch.Generator().manual_seed(14))
        v = (var * var_scale).double()
        x = x.double()
        assert ((x.mean(0) - mean).abs() < 5 * (v / n).sqrt()).all()
        assert ((x.var(0) - v).abs() < 5 * v * math.sqrt(2 / (n - 1))).all()
