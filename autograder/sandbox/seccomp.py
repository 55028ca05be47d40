"""A seccomp filter for the local runner's sandbox (handed to bubblewrap's `--seccomp`).

Inside its namespaces the child could otherwise make new ones: `unshare(CLONE_NEWUSER |
CLONE_NEWNS)` works for any user where unprivileged user namespaces are enabled, and
with it `mount -t tmpfs -o size=1000g` (host memory the sandbox's /tmp size would not
bound). The filter refuses, with EPERM, every system call that makes or enters
namespaces or mounts file systems, and a few more that no graded code needs (kernel
keyrings, BPF, perf events, userfaultfd, ptrace). `clone` is allowed without namespace
flags (fork and threads); `clone3`, whose flags a classic filter cannot read, fails with
ENOSYS, on which glibc falls back to `clone`. A classic BPF program, written here by
hand (no libseccomp needed); on an architecture it does not know it returns None and
the runner says the sandbox has no such filter.
"""

from __future__ import annotations

import platform
import struct

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_AARCH64 = 0xC00000B7
X32_SYSCALL_BIT = 0x40000000

# Namespace flags of clone/unshare.
CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x02000000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWTIME = 0x10000000, 0x20000000, 0x40000000, 0x00000080
NAMESPACE_FLAGS = (CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER
                   | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWTIME)

# name: (x86_64, aarch64) system call numbers.
REFUSED = {
    "unshare": (272, 97), "setns": (308, 268), "mount": (165, 40), "umount2": (166, 39),
    "pivot_root": (155, 41), "chroot": (161, 51), "open_tree": (428, 428), "move_mount": (429, 429),
    "fsopen": (430, 430), "fsconfig": (431, 431), "fsmount": (432, 432), "fspick": (433, 433),
    "mount_setattr": (442, 442), "keyctl": (250, 219), "add_key": (248, 217), "request_key": (249, 218),
    "bpf": (321, 280), "perf_event_open": (298, 241), "userfaultfd": (323, 282), "ptrace": (101, 117),
    "process_vm_writev": (311, 271),
}
CLONE = (56, 220)
CLONE3 = (435, 435)
EPERM, ENOSYS = 1, 38

# Classic BPF opcodes.
LD_W_ABS, JEQ_K, JGE_K, AND_K, RET_K = 0x20, 0x15, 0x35, 0x54, 0x06
RET_ALLOW, RET_ERRNO = 0x7FFF0000, 0x00050000


def _ins(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k)


def program(machine: str | None = None) -> bytes | None:
    """The filter as bytes (an array of struct sock_filter), or None for an unknown CPU."""
    machine = machine or platform.machine()
    if machine in ("x86_64", "amd64"):
        arch, col = AUDIT_ARCH_X86_64, 0
    elif machine in ("aarch64", "arm64"):
        arch, col = AUDIT_ARCH_AARCH64, 1
    else:
        return None
    refused = sorted({nums[col] for nums in REFUSED.values()})
    # Every jump goes forward (classic BPF): checks first, the returns last.
    #   ld arch; jeq arch else EPERM; ld nr; [x32 -> EPERM]; refused -> EPERM;
    #   clone -> CLONE; clone3 -> ENOSYS; ALLOW;
    #   CLONE: ld flags; and NS; jeq 0 -> ALLOW2 else EPERM; ALLOW2; EPERM; ENOSYS
    prog: list[tuple] = [("ld", 4), ("arch",), ("ld", 0)]
    if col == 0:
        prog.append(("x32",))
    prog += [("refuse", nr) for nr in refused]
    prog += [("clone", CLONE[col]), ("clone3", CLONE3[col]), ("allow",),
             ("ld", 16), ("and", NAMESPACE_FLAGS), ("flags",), ("allow",), ("eperm",), ("enosys",)]
    i_clone = prog.index(("ld", 16))
    i_allow2, i_eperm, i_enosys = len(prog) - 3, len(prog) - 2, len(prog) - 1
    body: list[bytes] = []
    for i, ins in enumerate(prog):
        op = ins[0]

        def to(target: int, i: int = i) -> int:
            return target - i - 1

        if op == "ld":
            body.append(_ins(LD_W_ABS, ins[1]))
        elif op == "arch":
            body.append(_ins(JEQ_K, arch, 0, to(i_eperm)))
        elif op == "x32":
            body.append(_ins(JGE_K, X32_SYSCALL_BIT, to(i_eperm), 0))
        elif op == "refuse":
            body.append(_ins(JEQ_K, ins[1], to(i_eperm), 0))
        elif op == "clone":
            body.append(_ins(JEQ_K, ins[1], to(i_clone), 0))
        elif op == "clone3":
            body.append(_ins(JEQ_K, ins[1], to(i_enosys), 0))
        elif op == "and":
            body.append(_ins(AND_K, ins[1]))
        elif op == "flags":
            body.append(_ins(JEQ_K, 0, to(i_allow2), to(i_eperm)))
        elif op == "allow":
            body.append(_ins(RET_K, RET_ALLOW))
        elif op == "eperm":
            body.append(_ins(RET_K, RET_ERRNO | EPERM))
        elif op == "enosys":
            body.append(_ins(RET_K, RET_ERRNO | ENOSYS))
    assert all(0 <= b[2] < 256 and 0 <= b[3] < 256 for b in body)
    return b"".join(body)


def docker_profile() -> str:
    """The same rules as an OCI seccomp profile (JSON), for `security_opt=["seccomp=..."]`:
    everything allowed but namespaces, mounts and the rest of REFUSED (EPERM), clone with a
    namespace flag (EPERM) and clone3 (ENOSYS, glibc then uses clone)."""
    import json

    return json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": sorted(REFUSED), "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM},
            # One rule per namespace flag (rules of one call are alternatives): (flags & F) == F.
            *({"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM,
               "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}]}
              for flag in (CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER,
                           CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWTIME)),
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
        ],
    }, separators=(",", ":"))
