"""Rank 1 dies (SIGKILL, as the kernel's out-of-memory killer would) while scoring the rewards of iteration 2, after
the checkpoint of iteration 2 (test_distributed.py); with `--no-death` the same run finishes.
    torchrun --nproc_per_node 2 tests/dying_worker.py RUN_FOLDER [--no-death]"""
import os
import signal
import sys

from otca_lib import rewards, train

if os.environ.get("RANK") == "1" and "--no-death" not in sys.argv:
    calls = []
    bright = rewards.REWARDS["brightness"]

    def dying(device):
        fn = bright(device)

        def score(pixels, prompts):
            calls.append(1)
            if len(calls) == 3:  # iterations 0, 1 scored and checkpointed; die in iteration 2
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(pixels, prompts)
        return score

    rewards.REWARDS["brightness"] = dying

sys.exit(train.main(["--preset", "tiny-sd3", "--smoke", "--iterations", "4", "--output-dir", sys.argv[1],
                     "--set", "eval_every=0", "checkpoint_every=1", "keep_checkpoints=0"]))
