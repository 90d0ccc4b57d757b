"""
What train_tokenizer.py and train_ar.py share, so that one reads as a diff of the other: DDP set-up from
the RANK variable, the warm-up + cosine learning rate, the guard against non-finite steps, per-rank RNG
states for exact resume, the rank-sync checksum, and atomic last / best checkpoints.
"""
import math
import os
import shutil
from contextlib import nullcontext

import torch
import torch.distributed as dist

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def setup(device, gradient_accumulation_steps, script):
    """DDP if launched by torchrun (RANK is set), TF32 on CUDA. gradient_accumulation_steps counts micro-batches
    per optimizer step over ALL processes (nanoGPT's convention): each process runs its share, and at least one
    (fewer than one per process: the global batch grows with the processes, as the trainers' log line says).
    Returns (ddp, rank, local_rank, world, device, micro_steps per process)."""
    ddp = int(os.environ.get("RANK", -1)) != -1
    rank, local_rank, world = 0, 0, 1
    if ddp:
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
        rank, local_rank, world = dist.get_rank(), int(os.environ["LOCAL_RANK"]), dist.get_world_size()
        if device.startswith("cuda"):
            device = f"cuda:{local_rank}"
            torch.cuda.set_device(device)
    if gradient_accumulation_steps > world and gradient_accumulation_steps % world:
        raise SystemExit(f"{script}: gradient_accumulation_steps={gradient_accumulation_steps} (micro-batches per "
                         f"step over all processes) must be a multiple of the {world} processes")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    return ddp, rank, local_rank, world, device, max(1, gradient_accumulation_steps // world)


def autocast(dtype, device_type, script, allowed=tuple(DTYPES)):
    """The autocast context of a dtype name; an unknown name is an error, never a silent float32 run."""
    if dtype not in allowed:
        raise SystemExit(f"{script}: dtype must be one of {', '.join(allowed)}, got {dtype!r}")
    return nullcontext() if dtype == "float32" else torch.autocast(device_type=device_type, dtype=DTYPES[dtype])


def get_lr(it, learning_rate, min_lr, warmup_iters, lr_decay_iters):
    """Linear warm-up over warmup_iters, then cosine decay to min_lr at lr_decay_iters, then min_lr
    (min_lr = learning_rate: a constant rate after the warm-up)."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / max(1, lr_decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)


class BadStepGuard:
    """A step whose loss or gradient is not finite is not applied (so no checkpoint is ever written from bad
    weights); max_bad_steps of them in a row stop the run with one line saying what to check."""

    def __init__(self, max_bad_steps, script, hint, log):
        self.max_bad_steps, self.script, self.hint, self.log, self.in_a_row = max_bad_steps, script, hint, log, 0

    def ok(self, grad_norm, iter_num):
        """True if the step may be applied. grad_norm is the same on every rank (gradients are summed first)."""
        if torch.isfinite(grad_norm):
            self.in_a_row = 0
            return True
        self.in_a_row += 1
        self.log(f"iter {iter_num}: non-finite gradient norm ({grad_norm.item()}), update skipped "
                 f"({self.in_a_row} in a row)")
        if self.in_a_row >= self.max_bad_steps:
            raise SystemExit(f"{self.script}: {self.in_a_row} non-finite steps in a row (iters "
                             f"{iter_num - self.in_a_row + 1}-{iter_num}), none of them applied: stopped. {self.hint}")
        return False


def rng_states(ddp, world, generator=None):
    """Every rank's RNG states (torch, CUDA, and a data generator if one is given), gathered for the checkpoint."""
    state = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
             "batches": generator.get_state() if generator is not None else None}
    states = [None] * world
    if ddp:
        dist.all_gather_object(states, state)
    else:
        states = [state]
    return states


def restore_rng(states, rank, world, log, generator=None):
    """Put this rank's RNG states back (the same batches, noise and drops as the uninterrupted run)."""
    if len(states) != world:
        log(f"checkpoint has RNG states for {len(states)} processes, this run has {world}: not restored")
        return
    state = states[rank]
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    if generator is not None:
        generator.set_state(state["batches"])


def checksum(model, ddp):
    """Sum of every parameter, checked equal on all ranks: DDP keeps replicas identical, and a silent drift
    would waste a whole run. Compares two scalars, not the weights."""
    total = sum(p.detach().double().sum() for p in model.parameters())
    if ddp:
        lo, hi = total.clone(), total.clone()
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        if lo != hi:
            raise RuntimeError(f"ranks out of sync: parameter checksums from {lo.item()!r} to {hi.item()!r}")
    return total.item()


def save_checkpoint(out_dir, state, best=False):
    """out_dir/ckpt.pt (the last), and best.pt too when `best`; each written to a .tmp file then renamed, so a
    crash at any moment leaves the previous file whole."""
    os.makedirs(out_dir, exist_ok=True)
    last = os.path.join(out_dir, "ckpt.pt")
    torch.save(state, last + ".tmp")
    os.replace(last + ".tmp", last)
    if best:  # a second name for the same bytes: the next ckpt.pt is a new file, best.pt keeps these
        best_path = os.path.join(out_dir, "best.pt")
        if os.path.exists(best_path + ".tmp"):  # left by a crash
            os.remove(best_path + ".tmp")
        try:
            os.link(last, best_path + ".tmp")
        except OSError:  # a file system without hard links
            shutil.copyfile(last, best_path + ".tmp")
        os.replace(best_path + ".tmp", best_path)


class CsvLog:
    """out_dir/log.csv, appended to (a resumed run carries it on), rank 0 only: lines 'train,iter,seconds,loss=...'
    and 'eval,iter,seconds,key=value,...', the curves demo.py plots."""

    def __init__(self, out_dir, enabled):
        if enabled:
            os.makedirs(out_dir, exist_ok=True)
        self.file = open(os.path.join(out_dir, "log.csv"), "a") if enabled else None

    def write(self, kind, iter_num, seconds, metrics):
        if self.file:
            self.file.write(f"{kind},{iter_num},{seconds:.1f}," + ",".join(f"{k}={v:.5g}" for k, v in metrics.items())
                            + "\n")
            self.file.flush()
