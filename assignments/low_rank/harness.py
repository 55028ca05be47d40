"""Trusted tasks of `low_rank`: they run in the sandbox next to the student's code
(reached through `ns`, the student's namespace) and return only data. The judge runs the
same task in its own process with reference/low_rank.py's `LoRALinear` as `ns["LoRALinear"]`.
"""

from __future__ import annotations

import torch


def lora_linear(ns, W, b, r, alpha, seed, x, B_values, G):
    """Wrap torch.nn.Linear(W, b) in the student's LoRALinear(base, r, alpha, seed) and
    report: the initial lora_A / lora_B; which parameters require gradients (by name);
    the output at initialisation; with lora_B set to `B_values`, the output, the gradients
    of sum(output * G) (lora_A, lora_B, and whether the base got any); after merge() the
    output and the base weight; after unmerge() the output and the base weight."""
    d_out, d_in = W.shape
    base = torch.nn.Linear(d_in, d_out, bias=b is not None, device=W.device, dtype=W.dtype)
    with torch.no_grad():
        base.weight.copy_(W)
        if b is not None:
            base.bias.copy_(b)
    module = ns["LoRALinear"](base, r, alpha, seed)
    out = {
        "A0": module.lora_A.detach().clone(),
        "B0": module.lora_B.detach().clone(),
        "trainable": sorted(name for name, p in module.named_parameters() if p.requires_grad),
        "base_is_kept": module.base is base if hasattr(module, "base") else None,
        "y_init": module(x).detach().clone(),
    }
    with torch.no_grad():
        module.lora_B.copy_(B_values)
    y = module(x)
    (y * G).sum().backward()
    out["y"] = y.detach().clone()
    out["dA"] = None if module.lora_A.grad is None else module.lora_A.grad.detach().clone()
    out["dB"] = None if module.lora_B.grad is None else module.lora_B.grad.detach().clone()
    out["base_grad"] = any(p.grad is not None for p in base.parameters())
    with torch.no_grad():
        module.merge()
        out["y_merged"] = module(x).detach().clone()
        out["W_merged"] = base.weight.detach().clone()
        module.unmerge()
        out["y_unmerged"] = module(x).detach().clone()
        out["W_unmerged"] = base.weight.detach().clone()
    return out


def merge_cycles(ns, W, A, B, scaling, cycles):
    """W after `cycles` rounds of lora_unmerge(lora_merge(W, ...), ...), each feeding the next."""
    for _ in range(cycles):
        W = ns["lora_unmerge"](ns["lora_merge"](W, A, B, scaling), A, B, scaling)
    return W
