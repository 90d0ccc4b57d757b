"""training.py (what the two trainers share) and the promise it serves: a run killed at any moment (kill -9, no
clean-up) and resumed from its last checkpoint ends bit-equal to a run that was never interrupted."""
import math
import os
import random
import subprocess
import sys
import time

import pytest
import torch

import training
from test_train_ar import common, write_shards
from test_train_tokenizer import TINY as TOKENIZER_TINY
from conftest import ROOT



def test_lr_schedule_closed_form():
    kw = dict(learning_rate=1.0, min_lr=0.1, warmup_iters=4, lr_decay_iters=14)
    assert [training.get_lr(i, **kw) for i in range(4)] == [0.2, 0.4, 0.6, 0.8]  # linear warm-up
    assert training.get_lr(4, **kw) == 1.0 and training.get_lr(9, **kw) == pytest.approx(0.55)  # cosine midpoint
    assert training.get_lr(14, **kw) == pytest.approx(0.1) and training.get_lr(99, **kw) == 0.1
    constant = dict(kw, min_lr=1.0)
    assert {training.get_lr(i, **constant) for i in range(4, 40)} == {1.0}


def test_bad_step_guard_counts_in_a_row():
    lines = []
    guard = training.BadStepGuard(3, "x.py", "check the data", lines.append)
    nan, ok = torch.tensor(math.nan), torch.tensor(1.0)
    assert guard.ok(ok, 0) and not guard.ok(nan, 1) and not guard.ok(torch.tensor(math.inf), 2)
    assert guard.ok(ok, 3) and not guard.ok(nan, 4) and not guard.ok(nan, 5)  # a good step resets the count
    with pytest.raises(SystemExit, match=r"x.py: 3 non-finite steps in a row \(iters 4-6\).*check the data"):
        guard.ok(nan, 6)
    assert lines[0] == "iter 1: non-finite gradient norm (nan), update skipped (1 in a row)"


def test_best_checkpoint_survives_the_next_last_one(tmp_path):
    training.save_checkpoint(str(tmp_path), {"iter_num": 1}, best=True)
    training.save_checkpoint(str(tmp_path), {"iter_num": 2})
    open(tmp_path / "best.pt.tmp", "w").close()  # left by a crash between the two writes
    training.save_checkpoint(str(tmp_path), {"iter_num": 3})
    load = lambda name: torch.load(tmp_path / name, weights_only=True)["iter_num"]  # noqa: E731
    assert load("ckpt.pt") == 3 and load("best.pt") == 1
    training.save_checkpoint(str(tmp_path), {"iter_num": 4}, best=True)
    assert load("ckpt.pt") == load("best.pt") == 4 and sorted(os.listdir(tmp_path)) == ["best.pt", "ckpt.pt"]


def run_killed_at_random(cmd, out_dir, seed, kills):
    """Run `cmd` (with --init_from=resume once a checkpoint exists), kill -9 it `kills` times at random moments
    after its start-up, then let it finish. Returns the number of kills that hit a running process."""
    rng, hits = random.Random(seed), 0
    for attempt in range(kills + 1):
        resume = ["--init_from=resume"] if os.path.isfile(os.path.join(out_dir, "ckpt.pt")) else []
        proc = start(cmd + resume)
        if attempt < kills:
            for line in proc.stdout:  # start-up done (imports, data): now training and checkpointing
                if line.startswith(("iter ", "step ", "eval ")):
                    break
            time.sleep(rng.uniform(0.0, 1.5))
            hits += proc.poll() is None
            proc.kill()
            proc.wait()
            continue
        finish(proc)
    return hits


def start(cmd):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc):
    log = proc.stdout.read()
    assert proc.wait() == 0, log[-3000:]


def assert_same_state(a, b, keys):
    for part in keys:
        sa, sb = a[part], b[part]
        for name in sa:
            assert torch.equal(sa[name], sb[name]), f"{part}.{name} differs from the uninterrupted run"


@pytest.mark.parametrize("seed", [0])
def test_train_ar_killed_at_random_then_resumed_is_bit_equal(tmp_path, seed):
    tokens = write_shards(str(tmp_path / "tokens"))
    args = lambda out: [sys.executable, "train_ar.py"] + common(  # noqa: E731
        tokens, str(tmp_path / out), max_iters=40, eval_interval=1, log_interval=1, lr_decay_iters=40,
        text_drop_prob=0.3, visual_drop_prob=0.3)
    straight = start(args("straight"))  # beside the killed run: one thread each, and start-up is most of their time
    hits = run_killed_at_random(args("killed"), str(tmp_path / "killed"), seed, kills=3)
    finish(straight)
    assert hits >= 1  # at least one kill landed mid-run (else the test tested nothing)
    a, b = (torch.load(tmp_path / d / "ckpt.pt", weights_only=True) for d in ("straight", "killed"))
    assert a["iter_num"] == b["iter_num"] == 40
    assert_same_state(a, b, ["model"])
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for k, state in a["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][k][name]), (k, name)


def test_train_tokenizer_killed_at_random_then_resumed_is_bit_equal(shapes_dir, tmp_path):
    """Clips read from their files by 4 threads at a time (cache_mib=0): each clip's own seed is drawn in the
    main process, so neither the threads' timing nor a resume changes the batches."""
    args = lambda out: [sys.executable, "train_tokenizer.py", f"--data_dir={shapes_dir}",  # noqa: E731
                        f"--out_dir={tmp_path / out}"] + TOKENIZER_TINY + [
        "--max_iters=12", "--lr_decay_iters=12", "--eval_interval=1", "--eval_clips=1", "--ddim_steps=1",
        "--cache_mib=0", "--loader_threads=4"]
    straight = start(args("straight"))
    hits = run_killed_at_random(args("killed"), str(tmp_path / "killed"), 1, kills=2)
    finish(straight)
    assert hits >= 1
    a, b = (torch.load(tmp_path / d / "ckpt.pt", weights_only=True) for d in ("straight", "killed"))
    assert a["iter_num"] == b["iter_num"] == 12
    assert_same_state(a, b, ["tokenizer", "denoiser"])
