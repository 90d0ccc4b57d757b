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
