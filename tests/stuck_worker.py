"""Rank 1 hangs (alive, not dead) before a collective; the others must fail after the config's timeout
(test_distributed.py).    torchrun --nproc_per_node 2 tests/stuck_worker.py"""
import time

import torch

from otca_lib import train
from otca_lib.config import Config

acc = train.make_accelerator(Config(dist_timeout_minutes=0.05).dist_timeout_minutes)  # 3 s
if acc.process_index == 1:
    time.sleep(300)
acc.gather(torch.ones(1))
