"""Two processes (torchrun, gloo on the CPU) give the same advantages and update as one process."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

WORKER = Path(__file__).with_name("dist_worker.py")


def run(nproc: int, out: Path) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
           str(29500 + nproc + os.getpid() % 1000), str(WORKER), str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(WORKER.parents[1])}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(out)


def test_two_processes_match_one(tmp_path):
    one, two = run(1, tmp_path / "one.pt"), run(2, tmp_path / "two.pt")
    assert one["world_size"] == 1 and two["world_size"] == 2
    assert one["eval"].keys() == two["eval"].keys() and "eval/brightness/mean" in one["eval"]
    for k, v in one["eval"].items():  # 3 evaluation samples over 2 processes: padded, gathered, padding dropped
        assert abs(two["eval"][k] - v) < 1e-5, k
    torch.testing.assert_close(two["adv"], one["adv"], rtol=0, atol=1e-4)
    assert one["adv"].abs().sum() > 0
    assert one["grads"].keys() == two["grads"].keys() and one["grads"]
    for k, g in one["grads"].items():  # the gradient averaged over processes = the one-process gradient
        torch.testing.assert_close(two["grads"][k], g, rtol=1e-3, atol=1e-7)
    for k, w in one["weights"].items():  # Adam maps gradients near 0 to +-lr: allow 5 % of one step there
        torch.testing.assert_close(two["weights"][k], w, rtol=0, atol=0.05 * one["lr"])


def test_accelerate_launch_with_the_repository_ddp_config(tmp_path):
    """The shipped DDP config file, on 2 CPU processes (gloo), runs a smoke training run to its checkpoint."""
    cfg = WORKER.parents[1] / "configs" / "accelerate" / "ddp.yaml"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(cfg), "--num_processes", "2",
           "--main_process_port", str(29700 + os.getpid() % 200), "-m", "otca_lib.train", "--preset", "tiny-sd3",
           "--smoke", "--output-dir", str(tmp_path / "run")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(WORKER.parents[1])}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "num_processes=2" in proc.stdout
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text().strip() == "iter_000002"


def test_a_stuck_worker_ends_the_job_after_the_configured_timeout_naming_it(tmp_path):
    import time

    worker = WORKER.with_name("stuck_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(29700 + os.getpid() % 100), str(worker), str(tmp_path / "run")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(WORKER.parents[1])}
    start = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    out = proc.stdout + proc.stderr
    # torch's default would wait 30 minutes; the worker sleeps 300 s: ending well before either is the timeout
    assert proc.returncode != 0 and time.time() - start < 120
    # rank 0 says where it waited and where rank 1 is, and exits with the trainer's "error:" line, no traceback
    assert "error: rank 0: the collective 'iteration 0: reward gather' failed" in out, out[-3000:]
    assert "rank 1 is still at 'iteration 0: reward'" in out and "Timed out" in out


def test_a_dead_worker_ends_the_job_and_the_run_resumes_from_its_last_checkpoint(tmp_path):
    """Rank 1 is killed (SIGKILL) in iteration 2: the launcher stops rank 0 within seconds (no hang), the checkpoint of
    iteration 2 is intact, and resuming from it on 2 processes ends with the same weights, bit for bit, as a run
    that was never interrupted."""
    import time

    from safetensors.torch import load_file

    worker = WORKER.with_name("dying_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(WORKER.parents[1])}
    port = 29650 + os.getpid() % 40

    def launch(*args: str, script: Path = worker):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
               str(script), *args]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)

    start = time.time()
    died = launch(str(tmp_path / "run"))
    assert died.returncode != 0 and time.time() - start < 120, died.stderr[-2000:]
    assert "SIGKILL" in died.stderr and "exitcode  : -9" in died.stderr
    ckpts = tmp_path / "run" / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == "iter_000002"
    whole = launch(str(tmp_path / "whole"), "--no-death")
    assert whole.returncode == 0, whole.stderr[-2000:]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           "-m", "otca_lib.train", "--resume", str(tmp_path / "run"), "--iterations", "4"]
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = load_file(str(tmp_path / "whole" / "checkpoints" / "iter_000004" / "trainable.safetensors"))
    b = load_file(str(ckpts / "iter_000004" / "trainable.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_machines_on_one_host_match_one_process(tmp_path):
    """The shipped multi-node config, launched as two "machines" on 127.0.0.1 with one process each (gloo on the
    CPU, accelerate's c10d rendezvous), trains the same weights as one process (to Adam's sign noise)."""
    from safetensors.torch import load_file

    cfg = WORKER.parents[1] / "configs" / "accelerate" / "multinode.yaml"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(WORKER.parents[1])}
    train = ["-m", "otca_lib.train", "--preset", "tiny-sd3", "--smoke", "--set", "eval_every=0"]
    port = str(29800 + os.getpid() % 150)
    machines = [subprocess.Popen([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(cfg),
                                  "--num_machines", "2", "--num_processes", "2", "--machine_rank", str(rank),
                                  "--main_process_ip", "127.0.0.1", "--main_process_port", port,
                                  *train, "--output-dir", str(tmp_path / "two")],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    outs = [m.communicate(timeout=300)[0] for m in machines]
    assert [m.returncode for m in machines] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    assert "num_processes=2" in outs[0]
    one = subprocess.run([sys.executable, *train, "--output-dir", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    w1 = load_file(str(tmp_path / "one" / "checkpoints" / "iter_000002" / "trainable.safetensors"))
    w2 = load_file(str(tmp_path / "two" / "checkpoints" / "iter_000002" / "trainable.safetensors"))
    assert w1.keys() == w2.keys() and w1
    lr = 3e-4  # tiny-sd3's learning rate: Adam maps gradients near 0 to +-lr, allow 5 % of one step there
    for k, v in w1.items():
        torch.testing.assert_close(w2[k], v, rtol=0, atol=0.05 * lr)


def test_fsdp_sharded_training_matches_one_process_and_resumes_exactly(tmp_path):
    """fsdp=true (torch's FSDP2, otca_lib/fsdp.py) on 2 CPU processes (gloo): full fine-tuning with EMA and the KL
    term trains the same weights as one unsharded process over 3 iterations (to Adam's sign noise), the sharded
    checkpoint of iteration 2 resumes on 2 processes to bit-identical weights and optimizer state, and on one
    process to float rounding; LoRA, sharded, matches one process too."""
    from safetensors.torch import load_file

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(WORKER.parents[1])}
    port = iter(range(29900 + os.getpid() % 50 * 2, 30100))

    def train(nproc: int, *args: str) -> str:
        launch = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(next(port))]
                  if nproc == 2 else [sys.executable])
        proc = subprocess.run([*launch, "-m", "otca_lib.train", *args], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        return proc.stdout

    def files(run: Path, it: int = 3) -> dict:
        ckpt = run / "checkpoints" / f"iter_{it:06d}"
        return {**load_file(str(ckpt / "trainable.safetensors")), **load_file(str(ckpt / "training_state.safetensors"))}

    full = ["--preset", "tiny-sd3", "--smoke", "--iterations", "3", "--set", "eval_every=0", "checkpoint_every=1",
            "keep_checkpoints=0", "ema_decay=0.9", "beta=0.01"]
    assert "fsdp: 3 units sharded over 2 processes" in train(2, *full, "fsdp=true", "--output-dir", str(tmp_path / "two"))
    train(1, *full, "--output-dir", str(tmp_path / "one"))
    one, two = files(tmp_path / "one"), files(tmp_path / "two")
    assert one.keys() == two.keys() and len(one) > 100  # weights, Adam's moments, the EMA
    lr = 3e-4  # tiny-sd3's learning rate: Adam maps gradients near 0 to +-lr, allow 5 % of one step there
    for k, v in one.items():
        torch.testing.assert_close(two[k], v, rtol=0, atol=0.05 * lr)
    for nproc in (2, 1):  # resume the sharded checkpoint of iteration 2 sharded, and unsharded
        copy = tmp_path / f"resumed{nproc}"
        shutil.copytree(tmp_path / "two", copy)
        train(nproc, "--resume", str(copy / "checkpoints" / "iter_000002"), "--iterations", "3")
        for k, v in files(copy).items():
            if nproc == 2:
                assert torch.equal(v, two[k]), k
            else:
                torch.testing.assert_close(v, two[k], rtol=0, atol=1e-6)
    lora = ["--preset", "tiny-sd3", "--smoke", "--set", "eval_every=0", "lora_rank=4", "beta=0.01"]
    train(2, *lora, "fsdp=true", "--output-dir", str(tmp_path / "lora2"))
    train(1, *lora, "--output-dir", str(tmp_path / "lora1"))
    a, b = files(tmp_path / "lora1", 2), files(tmp_path / "lora2", 2)
    assert a.keys() == b.keys() and any("lora" in k for k in a)
    for k, v in a.items():
        torch.testing.assert_close(b[k], v, rtol=0, atol=0.05 * lr)
