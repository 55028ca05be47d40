"""A correct solution (correct_alternative.py) except that importance_sampled_gradient
raises an exception whose message is made of terminal escape sequences: clear screen and
a fake "SCORE 100 / 100", a window title (OSC 0), a clipboard write (OSC 52), a carriage
return, backspaces, a C1 CSI and a bidi override. That function's points are lost; every
printed or rendered copy of the message shows the sequences (`\\x1b`), never obeys them."""
import torch

SCHEMES = {"uniform", "random_reshuffling", "shuffle_once", "cyclic"}


def _perm(n, g):
    return torch.argsort(torch.rand(n, generator=g))


def sample_batches(n, batch_size, num_batches, scheme, seed):
    if scheme not in SCHEMES or batch_size > n:
        raise ValueError("bad scheme or batch size")
    g = torch.Generator().manual_seed(seed)
    per_epoch = n // batch_size
    once = _perm(n, g) if scheme == "shuffle_once" else None
    rows = []
    for k in range(num_batches):
        if scheme == "uniform":
            rows.append(torch.randint(n, (batch_size,), generator=g))
            continue
        if k % per_epoch == 0:
            order = {"random_reshuffling": lambda: _perm(n, g), "shuffle_once": lambda: once,
                     "cyclic": lambda: torch.arange(n)}[scheme]()
        j = k % per_epoch
        rows.append(order[j * batch_size:(j + 1) * batch_size])
    return torch.stack(rows).long() if rows else torch.zeros(0, batch_size, dtype=torch.long)


def importance_probabilities(lipschitz):
    if not bool(torch.all(torch.isfinite(lipschitz) & (lipschitz > 0))):
        raise ValueError("need positive, finite constants")
    return lipschitz / torch.sum(lipschitz)


# Clear the screen, home the cursor and print a fake score; set the terminal's title; write
# the clipboard (OSC 52: "echo hi"); a carriage return and backspaces over the line; C1 CSI;
# a right-to-left override.
ESCAPES = ("\x1b[2J\x1b[H\x1b[1;32m SCORE 100 / 100 \x1b[0m\x1b]0;pwned\x07"
           "\x1b]52;c;ZWNobyBoaQ==\x07\rall tests passed\x08\x08\x9b31m\u202edesrever")


def importance_sampled_gradient(per_sample_grads, probs, batch_size, seed):
    raise RuntimeError(ESCAPES)
    g = torch.Generator().manual_seed(seed)
    cdf = torch.cumsum(probs, 0)
    idx = torch.searchsorted(cdf, torch.rand(batch_size, generator=g, dtype=cdf.dtype) * cdf[-1]).clamp(max=len(probs) - 1)
    weights = 1.0 / (len(probs) * probs[idx])
    return (weights[:, None] * per_sample_grads[idx]).sum(0) / batch_size


def sgd_least_squares(A, y, x0, lr, num_epochs, batch_size, scheme, seed):
    n = len(y)
    steps = n // batch_size
    B = sample_batches(n, batch_size, num_epochs * steps, scheme, seed)
    lrs = list(lr) if isinstance(lr, (list, tuple)) else [lr] * len(B)
    x = x0.to(torch.float64).clone()
    loss = lambda x: 0.5 * torch.mean((A.double() @ x - y.double()) ** 2)
    out = [loss(x)]
    for e in range(num_epochs):
        for s in range(steps):
            t = e * steps + s
            S = B[t]
            r = A[S].double() @ x - y[S].double()
            x -= lrs[t] * torch.einsum("bd,b->d", A[S].double(), r) / batch_size
        out.append(loss(x))
    return torch.stack(out).double()
