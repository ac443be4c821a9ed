"""Two GRPO iterations (LoRA, KL to the reference) under torchrun; writes the gathered advantages and updated weights (test_distributed.py).

    torchrun --nproc_per_node N tests/dist_worker.py OUT.pt
"""
import dataclasses
import os
import sys

import torch

from otca_lib import checkpoint, train
from otca_lib.config import preset, smoke

acc = train.make_accelerator()
# 3 prompts x 2 samples over 2 processes: the middle prompt's group spans both processes.
cfg = dataclasses.replace(smoke(preset("tiny-sd3")), iterations=2, lora_rank=4, beta=0.01, learning_rate=1e-3,
                          prompts_per_iteration=3, group_size=2,
                          eval_every=0, eval_samples=3, rewards={"brightness": 1.0},  # continuous: JPEG sizes jump with 1-ulp pixel changes
                          optimizer_steps_per_iteration=1, train_micro_batch=4, output_dir=sys.argv[1] + ".run")
captured = {}
original = train.advantage


def capture(method, inp):
    adv, diag = original(method, inp)
    captured.setdefault("adv", acc.gather(adv.contiguous()))  # of the first iteration
    return adv, diag


train.advantage = capture
t = train.Trainer(cfg, acc, log=False)
names = {id(p): n for n, p in t.policy.unwrapped.named_parameters()}
# the all-reduced gradient as the optimizer sees it (Adam's update is scale-invariant: compare grads too)


def grads_hook(opt, *args):
    if "grads" not in captured:
        captured["grads"] = {names[id(p)]: p.grad.detach().clone()
                             for g in opt.param_groups for p in g["params"] if p.grad is not None}


t.optimizer.optimizer.register_step_pre_hook(grads_hook)
evaluation = t.evaluate(0)  # 3 held-out samples: not a multiple of 2 processes
t.iteration(0)
weights = checkpoint.trainable_state(t.policy)
t.iteration(1)  # a second iteration: DDP raises here if a trained weight got no gradient
if acc.is_main_process:
    torch.save({"world_size": acc.num_processes, "adv": captured["adv"].cpu(),
                "weights": weights,
                "grads": captured["grads"], "lr": cfg.learning_rate, "eval": evaluation}, sys.argv[1])
acc.wait_for_everyone()
acc.end_training()  # destroys the process group: exiting with gloo threads alive aborts
# Even after that, gloo's worker threads can still hold tensors that the interpreter's teardown frees: under load a
# rank aborted there ("terminate called without an active exception", exit -6) after its results were complete (CI,
# 2026-12-07). Everything is written by now, so leave without the teardown.
sys.stdout.flush(), sys.stderr.flush()
os._exit(0)
