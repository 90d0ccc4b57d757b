"""train_tokenizer.py at tiny size: resume, torchrun, decoder fine-tuning, clips read from files, the user's mistakes."""
import os
import shutil

import pytest
import torch

from conftest import run_script, run_torchrun

TINY = ["--clip_pretrain_iters=0", "--n_queries=4", "--token_dim=32", "--q_layers=1", "--q_heads=2",
        "--unet_channels=(16, 32)", "--map_channels=4", "--clip_frames=4", "--max_stride=3", "--batch_size=4",
        "--eval_clips=2", "--ddim_steps=2", "--probe_videos=0", "--val_fraction=0.25", "--log_interval=1",
        "--warmup_iters=0", "--learning_rate=1e-3", "--lr_decay_iters=4", "--order_clips=0",
        "--keyframe_loss_weight=1.0"]  # as config/shapes.py: every trained layer must get a gradient under DDP


def run(args, out_dir, shapes_dir):
    """train_tokenizer.py with the tiny settings, in this process: its printed log."""
    return run_script("train_tokenizer.py", [f"--data_dir={shapes_dir}", f"--out_dir={out_dir}"] + TINY + args)


def refused(args, out_dir, shapes_dir):
    """A run that must stop on a mistake with a message (a command line prints it alone, without a traceback; any
    other exception fails the test): (its log, the message)."""
    with pytest.raises(SystemExit) as stop:
        run(args, out_dir, shapes_dir)
    assert isinstance(stop.value.code, str), stop.value.code
    return stop.value.log, stop.value.code


def load(out_dir):
    return torch.load(os.path.join(out_dir, "ckpt.pt"), weights_only=True)


@pytest.fixture(scope="module")
def two_steps(shapes_dir, tmp_path_factory):
    """One 2-step run (videos cached in RAM), shared read-only by the tests below: (out_dir, its stdout)."""
    out_dir = str(tmp_path_factory.mktemp("two_steps"))
    return out_dir, run(["--max_iters=2", "--eval_interval=2"], out_dir, shapes_dir)


def test_resume_equals_straight_run(shapes_dir, two_steps, tmp_path):
    """4 steps straight == 2 steps, then a resume for 2 more (the cosine schedule follows lr_decay_iters, so the
    first run may stop early); a resume with another learning rate is refused unless named."""
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    run(["--max_iters=4", "--eval_interval=2"], straight, shapes_dir)
    shutil.copytree(two_steps[0], resumed)
    assert load(resumed)["iter_num"] == 2
    message = refused(["--max_iters=4", "--learning_rate=2e-3", "--init_from=resume"], resumed, shapes_dir)[1]
    assert "learning_rate=0.002 (checkpoint: 0.001). Use the checkpoint's, or accept them with " \
           "--override_on_resume=learning_rate" in message
    out = run(["--max_iters=4", "--eval_interval=2", "--init_from=resume"], resumed, shapes_dir)
    assert "resumed from" in out
    a, b = load(straight), load(resumed)
    assert a["iter_num"] == b["iter_num"] == 4
    for part in ("tokenizer", "denoiser"):
        for name, tensor in a[part].items():
            assert torch.equal(tensor, b[part][name]), f"{part}.{name} differs after resume"
    assert os.path.isfile(os.path.join(straight, "recon_000004.gif"))
    for out_dir in (straight, resumed):  # evals after steps only: none of the untrained model, none repeated on resume
        with open(os.path.join(out_dir, "log.csv")) as f:
            assert [int(line.split(",")[1]) for line in f if line.startswith("eval,")] == [2, 4]
    assert not any(name.endswith(".tmp") for name in os.listdir(straight))
    best = torch.load(os.path.join(straight, "best.pt"), weights_only=True)  # the eval with the best held-out PSNR
    assert best["iter_num"] in (2, 4) and best["best_psnr"] == a["best_psnr"]


def test_torchrun_two_ranks_stay_in_sync(shapes_dir, tmp_path):
    out = run_torchrun("train_tokenizer.py", [f"--data_dir={shapes_dir}", f"--out_dir={tmp_path / 'ddp'}"] + TINY + [
        "--max_iters=2", "--eval_interval=2", "--order_clips=4"])
    assert "deep tokens renumbered by the decoder's need" in out  # on rank 0, broadcast to rank 1
    assert out.count("parameter checksum") == 1 and "(same on all 2 ranks)" in out
    ckpt = load(str(tmp_path / "ddp"))
    assert ckpt["iter_num"] == 2 and ckpt["config"]["n_queries"] == 4


def test_diverged_run_skips_non_finite_steps_then_stops(shapes_dir, tmp_path):
    """lr 1e30: the first update blows the weights up, the next losses are NaN; each such step is skipped
    with a log line and max_bad_steps of them in a row end the run with a message, not a traceback."""
    log, message = refused(["--learning_rate=1e30", "--max_iters=50", "--eval_interval=50", "--max_bad_steps=3"],
                           str(tmp_path), shapes_dir)
    assert "3 non-finite steps in a row (iters 1-3), none of them applied: stopped" in message
    assert [line.split(":")[0] for line in log.splitlines() if "update skipped" in line] == [
        "iter 1", "iter 2", "iter 3"]


def test_bad_flag_is_a_clear_error(shapes_dir, tmp_path):
    assert "unknown config key 'n_querys'" in refused(["--n_querys=4"], str(tmp_path), shapes_dir)[1]
    assert "dtype must be one of float32, bfloat16, got 'bf16'" in refused(["--dtype=bf16"], str(tmp_path),
                                                                             shapes_dir)[1]


def test_clips_read_from_their_files_train_as_the_cached_ones(shapes_dir, two_steps, tmp_path):
    """cache_mib=0: every clip seeks into its file instead of RAM. One at a time: the same clips as the cache, so
    the same weights. (Several threads at a time draw each clip with its own seed: test_training.py kills and
    resumes such a run.)"""
    seeked = run(["--max_iters=2", "--eval_interval=2", "--cache_mib=0", "--loader_threads=0"], str(tmp_path / "seeked"),
                 shapes_dir)
    assert "held in RAM (cache_mib 2048)" in two_steps[1]
    assert "over cache_mib 0, so each clip is decoded from its file" in seeked
    a, b = load(two_steps[0]), load(str(tmp_path / "seeked"))
    for part in ("tokenizer", "denoiser"):
        for name, tensor in a[part].items():
            assert torch.equal(tensor, b[part][name]), f"{part}.{name} differs"


def tiny_ar_checkpoint(path, n_queries=4, token_dim=32, max_keyframes=5, **config):
    """A train_ar.py-style checkpoint of a random tiny AR model (what train_tokenizer's ar_ckpt reads)."""
    from dataclasses import asdict
    from ar_model import ARConfig, ARModel
    torch.manual_seed(0)
    ar = ARModel(ARConfig(backbone="tiny-gpt2", n_queries=n_queries, token_dim=token_dim, max_keyframes=max_keyframes))
    torch.save(dict(model=ar.state_dict(), model_config=asdict(ar.cfg), config=config), path)
    return ar.eval()


def test_ar_batch_conditions_clips_on_the_ar_models_teacher_forced_tokens(shapes_dir, two_steps, tmp_path, monkeypatch):
    """get_ar_batch: each clip runs between keyframes i and i + 1 of a video (every frame at stride 1 for
    keyframes 8 frames apart); its condition is what the AR model predicts for those two keyframes from the caption
    and the true keyframes before them (ARModel.predict), or with ar_token_prob 0 the keyframes' own tokens."""
    import data
    import tokenizer as tok
    import train_tokenizer as tt
    tokenizer, _, cfg = tok.load_autoencoder(os.path.join(two_steps[0], "ckpt.pt"))
    ar = tiny_ar_checkpoint(str(tmp_path / "ar.pt"))
    for key in ("clip_frames", "image_size"):
        monkeypatch.setattr(tt, key, cfg[key])
    monkeypatch.setattr(tt, "device", "cpu")
    videos = data.KeyframeDataset(os.path.join(shapes_dir, "videos.csv"), 32, 2, 17, 5)  # frames 0, 2, .., 32
    whole = {row["caption"] + row["path"]: videos.load(row)["frames"] for row in videos.rows}
    sampling = dict(var_scale=0.0, temperature=0.0)
    for prob in (1.0, 0.0):
        monkeypatch.setattr(tt, "ar_token_prob", prob)
        torch.manual_seed(1)
        clips, stride, cond = tt.get_ar_batch(videos, 6, None, tokenizer, ar, 2, sampling)
        assert clips.shape == (6, 5, 3, 32, 32) and stride.tolist() == [2] * 6 and cond.shape == (6, 8, 32)
        for b in range(6):
            (key, frames), i = next((kv, i) for kv in whole.items() for i in range(4)
                                    if torch.equal(kv[1][4 * i:4 * i + 5], clips[b]))
            with torch.no_grad():
                own = tokenizer.encode(frames[::4][None])  # (1, 5, N_q, C)
            want = ar.predict([key[:key.index(shapes_dir)]], own, **sampling) if prob else own
            torch.testing.assert_close(cond[b], want[0, i:i + 2].flatten(0, 1), atol=1e-5, rtol=1e-5)


def test_decoder_fine_tuning_on_ar_tokens_keeps_e_and_q(shapes_dir, two_steps, tmp_path):
    """init_from a tokenizer checkpoint + ar_ckpt: the decoder trains, E and Q (whose tokens the AR model reads)
    do not, the deep tokens are not renumbered; without a checkpoint to start from it is a one-line error."""
    tiny_ar_checkpoint(str(tmp_path / "ar.pt"), sample_var_scale=0.01, sample_temperature=0.0)
    start = load(two_steps[0])
    out = run([f"--init_from={os.path.join(two_steps[0], 'ckpt.pt')}", f"--ar_ckpt={tmp_path / 'ar.pt'}",
               "--max_iters=2", "--eval_interval=2", "--order_clips=4"], str(tmp_path / "ft"), shapes_dir)
    assert "fine-tuning the decoder on" in out and "var_scale 0.01, temperature 0" in out
    assert "renumbered" not in out
    tuned = load(str(tmp_path / "ft"))
    for name, tensor in start["tokenizer"].items():
        assert torch.equal(tensor, tuned["tokenizer"][name]), name
    assert not torch.equal(start["denoiser"]["conv_in.weight"], tuned["denoiser"]["conv_in.weight"])
    assert "init_from must name its checkpoint" in refused([f"--ar_ckpt={tmp_path / 'ar.pt'}"], str(tmp_path / "x"),
                                                           shapes_dir)[1]
