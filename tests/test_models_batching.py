"""models.batching: out-of-memory back-off, batch size and worker knobs."""

import pytest
import torch

from capsearch.models.batching import OomBackoff, resolve_batch_size, resolve_num_workers

CPU = torch.device("cpu")


def test_backoff_halves_on_out_of_memory_and_keeps_order():
    calls = []

    def fn(chunk):
        calls.append(len(chunk))
        if len(chunk) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [int(x) * 10 for x in chunk]

    backoff = OomBackoff(8)
    assert backoff(fn, torch.arange(10)) == [x * 10 for x in range(10)]
    assert backoff.limit == 2 and backoff.backoffs == 2
    assert calls[:3] == [8, 4, 2]
    assert backoff(fn, torch.arange(3)) == [0, 10, 20]  # later batches start at the reduced size
    with pytest.raises(ValueError, match="not memory"):
        OomBackoff(4)(lambda chunk: (_ for _ in ()).throw(ValueError("not memory")), torch.arange(4))
    with pytest.raises(torch.OutOfMemoryError):
        OomBackoff(1)(lambda chunk: (_ for _ in ()).throw(torch.OutOfMemoryError("oom")), torch.arange(2))


def test_batch_size_and_worker_knobs():
    assert resolve_batch_size("auto", "caption", CPU, "runtime.batch_size.caption") == 8
    assert resolve_batch_size("auto", "embed_images", torch.device("cuda"), "x") == 1024
    assert resolve_batch_size(12, "caption", CPU, "x") == 12
    for bad in (0, -3, "many", 2.5):
        with pytest.raises(ValueError, match=r"runtime\.batch_size\.caption: expected a positive integer or 'auto'"):
            resolve_batch_size(bad, "caption", CPU, "runtime.batch_size.caption")
    assert resolve_num_workers("auto", CPU) == 0 and resolve_num_workers(3, CPU) == 3
    assert resolve_num_workers("auto", torch.device("cuda")) >= 0
    with pytest.raises(ValueError, match=r"runtime\.num_workers"):
        resolve_num_workers(-1, CPU)
