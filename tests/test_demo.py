"""demo.py --smoke: every stage of the pipeline, from drawing the data to metrics.json, connects (tiny sizes)."""
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import data
import demo
from conftest import ROOT

STAGES = ["data", "tokenizer", "encode", "ar_stage1", "ar_stage2", "ar_stage3", "ar_stage4", "sample",
          "reconstruct", "evaluate"]
METRICS = ["recon_psnr", "recon_ssim", "recon_psnr_crossfade", "shapes_color", "shapes_shape", "shapes_direction",
           "shapes_one_object", "shapes_all", "real_shapes_all", "clipsim", "clipsim_real"]


def run_demo(out):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    t0 = time.time()
    r = subprocess.run([sys.executable, "demo.py", "--smoke", "--out", str(out)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-3000:]
    return r.stdout, time.time() - t0


def test_smoke_demo_end_to_end_then_reuses_every_stage(tmp_path):
    out = tmp_path / "smoke"
    log, _ = run_demo(out)
    for stage in STAGES:  # each stage ran as its README command
        assert f"=== {stage}\n$ " in log, stage
    prompts = demo.SMOKE["GRID_PROMPTS"]
    frames = (demo.SMOKE["NUM_KEYFRAMES"] - 1) * 4 + 1  # smoke tokenizer: 4-frame clips
    for i, prompt in enumerate(prompts):
        name = out / "samples" / f"{i:03d}_{prompt.replace(' ', '_')}"
        assert data.read_frames(str(name) + ".mp4").shape == (frames, 128, 128, 3)
        assert os.path.getsize(str(name) + ".gif") > 0
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.size == (250 + demo.SMOKE["NUM_KEYFRAMES"] * (96 + 4), 22 + len(prompts) * (96 + 4))
    for png in ("loss_tokenizer.png", "psnr_tokenizer.png", "loss_ar.png"):
        assert Image.open(out / png).size[1] == 340
    recon = [f for f in os.listdir(out) if f.endswith("_recon.mp4")]
    assert len(recon) == 1 and os.path.isfile(out / recon[0].replace("_recon.mp4", "_recon_zero2.gif"))
    metrics = json.load(open(out / "metrics.json"))
    for key in METRICS:
        assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), key
    assert metrics["real_shapes_all"] == 1.0  # the analyser reads the real held-out videos right
    assert metrics["shapes_videos"] == len(set(prompts + demo.SMOKE["EVAL_PROMPTS"]))  # every sampled video scored
    for stage in range(1, 5):  # the loss curves found their numbers
        curves = demo.read_ar_log(str(out / "work" / (f"ar_stage{stage}" if stage < 4 else "ar") / "log.csv"))
        assert [i for i, _ in curves["train loss"]] == [1, 2] and curves["val loss"], stage
    assert demo.read_log_csv(str(out / "work" / "tokenizer" / "log.csv"))["eval"]["psnr"]
    log, seconds = run_demo(out)  # a second run finds everything done
    for stage in STAGES:
        assert f"=== {stage}: skipped" in log, stage
    assert "$ " not in log and seconds < 30


def test_a_failing_stage_is_a_one_line_error(tmp_path):
    pipe = demo.Pipeline(str(tmp_path), str(tmp_path / "work"), {})
    with pytest.raises(SystemExit, match=r"stage 'bad' failed \(exit code 3\).*bad.log"):
        pipe.run("bad", ["-c", "print('some output'); raise SystemExit(3)"])
    assert "some output" in (tmp_path / "logs" / "bad.log").read_text()


def test_an_interrupted_stage_resumes_only_with_its_own_settings(tmp_path, capsys):
    import torch
    conf = tmp_path / "stage.py"
    conf.write_text("learning_rate = 1e-3\n")
    ckpt = str(tmp_path / "ckpt.pt")
    torch.save({"iter_num": 2, "config": {"learning_rate": 1e-3, "max_iters": 4, "lr_decay_iters": 4, "seed": 0,
                                          "out_dir": "a", "init_from": "scratch"}}, ckpt)
    pipe = demo.Pipeline(str(tmp_path), str(tmp_path / "work"), {})
    same = [str(conf), "--max_iters=4", "--lr_decay_iters=4", "--seed=0", "--out_dir=b"]
    assert pipe.resume_plan("ar_stage2", ckpt, same)["max_iters"] == 4
    assert pipe.resume_plan("tokenizer", ckpt, same + ["--max_iters=8"])["max_iters"] == 8  # the schedule follows
    conf.write_text("learning_rate = 3e-4\n")  # a config file edited since                  lr_decay_iters
    assert pipe.resume_plan("ar_stage2", ckpt, same + ["--max_iters=8", "--lr_decay_iters=8"]) is None
    assert "learning_rate: 0.001 -> 0.0003; lr_decay_iters: 4 -> 8): starting over" in capsys.readouterr().out
    assert pipe.resume_plan("ar_stage2", ckpt, same + ["--new_setting=1"]) is None  # unknown to the checkpoint's code
    assert "unknown config key 'new_setting'" in capsys.readouterr().out


def test_the_config_files_are_the_trainers_defaults_and_chain_into_sample_py():
    """config/shapes.py and config/ar_shapes_stage1.py restate train_tokenizer.py's and train_ar.py's defaults (so a
    bare `python train_tokenizer.py` trains what the demo trains); the stages' folders chain into one another, into
    the encoder's output and into sample.py's defaults; demo.py itself holds no training setting."""
    import sample
    import train_ar
    import train_tokenizer
    from configurator import apply_config
    for module, conf in ((train_tokenizer, "config/shapes.py"), (train_ar, "config/ar_shapes_stage1.py")):
        defaults = {k: v for k, v in vars(module).items() if not k.startswith("_")}
        named = apply_config(dict(defaults), [os.path.join(ROOT, conf)])
        assert named == apply_config(dict(defaults), []), conf
        assigned = {}
        exec(open(os.path.join(ROOT, conf)).read(), assigned)
        assert len(assigned) > 10, conf  # the file names the choices (an empty file would pass the line above)
    tokenizer = apply_config({k: v for k, v in vars(train_tokenizer).items() if not k.startswith("_")}, [])
    ar_defaults = {k: v for k, v in vars(train_ar).items() if not k.startswith("_")}
    stages = [apply_config(dict(ar_defaults), [os.path.join(ROOT, f"config/ar_shapes_stage{i}.py")]) for i in (1, 2, 3, 4)]
    pipe = demo.Pipeline("out/demo", None, {})
    assert tokenizer["out_dir"] == pipe.tokenizer == os.path.dirname(sample.DEFAULT_TOKENIZER_CKPT)
    assert tokenizer["data_dir"] == pipe.data
    assert [s["out_dir"] for s in stages] == pipe.ar and pipe.ar[-1] == os.path.dirname(sample.DEFAULT_AR_CKPT)
    assert {s["data_dir"] for s in stages} == {pipe.tokens}
    assert [s["init_from"] for s in stages] == ["scratch"] + [os.path.join(d, "ckpt.pt") for d in pipe.ar[:-1]]
    assert not set(demo.KNOBS) & {"max_iters", "TOKENIZER_ITERS", "AR_ITERS"}


def test_log_parsing_keeps_the_last_value_of_a_resumed_iteration(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("eval,0,1.0,psnr=5.0,color_acc=0.1\ntrain,25,9.0,loss=0.5\ntrain,50,19.0,loss=0.4\n"
                    "train,50,3.0,loss=0.3\ntrain,75,9.0,loss=nan?\neval,50,30.0,psnr=7.5,color_acc=0.2\n")
    log = demo.read_log_csv(str(path))
    assert log["train"]["loss"] == [(25, 0.5), (50, 0.3)]
    assert log["eval"]["psnr"] == [(0, 5.0), (50, 7.5)]
    path.write_text("eval,0,1.0,val_loss=nan,gen_error=nan\ntrain,10,5.0,loss=1.25\n"
                    "eval,10,6.0,val_loss=1.1,gen_error=0.625\n")
    assert demo.read_ar_log(str(path)) == {
        "train loss": [(10, 1.25)], "val loss": [(10, 1.1)], "generated / still": [(10, 0.625)]}


def test_plots_draw_their_lines():
    img = np.asarray(demo.line_plot({"a": [(0, 1.0), (10, 3.0)], "b": [(0, 2.0), (10, 2.5)]}, "t", "x", "y"))
    for color in demo.COLORS[:2]:
        assert (img == color).all(-1).sum() > 100  # each series' colour is on the canvas
    np.testing.assert_allclose(demo.nice_ticks(0, 1), [0, 0.2, 0.4, 0.6, 0.8, 1.0])
    np.testing.assert_allclose(demo.nice_ticks(-3.2, 97), [0, 20, 40, 60, 80])
    empty = np.asarray(demo.line_plot({"a": []}, "t", "x", "y"))
    assert not any((empty == c).all(-1).any() for c in demo.COLORS[:1])
