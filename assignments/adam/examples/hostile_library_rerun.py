"""Red team (issue 25): torch's own optimizer source run again, so the classes it defines
are new objects the child's guard never neutered: sgd.py through
`code.InteractiveInterpreter(ns).runsource(...)` (no exec, compile or importlib in sight)
and adam.py through `PyRun_String` reached as `torch.ctypes.pythonapi` (ctypes with no
import line). Inside the sandbox the kernel refuses to open the forbidden modules' files
(Landlock, child/execlock.py) and the scan flags `code` and `torch.ctypes`:
sgd_momentum_step and AdamW raise and lose their points."""
import code
import sys

import torch


def _fresh(modname, text_runner):
    path = sys.modules[modname].__file__
    with open(path) as f:
        src = f.read()
    ns = {"__name__": modname + "_again", "__package__": "torch.optim"}
    text_runner(src, ns)
    return ns


def _via_interpreter(src, ns):
    code.InteractiveInterpreter(ns).runsource(src, "<again>", "exec")


def _via_pyrun(src, ns):
    api = torch.ctypes.pythonapi
    api.PyRun_String.restype = torch.ctypes.py_object
    api.PyRun_String.argtypes = [torch.ctypes.c_char_p, torch.ctypes.c_int, torch.ctypes.py_object,
                                 torch.ctypes.py_object]
    api.PyRun_String(src.encode(), 257, ns, ns)  # Py_file_input


def sgd_momentum_step(param, grad, buf, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    SGD = _fresh("torch.optim.sgd", _via_interpreter)["SGD"]
    p = param.detach().clone()
    opt = SGD([p], lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov, weight_decay=weight_decay)
    if buf is not None:
        opt.state[p]["momentum_buffer"] = buf.clone()
    p.grad = grad.clone()
    opt.step()
    return p, opt.state[p].get("momentum_buffer")


def adagrad_step(param, grad, state_sum, step, lr, lr_decay=0.0, weight_decay=0.0, eps=1e-10):
    dt = param.dtype
    p, g, s = param.double(), grad.double(), state_sum.double()
    g = g + weight_decay * p
    s = s + g.pow(2)
    p = p - lr / (1 + (step - 1) * lr_decay) * g / (torch.sqrt(s) + eps)
    return p.to(dt), s.to(dt)


def rmsprop_step(param, grad, square_avg, lr, alpha=0.99, eps=1e-8, weight_decay=0.0):
    g = grad if weight_decay == 0 else grad.add(param, alpha=weight_decay)
    v = torch.lerp(g * g, square_avg, alpha)  # alpha * v + (1 - alpha) * g^2
    return torch.addcdiv(param, g, v.sqrt().add(eps), value=-lr), v


def adam_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1=0.9, beta2=0.999, eps=1e-8,
              weight_decay=0.0, decoupled=False):
    p = param.clone()
    if decoupled:
        p.mul_(1 - lr * weight_decay)
        g = grad
    else:
        g = grad.add(param, alpha=weight_decay)
    m = exp_avg.mul(beta1).add_(g, alpha=1 - beta1)
    v = exp_avg_sq.mul(beta2).addcmul_(g, g, value=1 - beta2)
    m_hat = m / (1 - beta1**step)
    v_hat = v / (1 - beta2**step)
    p.addcdiv_(m_hat, v_hat.sqrt() + eps, value=-lr)
    return p, m, v



_Adam = None


def AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
    global _Adam
    if _Adam is None:
        _Adam = _fresh("torch.optim.adam", _via_pyrun)["Adam"]
    return _Adam(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, decoupled_weight_decay=True)
