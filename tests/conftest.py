"""Test set-up: import lib/ from the repository root; keep torch on the 2 cores CI has."""
import os
import shutil
import socket
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
torch.set_num_threads(2)


@pytest.fixture
def free_port():
    """A TCP port nobody listens on, for gloo process groups."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory):
    """tmp_path_factory.mktemp for module-scoped fixtures, whose folders go when the module ends:
    pytest's retention policy (pytest.ini) removes only function-scoped tmp_path folders, and the
    runs these fixtures keep add up to GBs over the suite."""
    made = []

    def mktemp(name):
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]
    yield mktemp
    for folder in made:
        shutil.rmtree(folder, ignore_errors=True)
