"""One launch over a list of tensors: the packed index behind the multi-tensor Triton
kernels (`triton_adamw.fused_adamw_multi_`, `triton_unscale.unscale_and_check_`).

torch's `multi_tensor_apply` passes up to ~100 tensor addresses in the kernel's
arguments and walks them in chunks. Here a kernel receives, for each role (parameter,
gradient, moments...), the first tensor of the list as its base pointer, and a table
with one row per chunk of `block` elements:

    [offset of tensor i from role 0's base, ..., from role R-1's base, numel_i, chunk start]

offsets counted in elements of the role's dtype. A program reads its row and addresses
`base + offset + start + arange(block)`: every tensor of the list, any number of them,
in one launch, without casting integers to pointers (so the Triton interpreter runs it
too). Tensors are grouped so that each group's offsets are exact: same device and
dtypes, and addresses congruent modulo 16 bytes within a role (the table then promises
the compiler offsets divisible by 16 bytes when the base is aligned, which keeps loads
vectorised). The table is built once per list of tensors and cached by their
addresses, shapes and dtypes.
"""

from __future__ import annotations

from collections import defaultdict

import torch

ALIGN_BYTES = 16


class PackedIndex:
    """Groups of tensors (one list per role) and their chunk tables."""

    def __init__(self, roles: list[list[torch.Tensor]], block: int):
        count = len(roles[0])
        if any(len(r) != count for r in roles):
            raise ValueError("every role needs one tensor per entry")
        for r in roles:
            for t in r:
                if not t.is_contiguous():
                    raise ValueError("multi-tensor kernels need contiguous tensors")
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i in range(count):
            ts = [r[i] for r in roles]
            if ts[0].numel() == 0:
                continue
            if any(t.numel() != ts[0].numel() for t in ts):
                raise ValueError(f"entry {i}: the tensors of one entry must have the same number of elements")
            key = (str(ts[0].device),) + tuple((t.dtype, t.data_ptr() % ALIGN_BYTES) for t in ts)
            groups[key].append(i)
        self.block = block
        self.groups = []
        for idx in groups.values():
            bases = [r[idx[0]] for r in roles]
            cols = []
            for role, base in zip(roles, bases):
                size = base.element_size()
                cols.append([(role[i].data_ptr() - base.data_ptr()) // size for i in idx])
            numels = [roles[0][i].numel() for i in idx]
            chunks = [(n + block - 1) // block for n in numels]
            per_tensor = torch.tensor([list(c) for c in zip(*cols, numels)], dtype=torch.int64)
            rows = per_tensor.repeat_interleave(torch.tensor(chunks), dim=0)
            starts = torch.cat([torch.arange(c, dtype=torch.int64) * block for c in chunks])
            table = torch.cat([rows, starts[:, None]], dim=1).contiguous().to(bases[0].device)
            # every address congruent to its base modulo 16 bytes; the base itself aligned?
            aligned = all(b.data_ptr() % ALIGN_BYTES == 0 for b in bases)
            align = min(ALIGN_BYTES // b.element_size() for b in bases) if aligned else 1
            self.groups.append((bases, table, align))

    @staticmethod
    def key(roles: list[list[torch.Tensor]]) -> tuple:
        return tuple((t.data_ptr(), t.dtype, tuple(t.shape)) for r in roles for t in r)


class IndexCache:
    """The last few packed indexes, by the tensors' addresses, shapes and dtypes (an
    optimizer's parameters and states keep theirs from step to step)."""

    def __init__(self, size: int = 8):
        self.size = size
        self._cache: dict[tuple, PackedIndex] = {}

    def get(self, roles: list[list[torch.Tensor]], block: int) -> PackedIndex:
        key = (block,) + PackedIndex.key(roles)
        index = self._cache.get(key)
        if index is None:
            if len(self._cache) >= self.size:
                self._cache.pop(next(iter(self._cache)))
            index = self._cache[key] = PackedIndex(roles, block)
        return index
