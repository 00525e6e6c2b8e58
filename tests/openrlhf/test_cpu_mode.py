"""CPU mode pieces that need no Ray: the TCP weight broadcast."""

import pickle

import torch

from openrlhf_patches.cpu_mode import TcpBroadcastGroup


class FakeStore:
    """vLLM StatelessProcessGroup.broadcast_obj semantics: the sender publishes, others read."""

    def __init__(self, rank: int, box: list) -> None:
        self.rank, self.box = rank, box

    def broadcast_obj(self, obj, src):
        if self.rank == src:
            self.box.append(pickle.dumps(obj))
            return obj
        return pickle.loads(self.box.pop(0))


def test_broadcast_sends_the_tensor_not_the_flat_buffer_it_views():
    flat = torch.arange(1_000_000, dtype=torch.float32)  # as a DeepSpeed flat param buffer
    param = flat[10:20].view(2, 5)
    box: list = []
    TcpBroadcastGroup(FakeStore(0, box)).broadcast(param, src=0)
    assert len(box[0]) < 10_000  # 10 floats, not the 4 MB storage
    received = torch.empty(2, 5)
    TcpBroadcastGroup(FakeStore(1, box)).broadcast(received, src=0)
    assert torch.equal(received, param)
