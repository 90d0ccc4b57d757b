import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub look-ups: each failed one costs ~30 s
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

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
