"""Bring your own videos: the README's commands, end to end, on a folder of videos in other codecs, containers,
sizes and frame rates than the shapes set, with broken files among them (the two that read the files as processes)."""
import os
import re
import shutil
import subprocess
import sys

import numpy as np

import data
from conftest import ROOT, run_script

H264 = ("-c:v", "libx264", "-pix_fmt", "yuv420p")


def command(*args):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def test_a_folder_of_videos_trains_encodes_and_samples(tmp_path):
    folder = tmp_path / "my_videos"
    folder.mkdir()
    good = {  # name: (rate, size, codec); 3 s each
        "a.mp4": (30, "96x64", H264), "b.webm": (25, "64x96", ("-c:v", "libvpx-vp9")),
        "c.avi": (24, "80x60", ("-c:v", "mpeg4", "-q:v", "3")), "d.mkv": (60, "64x64", H264),
        "e.mov": (15, "120x68", H264), "f.gif": (12, "64x48", ()), "g.mp4": (50, "160x90", H264),
        "h.mp4": (10, "48x48", H264),
    }
    for name, (rate, size, codec) in good.items():
        data.write_test_pattern(folder / name, rate, size=size, codec=codec)
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "truncated.mp4").write_bytes((folder / "a.mp4").read_bytes()[:2000])
    (folder / "notes.mkv").write_text("not a video\n" * 100)
    broken = ["empty.mp4", "truncated.mp4", "notes.mkv"]
    rows = [{"path": name, "caption": f"the test pattern number {i}"} for i, name in enumerate(sorted(good) + broken)]
    data.write_manifest(str(folder / "videos.csv"), rows, ["path", "caption"])

    out = tmp_path / "out"
    log = command("train_tokenizer.py", f"--data_dir={folder}", f"--out_dir={out}/tokenizer", "--clip_pretrain_iters=0",
                  "--n_queries=4", "--token_dim=32", "--q_layers=1", "--q_heads=2", "--unet_channels=(16, 32)",
                  "--map_channels=4", "--clip_frames=4", "--max_stride=3", "--batch_size=4", "--eval_clips=2",
                  "--ddim_steps=2", "--val_fraction=0.25", "--max_iters=3", "--eval_interval=3",
                  "--lr_decay_iters=3", "--order_clips=0")
    skipped = re.findall(r"skipping (\S+):", log)
    assert len(skipped) == len(set(skipped)) and {os.path.basename(p) for p in skipped} <= set(broken)
    assert os.path.isfile(out / "tokenizer" / "ckpt.pt") and "linear probes of the deep tokens off" in log

    log = command("tokenizer.py", "encode", "--ckpt", f"{out}/tokenizer/ckpt.pt", "--manifest", f"{folder}/videos.csv",
                  "--out", f"{out}/tokens", "--max_keyframes", "3", "--dtype", "float16")
    assert sorted(os.path.basename(p) for p in re.findall(r"skipping (\S+):", log)) == sorted(broken)  # one line each
    assert "(3 files skipped)" in log
    tokens, num_keyframes, captions, _ = data.load_token_shard(f"{out}/tokens/videos_00000.safetensors")
    assert tokens.shape == (8, 3, 4, 32) and captions == [r["caption"] for r in rows[:8]]
    assert data.map_token_shard(f"{out}/tokens/videos_00000.safetensors").dtype == np.float16  # half the bytes
    assert num_keyframes.tolist() == [3] * 8  # 3 s at one keyframe a second (0, 1, 2 s), whatever the frame rate

    # the AR model and sampling know nothing of the videos' files: in this process (the smoke demo runs them as processes)
    run_script("train_ar.py", [f"--data_dir={out}/tokens", f"--out_dir={out}/ar", "--backbone=tiny-gpt2", "--loss=gmm",
                               "--gmm_k=4", "--max_keyframes=3", "--text_len=12", "--batch_size=4", "--max_iters=3",
                               "--eval_interval=3", "--image_video_ratio=0.0", "--val_fraction=0.25", "--device=cpu"])
    log = run_script("sample.py", ["--prompt", "the test pattern number 2", "--num_keyframes", "3", "--ddim_steps", "2",
                                   "--tokenizer_ckpt", f"{out}/tokenizer/ckpt.pt", "--ar_ckpt", f"{out}/ar/ckpt.pt",
                                   "--out", f"{out}/samples"])
    assert "wrote 1 video(s) of 9 frames" in log
    video = data.read_frames(f"{out}/samples/000_the_test_pattern_number_2.mp4")
    assert video.shape[0] == 9 and np.ptp(video) > 0
    shutil.rmtree(out)
