"""sample.py: text -> deep tokens -> clips -> mp4/gif, and clean errors; reconstruct.py (Fig. 3, 4); on tiny random
checkpoints."""
import csv
import os
import re
import subprocess
import sys
from dataclasses import asdict

import imageio
import numpy as np
import pytest
import torch

import data
import evaluate
import reconstruct
import sample
import tokenizer as tok
from conftest import ROOT

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--clip_pretrain_iters=0", "--n_queries=4", "--token_dim=32", "--q_layers=1", "--q_heads=2",
        "--unet_channels=(16, 32)", "--map_channels=4", "--clip_frames=4", "--max_stride=3"]



def save_ar(path, token_dim, max_keyframes=3, config=None):
    """config: the run's settings, as train_ar.py saves them (None: an older checkpoint without them)."""
    from ar_model import ARConfig, ARModel
    torch.manual_seed(0)
    model = ARModel(ARConfig(backbone="tiny-gpt2", n_queries=4, token_dim=token_dim, max_keyframes=max_keyframes,
                             text_len=16, gmm_k=4))
    ckpt = {"model": model.state_dict(), "model_config": asdict(model.cfg)}  # train_ar.py's keys
    torch.save(ckpt | ({"config": config} if config is not None else {}), path)
    return path


def resave_tokenizer(src, dst, **config):
    """A copy of a tokenizer checkpoint with these config values (None: the key removed, as in older checkpoints)."""
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    ckpt["config"] = {k: v for k, v in (ckpt["config"] | config).items() if v is not None}
    torch.save(ckpt, dst)
    return str(dst)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """A tokenizer checkpoint in train_tokenizer.py's format (random weights, N_q=4, C=32, 5-frame clips),
    an AR checkpoint that fits it (max 3 keyframes) and one that does not (C=8)."""
    import train_tokenizer
    from configurator import apply_config
    d = tmp_path_factory.mktemp("ckpts")
    cfg = apply_config({k: v for k, v in vars(train_tokenizer).items() if not k.startswith("_")}, TINY)
    torch.manual_seed(0)
    tokenizer, denoiser = tok.build_autoencoder(cfg)
    with torch.no_grad():  # the decoder's zero-initialised output layers would make every video the same
        for p in denoiser.parameters():
            p.add_(0.1 * torch.randn_like(p))
    torch.save({"tokenizer": tokenizer.state_dict(), "denoiser": denoiser.state_dict(), "iter_num": 1, "config": cfg},
               d / "tok.pt")
    return {"tok": str(d / "tok.pt"), "ar": save_ar(str(d / "ar.pt"), 32), "ar_c8": save_ar(str(d / "ar_c8.pt"), 8)}


def test_end_to_end_writes_mp4_gif_npz(ckpts, tmp_path):
    out = tmp_path / "samples"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")  # the command line (the other tests: sample.main)
    r = subprocess.run([sys.executable, "sample.py", "--prompt", "a red circle moving right", "--prompt",
                        "a blue square standing still", "--num_keyframes", "3", "--ddim_steps", "2", "--out", str(out),
                        "--tokenizer_ckpt", ckpts["tok"], "--ar_ckpt", ckpts["ar"]], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    frames = (3 - 1) * 4 + 1  # (K - 1) clip_frames + 1
    for name in ("000_a_red_circle_moving_right", "001_a_blue_square_standing_still"):
        mp4 = data.read_frames(str(out / f"{name}.mp4"))
        assert mp4.shape == (frames, 128, 128, 3)  # 32 px upscaled x4 for viewing
        assert len(imageio.mimread(str(out / f"{name}.gif"))) == frames
    npz = np.load(out / "frames.npz")
    assert npz["frames"].shape == (2, frames, 32, 32, 3) and npz["frames"].dtype == np.uint8
    assert list(npz["prompts"]) == ["a red circle moving right", "a blue square standing still"]
    assert int(npz["clip_frames"]) == 4 and int(npz["frame_stride"]) == 2 and float(npz["fps"]) == 4.0  # 8 // 4, 8 / 2
    with open(out / "samples.csv") as f:
        assert [row["caption"] for row in csv.DictReader(f)] == list(npz["prompts"])
    assert "wrote 2 video(s) of 9 frames" in r.stdout
    # train_tokenizer.py's defaults are in the checkpoint; this AR checkpoint has no config: the paper's values
    assert ("decoder: DDIM 2 steps (flag), CFG 2 (checkpoint), rescale 0.7 (checkpoint); AR: temperature 1 (paper), "
            "var_scale 0.01 (paper), CFG 1 (paper), CFG on samples (paper)") in r.stdout


def test_same_seed_same_videos(ckpts):
    ar, _ = sample.load_ar(ckpts["ar"])
    tokenizer, denoiser, cfg = sample.load_tokenizer(ckpts["tok"])
    kw = dict(num_steps=2, progress=False, batch_size=1)
    a = sample.generate_videos(ar, tokenizer, denoiser, cfg, ["a red circle"], 2, seed=3, **kw)
    b = sample.generate_videos(ar, tokenizer, denoiser, cfg, ["a red circle"], 2, seed=3, **kw)
    c = sample.generate_videos(ar, tokenizer, denoiser, cfg, ["a red circle"], 2, seed=4, **kw)
    assert a.shape == (1, 5, 32, 32, 3)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_one_minute_video(ckpts, tmp_path):
    """60 keyframes at 1 per second of 8 fps video: 59 clips of 8 frames' time each (here 4 frames at stride 2)."""
    ar, _ = sample.load_ar(save_ar(str(tmp_path / "ar60.pt"), 32, max_keyframes=60))
    tokenizer, denoiser, cfg = sample.load_tokenizer(ckpts["tok"])
    video = sample.generate_videos(ar, tokenizer, denoiser, cfg, ["a red circle moving right"], 60, num_steps=1,
                                   batch_size=64, progress=False)
    assert video.shape == (1, 59 * 4 + 1, 32, 32, 3)  # at 8 / 2 = 4 fps: 59.25 s
    with pytest.raises(sample.SampleError, match="supports at most 60 keyframes.*or pass --sliding_window"):
        sample.generate_videos(ar, tokenizer, denoiser, cfg, ["x"], 61, num_steps=1, progress=False)


def test_sliding_window_goes_past_the_trained_length(ckpts, tmp_path):
    """--sliding_window: 5 keyframes from a 3-keyframe model, the first 3 as without it (same seed)."""
    out = tmp_path / "long"
    common = ["--prompt", "a red circle moving right", "--ddim_steps", "1", "--tokenizer_ckpt", ckpts["tok"],
              "--ar_ckpt", ckpts["ar"], "--formats", "npz"]
    sample.main(common + ["--num_keyframes", "5", "--sliding_window", "--out", str(out)])
    assert np.load(out / "frames.npz")["frames"].shape == (1, 4 * 4 + 1, 32, 32, 3)
    ar, _ = sample.load_ar(ckpts["ar"])
    long = sample.generate_tokens(ar, ["x"], 5, progress=False, var_scale=0.0, temperature=0.0)
    torch.testing.assert_close(long[:, :3], sample.generate_tokens(ar, ["x"], 3, progress=False, var_scale=0.0,
                                                                   temperature=0.0))


class RecordingDenoiser(torch.nn.Module):
    """Stands in for the decoder: predicts v = 0 and records what it was given."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x_t, t, cond, frame_stride):
        self.calls.append((cond.clone(), frame_stride.clone()))
        return torch.zeros_like(x_t)


def test_decode_pairs_consecutive_keyframes_and_joins_clips():
    cfg = dict(clip_frames=2, image_size=4, zero_terminal_snr=True, prediction_type="v")
    tokens = torch.arange(2 * 4 * 1 * 3, dtype=torch.float32).view(2, 4, 1, 3)  # B=2, K=4, N_q=1, C=3
    den = RecordingDenoiser()
    out = tok.decode_clips(den, tokens, torch.zeros(1, 2, 3), cfg, frame_stride=3, num_steps=1, eta=0.0,
                           batch_size=4, progress=False)
    assert out.shape == (2, 3, 2 + 1, 3, 4, 4) and sample.join_clips(out).shape == (2, 3 * 2 + 1, 3, 4, 4)
    cond = torch.cat([c[: len(c) // 2] for c, _ in den.calls])  # conditional halves, batches in order
    assert cond.shape == (6, 2, 3)
    for b in range(2):
        for k in range(3):  # clip k of video b: head = keyframe k, rear = keyframe k + 1
            assert torch.equal(cond[3 * b + k], torch.cat([tokens[b, k], tokens[b, k + 1]]))
    assert all(bool((s == 3).all()) and len(s) == len(c) for c, s in den.calls)
    clips = torch.arange(2 * 3).float().view(1, 2, 3)  # (B=1, 2 clips, 3 frames)
    assert sample.join_clips(clips).tolist() == [[0, 1, 2, 4, 5]]  # clip 1's head frame (3) is clip 0's rear


def test_reconstruct_side_by_side(ckpts, shapes_dir, tmp_path, capsys):
    video = os.path.join(shapes_dir, "videos", "000000.mp4")
    reconstruct.main([video, "--ddim_steps", "2", "--out", str(tmp_path), "--tokenizer_ckpt", ckpts["tok"],
                      "--zero_tokens", "1", "0"])
    stdout = capsys.readouterr().out
    frames = data.read_frames(str(tmp_path / "000000_recon_zero1.mp4"))
    assert frames.shape == (4 * 4 + 1, 128, 260, 3)  # 33 frames: 5 keyframes; (32 | 1 px | 32) x 4, stride 2
    assert os.path.isfile(tmp_path / "000000_recon_zero1.gif") and stdout.count("PSNR") == 2
    assert data.read_frames(str(tmp_path / "000000_recon.mp4")).shape == frames.shape  # --zero_tokens 0: Fig. 3
    assert "decoder: DDIM 2 steps (flag), CFG 2 (checkpoint), rescale 0.7 (checkpoint)\n" in stdout  # no AR
    # the left half is the original at the decoder's frame positions
    original = data.read_frames(video)[::2][:17]
    assert np.abs(frames[:, ::4, :128:4].astype(int) - original).mean() < 8


@pytest.mark.parametrize("flags, expect", [
    (["missing.mp4"], "error: video missing.mp4 does not exist"),
    (["VIDEO", "--zero_tokens", "-1"], "error: --zero_tokens must be >= 0, got -1"),
    (["VIDEO", "--zero_tokens", "0", "5"], "error: --zero_tokens must lie in [0, N_q=4], got 5"),  # none written
    (["VIDEO", "--ddim_steps", "0"], "error: --ddim_steps must be [1, 1000], got 0"),
])
def test_reconstruct_mistakes_are_one_line_errors(flags, expect, ckpts, shapes_dir, tmp_path):
    video = os.path.join(shapes_dir, "videos", "000000.mp4")
    args = [video if f == "VIDEO" else f for f in flags] + ["--tokenizer_ckpt", ckpts["tok"], "--out", str(tmp_path)]
    with pytest.raises(SystemExit, match=re.escape(expect)):
        reconstruct.main(args)
    assert not os.listdir(tmp_path)


def test_zeroing_all_tokens_forgets_the_video(ckpts, shapes_dir):
    tokenizer, denoiser, cfg = sample.load_tokenizer(ckpts["tok"])
    videos = [data.read_frames(os.path.join(shapes_dir, "videos", f"00000{i}.mp4")) for i in (0, 1)]
    kw = dict(num_steps=2, progress=False, num_keyframes=2)
    kept = [reconstruct.reconstruct_video(tokenizer, denoiser, cfg, v, **kw)[1] for v in videos]
    zeroed = [reconstruct.reconstruct_video(tokenizer, denoiser, cfg, v, zero_tokens=4, **kw)[1] for v in videos]
    assert not np.array_equal(kept[0], kept[1])
    assert np.array_equal(zeroed[0], zeroed[1])  # all N_q tokens zeroed: nothing of the input is left


def test_sampling_settings_default_to_the_checkpoints(ckpts, tmp_path):
    """Flags left unset take the settings saved with each model, a flag given wins, and checkpoints without
    the keys get the paper's values."""
    tok = resave_tokenizer(ckpts["tok"], tmp_path / "tok.pt", ddim_steps=3, cfg_scale=2.5, guidance_rescale=0.2)
    ar = save_ar(str(tmp_path / "ar.pt"), 32, config=dict(sample_temperature=0.0, sample_var_scale=0.5,
                                                          sample_cfg_scale=3.0, sample_cfg_mode="params"))
    cfg, ar_config = sample.load_tokenizer(tok)[2], sample.load_ar(ar)[1]
    args = sample.parse_args([])
    line = sample.model_defaults(args, cfg, ar_config)
    assert (args.ddim_steps, args.cfg_scale, args.guidance_rescale) == (3, 2.5, 0.2)
    assert (args.temperature, args.var_scale, args.ar_cfg_scale, args.ar_cfg_mode) == (0.0, 0.5, 3.0, "params")
    assert line == ("decoder: DDIM 3 steps (checkpoint), CFG 2.5 (checkpoint), rescale 0.2 (checkpoint); "
                    "AR: temperature 0 (checkpoint), var_scale 0.5 (checkpoint), CFG 3 (checkpoint), CFG on params "
                    "(checkpoint)")
    args = sample.parse_args(["--ddim_steps", "7", "--cfg_scale", "1.5", "--temperature", "0.5", "--ar_cfg_scale", "1"])
    line = sample.model_defaults(args, cfg, ar_config)
    assert (args.ddim_steps, args.cfg_scale, args.guidance_rescale) == (7, 1.5, 0.2)
    assert (args.temperature, args.var_scale, args.ar_cfg_scale) == (0.5, 0.5, 1.0)
    assert "DDIM 7 steps (flag)" in line and "rescale 0.2 (checkpoint)" in line and "CFG 1 (flag)" in line
    old = resave_tokenizer(ckpts["tok"], tmp_path / "old.pt", ddim_steps=None, cfg_scale=None, guidance_rescale=None)
    args = sample.parse_args(["--var_scale", "0"])
    line = sample.model_defaults(args, sample.load_tokenizer(old)[2], sample.load_ar(ckpts["ar"])[1])
    assert (args.ddim_steps, args.cfg_scale, args.guidance_rescale) == (50, 7.5, 0.7)
    assert (args.temperature, args.var_scale, args.ar_cfg_scale, args.ar_cfg_mode) == (1.0, 0.0, 1.0, "samples")
    assert "checkpoint" not in line and line.count("(paper)") == 6


def test_write_video_pads_odd_sizes(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (5, 33, 35, 3), dtype=np.uint8)
    data.write_video(str(tmp_path / "v.mp4"), frames, fps=8, min_size=1)
    assert data.read_frames(str(tmp_path / "v.mp4")).shape == (5, 34, 36, 3)


@pytest.mark.parametrize("case", ["empty_prompts_file", "mismatched_checkpoints", "too_many_keyframes",
                                  "missing_checkpoint"])
def test_user_mistakes_are_one_line_errors(case, ckpts, tmp_path):
    empty = tmp_path / "prompts.txt"
    empty.write_text("\n  \n# a comment\n")
    base = ["--out", str(tmp_path / "o"), "--ddim_steps", "1", "--tokenizer_ckpt", ckpts["tok"]]
    args, expect = {
        "empty_prompts_file": (["--prompts_file", str(empty), "--ar_ckpt", ckpts["ar"]], "holds no prompts"),
        "mismatched_checkpoints": (["--prompt", "x", "--ar_ckpt", ckpts["ar_c8"]], "N_q=4, C=32 but AR model"),
        "too_many_keyframes": (["--prompt", "x", "--num_keyframes", "9", "--ar_ckpt", ckpts["ar"]],
                               "supports at most 3 keyframes"),
        "missing_checkpoint": (["--prompt", "x", "--ar_ckpt", str(tmp_path / "nope.pt")], "does not exist"),
    }[case]
    with pytest.raises(SystemExit) as error:  # one line, no traceback (sample.main as the command line runs it)
        sample.main(base + args)
    assert str(error.value).startswith("error: ") and expect in str(error.value), error.value
    if case == "mismatched_checkpoints":
        assert "C=8" in str(error.value)  # both values named
    assert not os.path.exists(tmp_path / "o" / "frames.npz")


@pytest.mark.parametrize("flags, expect", [
    (["--ddim_steps", "0"], "--ddim_steps must be [1, 1000], got 0"),
    (["--ddim_steps", "2000", "--timestep_spacing", "trailing"], "--ddim_steps must be [1, 1000], got 2000"),
    (["--var_scale", "-1"], "--var_scale must be >= 0, got -1.0"),
    (["--decode_batch", "0"], "--decode_batch must be >= 1, got 0"),
    (["--num_keyframes", "0"], "--num_keyframes must be >= 2, got 0"),
    (["--temperature", "-1"], "--temperature must be >= 0, got -1.0"),
    (["--eta", "1.5"], "--eta must be [0, 1], got 1.5"),
    (["--guidance_rescale", "2"], "--guidance_rescale must be [0, 1], got 2.0"),
])
def test_flags_out_of_range_are_one_line_errors(flags, expect, tmp_path, capsys):
    """Checked before any checkpoint is read (these paths do not exist)."""
    missing = str(tmp_path / "none.pt")
    with pytest.raises(SystemExit, match=re.escape(f"error: {expect}")):
        sample.main(["--prompt", "x", "--tokenizer_ckpt", missing, "--ar_ckpt", missing] + flags)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", None])
def test_empty_or_truncated_checkpoints_are_one_line_errors(content, ckpts, tmp_path):
    bad = tmp_path / "bad.pt"
    with open(ckpts["ar"], "rb") as f:
        bad.write_bytes(f.read()[:1000] if content is None else content)  # None: a truncated real checkpoint
    for which in ("--ar_ckpt", "--tokenizer_ckpt"):
        paths = {"--ar_ckpt": ckpts["ar"], "--tokenizer_ckpt": ckpts["tok"]} | {which: str(bad)}
        with pytest.raises(SystemExit, match=f"error: cannot (read|load) .* checkpoint {re.escape(str(bad))}: "):
            sample.main(["--prompt", "x", "--ddim_steps", "1", "--out", str(tmp_path / "o")]
                        + [x for kv in paths.items() for x in kv])


def test_encode_splits_shards_over_torchrun_processes_and_resumes(ckpts, shapes_dir, tmp_path):
    """2 processes write the same shards one process writes; a re-run keeps the shards that exist."""
    args = ["encode", "--ckpt", ckpts["tok"], "--manifest", f"{shapes_dir}/videos.csv", "--shard_size", "5",
            "--max_keyframes", "3"]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    one = subprocess.Popen([sys.executable, "tokenizer.py", *args, "--out", str(tmp_path / "one")], cwd=ROOT, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # beside the two below
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "tokenizer.py", *args, "--out", str(tmp_path / "two")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    one_err = one.communicate(timeout=300)[1]
    assert one.returncode == 0 and two.returncode == 0, one_err[-2000:] + two.stderr[-2000:]
    assert "by process 0 of 2" in two.stdout and "by process 1 of 2" in two.stdout
    names = sorted(os.listdir(tmp_path / "one"))
    assert len(names) == 5 and sorted(os.listdir(tmp_path / "two")) == names  # 24 videos, 5 per shard
    for name in names:
        a, b = data.load_token_shard(str(tmp_path / "one" / name)), data.load_token_shard(str(tmp_path / "two" / name))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]
    stamp = os.path.getmtime(tmp_path / "one" / names[0])
    os.remove(tmp_path / "one" / names[-1])
    again = subprocess.run([sys.executable, "tokenizer.py", *args, "--out", str(tmp_path / "one")], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and sorted(os.listdir(tmp_path / "one")) == names
    assert os.path.getmtime(tmp_path / "one" / names[0]) == stamp  # kept, not rewritten


@pytest.mark.parametrize("zero_last", [False, True])
def test_zero_tokens_zeroes_the_first_k_or_the_last_k(ckpts, shapes_dir, monkeypatch, zero_last):
    """Fig. 4: --zero_tokens k zeroes the first k deep tokens of every keyframe (the authors' release), --zero_last
    the last k; the others are the keyframes' own tokens."""
    tokenizer, denoiser, cfg = sample.load_tokenizer(ckpts["tok"])
    video = data.read_frames(os.path.join(shapes_dir, "videos", "000000.mp4"))
    seen = []
    monkeypatch.setattr(sample, "decode_videos", lambda tok, den, cfg, tokens, *a, **kw: seen.append(tokens.clone())
                        or torch.zeros(1, cfg["clip_frames"] + 1, 8, 8, 3, dtype=torch.uint8))
    reconstruct.reconstruct_video(tokenizer, denoiser, cfg, video, zero_tokens=1, zero_last=zero_last, num_keyframes=3)
    with torch.no_grad():
        own = tokenizer.encode(data.to_tensor(video[:17:8], cfg["image_size"]))  # (3, N_q, C)
    zeroed = [3] if zero_last else [0]
    kept = [i for i in range(4) if i not in zeroed]
    assert seen[0].shape == (1, 3, 4, own.shape[-1])
    assert torch.count_nonzero(seen[0][0, :, zeroed]) == 0
    torch.testing.assert_close(seen[0][0, :, kept], own[:, kept])


def test_default_frame_stride_spans_one_keyframe_interval_or_takes_the_tokenizers():
    """A clip spans one keyframe interval where the decoder's clips are shorter (the tiny configuration: 8 // 8 = 1,
    8 // 4 = 2); the paper's 16-frame decoder gets the stride its checkpoint was scored at (6), with no flag."""
    tiny = dict(clip_frames=8, denoiser="unet", max_stride=4, eval_stride=1)
    assert sample.check_stride(tiny, 8) == 1 and sample.check_stride(dict(tiny, clip_frames=4), 8) == 2
    assert sample.check_stride(tiny, 8, frame_stride=3) == 3
    import train_tokenizer
    from configurator import apply_config
    paper = apply_config(dict(vars(train_tokenizer)), [os.path.join(ROOT, "config", "tokenizer_paper.py")])
    assert sample.check_stride(paper, 8) == 6 == sample.check_stride(paper, 14)
    with pytest.raises(sample.SampleError, match="frame stride 0 < 1"):
        sample.check_stride(dict(clip_frames=15, denoiser="unet3d"), 8)  # an old checkpoint without eval_stride
    with pytest.raises(sample.SampleError, match="exceeds the decoder's max_stride 4"):
        sample.check_stride(tiny, 40)


def test_msrvtt_protocol_at_toy_size(ckpts, tmp_path):
    """The zero-shot protocol end to end on a fake MSR-VTT (4 test videos in its JSON layout): data.py msrvtt ->
    sample.py on its prompts -> evaluate.py with CLIPSIM and FVD (random stand-in CLIP and I3D: the plumbing)."""
    import json
    from test_evaluate import TinyI3D
    videos = tmp_path / "TestVideo"
    videos.mkdir()
    ids = [7010, 7011, 8000, 9999]
    for i in ids:
        data.write_test_pattern(str(videos / f"video{i}.mp4"), fps=25, size="64x48", seconds=3)
    meta = {"videos": [{"video_id": f"video{i}", "split": "test"} for i in ids],
            "sentences": [{"video_id": f"video{i}", "caption": f"a test pattern number {i % 7} {j}"}
                          for i in ids for j in range(3)]}
    (tmp_path / "test_videodatainfo.json").write_text(json.dumps(meta))
    data.main(["msrvtt", "--annotations", str(tmp_path / "test_videodatainfo.json"), "--videos", str(videos),
               "--out", str(tmp_path / "msrvtt")])
    sample.main(["--prompts_file", str(tmp_path / "msrvtt" / "prompts.txt"), "--num_keyframes", "3", "--ddim_steps",
                 "1", "--tokenizer_ckpt", ckpts["tok"], "--ar_ckpt", ckpts["ar"], "--out", str(tmp_path / "out"),
                 "--formats", "npz"])
    torch.manual_seed(0)
    torch.save(tok.create_clip("nanodicode-tiny").state_dict(), tmp_path / "clip.pt")
    torch.jit.save(torch.jit.script(TinyI3D()), str(tmp_path / "i3d.pt"))
    evaluate.main(["--samples", str(tmp_path / "out" / "frames.npz"), "--real", str(tmp_path / "msrvtt" / "videos.csv"),
                   "--clip_model", "nanodicode-tiny", "--clip_pretrained", str(tmp_path / "clip.pt"), "--i3d",
                   str(tmp_path / "i3d.pt"), "--fvd_frames", "8", "--out", str(tmp_path / "m.json")])
    m = json.load(open(tmp_path / "m.json"))
    assert m["fvd_real_videos"] == m["fvd_fake_videos"] == 4 and m["shapes_unparsed"] == 4
    assert all(np.isfinite(m[k]) for k in ("fvd", "clipsim", "clipsim_real"))
