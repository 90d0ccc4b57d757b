"""
Micro-benchmarks, one section per component.

$ python bench.py --section=gmm
$ python bench.py --section=tokenizer
$ python bench.py --section=ar
$ python bench.py --section=data

gmm: forward+backward of the GMM NLL (paper Sec. 3.4, supp. Algorithm 1) at N positions,
K=16, D=1024, comparing gmm.gmm_nll (eager and torch.compile'd) with the same loss written
with torch.distributions. Timing: all variants in this process on the same inputs, several
interleaved repeats after warm-up, median reported. Peak memory: see measure_peak_rss().

data: one training clip (9 frames at 8 fps, 32 x 32) from 10 s 720p 30 fps H.264 files, read the way
data.ClipDataset reads it (seek, decode only the clip's stretch, resample and scale inside ffmpeg)
against decoding the whole file at full size first (the reader before it).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch

import gmm

# -----------------------------------------------------------------------------
# gmm section

def gmm_nll_distributions(params, target, k, min_var=1e-5):
    """The straightforward torch.distributions formulation of gmm.gmm_nll (the baseline)."""
    D = torch.distributions
    d = target.shape[-1]
    mu, var, logits = gmm.split_gmm(params, k, d, min_var)  # (N, K, D) x2, (N, K)
    comp = D.Independent(D.Normal(mu, var.sqrt()), 1)
    return -D.MixtureSameFamily(D.Categorical(logits=logits), comp).log_prob(target) / d

GMM_VARIANTS = {
    "torch.distributions": gmm_nll_distributions,
    "gmm_nll (eager)": gmm.gmm_nll,
    "gmm_nll (compiled)": gmm.gmm_nll_compiled,
}

def gmm_inputs(n, k, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    params = torch.randn(n, gmm.head_dim("gmm", k, d), generator=g).requires_grad_()
    target = torch.randn(n, d, generator=g)
    return params, target

def gmm_step(fn, params, target, k):
    params.grad = None
    loss = fn(params, target, k).mean()
    loss.backward()
    return loss.item()

def _read_status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")

def measure_peak_rss(variant, n, k, d):
    """Child process: extra resident memory (MiB) of one forward+backward, inputs excluded.

    Why this is honest on CPU: PyTorch's CPU allocator hands large tensors straight to
    malloc/mmap and back, so resident set size tracks live tensor memory. Each variant runs
    in a fresh process; inputs are allocated and one warm-up step is run (for compile), then
    the kernel's peak-RSS counter VmHWM is reset (write "5" to /proc/self/clear_refs) and
    the baseline VmRSS is read; peak = VmHWM after one more step - baseline. It includes the
    params gradient (N x 2KD+K floats), which every variant must produce. If the reset is not
    supported, falls back to ru_maxrss (process lifetime peak) - RSS after allocating inputs.
    """
    params, target = gmm_inputs(n, k, d)
    rss_inputs = _read_status_kib("VmRSS")
    fn = GMM_VARIANTS[variant]
    gmm_step(fn, params, target, k)  # warm-up (compiles)
    params.grad = None
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        baseline = _read_status_kib("VmRSS")
        reset_ok = _read_status_kib("VmHWM") <= baseline + 1024  # did the reset take?
    except OSError:
        reset_ok = False
    if not reset_ok:
        baseline = rss_inputs
    gmm_step(fn, params, target, k)
    peak = _read_status_kib("VmHWM") if reset_ok else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    method = "VmHWM reset" if reset_ok else "ru_maxrss"
    return {"peak_mib": (peak - baseline) / 1024, "method": method}

def bench_gmm(args):
    n, k, d = args.n, args.k, args.d
    print(f"GMM NLL forward+backward: N={n} positions, K={k}, D={d} "
          f"(params {n}x{gmm.head_dim('gmm', k, d)} fp32), {torch.get_num_threads()} threads")
    # peak memory first, each variant in a fresh subprocess
    mem = {}
    for name in GMM_VARIANTS:
        out = subprocess.run([sys.executable, __file__, "--section=gmm", f"--n={n}", f"--k={k}",
                              f"--d={d}", f"--_mem_child={name}"],
                             capture_output=True, text=True, check=True)
        mem[name] = json.loads(out.stdout.strip().splitlines()[-1])
    # timing: same process, same inputs, interleaved repeats after warm-up. On CPU a large
    # share of the eager time is first-touch page faults of fresh 128 MiB (N, K, D) buffers
    # (kernel time); that is a real cost of materializing them, so it is left in.
    load = os.getloadavg()[0]
    params, target = gmm_inputs(n, k, d)
    times = {name: [] for name in GMM_VARIANTS}
    losses = {}
    for name, fn in GMM_VARIANTS.items():
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            losses[name] = gmm_step(fn, params, target, k)
        print(f"  warm-up {name}: {time.perf_counter() - t0:.1f} s")
    for _ in range(args.repeats):
        for name, fn in GMM_VARIANTS.items():
            t0 = time.perf_counter()
            gmm_step(fn, params, target, k)
            times[name].append(time.perf_counter() - t0)
    base = "torch.distributions"
    med = {name: sorted(t)[len(t) // 2] for name, t in times.items()}
    best = {name: min(t) for name, t in times.items()}
    print(f"\n{'variant':<21}{'median s':>9}{'min s':>7}{'speedup':>8}{'(min)':>7}"
          f"{'peak MiB':>9}{'mem ratio':>10}{'loss':>9}")
    for name in GMM_VARIANTS:
        peak = mem[name]["peak_mib"]
        print(f"{name:<21}{med[name]:>9.3f}{best[name]:>7.3f}{med[base] / med[name]:>7.2f}x"
              f"{best[base] / best[name]:>6.2f}x{peak:>9.0f}{peak / mem[base]['peak_mib']:>10.2f}"
              f"{losses[name]:>9.5f}")
    grad_mib = n * gmm.head_dim("gmm", k, d) * 4 / 2**20
    print(f"{args.repeats} timed repeats after {args.warmup} warm-up, interleaved; speedup = "
          f"{base} time / variant time (median, and min in brackets); load average before "
          f"timing {load:.2f} on {os.cpu_count()} cores (other processes skew timings).\n"
          f"peak MiB = extra resident memory of one fwd+bwd (incl. the {grad_mib:.0f} MiB params "
          f"grad), {mem[base]['method']}, fresh process per variant.")

# -----------------------------------------------------------------------------

def time_interleaved(variants, step, warmup, repeats):
    """Median seconds of step(*args) for each {name: args}: warm-up first, then the variants in turn."""
    for args in variants.values():
        for _ in range(warmup):
            step(*args)
    times = {name: [] for name in variants}
    for _ in range(repeats):
        for name, args in variants.items():
            t0 = time.perf_counter()
            step(*args)
            times[name].append(time.perf_counter() - t0)
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}

def train_step(net, inputs, opt, bf16):
    """One forward + backward + AdamW step of net(*inputs) -> loss, under CPU bf16 autocast if asked."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = net(*inputs)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)

# -----------------------------------------------------------------------------
# tokenizer section

def bench_tokenizer(args):
    """One training step (forward + backward + AdamW) of the shapes tokenizer: E + Q + VideoUNet
    on a batch of 9-frame 32 x 32 clips, as train_tokenizer.py runs it with config/shapes.py."""
    import configurator
    import diffusion
    import tokenizer as tok
    import train_tokenizer as tt
    cfg = configurator.apply_config(dict(vars(tt)), ["config/shapes.py"])
    torch.manual_seed(0)
    tokenizer, denoiser = tok.build_autoencoder(cfg)
    model = tt.Autoencoder(tokenizer, denoiser, diffusion.make_alphas_cumprod(), "v", cfg["keyframe_loss_weight"],
                            cfg["outline_loss_weight"])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    B = args.batch_size or cfg["batch_size"]
    clips = torch.rand(B, cfg["clip_frames"] + 1, 3, cfg["image_size"], cfg["image_size"]) * 2 - 1
    stride, drop = torch.ones(B, dtype=torch.long), torch.zeros(B, dtype=torch.bool)
    inputs = (clips, stride, drop)
    variants = {"fp32 eager": (model, inputs, opt, False), "bf16 autocast": (model, inputs, opt, True),
                "fp32 compiled": (torch.compile(model), inputs, opt, False)}

    print(f"tokenizer training step: batch {B} clips of {cfg['clip_frames'] + 1} x {cfg['image_size']}^2, "
          f"trainable {sum(p.numel() for p in params) / 1e6:.2f}M, {torch.get_num_threads()} threads")
    med = time_interleaved(variants, train_step, args.warmup, args.repeats)
    print(f"\n{'variant':<16}{'median s':>9}{'clips/s':>9}{'speedup':>9}")
    for name in variants:
        print(f"{name:<16}{med[name]:>9.3f}{B / med[name]:>9.1f}{med['fp32 eager'] / med[name]:>8.2f}x")
    print(f"{args.repeats} interleaved repeats after {args.warmup} warm-up (the compiled one compiles in its first);"
          f" load average {os.getloadavg()[0]:.2f}")

# -----------------------------------------------------------------------------
# ar section

def build_ar(backbone, n_queries, token_dim, max_keyframes, text_len, gmm_k=16):
    from ar_model import ARConfig, ARModel
    torch.manual_seed(0)
    return ARModel(ARConfig(backbone=backbone, n_queries=n_queries, token_dim=token_dim, max_keyframes=max_keyframes,
                            text_len=text_len, gmm_k=gmm_k))

def bench_ar(args):
    """AR model: training tokens/s and MFU (fp32, bf16 autocast, compiled), generation with and without
    the KV cache, and an estimate of the paper's Llama-3.2-1B run on A100s."""
    B, peak = args.ar_batch, args.peak_flops
    print(f"AR training step (forward + backward + AdamW), batch {B}, {torch.get_num_threads()} threads; "
          f"MFU against peak_flops={peak:.3g}")
    print(f"{'model':<28}{'variant':<15}{'ms/step':>8}{'tok/s':>9}{'MFU':>8}")
    for backbone, n_q, dim, text_len in (("mini-gpt2", 16, 64, 16), ("gpt2", 16, 64, 16)):
        model = build_ar(backbone, n_q, dim, 5, text_len)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        text_ids, text_mask = model.tokenize_text(["a red circle moving right"] * B)
        tokens = torch.randn(B, 5, n_q, dim)
        S = text_len + 5 * (n_q + 1)
        fpt = model.flops_per_token(S)
        inputs = (text_ids, text_mask, tokens)
        variants = {"fp32 eager": (model, inputs, opt, False)}
        if backbone == "mini-gpt2":  # GPT-2 small under bf16 on a CPU without bf16 arithmetic: minutes a step
            variants.update({"bf16 autocast": (model, inputs, opt, True),
                             "fp32 compiled": (torch.compile(model), inputs, opt, False)})
        med = time_interleaved(variants, train_step, args.warmup, args.repeats)
        label = f"{backbone} ({model.flop_params() / 1e6:.1f}M, S={S})"
        for name, dt in med.items():
            print(f"{label:<28}{name:<15}{1000 * dt:>8.0f}{B * S / dt:>9.0f}{100 * B * S * fpt / dt / peak:>7.1f}%")

    model = build_ar("mini-gpt2", 16, 64, 16, 16).eval()
    prompts = ["a red circle moving right"] * args.gen_batch
    times, outs = {}, {}
    for use_cache in (True, False):
        t0 = time.perf_counter()
        outs[use_cache] = model.generate(prompts, 16, var_scale=0.01, generator=torch.Generator().manual_seed(0),
                                         use_cache=use_cache)
        times[use_cache] = time.perf_counter() - t0
    kf = 16 * args.gen_batch
    print(f"\ngenerate 16 keyframes x 16 tokens, {args.gen_batch} prompts (mini-gpt2): KV cache "
          f"{kf / times[True]:.1f} keyframes/s, recompute {kf / times[False]:.1f} keyframes/s: "
          f"{times[False] / times[True]:.1f}x; max |cached - recomputed| {(outs[True] - outs[False]).abs().max():.1e}")

    with torch.device("meta"):  # the paper's default: Llama-3.2-1B, 16 x 1024 deep tokens, 16 keyframes, text 80
        llama = build_ar("llama-3.2-1b", 16, 1024, 16, 80)
    S, batch, gpus, mfu = 80 + 16 * 17, 256, 4, 0.4
    flops = batch * S * llama.flops_per_token(S)
    print(f"\nESTIMATE, not a measurement: Llama-3.2-1B ({llama.flop_params() / 1e9:.2f}B FLOP parameters), "
          f"global batch {batch} x {S} tokens = {flops / 1e15:.0f} PFLOP per step; on {gpus} A100s (312 TFLOP/s "
          f"bf16 each) at an assumed {100 * mfu:.0f}% MFU: {flops / (gpus * 312e12 * mfu):.1f} s/step, "
          f"{100e3 * flops / (gpus * 312e12 * mfu) / 3600:.0f} h per 100k steps")

# -----------------------------------------------------------------------------
# data section

def read_whole_then_index(path, indices, native_fps, fps=8, size=32):
    """The reader before data.read_frames seeked: every frame at full size, then the clip's frames picked and
    resized in torch (the baseline)."""
    import imageio
    import data
    with imageio.get_reader(path, format="FFMPEG") as reader:
        frames = np.stack([frame for frame in reader])  # (T, H, W, 3), all of it (list() would trust its len: inf)
    return data.to_tensor(frames[data.shown_frames(indices, fps, native_fps)], size)

def read_clip(path, indices, info, fps=8, size=32):
    """What data.ClipDataset does per clip without a cache (info: data.video_info, read once per file)."""
    import data
    return data.to_tensor(data.read_frames(path, size, fps, indices, info), size)

def decode_floor(path, indices, info, fps=8):
    """What any reader of this file must do for the clip: decode from the keyframe before it to its last frame
    (each H.264 frame between keyframes is built on the ones before it), here at full size with nothing scaled,
    converted or written (ffmpeg's null muxer)."""
    import imageio_ffmpeg
    import data
    wanted = data.shown_frames(indices, fps, info["fps"])
    first = int(wanted.min())
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-loglevel", "error",
                    *data.seek_params(first, info["fps"]), "-i", path,
                    "-frames:v", str(int(wanted.max()) - first + 1), "-f", "null", "-"], check=True)

def make_test_video(path, gop=None, seconds=10, width=1280, height=720, fps=30):
    """An H.264 yuv420p mp4 of ffmpeg's testsrc2; gop: frames between keyframes (None: libx264's default, up
    to 250, here one keyframe in 10 s)."""
    import data
    if not os.path.isfile(path):
        data.write_test_pattern(path, fps, f"{width}x{height}", seconds,
                                ("-c:v", "libx264", "-pix_fmt", "yuv420p", *(["-g", str(gop)] if gop else [])))
    return path

def children_peak_mib(run):
    """Peak resident memory (MiB) of the ffmpeg processes run() starts, polled from /proc every 2 ms
    (RUSAGE_CHILDREN would also count what `import torch` started)."""
    import threading
    peak, done = [0], threading.Event()

    def poll():
        while not done.is_set():
            for task in os.listdir("/proc/self/task"):
                try:
                    with open(f"/proc/self/task/{task}/children") as f:
                        pids = f.read().split()
                    for pid in pids:
                        with open(f"/proc/{pid}/status") as f:
                            status = dict(line.split(":", 1) for line in f)
                        if status["Name"].strip().startswith("ffmpeg"):  # not the fork before exec (our own pages)
                            peak[0] = max(peak[0], int(status["VmHWM"].split()[0]))
                except OSError:  # a child that just exited
                    pass
            time.sleep(0.002)
    watcher = threading.Thread(target=poll)
    watcher.start()
    try:
        run()
    finally:
        done.set()
        watcher.join()
    return peak[0] / 1024

def data_peak_child(variant, path, start, stride):
    """Child process: extra peak resident memory (MiB) of reading one clip: this process (VmHWM reset, as in
    measure_peak_rss) and its ffmpeg."""
    import data
    info = data.video_info(path)
    indices = start + stride * np.arange(9)
    fn = read_whole_then_index if variant == "whole file" else read_clip
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _read_status_kib("VmRSS")
    ffmpeg = children_peak_mib(lambda: fn(path, indices, info["fps"] if variant == "whole file" else info))
    return {"python_mib": (_read_status_kib("VmHWM") - before) / 1024, "ffmpeg_mib": ffmpeg}

def bench_data(args):
    import tempfile
    import data
    folder = args.video_dir or tempfile.gettempdir()
    for gop, what in ((None, "libx264's default keyframe interval (250: one keyframe in the 10 s)"),
                      (30, "a keyframe every second, as phone cameras write")):
        path = make_test_video(os.path.join(folder, f"bench_720p30_gop{gop or 'default'}.mp4"), gop)
        info = data.video_info(path)
        n = data.frames_at(info["num_frames"], 8, info["fps"])
        rng = np.random.default_rng(0)  # the same clips for both readers: stride 1-4 at 8 fps, uniform start
        clips = [(int(rng.integers(n - 8 * s)), s) for s in rng.integers(1, 5, args.repeats)]
        print(f"\none 9-frame 32 px training clip at 8 fps from a 10 s {info['size'][0]}x{info['size'][1]} "
              f"{info['fps']:g} fps H.264 file, {what}; {len(clips)} clips, stride 1-4, uniform start")
        mem = {name: json.loads(subprocess.run(
            [sys.executable, __file__, "--section=data", f"--_mem_child={name}", f"--_video={path}"],
            capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
            for name in ("whole file", "seek + scale in ffmpeg")}
        times = {"whole file": [], "seek + scale in ffmpeg": [], "seek + header read": [], "decode floor": []}
        for start, stride in clips:  # interleaved, the same clip for each
            indices = start + stride * np.arange(9)
            t0 = time.perf_counter()
            a = read_whole_then_index(path, indices, info["fps"])
            t1 = time.perf_counter()
            b = read_clip(path, indices, info)
            t2 = time.perf_counter()
            read_clip(path, indices, data.video_info(path))  # a file seen for the first time: its header too
            t3 = time.perf_counter()
            decode_floor(path, indices, info)
            t4 = time.perf_counter()
            for name, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                times[name].append(dt)
            assert a.shape == b.shape == (9, 3, 32, 32), (a.shape, b.shape)
        med = {name: sorted(t)[len(t) // 2] for name, t in times.items()}
        print(f"{'reader':<24}{'median s':>9}{'speedup':>9}{'peak MiB python':>16}{'ffmpeg':>8}")
        for name in times:
            m = mem.get(name, mem["seek + scale in ffmpeg"])
            peaks = f"{m['python_mib']:>16.0f}{m['ffmpeg_mib']:>8.0f}" if name != "decode floor" else f"{'-':>16}{'-':>8}"
            print(f"{name:<24}{med[name]:>9.3f}{med['whole file'] / med[name]:>8.1f}x{peaks}")
    print(f"\nmedian of the interleaved clips; 'seek + header read' also reads the file's header (first sight of a "
          f"file; the dataset keeps it). peak MiB: extra resident memory of reading one clip (stride 4, start 40) "
          f"in a fresh process, and its ffmpeg's; load average {os.getloadavg()[0]:.2f}. A seek decodes from the "
          f"keyframe before the clip to its last frame: the keyframe interval sets the floor ('decode floor': that "
          f"decoding alone, nothing scaled or written; whole file / floor is the most any reader of the file can gain).")

# -----------------------------------------------------------------------------

SECTIONS = {"gmm": bench_gmm, "tokenizer": bench_tokenizer, "ar": bench_ar, "data": bench_data}

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--section", default="gmm", choices=list(SECTIONS) + ["all"])
    parser.add_argument("--n", type=int, default=2048, help="gmm: positions")
    parser.add_argument("--k", type=int, default=16, help="gmm: mixture components")
    parser.add_argument("--d", type=int, default=1024, help="gmm: token channels")
    parser.add_argument("--batch_size", type=int, default=0, help="tokenizer: clips per step (0 = the config's)")
    parser.add_argument("--ar_batch", type=int, default=16, help="ar: sequences per training step")
    parser.add_argument("--gen_batch", type=int, default=4, help="ar: prompts per generate call")
    parser.add_argument("--peak_flops", type=float, default=1e12, help="ar: peak FLOP/s of this device, for MFU")
    parser.add_argument("--video_dir", default="", help="data: where the test video is made (default: the temp dir)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--_mem_child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_video", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._mem_child and args.section == "data":
        print(json.dumps(data_peak_child(args._mem_child, args._video, 40, 4)))
        sys.exit(0)
    if args._mem_child:
        print(json.dumps(measure_peak_rss(args._mem_child, args.n, args.k, args.d)))
        sys.exit(0)
    for name, fn in SECTIONS.items():
        if args.section in (name, "all"):
            print(f"== {name} ==")
            fn(args)
