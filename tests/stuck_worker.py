"""Rank 1 hangs (alive, not dead) while scoring its rewards; rank 0 waits in the reward gather and must fail after the
config's timeout, naming rank 1 and where it is (test_distributed.py).
    torchrun --nproc_per_node 2 tests/stuck_worker.py RUN_FOLDER"""
import os
import sys
import time

from otca_lib import rewards, train

if os.environ.get("RANK") == "1":
    def stuck(pixels, prompts):
        time.sleep(300)

    rewards.REWARDS["brightness"] = lambda device: stuck

sys.exit(train.main(["--preset", "tiny-sd3", "--smoke", "--output-dir", sys.argv[1],
                     "--set", "dist_timeout_minutes=0.05", "eval_every=0"]))  # 3 s
