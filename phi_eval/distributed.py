"""Several processes (CPU cores or GPUs) evaluating one run: who they are, each one's share of a task's
docs, and the records gathered back to the main process.

`phi-eval run` started by `accelerate launch` or `torchrun` (WORLD_SIZE > 1 in the environment) joins the
launcher's process group through accelerate: gloo on CPU, NCCL on GPUs, each rank's model on its own
device. Doc i goes to rank i mod N, so slow and fast stretches of a benchmark spread evenly; a task's
per-doc records do not depend on which other docs share the call (the hf: backend is batch-invariant and
keys each sampled row's generator by its own request), so the gathered records, put back in doc order,
equal a single process's and the main process alone computes metrics and writes files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Processes:
    rank: int = 0
    count: int = 1
    device: str | None = None  # this rank's accelerator under a launcher, e.g. "cuda:1"; None: --device decides

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.count > 1

    def shard(self, docs: list[dict]) -> list[dict]:
        """This rank's share of a task's docs."""
        return docs[self.rank::self.count]

    def gather(self, records: list[dict], docs: list[dict]) -> list[dict]:
        """Every rank's records, in the order of `docs` (each doc's own records keep their order)."""
        if not self.sharded:
            return records
        from accelerate.utils import gather_object

        position = {doc["doc_id"]: i for i, doc in enumerate(docs)}
        return sorted(gather_object(records), key=lambda record: position[record["doc_id"]])

    def barrier(self) -> None:
        if self.sharded:
            from accelerate import PartialState

            PartialState().wait_for_everyone()

    def device_for(self, requested: str) -> str:
        """The device a rank loads its model on: its own GPU unless --device names CPU (or one GPU for all)."""
        if self.device and self.device.startswith("cuda") and requested in ("auto", "cuda"):
            return self.device
        return requested

    def close(self) -> None:
        if self.sharded:
            from accelerate import PartialState

            PartialState().destroy_process_group()


def current() -> Processes:
    """The processes of this run: one, or the group a launcher started (WORLD_SIZE, RANK, ... in the env)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Processes()
    import torch
    from accelerate import PartialState

    # Without a GPU, the group is CPU processes over gloo (`accelerate launch --cpu` itself starts only one).
    state = PartialState(cpu=not torch.cuda.is_available())
    return Processes(rank=state.process_index, count=state.num_processes, device=str(state.device))
