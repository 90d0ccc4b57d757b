"""Tests of train_ar.py on small synthetic deep-token shards (N_q=4, C=8)."""
import collections
import json
import os
import re

import pytest
import torch

import data
from configurator import apply_config
from conftest import ROOT, run_script, run_torchrun

pytestmark = pytest.mark.usefixtures("one_thread")

COLORS, SHAPES, DIRECTIONS = ["red", "green", "blue"], ["circle", "square"], ["left", "right", "up", "down"]



def caption_tokens(caption, num_keyframes, n_q=4, c=8):
    """Deep tokens that are a deterministic function of the caption: (K, N_q, C)."""
    g = torch.Generator().manual_seed(sum(ord(ch) * (i + 1) for i, ch in enumerate(caption)))
    base, step = torch.randn(n_q, c, generator=g), 0.3 * torch.randn(n_q, c, generator=g)
    return torch.stack([base + t * step for t in range(num_keyframes)])


def write_shards(out, n=24, k=3, c=8):
    os.makedirs(out, exist_ok=True)
    caps = [f"a {COLORS[i % 3]} {SHAPES[i // 3 % 2]}" for i in range(n)]
    data.save_token_shard(os.path.join(out, "images_000.safetensors"),
                          torch.stack([caption_tokens(x, 1, c=c) for x in caps]), torch.ones(n, dtype=torch.long), caps)
    caps = [f"a {COLORS[i % 3]} {SHAPES[i // 3 % 2]} moving {DIRECTIONS[i // 6 % 2]}" for i in range(n)]  # 12 captions
    nk = torch.tensor([k - i % 2 for i in range(n)])  # 3 or 2 keyframes, zero padded
    tokens = torch.stack([caption_tokens(x, k, c=c) for x in caps]) * (torch.arange(k) < nk[:, None])[..., None, None]
    data.save_token_shard(os.path.join(out, "videos_000.safetensors"), tokens, nk, caps, torch.linspace(0, 1, n))
    return out


@pytest.fixture(scope="module")
def token_dir(tmp_path_factory):
    return write_shards(str(tmp_path_factory.mktemp("tokens")))


def common(token_dir, out_dir, **kw):
    args = dict(data_dir=token_dir, out_dir=out_dir, backbone="tiny-gpt2", loss="gmm", token_norm=False, max_keyframes=3, text_len=12, gmm_k=4, batch_size=8,
                learning_rate=3e-3, min_lr=3e-4, warmup_iters=2, lr_decay_iters=20, eval_iters=2, log_interval=5,
                val_fraction=0.25, image_video_ratio=0.5, device="cpu", dtype="float32", seed=7) | kw
    return [f"--{k}={v}" for k, v in args.items()]


def train(argv):
    """train_ar.py in this process: its printed log."""
    return run_script("train_ar.py", argv)


def val_losses(log):
    return {int(s): float(v) for s, v in re.findall(r"step (\d+): val loss ([-\d.]+)", log)}


@pytest.mark.parametrize("loss", ["l2", "gaussian", "gmm"])
def test_each_loss_trains(loss, token_dir, tmp_path):
    """Table 4's three heads as a config switch: the held-out loss falls for each."""
    log = train(common(token_dir, str(tmp_path), loss=loss, max_iters=100, eval_interval=100, lr_decay_iters=100,
                       peak_flops=1e12 if loss == "gmm" else 0.0))
    v = val_losses(log)
    drop = 0.3 * abs(v[0]) if loss == "l2" else 0.3  # l2: 30% of the MSE; NLLs: 0.3 nats per channel
    assert v[100] < v[0] - drop, log
    assert ("mfu" in log) == (loss == "gmm")  # MFU only when a peak is known
    assert re.search(r"iter 100: loss [-\d.]+, lr [\d.e+-]+, [\d,]+ tok/s", log)


def test_resume_is_exact(token_dir, tmp_path):
    """10 steps straight == 5 steps + resume for 5 (same batches, drops, optimizer state)."""
    kw = dict(max_iters=10, eval_interval=5, text_drop_prob=0.3, visual_drop_prob=0.3)
    train(common(token_dir, str(tmp_path / "straight"), **kw))
    train(common(token_dir, str(tmp_path / "resumed"), **(kw | dict(max_iters=5))))
    log = train(common(token_dir, str(tmp_path / "resumed"), init_from="resume", **kw))
    assert "resuming from" in log and "at step 5" in log
    a = torch.load(tmp_path / "straight" / "ckpt.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "ckpt.pt", weights_only=True)
    assert a["iter_num"] == b["iter_num"] == 10
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["val_loss"] == b["val_loss"]
    saved = a["config"]  # this run's settings, sample.py's defaults among them
    assert (saved["sample_temperature"], saved["sample_var_scale"], saved["sample_cfg_scale"]) == (1.0, 0.01, 1.0)
    from ar_model import ARModel  # the checkpoint rebuilds the model on its own (what sample.py needs)
    model = ARModel.from_checkpoint(str(tmp_path / "straight" / "ckpt.pt"))
    assert model.generate(["a red circle"], 3, generator=torch.Generator().manual_seed(0)).shape == (1, 3, 4, 8)


def test_resume_refuses_changed_settings_unless_named(token_dir, tmp_path):
    train(common(token_dir, str(tmp_path), max_iters=2, eval_interval=2))
    changed = dict(init_from="resume", max_iters=4, eval_interval=4, batch_size=4, learning_rate=1e-3)
    with pytest.raises(SystemExit, match=r"batch_size=4 \(checkpoint: 8\); learning_rate=0.001 \(checkpoint: 0.003\)\. "
                                         r"Use the checkpoint's, or accept them with "
                                         r"--override_on_resume=batch_size,learning_rate"):
        train(common(token_dir, str(tmp_path), **changed))
    log = train(common(token_dir, str(tmp_path), override_on_resume="batch_size,learning_rate", **changed))
    assert "at step 2" in log and torch.load(tmp_path / "ckpt.pt", weights_only=True)["iter_num"] == 4


def test_float16_resume_keeps_the_loss_scale(token_dir, tmp_path):
    """float16 autocast with a GradScaler: its scale is saved and restored, so resume stays exact."""
    kw = dict(max_iters=6, eval_interval=3, dtype="float16")
    train(common(token_dir, str(tmp_path / "straight"), **kw))
    train(common(token_dir, str(tmp_path / "resumed"), **(kw | dict(max_iters=3))))
    half = torch.load(tmp_path / "resumed" / "ckpt.pt", weights_only=True)
    assert half["scaler"]["scale"] == 2.0 ** 16  # GradScaler's initial scale; it grows every 2,000 good steps
    half["scaler"]["scale"] = 1024.0  # as after a few overflows: a resume must carry it on, not start afresh
    os.makedirs(tmp_path / "rescaled")
    torch.save(half, tmp_path / "rescaled" / "ckpt.pt")
    for name in ("resumed", "rescaled"):
        train(common(token_dir, str(tmp_path / name), init_from="resume", **kw))
    a, b, c = (torch.load(tmp_path / name / "ckpt.pt", weights_only=True) for name in ("straight", "resumed", "rescaled"))
    assert a["scaler"]["scale"] == b["scaler"]["scale"] == 2.0 ** 16 and c["scaler"]["scale"] == 1024.0
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_unknown_dtype_is_a_clear_error(token_dir, tmp_path):
    with pytest.raises(SystemExit, match="dtype must be one of .*got 'bf16'"):
        train(common(token_dir, str(tmp_path), dtype="bf16", max_iters=1))


def test_next_stage_switches_head_and_checks_shapes(token_dir, tmp_path):
    train(common(token_dir, str(tmp_path / "s1"), loss="l2", max_iters=2, eval_interval=2, image_video_ratio=1.0))
    src = str(tmp_path / "s1" / "ckpt.pt")
    log = train(common(token_dir, str(tmp_path / "s2"), init_from=src, loss="gmm", max_iters=1, eval_interval=1,
                       learning_rate=0.0, min_lr=0.0))  # lr 0: weights stay as loaded
    assert "output projection last layer out_proj.4.weight, out_proj.4.bias NOT loaded" in log
    assert "loss l2 k=4 -> gmm k=4" in log
    a, b = torch.load(src, weights_only=True)["model"], torch.load(tmp_path / "s2" / "ckpt.pt", weights_only=True)["model"]
    assert b["out_proj.4.weight"].shape == (2 * 4 * 8 + 4, 64) and a["out_proj.4.weight"].shape == (8, 64)
    for key in a:
        if not key.startswith("out_proj.4."):
            assert torch.equal(a[key], b[key]), key
    assert "GMM means from the L2 prediction" in log
    bound = 0.1 / 64 ** 0.5  # a tenth of nn.Linear's init bound 1/sqrt(fan_in)
    for name in ("weight", "bias"):  # every component's mean rows = the L2 rows, up to that tenth
        means = b[f"out_proj.4.{name}"][:4 * 8].unflatten(0, (4, 8))  # (K, C, ...)
        gap = (means - a[f"out_proj.4.{name}"]).abs()
        assert 0 < gap.max() <= bound + 1e-7, name
    assert (b["out_proj.4.weight"][4 * 8:].abs().max() > 2 * bound)  # variances and logits: a fresh init
    log = train(common(token_dir, str(tmp_path / "s2_fresh"), init_from=src, loss="gmm", max_iters=1, eval_interval=1,
                       learning_rate=0.0, min_lr=0.0, gmm_means_from_l2=False))
    assert "freshly initialised" in log  # the release's switch: the whole last layer starts fresh
    fresh = torch.load(tmp_path / "s2_fresh" / "ckpt.pt", weights_only=True)["model"]["out_proj.4.weight"][:4 * 8]
    assert (fresh.unflatten(0, (4, 8)) - a["out_proj.4.weight"]).abs().max() > 2 * bound
    other = write_shards(str(tmp_path / "c6"), c=6)  # tokens with C=6 against a C=8 checkpoint
    with pytest.raises(ValueError, match=r"N_q=4, C=8.*N_q=4, C=6"):
        train(common(other, str(tmp_path / "s3"), init_from=src, max_iters=1))


def test_token_norm_statistics_from_the_training_keyframes(token_dir, tmp_path):
    import train_ar
    log = train(common(token_dir, str(tmp_path), token_norm=True, max_iters=1, eval_interval=1))
    assert "token_norm: deep-token std per (token, channel)" in log
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)["model"]
    sets = [train_ar.load_tokens(token_dir, kind, k, 0.25) for kind, k in (("images", 1), ("videos", 3))]
    real = torch.cat([s["train"]["tokens"][i][0, :n] for s in sets
                      for i, n in enumerate(s["train"]["num_keyframes"].tolist())])  # (M, N_q, C): no padding
    assert len(real) < sum(s["train"]["tokens"].shape[0] * s["train"]["tokens"].shape[1] for s in sets)
    torch.testing.assert_close(state["token_mean"], real.mean(0))
    torch.testing.assert_close(state["token_std"], real.std(0))


def test_data_split_and_motion_filter(token_dir):
    import train_ar
    full = train_ar.load_tokens(token_dir, "videos", 3, 0.25)
    assert full["train"]["captions"] == train_ar.load_tokens(token_dir, "videos", 3, 0.25)["train"]["captions"]
    assert len(full["train"]["captions"]) + len(full["val"]["captions"]) == 24 and len(full["val"]["captions"]) > 0
    assert len(train_ar.load_tokens(token_dir, "videos", 3, 0.0)["train"]["captions"]) == 24
    moving = train_ar.load_tokens(token_dir, "videos", 2, 0.25, min_motion=0.5)  # motion is linspace(0, 1, 24)
    assert len(moving["train"]["captions"]) + len(moving["val"]["captions"]) == 12
    assert moving["train"]["tokens"].shape[1:] == (2, 4, 8) and moving["train"]["num_keyframes"].max() == 2
    rows = lambda s: {tuple(r) for r in s["tokens"][:][:, :2].flatten(1).tolist()}  # noqa: E731
    assert rows(moving["val"]) <= rows(full["val"])  # filtering keeps the held-out rows held out


def test_rows_with_non_finite_tokens_are_skipped_with_a_warning(tmp_path, capsys):
    import train_ar
    out = write_shards(str(tmp_path))
    path = os.path.join(out, "videos_000.safetensors")
    tokens, nk, caps, motion = data.load_token_shard(path)
    tokens[3, 1, 2, 5], tokens[10, 0, 0, 0] = float("nan"), float("inf")
    data.save_token_shard(path, tokens, nk, caps, motion)
    sets = train_ar.load_tokens(out, "videos", 3, 0.25)
    assert "videos_000.safetensors: 2 of 24 rows hold NaN/inf tokens; skipped" in capsys.readouterr().out
    kept = sets["train"]["captions"] + sets["val"]["captions"]
    assert collections.Counter(caps) - collections.Counter(kept) == collections.Counter([caps[3], caps[10]])
    assert all(torch.isfinite(s["tokens"][:]).all() for s in sets.values())
    assert data.shard_nonfinite_rows(path) == [3, 10]  # listed when written: start-up reads no tokens for it
    read = []
    mapped = train_ar.map_token_shard
    train_ar.map_token_shard = lambda p: read.append(p) or mapped(p)
    try:
        assert train_ar.load_tokens(out, "videos", 3, 0.25)["train"]["captions"] == sets["train"]["captions"]
        assert read == []
        from safetensors.torch import load_file, save_file  # a shard written without the list: its tokens are read
        save_file(load_file(path), path, metadata={"captions": json.dumps(caps)})
        assert data.shard_nonfinite_rows(path) is None
        assert train_ar.load_tokens(out, "videos", 3, 0.25)["train"]["captions"] == sets["train"]["captions"]
        assert read == [path]
    finally:
        train_ar.map_token_shard = mapped


def nan_from_step(first_bad, monkeypatch):
    """Make every training forward pass from step `first_bad` on return a NaN loss."""
    from ar_model import ARModel
    forward, calls = ARModel.forward, []

    def poisoned(self, *args, **kw):
        loss = forward(self, *args, **kw)
        if self.training:
            calls.append(None)
            if len(calls) > first_bad:
                return loss * float("nan")
        return loss
    monkeypatch.setattr(ARModel, "forward", poisoned)


def test_non_finite_steps_are_skipped_then_stop_the_run(token_dir, tmp_path, monkeypatch):
    """A NaN loss leaves the weights as they were; max_bad_steps of them in a row stop the run with a clear
    message, and the checkpoints written meanwhile hold the last good weights."""
    kw = dict(max_iters=40, eval_interval=3, max_bad_steps=5)
    train(common(token_dir, str(tmp_path / "good"), **(kw | dict(max_iters=3))))
    nan_from_step(3, monkeypatch)
    with pytest.raises(SystemExit, match=r"5 non-finite steps in a row \(iters 3-7\), none of them applied: stopped") as stop:
        train(common(token_dir, str(tmp_path / "bad"), **kw))
    log = stop.value.log
    assert [int(i) for i in re.findall(r"iter (\d+): non-finite gradient norm \(nan\), update skipped", log)] == [3, 4, 5, 6, 7]
    good = torch.load(tmp_path / "good" / "ckpt.pt", weights_only=True)
    bad = torch.load(tmp_path / "bad" / "ckpt.pt", weights_only=True)
    assert bad["iter_num"] == 6  # saved after three skipped steps: the weights of step 3
    for key in good["model"]:
        assert torch.equal(good["model"][key], bad["model"][key]), key


def test_stage_configs():
    import train_ar
    defaults = {k: v for k, v in vars(train_ar).items() if not k.startswith("_")}
    stages = [apply_config(dict(defaults), [os.path.join(ROOT, f"config/ar_shapes_stage{i}.py")]) for i in range(1, 5)]
    assert [s["loss"] for s in stages] == ["l2", "l2", "gmm", "gmm"]
    assert [s["image_video_ratio"] for s in stages] == [1.0, 0.0, 0.0, 0.0] and stages[3]["min_motion"] > 0
    assert stages[0]["token_norm"] and [s["learning_rate"] for s in stages] == [1e-3, 1e-3, 1e-4, 3e-5]
    assert [s["sample_temperature"] for s in stages] == [1.0, 1.0, 0.0, 0.0]  # the GMM stages sample the argmax
    for prev, nxt in zip(stages, stages[1:]):
        assert nxt["init_from"] == prev["out_dir"] + "/ckpt.pt" and nxt["max_keyframes"] == prev["max_keyframes"]
    paper = apply_config(dict(defaults), [os.path.join(ROOT, "config/ar_paper_llama1b.py")])
    assert (paper["text_len"], paper["max_keyframes"], paper["gmm_k"]) == (80, 16, 16)
    assert not paper["token_norm"]  # the paper's AR model reads raw deep tokens
    assert not paper["from_scratch"] and not paper["gmm_means_from_l2"] and paper["sample_cfg_mode"] == "samples"
    assert paper["learning_rate"] == 1e-4 and paper["batch_size"] * paper["gradient_accumulation_steps"] == 256


def test_paper_config_refuses_a_random_backbone(token_dir, tmp_path):
    """from_scratch=False (the paper config's): a BACKBONES name builds random weights, so it is refused in one line;
    a local directory with weights is taken; from_scratch=True trains the random one."""
    with pytest.raises(SystemExit, match=r"backbone 'tiny-gpt2' is not a directory with weights, and from_scratch=False"):
        train(common(token_dir, str(tmp_path / "a"), from_scratch=False, max_iters=1))
    from ar_model import ARConfig, ARModel
    local = str(tmp_path / "lm")
    ARModel(ARConfig(backbone="tiny-gpt2", n_queries=4, token_dim=8)).backbone.save_pretrained(local)
    log = train(common(token_dir, str(tmp_path / "b"), from_scratch=False, backbone=local, max_iters=1,
                       eval_interval=1))
    assert f"backbone {local}" in log
    train(common(token_dir, str(tmp_path / "c"), from_scratch=True, max_iters=1, eval_interval=1))


def test_torchrun_two_processes(token_dir, tmp_path):
    """DDP on CPU (gloo): runs, ranks agree on a parameter checksum, checkpoint holds both ranks' RNG."""
    out = run_torchrun("train_ar.py", common(token_dir, str(tmp_path), max_iters=4, eval_interval=2,
                                             gradient_accumulation_steps=2, batch_size=4), timeout=120)
    assert out.count("(same on all 2 ranks)") == 3  # steps 0, 2, 4
    assert "2 process(es), 1 micro-batches of 4 each per step: global batch 8" in out
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert ckpt["iter_num"] == 4 and len(ckpt["rng"]) == 2
    assert not torch.equal(ckpt["rng"][0]["batches"], ckpt["rng"][1]["batches"])  # each rank its own batches
