"""This process's place in a `torchrun` launch (core.distributed builds the launch), and every step of the training
loop that differs with several processes: joining the process group, FSDP2 sharding of the trainable tensors,
averaging gradients once per step, gathering full tensors for checkpoints, agreeing on a cancel, and running the
output-folder checks on rank 0 only. A plain run is world 1, where each of these does nothing (or the one-process
thing), so the loop has a single path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from core.errors import TweetyError
from core.jobs import CancelToken


@dataclass
class Ranks:
    """This process's place in a `torchrun` launch. A plain run is world 1, where every method does nothing (or the
    single-process thing), so the training loop has one path."""

    rank: int = 0
    world: int = 1
    device: str = "cpu"
    owns_group: bool = False  # we started the process group, so we end it

    @staticmethod
    def join(device: str) -> Ranks:
        """Join the process group `torchrun` describes in the environment (WORLD_SIZE, RANK, LOCAL_RANK,
        MASTER_ADDR/PORT): gloo on the CPU, NCCL on GPUs, one GPU per local rank."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return Ranks(device=device)
        import torch
        import torch.distributed as dist

        if device.startswith("cuda"):
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(device)
        owns = not dist.is_initialized()
        if owns:
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        return Ranks(dist.get_rank(), dist.get_world_size(), device, owns)

    def leave(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()

    def shard(self, model, names: set[str]) -> None:
        """FSDP2 (`fully_shard`) over the trainable tensors only: each rank keeps 1/world of them, of their gradients
        and of the optimizer moments (the optimizer is built on the shards). The frozen body is left out
        (`ignored_params`): it is replicated, as it needs neither gradients nor optimizer state. A tied head is the
        embedding parameter itself, so FSDP shards it once and gathers it for both uses."""
        if self.world == 1:
            return
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(self.device.split(":")[0], (self.world,))
        fully_shard(model, mesh=mesh, ignored_params={p for n, p in model.named_parameters() if n not in names})
        # FSDP allocates the gathered (unsharded) tensors at the first gather. Held-out evaluation runs under
        # torch.inference_mode, and the first gather would happen there (before the first step): tensors allocated
        # in inference mode cannot be saved for backward later. One gather now, outside it, allocates them normally.
        model.unshard()
        model.reshard()

    def shard_like(self, optimizer_state: dict, params: list) -> dict:
        """A full optimizer state dict (from a checkpoint) cut like the sharded parameters: each moment becomes a
        DTensor placed as its parameter (every rank holds the full tensor, so no communication)."""
        if self.world == 1:
            return optimizer_state
        from torch.distributed.tensor import distribute_tensor

        state = {}
        for index, values in optimizer_state["state"].items():
            p = params[index]
            state[index] = {
                k: distribute_tensor(v.to(self.device), p.device_mesh, p.placements, src_data_rank=None)
                if v.shape == p.shape
                else v
                for k, v in values.items()
            }
        return {"state": state, "param_groups": optimizer_state["param_groups"]}

    def sync_gradients(self, model, last_micro_batch: bool) -> None:
        """Gradients are averaged across ranks once per step, after the last micro-batch (accumulated unsharded until
        then), not after each one."""
        if self.world > 1:
            model.set_requires_gradient_sync(last_micro_batch)

    def gather(self, tensor):
        """The whole of a possibly sharded tensor, on the CPU, on rank 0 (None on the others, which only take part:
        every rank calls it)."""
        from torch.distributed.tensor import DTensor

        if isinstance(tensor, DTensor):
            tensor = tensor.full_tensor()
        return tensor.detach().cpu().contiguous() if self.rank == 0 else None

    def step_done(self, loss, cancel: CancelToken | None) -> tuple[float, bool]:
        """(mean loss over the ranks, stop?) after a step. With several ranks: one all-reduce of the rank's loss and
        its cancel flag, so every rank stops after the same step once any rank was asked to (torchrun hands a
        SIGTERM/SIGINT to each worker; core.distributed turns it into a cancel)."""
        if self.world == 1:
            return float(loss), False  # the Reporter honours cancel itself
        import torch
        import torch.distributed as dist

        both = torch.stack(
            [loss.float(), torch.tensor(float(cancel is not None and cancel.cancelled), device=loss.device)]
        )
        dist.all_reduce(both)
        return float(both[0]) / self.world, bool(both[1] > 0)

    def on_rank0(self, fn):
        """Run `fn` (preparing or checking the output folder) on rank 0 only; every rank gets its result — or raises
        its TweetyError, so a refused run stops all ranks at once with the same message."""
        if self.world == 1:
            return fn()
        import torch.distributed as dist

        box = [None]
        if self.rank == 0:
            try:
                box[0] = ("ok", fn())
            except TweetyError as e:
                box[0] = ("error", (e.what, str(e.path) if e.path is not None else None, e.line, e.fix))
        dist.broadcast_object_list(box, src=0)
        kind, value = box[0]
        if kind == "error":
            what, path, line, fix = value
            raise TweetyError(what, path=path, line=line, fix=fix)
        return value

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()
