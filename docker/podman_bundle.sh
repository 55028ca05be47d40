#!/bin/sh
# Podman for a machine that has no Docker and no package registry (the GPU check machine):
# Debian's podman, crun and conmon, with the libraries they need beyond glibc, unpacked
# under one folder of their own (nothing is installed over /), and a `podman` wrapper that
# points Podman at them (containers.conf of its own, cgroupfs, file events, vfs storage
# under the folder).
#
#   sh docker/podman_bundle.sh DIR      # here, where apt-get works: DIR/{bin,lib,etc}
#   DIR/bin/podman info                 # there
#
# The GPU side (a CDI specification written from the driver's device nodes, Podman's API
# service, one assignment graded through --runner docker) is docker/gpu_podman_check.sh.
set -eu
DIR=$(readlink -f "${1:?usage: podman_bundle.sh DIR}")
mkdir -p "$DIR/bin" "$DIR/lib" "$DIR/etc" "$DIR/debs"
cd "$DIR/debs"
apt-get download podman crun conmon 2>/dev/null
for deb in *.deb; do dpkg -x "$deb" "$DIR/debs/root"; done
cp "$DIR/debs/root/usr/bin/podman" "$DIR/debs/root/usr/bin/crun" "$DIR/debs/root/usr/bin/conmon" "$DIR/bin/"
[ -e "$DIR/debs/root/usr/lib/podman/netavark" ] && cp "$DIR/debs/root/usr/lib/podman/netavark" "$DIR/bin/" || true
[ -e /usr/lib/podman/netavark ] && cp /usr/lib/podman/netavark "$DIR/bin/" || true
# the libraries beyond glibc's own, as this (Debian) machine resolves them
for b in "$DIR"/bin/*; do
  ldd "$b" | awk '/=> \// {print $3}' | while read -r lib; do
    case "$(basename "$lib")" in libc.so.*|libm.so.*|ld-linux*|libpthread*|libdl.so*|librt.so*) continue ;; esac
    cp -L "$lib" "$DIR/lib/"
  done
done
cat > "$DIR/etc/containers.conf" <<EOF
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "crun"
conmon_path = ["$DIR/bin/conmon"]
helper_binaries_dir = ["$DIR/bin"]
[engine.runtimes]
crun = ["$DIR/bin/crun"]
[network]
network_backend = "netavark"
EOF
cat > "$DIR/etc/storage.conf" <<EOF
[storage]
driver = "vfs"
runroot = "/run/dlopt-podman"
graphroot = "/var/tmp/dlopt-podman"
EOF
printf '{"default": [{"type": "insecureAcceptAnything"}]}\n' > "$DIR/etc/policy.json"
mv "$DIR/bin/podman" "$DIR/bin/podman.bin"
cat > "$DIR/bin/podman" <<'EOF'
#!/bin/sh
D=$(dirname "$(readlink -f "$0")")/..
export LD_LIBRARY_PATH="$D/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export CONTAINERS_CONF="$D/etc/containers.conf" CONTAINERS_STORAGE_CONF="$D/etc/storage.conf"
export PATH="$D/bin:$PATH"
exec "$D/bin/podman.bin" "$@"
EOF
chmod +x "$DIR/bin/"*
rm -rf "$DIR/debs"
du -sh "$DIR"
