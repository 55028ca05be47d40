"""Runtime guard for the sandbox child: make an assignment's forbidden routines unusable.

The child calls install() once, after `import torch` and before the harness or any
student code is loaded. Nothing it installs can be undone from Python: dispatcher
registrations are made through a library handle that no Python object refers to, and
autograd is closed at the C++ engine's own gate. What remains open, and why, is in the
README's threat model (source re-executed from disk, ctypes; both flagged statically).
Uses ctypes itself (trusted code, before the student's); the student's use of ctypes is
flagged by the judge's static scan.

    install(op_patterns, block_autograd) -> dict

op_patterns entries:
  * "ns::name" / "ns::name.overload" globs (fnmatch) -> dispatcher-level block of every
    matching operator overload, e.g. "aten::_foreach_*", "aten::*softmax*", "c10d::*".
  * dotted Python names / globs, e.g. "torch.optim.AdamW", "torch.optim.adamw",
    "torch.nn.functional.cross_entropy" -> Python-level neutering (best effort): Python
    functions get a raising __code__ in place, classes get their methods neutered,
    modules get every function/class defined in them neutered; builtins are swapped out
    of module dicts by identity (their real enforcement is the dispatcher block).
"""

from __future__ import annotations

import ctypes
import fnmatch
import gc
import importlib
import time
import types
import warnings

import torch

_C = torch._C
_FORBIDDEN = "forbidden by the assignment: "
_installed: dict | None = None
_incref = ctypes.pythonapi.Py_IncRef
_incref.argtypes = [ctypes.py_object]
_type_modified = ctypes.pythonapi.PyType_Modified
_type_modified.argtypes = [ctypes.py_object]


def _leak(obj) -> None:
    """Keep obj alive forever with a reference that no Python object holds."""
    _incref(obj)


# ----------------------------------------------------------------- dispatcher level

def _blocker(label: str):
    msg = _FORBIDDEN + label

    def _blocked(*args, **kwargs):
        raise RuntimeError(msg)
    return _blocked


def _parsable(k: str) -> bool:
    try:
        _C._dispatch_key_parse(k)
        return True
    except Exception:
        return False


_KEYS = [k for k in _C.DispatchKey.__members__ if k not in ("Undefined", "CatchAll") and _parsable(k)]


def _op_matches(qualname: str, patterns: list[str]) -> bool:
    base = qualname.split(".", 1)[0]
    return any(fnmatch.fnmatchcase(qualname, p) or fnmatch.fnmatchcase(base, p) for p in patterns)


def _block_ops(patterns: list[str]) -> dict:
    if not patterns:
        return {"ops": [], "registrations": 0}
    names = sorted(n for n in _C._dispatch_get_all_op_names() if _op_matches(n, patterns))
    libs: dict[str, object] = {}
    regs = 0
    per_op = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for q in names:
            ns, name = q.split("::", 1)
            keys = [k for k in _KEYS if _C._dispatch_has_kernel_for_dispatch_key(q, k)]
            if not keys:                    # no kernel at all (e.g. CUDA-only op in a CPU build):
                keys = ["CompositeImplicitAutograd"]   # claim the catch-all slot anyway
            if ns not in libs:
                libs[ns] = _C._dispatch_library("IMPL", ns, "", "<autograder guard>", 0)
            fn = _blocker(q)
            for k in keys:
                libs[ns].impl(name, k, fn, False)
                regs += 1
            per_op[q] = keys
    backends = _block_c10d_backends(names)
    for m in libs.values():           # _DispatchModule is a pybind object, not GC-tracked:
        _leak(m)                      # once leaked, no Python object refers to it, so
    libs.clear()                      # nothing can reach .reset() and the registrations stay
    return {"ops": names, "registrations": regs, "keys": per_op, "c10d_backend_methods": backends}


def _block_c10d_backends(names: list[str]) -> list[str]:
    """c10d::* kernels call Backend methods (ProcessGroupGloo.allreduce...), which Python can
    also call directly, bypassing the dispatcher. Stub the matching pybind methods out."""
    wanted = {q.split("::", 1)[1].split(".")[0].rstrip("_") for q in names if q.startswith("c10d::")}
    if not wanted:
        return []
    wanted |= {"recv_anysource"} if "recv_any_source" in wanted else set()
    try:
        base = _C._distributed_c10d.Backend
    except AttributeError:
        return []
    done, todo = [], [base]
    while todo:
        cls = todo.pop()
        todo.extend(type.__subclasses__(cls))
        for m in list(vars(cls)):
            if m in wanted:
                setattr(cls, m, _blocker(f"{cls.__name__}.{m}"))
                done.append(f"{cls.__name__}.{m}")
    return done


# ------------------------------------------------------------------ autograd level

def _type_dict_ids() -> set[int]:
    ids = set()
    for t in _all_types():
        try:
            ids.add(id(gc.get_referents(t.__dict__)[0]))
        except Exception:
            pass
    return ids


def _swap(mapping: dict[int, tuple[object, object]]) -> dict[int, int]:
    """One pass over every GC-tracked dict (module namespaces, instance dicts, registries,
    copies of module dicts...): replace each mapped object, by identity, with its stub.
    Type dicts are skipped (they need PyType_Modified; handled explicitly where needed)."""
    counts = {k: 0 for k in mapping}
    if not mapping:
        return counts
    skip = _type_dict_ids()
    for d in gc.get_objects():
        if type(d) is not dict or id(d) in skip:
            continue
        for k, v in list(d.items()):
            hit = mapping.get(id(v))
            if hit is not None and hit[0] is v:
                d[k] = hit[1]
                counts[id(v)] += 1
    return counts


_PY_TPFLAGS_IMMUTABLETYPE = 1 << 8
_TP_FLAGS_OFFSET = 21 * ctypes.sizeof(ctypes.c_void_p)     # CPython 3.11 PyTypeObject layout
_TP_CALL_OFFSET = 16 * ctypes.sizeof(ctypes.c_void_p)
_CPP_CALL = None        # address of THPCppFunction_call, recorded at install


def _tp_word(t: type, off: int) -> ctypes.c_ulong:
    return ctypes.c_ulong.from_address(id(t) + off)


def _force_setattr(t: type, name: str, value) -> None:
    """setattr on a static (immutable) type, so that C slots (tp_call...) get updated."""
    flags = _tp_word(t, _TP_FLAGS_OFFSET)
    assert flags.value == t.__flags__, "unexpected PyTypeObject layout"
    was_immutable = flags.value & _PY_TPFLAGS_IMMUTABLETYPE
    flags.value &= ~_PY_TPFLAGS_IMMUTABLETYPE
    try:
        type.__setattr__(t, name, value)
    finally:
        if was_immutable:
            flags.value |= _PY_TPFLAGS_IMMUTABLETYPE
        _type_modified(t)


def _all_types():
    seen, todo = set(), [object]
    while todo:
        t = todo.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        yield t
        try:
            todo.extend(type.__subclasses__(t))
        except TypeError:
            pass


def _node_call(self, *args, **kwargs):
    raise RuntimeError(_FORBIDDEN + "calling autograd graph nodes (grad_fn) directly")


def _run_backward(self, *args, **kwargs):
    raise RuntimeError(_FORBIDDEN + "autograd (backward / torch.autograd.grad / torch.func)")


def _block_autograd() -> dict:
    out = {}
    # 1. C++-level gate: every Engine::execute (Python, TorchScript aten::grad/backward,
    #    torch.func, AOT) consults the compiled-autograd hook first. Install an immutable
    #    C callable that raises when called with no arguments, then make the setter
    #    unreachable so nobody can reset it.
    ca = _C._dynamo.compiled_autograd
    import operator
    ca.set_autograd_compiler(operator.attrgetter("autograd_is_forbidden"), False)
    swaps = {}
    setter = ca.set_autograd_compiler
    swaps[id(setter)] = (setter, _blocker("autograd (compiled autograd setter)"))
    del setter
    # 2. Friendlier error for the Python entry point, patched into the static type's dict.
    eng = type(torch.autograd.Variable._execution_engine)
    real = gc.get_referents(eng.__dict__)[0]
    real["run_backward"] = _run_backward
    _type_modified(eng)
    # 3. grad_fn(g) / next_functions walks: THPCppFunction tp_call. Patch every type whose
    #    tp_call is that C function (generated *Backward types, AccumulateGrad, ...).
    #    The generic "CppFunction" type (C++ nodes without a registered Python type, e.g.
    #    TorchScript's DifferentiableGraphBackward) is created lazily on first use: force it
    #    into existence first, otherwise it appears later, unpatched and callable.
    with torch.enable_grad():
        cu = _C.CompilationUnit("def f(x):\n    return (x * x).tanh() * 2.0\n")
        xx = torch.ones(2, requires_grad=True)
        for _ in range(3):
            yy = cu.f(xx)
        out["generic_node_type"] = type(yy.grad_fn).__name__
        del cu, xx, yy
    probe = (torch.ones(1, requires_grad=True) * 2).grad_fn
    global _CPP_CALL
    cpp_call = _CPP_CALL = _tp_word(type(probe), _TP_CALL_OFFSET).value
    del probe
    patched = 0
    for t in list(_all_types()):
        if t.__flags__ & (1 << 9):      # heap types are mutable anyway; Nodes are static
            continue
        if _tp_word(t, _TP_CALL_OFFSET).value == cpp_call:
            _force_setattr(t, "__call__", _node_call)
            patched += 1
    out["node_types_patched"] = patched
    # 4. Distributed autograd runs its own engine loop (no compiled-autograd check) and
    #    works without RPC: remove its entry points.
    da = getattr(_C, "_distributed_autograd", None)
    for name in ("backward", "_init"):
        f = getattr(da, name, None)
        if f is not None:
            swaps[id(f)] = (f, _blocker("distributed autograd"))
    # 5. TorchScript symbolic differentiation hands out gradient graphs.
    f = getattr(_C, "_jit_differentiate", None)
    if f is not None:
        swaps[id(f)] = (f, _blocker("torch._C._jit_differentiate"))
    del f
    counts = _swap(swaps)
    out["refs_swapped"] = {getattr(o, "__name__", "?"): counts[i] for i, (o, _) in swaps.items()}
    swaps.clear()
    # 6. Forward mode: tangents can only be attached through aten::_make_dual.
    out["forward_ad"] = _block_ops(["aten::_make_dual", "aten::_make_dual_copy"])["ops"]
    # 7. Hand-chaining the engine's own backward kernels (aten::*_backward*, e.g.
    #    native_layer_norm_backward, _softmax_backward_data): no forward op needs them.
    out["backward_ops_blocked"] = len(_block_ops(["aten::*_backward", "aten::*_backward_*", "aten::*_backward.*"])["ops"])
    # 8. Python backward formulas in the decomposition tables (used by torch.compile only).
    done: set = set()
    try:
        import torch._decomp as decomp
        n = 0
        for table in decomp.global_decomposition_table.values():
            for op, fn in list(table.items()):
                if "backward" in str(op) and isinstance(fn, types.FunctionType):
                    n += _neuter_function(fn, f"decomposition of {op}", done)
        out["backward_decomps_neutered"] = n
    except Exception as e:       # pragma: no cover
        out["backward_decomps_neutered"] = repr(e)
    return out


# ---------------------------------------------------------------- Python-level objects

_code_cache: dict[tuple[int, str], types.CodeType] = {}


def _raiser_code(nfree: int, label: str) -> types.CodeType:
    key = (nfree, label)
    if key not in _code_cache:
        fv = [f"_v{i}" for i in range(nfree)]
        src = "def _outer():\n"
        src += "".join(f"    {v} = None\n" for v in fv)
        src += "    def _blocked(*args, **kwargs):\n"
        if fv:
            src += f"        ({', '.join(fv)},)\n"
        src += f"        raise RuntimeError({_FORBIDDEN + label!r})\n"
        src += "    return _blocked\n"
        ns: dict = {}
        exec(compile(src, "<autograder guard>", "exec"), {"__builtins__": __builtins__}, ns)
        _code_cache[key] = ns["_outer"]().__code__
    return _code_cache[key]


def _neuter_function(f: types.FunctionType, label: str, done: set) -> int:
    n = 0
    while isinstance(f, types.FunctionType) and id(f) not in done:
        done.add(id(f))
        cells = f.__closure__ or ()
        f.__code__ = _raiser_code(len(cells), label)
        n += 1
        for c in cells:       # decorators: the wrapped original usually sits in a cell
            try:
                v = c.cell_contents
            except ValueError:
                continue
            if isinstance(v, types.FunctionType) and getattr(v, "__module__", "").startswith("torch"):
                if v.__qualname__.split(".")[-1] == f.__name__ or v.__name__ == getattr(f, "__name__", ""):
                    n += _neuter_function(v, label, done)
        f = getattr(f, "__wrapped__", None)
    return n


def _neuter_class(cls: type, label: str, done: set) -> int:
    n = 0
    own = dict(vars(cls))
    for name, v in own.items():
        fn = v.__func__ if isinstance(v, (staticmethod, classmethod)) else v
        if isinstance(fn, types.FunctionType) and fn.__qualname__.startswith(cls.__qualname__ + "."):
            n += _neuter_function(fn, f"{label}.{name}", done)
    stub = _blocker(label)
    for name in dir(cls):        # inherited methods: shadow them with a stub in cls's dict
        if name in own or (name.startswith("__") and name != "__init__" and name != "__call__"):
            continue
        if callable(getattr(cls, name, None)) and not isinstance(getattr(cls, name), type):
            setattr(cls, name, stub)
            n += 1
    if "__init__" not in own:
        cls.__init__ = stub
    return n


def _resolve(pattern: str) -> list[tuple[str, object]]:
    parts = pattern.split(".")
    for i in range(len(parts), 0, -1):          # longest importable prefix
        modname = ".".join(parts[:i])
        try:
            obj = importlib.import_module(modname)
        except Exception:
            continue
        rest = parts[i:]
        objs = [(modname, obj)]
        for part in rest:
            nxt = []
            for qn, o in objs:
                names = [a for a in dir(o) if fnmatch.fnmatchcase(a, part)] if any(
                    c in part for c in "*?[") else [part]
                for a in names:
                    try:
                        nxt.append((f"{qn}.{a}", getattr(o, a)))
                    except Exception:
                        pass
            objs = nxt
        return objs
    return []


def _source_files(obj) -> list[str]:
    """The source file (and its bytecode cache) of a module, or of the module a class or
    function was defined in: what re-running the library's code would read."""
    import importlib.util
    import sys

    mod = obj if isinstance(obj, types.ModuleType) else sys.modules.get(getattr(obj, "__module__", None) or "")
    path = getattr(mod, "__file__", None)
    if not (isinstance(path, str) and path.endswith(".py")):
        return []
    out = [path]
    try:
        out.append(importlib.util.cache_from_source(path))
    except (NotImplementedError, ValueError):
        pass
    return out


def _block_python(patterns: list[str]) -> dict:
    done: set = set()
    neutered, swapped, skipped = [], [], []
    sources: set[str] = set()
    builtins: dict[int, tuple[object, object]] = {}
    for p in patterns:
        for qn, obj in _resolve(p):
            if isinstance(obj, types.ModuleType | type | types.FunctionType):
                sources.update(_source_files(obj))
            if isinstance(obj, types.ModuleType):
                for a, v in list(vars(obj).items()):
                    if getattr(v, "__module__", None) == obj.__name__:
                        if isinstance(v, type):
                            _neuter_class(v, f"{qn}.{a}", done)
                            neutered.append(f"{qn}.{a}")
                        elif isinstance(v, types.FunctionType):
                            _neuter_function(v, f"{qn}.{a}", done)
                            neutered.append(f"{qn}.{a}")
            elif isinstance(obj, type):
                _neuter_class(obj, qn, done)
                neutered.append(qn)
            elif isinstance(obj, types.FunctionType):
                _neuter_function(obj, qn, done)
                neutered.append(qn)
            elif callable(obj):          # builtin: swap references; dispatcher does the real work
                builtins.setdefault(id(obj), (obj, _blocker(qn)))
                swapped.append(qn)
            else:
                skipped.append(qn)
    counts = _swap(builtins)
    builtins.clear()
    return {"neutered": neutered, "builtins_swapped": dict(zip(swapped, counts.values())), "skipped": skipped,
            "sources": sorted(sources)}


# ----------------------------------------------------------------------------- API

def install(op_patterns: list[str], block_autograd: bool) -> dict:
    """Install the guard; idempotent per process. Returns a summary dict."""
    global _installed
    if _installed is not None:
        return _installed
    t0 = time.perf_counter()
    ops = [p for p in op_patterns if "::" in p]
    if any(p.split("::")[0].lstrip("_").startswith("c10d") for p in ops):
        # c10d's operators exist once torch.distributed is imported: import it first, so
        # they are blocked before anyone can call them.
        import torch.distributed  # noqa: F401
        try:
            import torch.distributed._functional_collectives  # noqa: F401
        except Exception:  # noqa: BLE001
            pass
    py = [p for p in op_patterns if "::" not in p]
    res: dict = {}
    res["python"] = _block_python(py)          # first: sweeping needs the originals around
    t1 = time.perf_counter()
    res["dispatcher"] = _block_ops(ops)
    t2 = time.perf_counter()
    res["autograd"] = _block_autograd() if block_autograd else None
    t3 = time.perf_counter()
    res["seconds"] = {"python": t1 - t0, "dispatcher": t2 - t1, "autograd": t3 - t2, "total": t3 - t0}
    _installed = res
    return res


def verify() -> list[str]:
    """Self-check (advisory: it runs in the student's process). Call it after install() as a
    smoke test and again after the student's code, to catch holes opened by late imports
    (a newer kernel registered over ours, a new node type) rather than by tampering."""
    problems = []
    if _installed is None:
        return ["guard not installed"]
    for q, keys in (_installed["dispatcher"].get("keys") or {}).items():
        for k in keys:
            if _C._dispatch_is_alias_key(getattr(_C.DispatchKey, k)):
                continue
            kf = _C._dispatch_get_computed_kernel_for_dispatch_key(q, getattr(_C.DispatchKey, k))
            if "<autograder guard>" not in repr(kf):
                problems.append(f"{q}@{k}: {kf!r}")
    if _installed.get("autograd"):
        for t in _all_types():
            if not t.__flags__ & (1 << 9) and _tp_word(t, _TP_CALL_OFFSET).value == _CPP_CALL:
                problems.append(f"unpatched node type {t.__name__}")
        if type(torch.autograd.Variable._execution_engine).__dict__.get("run_backward") is not _run_backward:
            problems.append("run_backward restored")
    return problems
