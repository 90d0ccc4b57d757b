"""
The whole of nanoDiCoDe from scratch on a CPU, in one command:

    python demo.py            # 28 minutes on a 2-core CPU (52 tokenizer clips/s), 50 at 24 clips/s -> out/demo/
    python demo.py --smoke    # every stage for a few steps on tiny data and models (< 2 minutes) -> out/smoke/

Each stage is the README's command, run as a subprocess (its output streamed here and kept
in <out>/logs/):

    1. python data.py shapes                      the synthetic text-video set
    2. python train_tokenizer.py config/shapes.py the deep tokenizer (Q + video diffusion decoder)
    3. python tokenizer.py encode                 deep tokens of every video and image
    4. python train_ar.py config/ar_shapes_stage{1,2,3,4}.py   the AR model, progressively
    5. python sample.py                           every shapes prompt, 5 keyframes (mp4 + gif + npz);
       python reconstruct.py VIDEO                a held-out video through the tokenizer (Fig. 3, 4)
    6. python evaluate.py                         metrics.json

then draws <out>/contact_sheet.png (keyframes of every grid prompt) and loss curves from the
training logs. A stage whose output exists, is complete and is newer than its inputs is
skipped, so a re-run only redoes what changed (an interrupted training stage resumes).
Data and checkpoints go where the config files put them (data/shapes, data/shapes_tokens,
out/shapes/tokenizer, out/shapes/ar_stage{1,2,3}, out/shapes/ar: sample.py's defaults);
with --work or --smoke, under that folder. How each stage trains is its config file's business;
the settings below say what the demo draws, samples and scores.
"""
import argparse
import csv
import glob
import json
import math
import os
import shlex
import subprocess
import sys
import time

from PIL import Image, ImageDraw, ImageFont

from configurator import ConfigError, apply_config, resume_conflicts

# -----------------------------------------------------------------------------
# What the demo draws, samples and scores. How each stage trains (steps, sizes, output folders) is in its config file
# (config/shapes.py, config/ar_shapes_stage{1,2,3,4}.py), the same files the README's commands run.
NUM_VIDEOS = 1000  # shapes videos (33 frames, 32 x 32, 8 fps: 5 keyframes each)
NUM_KEYFRAMES = 5  # sampled videos: 5 keyframes = 33 frames = 4 s; the analyser scores every frame
GRID_PROMPTS = [
    "a red circle moving right", "a green square moving left", "a blue triangle moving up",
    "a yellow circle moving down", "a cyan square moving right", "a magenta triangle moving left",
    "a white circle moving up", "a red square moving down", "a yellow triangle moving right",
    "a white square moving left", "a green triangle standing still", "a blue circle standing still",
]
EVAL_PROMPTS = None  # None = evaluate.shapes_prompts(): all 84 moving + 21 still prompts (the grid's among them)
# DDIM steps, guidance and AR sampling settings come from the checkpoints (config/shapes.py, config/ar_shapes_stage4.py)
RECON_CLIPS = 64  # held-out clips for reconstruction PSNR / SSIM / analyser (one per held-out video: 57 of 1,000)
DATA_SEED = 0  # the shapes set is the same for every run; --seed varies training and sampling
TOKENIZER_FLAGS = []  # extra --key=value flags for train_tokenizer.py
AR_FLAGS = []  # extra --key=value flags for every train_ar.py stage

# --smoke: the same pipeline at toy sizes (it runs in the test suite)
SMOKE = dict(
    NUM_VIDEOS=24, NUM_KEYFRAMES=3, GRID_PROMPTS=GRID_PROMPTS[:2] + GRID_PROMPTS[-1:],
    EVAL_PROMPTS=["a red circle moving right", "a blue square moving up", "a white triangle standing still"],
    RECON_CLIPS=2,
    TOKENIZER_FLAGS=["--max_iters=2", "--lr_decay_iters=2", "--eval_interval=2", "--clip_pretrain_iters=2",
                     "--clip_pretrain_batch=8", "--n_queries=4", "--token_dim=32", "--q_layers=1", "--q_heads=2",
                     "--unet_channels=(16, 32)", "--map_channels=4", "--clip_frames=4", "--max_stride=3",
                     "--batch_size=4", "--eval_clips=2", "--ddim_steps=2", "--probe_videos=0", "--log_interval=1",
                     "--warmup_iters=0", "--val_fraction=0.25", "--order_clips=4"],
    AR_FLAGS=["--max_iters=2", "--lr_decay_iters=2", "--eval_interval=2", "--backbone=tiny-gpt2", "--batch_size=4",
              "--eval_iters=1", "--log_interval=1", "--warmup_iters=0", "--gmm_k=4", "--val_fraction=0.25"],
    # (--backbone matters in stage 1; later stages inherit it)
)
KNOBS = ["NUM_VIDEOS", "NUM_KEYFRAMES", "GRID_PROMPTS", "EVAL_PROMPTS", "RECON_CLIPS", "TOKENIZER_FLAGS", "AR_FLAGS"]
# -----------------------------------------------------------------------------

ROOT = os.path.dirname(os.path.abspath(__file__))


class Pipeline:
    def __init__(self, out, work, settings, seed=0):
        self.out, self.s, self.seed = out, settings, seed
        self.logs = os.path.join(out, "logs")
        full = work is None  # the places the config files name, which sample.py and evaluate.py default to
        w = lambda *p: os.path.join(work, *p)  # noqa: E731
        self.data = "data/shapes" if full else w("data", "shapes")
        self.tokens = "data/shapes_tokens" if full else w("data", "shapes_tokens")
        self.tokenizer = "out/shapes/tokenizer" if full else w("tokenizer")
        self.ar = [f"out/shapes/ar_stage{i}" if full else w(f"ar_stage{i}") for i in (1, 2, 3)]
        self.ar.append("out/shapes/ar" if full else w("ar"))
        # only with --work (or --smoke) do the stages' folders differ from their config files'
        self.places = lambda **dirs: [] if full else [f"--{k}={v}" for k, v in dirs.items()]  # noqa: E731
        self.timings = {}

    # ------------------------------------------------------------- running stages
    def run(self, name, cmd, log_mode="w"):
        """Run one stage's command from the repository root; its output streams here and into logs/<name>.log."""
        os.makedirs(self.logs, exist_ok=True)
        log_path = os.path.join(self.logs, f"{name}.log")
        print(f"\n=== {name}\n$ {shlex.join(cmd)}", flush=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        t0 = time.time()
        with open(log_path, log_mode + "b") as log:
            log.write(f"$ {shlex.join(cmd)}\n".encode())
            proc = subprocess.Popen([sys.executable] + cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT)
            while chunk := os.read(proc.stdout.fileno(), 4096):  # raw chunks: tqdm's \r updates show live
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
                log.write(chunk)
            rc = proc.wait()
        self.timings[name] = round(time.time() - t0, 1)
        if rc != 0:
            sys.exit(f"error: stage {name!r} failed (exit code {rc}); its output is in {log_path}")

    def skip(self, name, why="done"):
        print(f"\n=== {name}: skipped ({why})", flush=True)
        self.timings[name] = 0.0

    def resume_plan(self, name, ckpt, settings):
        """The settings an interrupted stage would resume with, if its checkpoint was trained with the settings
        (config files and flags) it would run with now; otherwise None (start over), with a line saying what changed."""
        saved = checkpoint_config(ckpt)
        try:
            plan = apply_config(dict(saved), settings)
            changed = "; ".join(f"{k}: {was!r} -> {now!r}" for k, now, was in resume_conflicts(saved, plan))
        except ConfigError as e:  # a setting the checkpoint does not know: written by other code
            plan, changed = None, str(e)
        if changed:
            print(f"\n=== {name}: {ckpt} was trained with other settings ({changed}): starting over", flush=True)
            return None
        return plan

    # ------------------------------------------------------------- the stages
    def make_data(self):
        manifest = os.path.join(self.data, "videos.csv")
        if os.path.isfile(manifest) and count_rows(manifest) == self.s["NUM_VIDEOS"] \
                and os.path.isfile(os.path.join(self.data, "images.csv")):
            return self.skip("data", f"{manifest} has {self.s['NUM_VIDEOS']} videos")
        self.run("data", ["data.py", "shapes", "--out", self.data, "--num_videos", str(self.s["NUM_VIDEOS"]),
                          "--seed", str(DATA_SEED)])

    def train_tokenizer(self):
        ckpt = os.path.join(self.tokenizer, "ckpt.pt")
        inputs = [os.path.join(self.data, "videos.csv"), os.path.join(self.data, "images.csv")]
        settings = (["config/shapes.py"] + self.places(data_dir=self.data, out_dir=self.tokenizer)
                    + [f"--seed={self.seed}"] + self.s["TOKENIZER_FLAGS"])
        it = checkpoint_iter(ckpt)
        plan = self.resume_plan("tokenizer", ckpt, settings) if it > 0 and newer(ckpt, inputs) else None
        if plan and it >= plan["max_iters"]:
            return self.skip("tokenizer", f"{ckpt} at iter {it}")
        if not plan:  # new data or settings: start over (the stand-in CLIP and the log too)
            for stale in ("clip_pretrained.pt", "log.csv", "best.pt"):
                remove(os.path.join(self.tokenizer, stale))
        self.run("tokenizer", ["train_tokenizer.py"] + settings + (["--init_from=resume"] if plan else []),
                 "a" if plan else "w")

    def encode(self):
        ckpt = os.path.join(self.tokenizer, "ckpt.pt")
        shards = {name: math.ceil(count_rows(os.path.join(self.data, f"{name}.csv")) / 1024)
                  for name in ("videos", "images")}
        found = {name: sorted(glob.glob(os.path.join(self.tokens, f"{name}_*.safetensors"))) for name in shards}
        if all(len(found[n]) == shards[n] and all(newer(f, [ckpt]) for f in found[n]) for n in shards):
            return self.skip("encode", f"{self.tokens} is up to date")
        for files in found.values():  # tokens of an older tokenizer: encode keeps existing shards, so remove them
            for f in files:
                remove(f)
        self.run("encode", ["tokenizer.py", "encode", "--ckpt", ckpt, "--manifest", os.path.join(self.data, "videos.csv"),
                            "--manifest", os.path.join(self.data, "images.csv"), "--out", self.tokens])

    def train_ar(self):
        prev = sorted(glob.glob(os.path.join(self.tokens, "*.safetensors")))
        for stage, out_dir in enumerate(self.ar, start=1):
            name, ckpt = f"ar_stage{stage}", os.path.join(out_dir, "ckpt.pt")
            init = "scratch" if stage == 1 else os.path.join(self.ar[stage - 2], "ckpt.pt")
            settings = ([f"config/ar_shapes_stage{stage}.py"] + self.places(data_dir=self.tokens, out_dir=out_dir)
                        + [f"--seed={self.seed}"] + self.s["AR_FLAGS"])
            it = checkpoint_iter(ckpt)
            plan = self.resume_plan(name, ckpt, settings) if it > 0 and newer(ckpt, prev) else None
            prev = [ckpt]
            if plan and it >= plan["max_iters"]:
                self.skip(name, f"{ckpt} at iter {it}")
                continue
            if not plan:  # start over: the log and best.pt of an earlier run go too
                for stale in ("log.csv", "best.pt"):
                    remove(os.path.join(out_dir, stale))
            start = ["--init_from=resume"] if plan else self.places(init_from=init)
            self.run(name, ["train_ar.py"] + settings + start, "a" if plan else "w")

    def sample(self):
        ckpts = [os.path.join(self.tokenizer, "ckpt.pt"), os.path.join(self.ar[-1], "ckpt.pt")]
        common = ["--tokenizer_ckpt", ckpts[0], "--ar_ckpt", ckpts[1], "--seed", str(self.seed)]
        prompts = list(dict.fromkeys(self.s["GRID_PROMPTS"] + (self.s["EVAL_PROMPTS"] or shapes_prompts())))
        out, k = os.path.join(self.out, "samples"), self.s["NUM_KEYFRAMES"]
        if newer(os.path.join(out, "frames.npz"), ckpts) and npz_meta(os.path.join(out, "frames.npz")) == (prompts, k):
            self.skip("sample", f"{out}/frames.npz is up to date")
        else:  # one set of videos: the contact sheet shows the grid prompts, evaluate.py scores them all
            os.makedirs(self.out, exist_ok=True)
            prompts_file = os.path.join(self.out, "prompts.txt")
            with open(prompts_file, "w") as f:
                f.write("\n".join(prompts) + "\n")
            self.run("sample", ["sample.py", "--prompts_file", prompts_file, "--num_keyframes", str(k), "--out", out]
                     + common)
        video = held_out_video(os.path.join(self.data, "videos.csv"), checkpoint_config(ckpts[0])["val_fraction"])
        stem = os.path.splitext(os.path.basename(video))[0]
        n_q = checkpoint_config(ckpts[0])["n_queries"]
        zeros = (0, n_q // 2)  # Fig. 3: keyframes -> deep tokens -> video; Fig. 4: half of the tokens zeroed
        targets = [os.path.join(self.out, f"{stem}_recon" + (f"_zero{zero}" if zero else "") + ".mp4") for zero in zeros]
        if all(newer(target, ckpts[:1]) for target in targets):
            self.skip("reconstruct", f"{', '.join(targets)} are up to date")
        else:
            self.run("reconstruct", ["reconstruct.py", video, "--zero_tokens", *map(str, zeros), "--out", self.out,
                                     "--tokenizer_ckpt", ckpts[0], "--seed", str(self.seed)])

    def evaluate(self, i3d=None):
        metrics = os.path.join(self.out, "metrics.json")
        tok_ckpt = os.path.join(self.tokenizer, "ckpt.pt")
        samples = os.path.join(self.out, "samples", "frames.npz")
        if newer(metrics, [samples, tok_ckpt]) and not i3d:
            return self.skip("evaluate", f"{metrics} is up to date")
        cmd = ["evaluate.py", "--samples", samples, "--real", os.path.join(self.data, "videos.csv"),
               "--real_split", "val", "--val_fraction", str(checkpoint_config(tok_ckpt)["val_fraction"]),
               "--tokenizer_ckpt", tok_ckpt, "--recon_manifest", os.path.join(self.data, "videos.csv"),
               "--recon_clips", str(self.s["RECON_CLIPS"]),
               "--seed", str(self.seed), "--out", metrics]
        clip = os.path.join(self.tokenizer, "clip_pretrained.pt")  # CLIPSIM with the shapes stand-in CLIP
        if os.path.isfile(clip):
            cmd += ["--clip_model", checkpoint_config(tok_ckpt)["clip_model"], "--clip_pretrained", clip]
        if i3d:
            frames = (self.s["NUM_KEYFRAMES"] - 1) * checkpoint_config(tok_ckpt)["clip_frames"] + 1
            cmd += ["--i3d", i3d, "--fvd_frames", str(min(16, frames))]
        self.run("evaluate", cmd)

    def figures(self):
        """contact_sheet.png, loss_tokenizer.png, psnr_tokenizer.png, loss_ar.png."""
        import numpy as np
        t0 = time.time()
        with np.load(os.path.join(self.out, "samples", "frames.npz")) as z:
            frames, prompts, clip_frames = z["frames"], [str(p) for p in z["prompts"]], int(z["clip_frames"])
        grid = [prompts.index(p) for p in self.s["GRID_PROMPTS"]]
        sheet = contact_sheet(frames[grid, ::clip_frames], self.s["GRID_PROMPTS"])
        sheet.save(os.path.join(self.out, "contact_sheet.png"))
        log = read_log_csv(os.path.join(self.tokenizer, "log.csv"))
        line_plot({"train loss": log["train"].get("loss", [])}, "tokenizer: diffusion loss (Eq. 1)", "iteration",
                  "loss").save(os.path.join(self.out, "loss_tokenizer.png"))
        psnr = {k: v for k, v in log["eval"].items() if k.startswith("psnr")}
        line_plot(psnr, "tokenizer: held-out PSNR of in-between frames", "iteration",
                  "dB").save(os.path.join(self.out, "psnr_tokenizer.png"))
        panels = []
        for stage, out_dir in enumerate(self.ar, start=1):
            curves = read_ar_log(os.path.join(out_dir, "log.csv"))
            panels.append(line_plot(curves, f"AR stage {stage}", "iteration", "loss"))
        row = Image.new("RGB", (sum(p.width for p in panels), panels[0].height), "white")
        for i, p in enumerate(panels):
            row.paste(p, (i * p.width, 0))
        row.save(os.path.join(self.out, "loss_ar.png"))
        self.timings["figures"] = round(time.time() - t0, 1)


# -----------------------------------------------------------------------------
# small helpers


def count_rows(manifest):
    if not os.path.isfile(manifest):
        return 0
    with open(manifest, newline="") as f:
        return sum(1 for _ in csv.DictReader(f))


def newer(path, inputs):
    """path exists and is at least as new as every existing input (make's rule)."""
    if not os.path.isfile(path):
        return False
    return all(os.path.getmtime(path) >= os.path.getmtime(i) for i in inputs if os.path.isfile(i))


def remove(path):
    if os.path.isfile(path):
        os.remove(path)


def checkpoint_iter(path):
    """iter_num of a training checkpoint; 0 if there is none."""
    if not os.path.isfile(path):
        return 0
    import torch
    return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("iter_num", 0))


def checkpoint_config(path):
    import torch
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)["config"]


def npz_meta(path):
    """(prompts, num_keyframes) of a sample.py frames.npz."""
    import numpy as np
    with np.load(path) as z:
        return [str(p) for p in z["prompts"]], int(z["num_keyframes"])


def shapes_prompts():
    import evaluate
    return evaluate.shapes_prompts()


def held_out_video(manifest, val_fraction):
    """The first held-out (tokenizer val split) video of a manifest, moving if there is one."""
    import data
    rows = [r for r in data.read_manifest(manifest) if data.in_split(r["path"], "val", val_fraction)] \
        or data.read_manifest(manifest)
    moving = [r for r in rows if "moving" in r["caption"]]
    return (moving or rows)[0]["path"]


def read_log_csv(path):
    """train_tokenizer.py's log.csv ('train,iter,time,loss=...' / 'eval,iter,time,k=v,...') ->
    {'train': {key: [(iter, value)]}, 'eval': {...}}; a resumed run's repeated iterations keep the last value."""
    out = {"train": {}, "eval": {}}
    if not os.path.isfile(path):
        return out
    with open(path) as f:
        for line in f:
            parts = line.strip().split(",")
            if len(parts) < 4 or parts[0] not in out:
                continue
            for kv in parts[3:]:
                k, _, v = kv.partition("=")
                try:
                    out[parts[0]].setdefault(k, {})[int(parts[1])] = float(v)
                except ValueError:
                    continue
    return {kind: {k: sorted(v.items()) for k, v in series.items()} for kind, series in out.items()}


def read_ar_log(log_csv):
    """AR curves {'train loss': [(iter, loss)], 'val loss': [...], 'generated / still': [...]} from train_ar.py's
    log.csv (the tokenizer's format); points that are not finite (no held-out rows) are left out."""
    log = read_log_csv(log_csv)
    clean = lambda pts: [(i, v) for i, v in pts if math.isfinite(v)]  # noqa: E731
    return {"train loss": clean(log["train"].get("loss", [])), "val loss": clean(log["eval"].get("val_loss", [])),
            "generated / still": clean(log["eval"].get("gen_error", []))}


# -----------------------------------------------------------------------------
# pictures with PIL only (no matplotlib here)

COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def font(size):
    try:
        return ImageFont.load_default(size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def nice_ticks(lo, hi, n=5):
    """About n round tick values covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    step *= min((1, 2, 5, 10), key=lambda m: abs(m * step - raw))
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def line_plot(series, title, xlabel, ylabel, size=(520, 340)):
    """A line plot of {name: [(x, y), ...]} with axes, ticks, labels and a legend, as a PIL image."""
    W, H = size
    left, right, top, bottom = 64, 16, 30, 46
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    f, small = font(14), font(11)
    d.text((W // 2, 8), title, fill="black", font=f, anchor="mt")
    d.text(((left + W - right) // 2, H - 6), xlabel, fill="black", font=small, anchor="mb")
    d.text((6, (top + H - bottom) // 2), ylabel, fill="black", font=small, anchor="lm")
    x0, x1, y0, y1 = left, W - right, H - bottom, top  # plot area in pixels (y grows down)
    d.rectangle((x0, y1, x1, y0), outline="black")
    points = [p for pts in series.values() for p in pts]
    if not points:
        d.text(((x0 + x1) // 2, (y0 + y1) // 2), "no data", fill="gray", font=f, anchor="mm")
        return img
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    xlo, xhi = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    ylo, yhi = min(ys), max(ys)
    pad = (yhi - ylo) * 0.05 or abs(ylo) * 0.05 or 1.0
    ylo, yhi = ylo - pad, yhi + pad
    px = lambda x: x0 + (x - xlo) / (xhi - xlo) * (x1 - x0)  # noqa: E731
    py = lambda y: y0 - (y - ylo) / (yhi - ylo) * (y0 - y1)  # noqa: E731
    for t in nice_ticks(xlo, xhi):
        if xlo <= t <= xhi:
            d.line((px(t), y0, px(t), y0 + 4), fill="black")
            d.text((px(t), y0 + 6), f"{t:g}", fill="black", font=small, anchor="mt")
    for t in nice_ticks(ylo, yhi):
        if ylo <= t <= yhi:
            d.line((x0 - 4, py(t), x0, py(t)), fill="black")
            d.line((x0 + 1, py(t), x1 - 1, py(t)), fill=(235, 235, 235))
            d.text((x0 - 6, py(t)), f"{t:.4g}", fill="black", font=small, anchor="rm")
    legend_w = 26 + max(int(d.textlength(name, font=small)) for name in series)
    d.rectangle((x1 - legend_w - 10, y1 + 3, x1 - 3, y1 + 5 + 16 * len(series)), fill="white", outline=(200, 200, 200))
    for i, (name, pts) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        xy = [(px(x), py(y)) for x, y in pts]
        if len(xy) > 1:
            d.line(xy, fill=color, width=2)
        for x, y in xy if len(xy) <= 20 else []:  # sparse series (evals): mark the points
            d.ellipse((x - 3, y - 3, x + 3, y + 3), fill=color)
        ly = y1 + 12 + 16 * i
        d.line((x1 - legend_w - 4, ly, x1 - legend_w + 16, ly), fill=color, width=3)
        d.text((x1 - legend_w + 22, ly), name, fill="black", font=small, anchor="lm")
    return img


def contact_sheet(keyframes, prompts, scale=3, label_width=250):
    """One row per prompt: its text, then its keyframes (B, K, H, W, 3) uint8, upscaled `scale` times."""
    B, K, H, W = keyframes.shape[:4]
    th, tw, gap = H * scale, W * scale, 4
    header = 22
    sheet = Image.new("RGB", (label_width + K * (tw + gap), header + B * (th + gap)), "white")
    d = ImageDraw.Draw(sheet)
    for k in range(K):
        d.text((label_width + k * (tw + gap) + tw // 2, 4), f"keyframe {k}", fill="black", font=font(12), anchor="mt")
    for b in range(B):
        y = header + b * (th + gap)
        d.text((6, y + th // 2), prompts[b], fill="black", font=font(14), anchor="lm")
        for k in range(K):
            tile = Image.fromarray(keyframes[b, k]).resize((tw, th), Image.NEAREST)
            sheet.paste(tile, (label_width + k * (tw + gap), y))
    return sheet


# -----------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a few steps per stage on tiny data and models")
    parser.add_argument("--out", default=None, help="where the demo's results go (default out/demo, or out/smoke)")
    parser.add_argument("--work", default=None, help="data and checkpoints (default: the README's places; "
                                                     "with --smoke, <out>/work)")
    parser.add_argument("--i3d", default=None, help="an I3D TorchScript file: adds FVD to metrics.json")
    parser.add_argument("--seed", type=int, default=0, help="seed of every training and sampling stage (not the data)")
    args = parser.parse_args(argv)
    mine = lambda p: p and os.path.abspath(p)  # noqa: E731  (paths given here are relative to where you are)
    out = mine(args.out) or ("out/smoke" if args.smoke else "out/demo")  # defaults: relative to the repository
    work = mine(args.work) or (os.path.join(out, "work") if args.smoke else None)
    i3d = mine(args.i3d)
    os.chdir(ROOT)  # every stage runs from the repository root, as the README's commands
    settings = {k: globals()[k] for k in KNOBS} | (SMOKE if args.smoke else {})
    pipe = Pipeline(out, work, settings, args.seed)
    t0 = time.time()
    pipe.make_data()
    pipe.train_tokenizer()
    pipe.encode()
    pipe.train_ar()
    pipe.sample()
    pipe.evaluate(i3d)
    pipe.figures()
    total = time.time() - t0
    pipe.timings["total"] = round(total, 1)
    with open(os.path.join(out, "timings.json"), "w") as f:
        json.dump(pipe.timings, f, indent=2)
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    print(f"\n=== done in {total / 60:.1f} min: results in {out}/")
    for k in ("recon_psnr", "recon_psnr_moving", "recon_ssim", "recon_color", "recon_shape", "recon_direction",
              "recon_centroid_err", "recon_one_object", "shapes_color", "shapes_shape", "shapes_direction", "shapes_direction_clips",
              "shapes_one_object", "shapes_present", "shapes_all", "clipsim", "fvd"):
        if k in metrics:
            print(f"  {k:<18} {metrics[k]:.4f}")


if __name__ == "__main__":
    main()
