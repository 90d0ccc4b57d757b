import os
import subprocess
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--clip_pretrain_iters=0", "--n_queries=4", "--token_dim=32", "--q_layers=1", "--q_heads=2",
        "--unet_channels=(16, 32)", "--map_channels=4", "--clip_frames=4", "--max_stride=3", "--batch_size=4",
        "--eval_clips=2", "--ddim_steps=2", "--probe_videos=0", "--val_fraction=0.25", "--log_interval=1",
        "--warmup_iters=0", "--learning_rate=1e-3", "--lr_decay_iters=4", "--order_clips=0",
        "--keyframe_loss_weight=1.0"]  # as config/shapes.py: every trained layer must get a gradient under DDP


def run(args, out_dir, shapes_dir, torchrun=False):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"] if torchrun
           else [sys.executable]) + ["train_tokenizer.py", f"--data_dir={shapes_dir}", f"--out_dir={out_dir}"] + TINY + args
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def load(out_dir):
    return torch.load(os.path.join(out_dir, "ckpt.pt"), weights_only=True)


def test_resume_equals_straight_run(shapes_dir, tmp_path):
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    """4 steps straight == 2 steps, then a resume for 2 more (the cosine schedule follows lr_decay_iters, so the
    first run may stop early); a resume with another learning rate is refused unless named."""
    run(["--max_iters=4", "--eval_interval=2"], straight, shapes_dir)
    run(["--max_iters=2", "--eval_interval=2"], resumed, shapes_dir)
    assert load(resumed)["iter_num"] == 2
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    refused = subprocess.run([sys.executable, "train_tokenizer.py", f"--data_dir={shapes_dir}", f"--out_dir={resumed}"]
                             + TINY + ["--max_iters=4", "--learning_rate=2e-3", "--init_from=resume"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "learning_rate=0.002 (checkpoint: 0.001). Use the checkpoint's, or accept them with " \
           "--override_on_resume=learning_rate" in refused.stderr
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
    out = run(["--max_iters=2", "--eval_interval=2", "--order_clips=4"], str(tmp_path / "ddp"), shapes_dir, torchrun=True)
    assert "deep tokens renumbered by the decoder's need" in out  # on rank 0, broadcast to rank 1
    assert out.count("parameter checksum") == 1 and "(same on all 2 ranks)" in out
    ckpt = load(str(tmp_path / "ddp"))
    assert ckpt["iter_num"] == 2 and ckpt["config"]["n_queries"] == 4


def test_diverged_run_skips_non_finite_steps_then_stops(shapes_dir, tmp_path):
    """lr 1e30: the first update blows the weights up, the next losses are NaN; each such step is skipped
    with a log line and max_bad_steps of them in a row end the run with a message, not a traceback."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "train_tokenizer.py", f"--data_dir={shapes_dir}", f"--out_dir={tmp_path}"] + TINY + [
        "--learning_rate=1e30", "--max_iters=50", "--eval_interval=50", "--max_bad_steps=3"]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "3 non-finite steps in a row (iters 1-3), none of them applied: stopped" in result.stderr
    assert [line.split(":")[0] for line in result.stdout.splitlines() if "update skipped" in line] == [
        "iter 1", "iter 2", "iter 3"]


def test_bad_flag_is_a_clear_error(shapes_dir, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "train_tokenizer.py", "--n_querys=4"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "unknown config key 'n_querys'" in result.stderr
    assert "Traceback" not in result.stderr
    result = subprocess.run([sys.executable, "train_tokenizer.py", "--dtype=bf16"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "dtype must be one of float32, bfloat16, got 'bf16'" in result.stderr


def test_clips_read_from_their_files_train_as_the_cached_ones(shapes_dir, tmp_path):
    """cache_mib=0: every clip seeks into its file instead of RAM. One at a time: the same clips as the cache, so
    the same weights. Four threads at a time: each clip drawn with its own seed, so a resumed run still equals a
    straight one."""
    cached = run(["--max_iters=2", "--eval_interval=2"], str(tmp_path / "cached"), shapes_dir)
    seeked = run(["--max_iters=2", "--eval_interval=2", "--cache_mib=0", "--loader_threads=0"], str(tmp_path / "seeked"),
                 shapes_dir)
    assert "held in RAM (cache_mib 2048)" in cached and "over cache_mib 0, so each clip is decoded from its file" in seeked
    threads = ["--cache_mib=0", "--loader_threads=4", "--eval_interval=2"]
    run(threads + ["--max_iters=4"], str(tmp_path / "straight"), shapes_dir)
    run(threads + ["--max_iters=2"], str(tmp_path / "resumed"), shapes_dir)
    run(threads + ["--max_iters=4", "--init_from=resume"], str(tmp_path / "resumed"), shapes_dir)
    for a, b in ((load(str(tmp_path / "cached")), load(str(tmp_path / "seeked"))),
                 (load(str(tmp_path / "straight")), load(str(tmp_path / "resumed")))):
        for part in ("tokenizer", "denoiser"):
            for name, tensor in a[part].items():
                assert torch.equal(tensor, b[part][name]), f"{part}.{name} differs"
