import contextlib
import io
import os
import runpy
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub look-ups: each failed one costs ~30 s
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pytest  # noqa: E402
import torch  # noqa: E402

import data  # noqa: E402


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory):
    """A small shapes set shared by the tests: 24 videos of 33 frames at 32 x 32."""
    out = str(tmp_path_factory.mktemp("shapes"))
    data.generate_shapes(out, num_videos=24, size=32, num_frames=33, seed=0)
    return out


@pytest.fixture
def one_thread():
    """The 2-core test machines are shared: one thread is many times faster than two under load.
    Modules opt in with pytestmark = pytest.mark.usefixtures("one_thread")."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def run_script(script, args):
    """`python <script> <args>` run in this process on one thread: what it printed. Its imports stay warm (a process
    spends ~9 s importing before its first step); the smoke demo and test_byo_videos.py run the same scripts as
    processes. A SystemExit (a script's one-line error) propagates, with the log printed before it as `.log`."""
    old_argv, threads, log = sys.argv, torch.get_num_threads(), io.StringIO()
    sys.argv = [os.path.join(ROOT, script)] + list(args)
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stdout(log):
            runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as stop:
        stop.log = log.getvalue()
        raise
    finally:
        sys.argv = old_argv
        torch.set_num_threads(threads)
    return log.getvalue()


def run_torchrun(script, args, timeout=300):
    """`torchrun --standalone --nproc_per_node=2 <script> <args>` (a gloo process group on CPU), one thread per
    process: its stdout."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", script, *args]
    run = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1"),
                         capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout
