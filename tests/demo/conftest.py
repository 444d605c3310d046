import argparse

import pytest
import torch

from ledit.demo import config


@pytest.fixture(autouse=True)
def _restore_threads():
    """The demo sets torch's thread count; give the rest of the suite its own back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def demo_args():
    """``demo_args(*argv)``: parse ``ledit demo`` flags."""

    def parse(*argv):
        parser = argparse.ArgumentParser()
        config.add_arguments(parser)
        return parser.parse_args(list(argv))

    return parse
