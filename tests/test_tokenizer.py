import pytest
import torch

import diffusion
import tokenizer as tok


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg = dict(clip_model="nanodicode-tiny", clip_pretrained="", n_queries=4, token_dim=32, q_layers=1, q_heads=2,
               train_encoder=False, denoiser="unet", clip_frames=4, image_size=32, unet_channels=(16, 32),
               map_channels=4, max_stride=3)
    return cfg, *tok.build_autoencoder(cfg)


def test_encode_shapes_images_and_keyframes(tiny):
    cfg, tokenizer, _ = tiny
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    out = tokenizer.encode(images)
    assert out.shape == (3, 4, 32)
    # deep tokens are layer-normed per token (the released model's final LayerNorm)
    assert torch.allclose(out.mean(-1), torch.zeros(3, 4), atol=1e-4) and torch.allclose(out.std(-1, unbiased=False), torch.ones(3, 4), atol=1e-3)
    videos = torch.stack([images, images.flip(0)])  # (2, 3, 3, 32, 32)
    seq = tokenizer.encode(videos)
    assert seq.shape == (2, 3, 4, 32)
    assert torch.allclose(seq[0], out, atol=1e-5) and torch.allclose(seq[1], out.flip(0), atol=1e-5)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\) or \(B, T, 3, H, W\).*\(2, 32, 32\)"):
        tokenizer.encode(torch.zeros(2, 32, 32))


def test_encoder_returns_all_last_block_tokens(tiny):
    _, tokenizer, _ = tiny
    tokens = tokenizer.encoder(torch.zeros(2, 3, 32, 32))
    assert tokens.shape == (2, 8 * 8 + 1, 128)  # 32 / patch 4 = 8 x 8 patches + class token, width 128
    # frames of another size are resized to the ViT's input inside
    assert tokenizer.encoder(torch.zeros(1, 3, 48, 48)).shape == (1, 65, 128)


def test_diffusion_loss_trains_q_not_frozen_encoder(tiny):
    cfg, tokenizer, denoiser = tiny
    clips = torch.rand(2, 5, 3, 32, 32) * 2 - 1
    cond = tokenizer.encode(clips[:, [0, -1]]).flatten(1, 2)  # (B, 2 N_q, C)
    assert cond.shape == (2, 8, 32)
    # make the zero-initialised output layer non-zero so gradients reach the condition path
    torch.nn.init.normal_(denoiser.conv_out.weight, std=0.1)
    loss = diffusion.diffusion_loss(denoiser, clips, cond, torch.tensor([1, 3]), diffusion.make_alphas_cumprod())
    loss.backward()
    q_grads = [p.grad for p in tokenizer.query.parameters()]
    assert all(g is not None for g in q_grads) and sum(g.abs().sum() for g in q_grads) > 0
    assert all(p.grad is None for p in tokenizer.encoder.parameters())
    assert not any(p.requires_grad for p in tokenizer.encoder.parameters())


def test_trainable_encoder_gives_every_trainable_parameter_a_gradient():
    """train_encoder=True: DDP needs a gradient on every parameter that requires one; the ViT's pooling head
    (ln_post, proj) lies after the last block's tokens that E returns, so it is frozen."""
    torch.manual_seed(0)
    tokenizer = tok.DeepTokenizer(tok.create_clip("nanodicode-tiny"), n_queries=4, dim=32, q_layers=1, q_heads=2,
                                  train_encoder=True)
    tokenizer.encode(torch.rand(2, 3, 32, 32) * 2 - 1).square().sum().backward()
    trainable = {n: p for n, p in tokenizer.named_parameters() if p.requires_grad}
    assert any(n.startswith("encoder.visual.transformer.") for n in trainable)
    assert not any(n.startswith(("encoder.visual.ln_post", "encoder.visual.proj")) for n in trainable)
    assert [n for n, p in trainable.items() if p.grad is None] == []


def test_order_queries_renumbers_tokens_without_changing_the_decoder():
    """order_queries permutes Q's queries: the deep tokens come out permuted, the decoder's output is unchanged
    (it reads the tokens as a set), and the tokens are then sorted by the loss rise when each one is zeroed."""
    torch.manual_seed(1)
    cfg = dict(clip_model="nanodicode-tiny", clip_pretrained="", n_queries=4, token_dim=32, q_layers=1, q_heads=2,
               train_encoder=False, denoiser="unet", clip_frames=4, image_size=32, unet_channels=(16, 32),
               map_channels=4, max_stride=3)
    tokenizer, denoiser = tok.build_autoencoder(cfg)
    tokenizer.eval(), denoiser.eval()
    for p in denoiser.parameters():  # a decoder whose zero-initialised layers are not zero: tokens matter
        torch.nn.init.normal_(p, std=0.05) if p.dim() > 1 else None
    clips = torch.rand(6, 5, 3, 32, 32) * 2 - 1
    ac = diffusion.make_alphas_cumprod()
    x_t, t, stride = torch.randn_like(clips), torch.tensor([100, 400, 700, 900, 50, 999]), torch.ones(6, dtype=torch.long)
    with torch.no_grad():
        before = tokenizer.encode(clips[:, [0, -1]])  # (B, 2, N_q, C)
        out_before = denoiser(x_t, t, before.flatten(1, 2), stride)
        order = tok.order_queries(tokenizer, denoiser, clips, ac, batch_size=4)
        after = tokenizer.encode(clips[:, [0, -1]])
        out_after = denoiser(x_t, t, after.flatten(1, 2), stride)
    assert sorted(order.tolist()) == [0, 1, 2, 3]
    torch.testing.assert_close(after, before[:, :, order], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_after, out_before, atol=1e-5, rtol=1e-5)
    again = tok.order_queries(tokenizer, denoiser, clips, ac, batch_size=4)  # already sorted: identity
    assert again.tolist() == [0, 1, 2, 3]


def test_denoiser_rejects_wrong_clip_shape(tiny):
    _, _, denoiser = tiny
    with pytest.raises(ValueError, match="5 frames of 32px"):
        denoiser(torch.zeros(1, 9, 3, 32, 32), torch.zeros(1, dtype=torch.long), torch.zeros(1, 8, 32), torch.ones(1, dtype=torch.long))


class ReferenceResampler(torch.nn.Module):
    """An independent resampler in the IP-Adapter / DynamiCrafter state-dict layout (latents, proj_in, layers.i.0 =
    attention with norm1 / norm2 / to_q / to_kv / to_out, layers.i.1 = LayerNorm + bias-free MLP, proj_out,
    norm_out), written from its description, with its own attention arithmetic (scale split over q and k)."""

    def __init__(self, in_dim, dim, n_latents, depth, heads, head_dim):
        super().__init__()
        nn = torch.nn
        self.heads = heads
        self.latents = nn.Parameter(torch.randn(1, n_latents, dim))
        self.proj_in, self.proj_out, self.norm_out = nn.Linear(in_dim, dim), nn.Linear(dim, dim), nn.LayerNorm(dim)
        inner = heads * head_dim
        self.layers = nn.ModuleList(nn.ModuleList([
            nn.ModuleDict(dict(norm1=nn.LayerNorm(dim), norm2=nn.LayerNorm(dim), to_q=nn.Linear(dim, inner, bias=False),
                               to_kv=nn.Linear(dim, 2 * inner, bias=False), to_out=nn.Linear(inner, dim, bias=False))),
            nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 4 * dim, bias=False), nn.GELU(),
                          nn.Linear(4 * dim, dim, bias=False))]) for _ in range(depth))
        for p in self.parameters():  # LayerNorms away from 1 / 0, so a swapped norm shows
            torch.nn.init.normal_(p, std=0.3)

    def forward(self, x):
        lat = self.latents.repeat(x.shape[0], 1, 1)
        x = self.proj_in(x)
        for attn, ff in self.layers:
            xn, ln = attn["norm1"](x), attn["norm2"](lat)
            q = attn["to_q"](ln)
            k, v = attn["to_kv"](torch.cat([xn, ln], 1)).chunk(2, -1)
            split = lambda z: z.view(z.shape[0], z.shape[1], self.heads, -1).permute(0, 2, 1, 3)
            q, k, v = split(q), split(k), split(v)
            s = q.shape[-1] ** -0.25
            w = torch.softmax((q * s) @ (k * s).transpose(-1, -2), -1)
            lat = attn["to_out"]((w @ v).permute(0, 2, 1, 3).flatten(2)) + lat
            lat = ff(lat) + lat
        return self.norm_out(self.proj_out(lat))


def test_perceiver_resampler_loads_a_pretrained_resampler(tmp_path):
    """q_type 'perceiver' = the release's Q: a pretrained resampler's file (DynamiCrafter's checkpoint layout,
    its queries for several frames) loads into it, keeps the first N_q queries and then computes what the
    reference computes with those queries; a file of another depth is refused by name."""
    from tokenizer import PerceiverResampler
    torch.manual_seed(0)
    in_dim, dim, n_q, depth, heads, head_dim = 24, 32, 4, 2, 3, 8
    ref = ReferenceResampler(in_dim, dim, 3 * n_q, depth, heads, head_dim)  # queries for 3 frames, as DynamiCrafter's
    path = str(tmp_path / "dynamicrafter.ckpt")
    torch.save({"state_dict": {"image_proj_model." + k: v for k, v in ref.state_dict().items()}
                | {"model.diffusion_model.out.weight": torch.zeros(1)}}, path)
    q = PerceiverResampler(in_dim, dim, n_q, depth, heads, head_dim)
    q.load_pretrained(path)
    assert torch.equal(q.queries, ref.latents[0, :n_q])
    ref.latents = torch.nn.Parameter(ref.latents[:, :n_q].clone())
    tokens = torch.randn(2, 10, in_dim)
    with torch.no_grad():
        torch.testing.assert_close(q(tokens), ref(tokens), atol=1e-5, rtol=1e-5)
        assert q(tokens).shape == (2, n_q, dim)
    with pytest.raises(ValueError, match=r"no image_proj_model\.layers\.2\..* for this 3-layer resampler"):
        PerceiverResampler(in_dim, dim, n_q, 3, heads, head_dim).load_pretrained(path)


def test_perceiver_updates_only_the_queries():
    """The resampler's structure: every layer's keys and values are [E tokens; queries] but only the queries are
    carried to the next layer, so a query's deep token moves when E's tokens move, and N_q queries give N_q tokens
    whatever the number of E tokens; no position embedding on E's tokens (a permutation of them changes nothing)."""
    from tokenizer import PerceiverResampler
    torch.manual_seed(0)
    q = PerceiverResampler(16, 32, 5, 2, 4, 8).eval()
    tokens = torch.randn(2, 9, 16)
    with torch.no_grad():
        out = q(tokens)
        assert out.shape == (2, 5, 32) and q(torch.randn(2, 20, 16)).shape == (2, 5, 32)
        torch.testing.assert_close(q(tokens[:, torch.randperm(9)]), out, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(q(tokens + 0.1 * torch.randn_like(tokens)), out)
        torch.testing.assert_close(out.mean(-1), torch.zeros(2, 5), atol=1e-5, rtol=0)  # ends with a LayerNorm
    names = {n for n, _ in q.named_parameters()}
    assert "layers.0.mlp.1.bias" not in names and "layers.0.attn.to_q.bias" not in names  # bias-free
