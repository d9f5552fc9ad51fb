"""Fixtures shared by several test modules."""
import pytest
import torch


@pytest.fixture
def one_thread():
    """Run the test on one torch thread (steady timing and no oversubscription next to DataLoader workers)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory):
    """One converted dataset for the whole test run (2 classes x 6 synthetic motion videos of 16 frames, 32x40:
    8 train, 4 val). Tests read it; a test that must change it works on a copy."""
    from tests.train_util import make_store

    return make_store(tmp_path_factory.mktemp("tiny_store"), classes=2, videos_per_class=6)
