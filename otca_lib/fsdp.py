"""Fully sharded training with torch's FSDP2 (``fully_shard``), on GPUs (NCCL) and on the CPU (gloo) alike.

Config ``fsdp: true`` with several processes (``torchrun --nproc_per_node N`` or ``accelerate launch --multi_gpu``):
the trainer shards the transformer itself instead of letting accelerate wrap it in DDP. Every transformer block
(each child of a ``ModuleList`` whose name ends in ``blocks``: SD3's ``transformer_blocks``, FLUX's
``transformer_blocks`` and ``single_transformer_blocks``, Wan's ``blocks``) becomes one FSDP unit, then the root
takes the remaining weights; each process keeps 1/N of every weight, of its gradient and of its optimizer state
(dim-0 shards, DTensors), and a unit's full weights exist only while that unit runs (all-gathered before its
forward and backward, freed after). Gradients are reduce-scattered and averaged over processes, as DDP averages
them, so the same config trains the same weights sharded or not (tests/test_distributed.py).

Why not accelerate's FSDP plugin: accelerate enables it only for GPU launches (a CPU launch with the FSDP config
silently falls back to DDP), so it could not be tested here; the trainer refuses it with a message naming this path.

Checkpoints stay the same files: checkpoint.py gathers every sharded tensor (``full``) before the main process writes
it and scatters it back on resume (``like``), so a run sharded over N processes resumes sharded over M, or unsharded.
Not supported sharded: gradient_mgda and the conflict probe (they take per-objective gradients with
torch.autograd.grad, which does not pass through FSDP's gradient reduce-scatter); config.validate refuses them.
"""

from __future__ import annotations

import torch
from torch.distributed.tensor import DTensor, distribute_tensor


def shard(module: torch.nn.Module, device: torch.device, num_processes: int) -> int:
    """Apply fully_shard in place to every transformer block of `module`, then to `module` itself, over one mesh of
    all processes (the process group must exist: the Accelerator made it). -> the number of FSDP units."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (num_processes,))
    blocks = [b for name, m in module.named_modules() if isinstance(m, torch.nn.ModuleList) and name.endswith("blocks")
              for b in m]
    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(module, mesh=mesh)
    module.register_forward_hook(_reshard_without_backward)
    return len(blocks) + 1


def _reshard_without_backward(module, args, output) -> None:
    """FSDP2 keeps the root unit's weights gathered after its forward, expecting the backward to free them. After a
    forward without grad (sampling, the KL reference) no backward comes, and while they stay gathered,
    module.parameters() yields those full tensors instead of the sharded parameters that the optimizer and the
    checkpoints hold (their storage is freed later: a crash, or a silent zero gradient). Free them at once."""
    if not torch.is_grad_enabled():
        module.reshard()


def is_sharded(params) -> bool:
    return any(isinstance(p, DTensor) for p in params)


def full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a sharded one (a collective: every process must call it, in the same order); others as
    they are."""
    return t.full_tensor() if isinstance(t, DTensor) else t


def local(t: torch.Tensor) -> torch.Tensor:
    """This process's part of a sharded tensor (no communication); others as they are."""
    return t.to_local() if isinstance(t, DTensor) else t


def like(ref: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """`value` (a whole tensor, the same on every process: read from the same file) laid out as `ref`: this
    process's shard when ref is sharded (cut locally, no communication), else value itself."""
    if isinstance(ref, DTensor):
        return distribute_tensor(value.to(device=ref.device, dtype=ref.dtype), ref.device_mesh, ref.placements,
                                 src_data_rank=None)
    return value
