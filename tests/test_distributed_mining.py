"""Sharded mining: two CPU processes (gloo) give exactly the single-process result."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from zf_attr.analysis.atlas.distributed import current_shard, rank_path
from zf_attr.analysis.atlas.mining import mine_top_k
from zf_attr.analysis.atlas.topk import TopKActivations


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 5, 3)).eval()


def data() -> TensorDataset:
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(11, 3, 12, 12, generator=generator)  # 11 images: the shards are uneven (6 and 5)
    images[7] = images[2]  # identical images: ties across shards, broken by image id
    return TensorDataset(images, torch.zeros(11, dtype=torch.long))


CASES = {
    "dataset": lambda d: d,
    "loader": lambda d: DataLoader(d, batch_size=1),
    "stream": lambda d: [d[i][0] for i in range(len(d))],
    "tensor": lambda d: d.tensors[0],
}


def _worker(rank: int, world_size: int, port: int, folder: str) -> None:
    # as torchrun sets them: mine_top_k initialises the process group itself
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    model = tiny_net()
    try:
        for name, make in CASES.items():
            for one_per_image in (True, False):
                mined = mine_top_k(
                    model,
                    "3",
                    make(data()),
                    k=4,
                    one_per_image=one_per_image,
                    batch_size=1,
                    checkpoint=Path(folder) / f"{name}-{one_per_image}.pt",
                    show_progress=False,
                )
                mined.save(Path(folder) / f"{name}-{one_per_image}-rank{rank}.pt")
        assert current_shard(None) == (rank, world_size)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_give_the_single_process_result(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' setting; batches of one image, as in the workers
    try:
        model = tiny_net()
        for name, make in CASES.items():
            for one_per_image in (True, False):
                single = mine_top_k(
                    model, "3", make(data()), k=4, one_per_image=one_per_image, batch_size=1, show_progress=False
                )
                for rank in range(2):
                    sharded = TopKActivations.load(tmp_path / f"{name}-{one_per_image}-rank{rank}.pt")
                    assert sharded.equal(single), (name, one_per_image, rank)
                merged_file = TopKActivations.load(tmp_path / f"{name}-{one_per_image}.pt")
                assert merged_file.equal(single)
                # each rank's own checkpoint holds its shard: positions rank::2
                for rank in range(2):
                    own = TopKActivations.load(rank_path(tmp_path / f"{name}-{one_per_image}.pt", rank, 2))
                    assert own.images_seen == (6, 5)[rank]
                    assert all(int(i) % 2 == rank for i in own.image_ids[own.filled])
    finally:
        torch.set_num_threads(threads)


def test_not_distributed_by_default_and_explicit_request_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert current_shard(None) is None and current_shard(False) is None
    with pytest.raises(ValueError, match="torchrun"):
        mine_top_k(tiny_net(), "3", data(), k=1, distributed=True, show_progress=False)
    with pytest.raises(TypeError, match="distributed"):
        current_shard("yes")  # type: ignore[arg-type]


_RELEASE_CHECK = """
import os, sys, weakref
import torch.distributed as dist
from zf_attr.analysis.atlas.distributed import init_from_env
assert "torch.distributed.nn" not in sys.modules  # else this process cannot show the fault
init_from_env("gloo")
import torchvision  # imports torch._dynamo and torch.distributed.nn, as a model or transform does mid-run
group = weakref.ref(dist.group.WORLD)
dist.destroy_process_group()
names = [open(f"/proc/self/task/{task}/comm").read().strip() for task in os.listdir("/proc/self/task")]
print(group() is None, [name for name in names if "gloo" in name])
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads thread names from /proc")
def test_destroying_the_group_stops_its_threads_after_later_imports(tmp_path: Path) -> None:
    # a group kept alive past destroy_process_group left gloo threads that aborted the process at exit (SIGABRT)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    environment = {**os.environ, "RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
    result = subprocess.run(
        [sys.executable, "-c", _RELEASE_CHECK], env=environment, cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[0] == "True []"
