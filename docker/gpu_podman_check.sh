#!/bin/sh
# The docker runner on a real GPU, on a machine with no Docker and no registry (the GPU
# check machine): Podman from docker/podman_bundle.sh, a CDI specification written from
# the driver's device nodes and libraries, a container that sees the GPU through it, then
# one GPU assignment's examples graded through --runner docker (student code on the GPU
# inside containers) and compared with examples/scores.toml.
#
#   sh docker/gpu_podman_check.sh BUNDLE WHEELS SLUG     (as root, from the repository root)
#
# BUNDLE: the folder podman_bundle.sh made; WHEELS: a folder with the Docker SDK's wheel
# (pure Python: imported from the wheel itself). Each step prints its outcome; the first
# that fails stops the check and says which.
set -u
B=$(readlink -f "${1:?bundle}"); W=$(readlink -f "${2:?wheels}"); SLUG=${3:-loss_scaling}
export PATH="$B/bin:$PATH"
PYTHONPATH="$(ls "$W"/docker-*.whl | head -1)${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONPATH
step() { echo "== $*"; }
fail() { echo "FAILED at: $*"; exit 1; }

step "1. podman from the bundle"
podman --version || fail "podman does not start here (libraries of the bundle?)"
mkdir -p /etc/containers /etc/cdi
[ -e /etc/containers/policy.json ] || cp "$B/etc/policy.json" /etc/containers/policy.json
podman info --format '{{.Host.OCIRuntime.Name}} {{.Host.OCIRuntime.Version}} cgroups {{.Host.CgroupsVersion}} storage {{.Store.GraphDriverName}}' \
  || fail "podman info"

step "2. a CDI specification from the driver's device nodes and libraries"
python3 - > /etc/cdi/dlopt-nvidia.json <<'PY' || fail "writing the CDI specification"
import glob, json, os, subprocess
gpus = sorted(p for p in glob.glob("/dev/nvidia[0-9]*"))
control = [p for p in ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset")
           if os.path.exists(p)]
libs = sorted({line.split("=>")[-1].strip() for line in subprocess.run(["ldconfig", "-p"], capture_output=True,
               text=True).stdout.splitlines() if "=>" in line and any(n in line for n in (
               "libcuda.so", "libnvidia-ml.so", "libnvidia-ptxjitcompiler.so", "libnvidia-nvvm.so"))})
mounts = [{"hostPath": os.path.realpath(l), "containerPath": l, "options": ["ro", "nosuid", "nodev", "bind"]}
          for l in libs]
node = lambda p: {"path": p}
spec = {"cdiVersion": "0.3.0", "kind": "nvidia.com/gpu",
        "devices": [{"name": os.path.basename(g)[len("nvidia"):], "containerEdits": {"deviceNodes": [node(g)]}}
                    for g in gpus] + [{"name": "all", "containerEdits": {"deviceNodes": [node(g) for g in gpus]}}],
        "containerEdits": {"deviceNodes": [node(c) for c in control], "mounts": mounts}}
print(json.dumps(spec, indent=1))
PY
python3 -c "import json; s=json.load(open('/etc/cdi/dlopt-nvidia.json')); print(len(s['devices']) - 1, 'GPU(s);', len(s['containerEdits']['deviceNodes']), 'control nodes;', len(s['containerEdits']['mounts']), 'driver libraries')"

step "3. an empty image, imported offline; the host's system and Python mounted read-only"
T=$(mktemp -d); mkdir -p "$T/r/tmp" "$T/r/proc" "$T/r/dev" "$T/r/sys" "$T/r/etc" "$T/r/sandbox" "$T/r/io"
tar -C "$T/r" -c . | podman import - localhost/dlopt-gpu-empty:latest >/dev/null || fail "podman import"
MOUNTS=""
for p in /usr /bin /sbin /lib /lib64 /etc/ld.so.cache $(python3 -c "import sys; print(sys.prefix)"); do
  [ -e "$p" ] && MOUNTS="$MOUNTS -v $p:$p:ro"
done

step "4. a container on the GPU through CDI (podman run --device nvidia.com/gpu=all)"
podman run --rm --network none --device nvidia.com/gpu=all $MOUNTS localhost/dlopt-gpu-empty:latest \
  python3 -c "import torch; print('in the container:', torch.cuda.is_available(), torch.cuda.get_device_name(), (torch.ones(4, device='cuda') * 2).sum().item())" \
  || fail "a container with the CDI device does not see the GPU"

step "5. $SLUG graded through --runner docker (Podman's Docker-compatible API), student code on the GPU"
python3 docker/podman_dev.py run -- python3 bench/gpu_run.py "$SLUG" || fail "grading through the docker runner"
echo "== all steps passed"
