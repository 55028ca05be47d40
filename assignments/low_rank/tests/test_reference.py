"""The reference of `low_rank` against PyTorch's own and against a re-derivation. Run by
`dlopt check low_rank`."""

from __future__ import annotations

import math

import torch

from autograder.judge.suite import generator, randn
from reference import low_rank as ref


def test_lora_forward_and_backward_are_autograds():
    g = generator("ref-lora")
    x, W, b = randn(g, 9, 14, dtype=torch.float64), randn(g, 11, 14, dtype=torch.float64), randn(g, 11, dtype=torch.float64)
    A, B, dy = randn(g, 3, 14, dtype=torch.float64), randn(g, 11, 3, dtype=torch.float64), randn(g, 9, 11, dtype=torch.float64)
    xs, As, Bs = (t.clone().requires_grad_(True) for t in (x, A, B))
    y = torch.nn.functional.linear(xs, W + 2.5 * (Bs @ As), b)  # the merged layer: an independent formulation
    torch.testing.assert_close(ref.lora_forward(x, W, b, A, B, 2.5), y.detach(), rtol=1e-12, atol=1e-12)
    y.backward(dy)
    for mine, theirs in zip(ref.lora_backward(dy, x, W, A, B, 2.5), (xs.grad, As.grad, Bs.grad)):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ref.lora_unmerge(ref.lora_merge(W, A, B, 2.5), A, B, 2.5), W, rtol=0, atol=1e-13)


def test_lora_A_is_peft_initialisation():
    # peft: nn.init.kaiming_uniform_(self.lora_A[name].weight, a=math.sqrt(5)); here with the
    # contract's generator. kaiming_uniform_ with a = sqrt(5) is U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    A = ref.lora_A_init(4, 25, seed=7)
    again = torch.empty(4, 25).uniform_(-1 / math.sqrt(25), 1 / math.sqrt(25), generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(A, again, rtol=1e-6, atol=0)
    assert torch.equal(A, ref.lora_A_init(4, 25, seed=7))


def test_lora_linear_is_linear_plus_the_low_rank_term():
    g = generator("ref-module")
    base = torch.nn.Linear(6, 5)
    m = ref.LoRALinear(base, 2, 4.0, seed=3)
    assert [n for n, p in m.named_parameters() if p.requires_grad] == ["lora_A", "lora_B"]
    x = randn(g, 2, 3, 6)
    torch.testing.assert_close(m(x), base(x))
    with torch.no_grad():
        m.lora_B.copy_(randn(g, 5, 2))
        y = m(x)
        torch.testing.assert_close(y, base(x) + 2.0 * (x @ m.lora_A.T) @ m.lora_B.T)
        m.merge()
        torch.testing.assert_close(m(x), y, rtol=1e-5, atol=1e-5)
        m.unmerge()
        torch.testing.assert_close(m(x), y, rtol=1e-5, atol=1e-5)


def _galore_rederived(param, grads, lr, rank, T, scale, betas, eps, wd):
    """GaLore from the paper's algorithm box, written apart from the reference: the kept
    singular vectors as the rows of a basis (sign-fixed entry by entry), the gradient's
    coordinates in it, Adam's moments in those coordinates (carried unchanged when the
    basis changes), the normalisation entry by entry, the step lifted back by the basis."""
    b1, b2 = betas
    p = param.double().clone()
    m, n = p.shape
    M = V = None
    for t, G in enumerate(grads, start=1):
        if (t - 1) % T == 0:
            U, S, Vh = torch.linalg.svd(G.float(), full_matrices=False)
            basis = Vh[:rank] if m >= n else U[:, :rank].T        # rows: the kept singular vectors
            for i in range(rank):
                j = int(basis[i].abs().argmax())
                if basis[i, j] < 0:
                    basis[i] = -basis[i]
            basis = basis.double()
        coords = G.double() @ basis.T if m >= n else basis @ G.double()   # [m, rank] or [rank, n]
        M = (1 - b1) * coords if M is None else b1 * M + (1 - b1) * coords
        V = (1 - b2) * coords ** 2 if V is None else b2 * V + (1 - b2) * coords ** 2
        mhat_ratio = math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        Nrm = torch.empty_like(M)
        for idx in range(M.numel()):
            Nrm.view(-1)[idx] = M.view(-1)[idx] / (math.sqrt(V.view(-1)[idx]) + eps)
        full = Nrm @ basis if m >= n else basis.T @ Nrm
        p = p - lr * mhat_ratio * scale * full
        p = p * (1 - lr * wd)
    return p


def test_galore_reference_is_the_rederivation():
    for shape, rank, T in [((14, 6), 2, 3), ((6, 14), 3, 2), ((9, 9), 4, 1)]:
        g = generator(f"ref-galore-{shape}")
        param, grads = randn(g, *shape), [randn(g, *shape) for _ in range(7)]
        p, state = param.double(), {}
        for grad in grads:
            p, state = ref.galore_adamw_step(p, grad, state, lr=0.03, rank=rank, update_proj_gap=T, scale=0.25,
                                             betas=(0.9, 0.999), eps=1e-6, weight_decay=0.1)
        want = _galore_rederived(param, grads, 0.03, rank, T, 0.25, (0.9, 0.999), 1e-6, 0.1)
        torch.testing.assert_close(p, want, rtol=1e-12, atol=1e-12)
        assert state["step"] == 7 and all(v.numel() < shape[0] * shape[1] for k, v in state.items() if k != "step")
