#!/usr/bin/env bash
# Runs COMMAND inside a QEMU guest that has real verbs devices (soft-RoCE, rdma_rxe), with
# the host's root shared read-only, and exits with COMMAND's exit status.
#
#   scripts/rdma-vm-test.sh COMMAND [ARG...]
#
# The build machines have no RDMA in their kernel, so a stock Debian kernel is booted under
# TCG (KVM is too slow nested) with busybox as the initramfs. In the guest:
#   * the host's / is mounted read-only (9p) and COMMAND runs chrooted into it, in the
#     current directory, as root, so it sees the freshly built binaries and libraries;
#     /tmp, /run and /dev/shm are fresh tmpfs (a current directory under /tmp is kept);
#   * veth0 (192.0.2.1/24) and veth1 (192.0.2.2/24) are a veth pair in one namespace,
#     with the routing that makes their IPv4 GIDs talk to each other (see
#     docs/rdma-transport.md); rxe0 runs on veth0 and rxe1 on veth1: one device is
#     loopback RoCE, two devices are two "hosts" joined by a wire.
#
# A guest that does not boot, or whose command never reports an exit status, is a
# failure (exit 125), never a skip. The guest is always powered off: the QEMU process is
# killed on timeout or interrupt.
#
# Environment:
#   RDMA_VM_CACHE    kernel cache and run files (default: <repo>/target/rdma-vm)
#   RDMA_VM_TIMEOUT  seconds before the guest is killed (default 900)
#   RDMA_VM_MEM      guest memory in MiB (default 2048)
#   RDMA_VM_RW       colon-separated host directories shared read-write at the same path
#   RDMA_VM_ENV      extra variable names to pass to COMMAND (CI, RUST_*, SLIME_*,
#                    DLSLIME_* and NO_COLOR are always passed)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ $# -ge 1 ] || { echo "usage: $0 COMMAND [ARG...]" >&2; exit 2; }

cache="${RDMA_VM_CACHE:-$root/target/rdma-vm}"
timeout_s="${RDMA_VM_TIMEOUT:-900}"
mem="${RDMA_VM_MEM:-2048}"
mkdir -p "$cache"
cache="$(cd "$cache" && pwd)"

log() { echo "rdma-vm: $*" >&2; }
die() { log "$*"; exit 125; }

# --- 1. packages (Debian) -------------------------------------------------------------
bash "$root/scripts/install-deps.sh" --rdma-apt-only >&2 || die "cannot install the VM packages"

# --- 2. the guest kernel: the current linux-image-<version>-amd64, cached -----------------
# Modules the guest loads, in dependency order (resolved from modules.dep below).
modules_wanted="crc32_generic virtio_pci 9pnet_virtio 9p veth rdma_rxe"

kernel_pkg() {
  # linux-image-amd64 is a metapackage that depends on exactly one versioned image.
  apt-cache depends linux-image-amd64 2>/dev/null |
    sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -1
}
pkg="$(kernel_pkg)"
if [ -z "$pkg" ]; then
  apt-get update -qq >&2 || true
  pkg="$(kernel_pkg)"
fi
if [ -z "$pkg" ]; then
  # offline: fall back to the newest kernel already in the cache
  pkg="$(ls -d "$cache"/linux-image-*-amd64 2>/dev/null | sort -V | tail -1 | xargs -r basename)"
fi
[ -n "$pkg" ] || die "cannot find the Debian guest kernel (apt-cache depends linux-image-amd64)"
kver="${pkg#linux-image-}"
kdir="$cache/$pkg"
if [ ! -f "$kdir/ready" ]; then
  log "fetching $pkg (about 70 MB, once)"
  scratch="$(mktemp -d "$cache/fetch.XXXXXX")"
  trap 'rm -rf "$scratch"' EXIT
  (cd "$scratch" && apt-get download "$pkg" >&2 2>/dev/null) ||
    (cd "$scratch" && apt-get update -qq >&2 && apt-get download "$pkg" >&2) ||
    die "apt-get download $pkg failed"
  dpkg -x "$scratch"/"$pkg"_*.deb "$scratch/x" || die "cannot unpack $pkg"
  moddir="$scratch/x/lib/modules/$kver"
  [ -d "$moddir" ] || moddir="$scratch/x/usr/lib/modules/$kver"
  [ -d "$scratch/x/lib/modules" ] || ln -s usr/lib "$scratch/x/lib"
  # the unpacked tree has no modules.dep
  depmod -b "$scratch/x" "$kver" || die "depmod failed"
  rm -rf "$kdir.tmp" && mkdir -p "$kdir.tmp/modules"
  cp "$scratch/x/boot/vmlinuz-$kver" "$kdir.tmp/vmlinuz"
  # Load order: each wanted module after its dependencies (modules.dep lists a module's
  # dependencies, deepest last), without duplicates.
  order=()
  for m in $modules_wanted; do
    line="$(grep -E "(^|/)$m\.ko(\.[a-z]+)?:" "$moddir/modules.dep")" || die "module $m not in $pkg"
    path="${line%%:*}"
    deps=($(echo "${line#*:}" | tr ' ' '\n' | tac))
    for p in "${deps[@]}" "$path"; do
      [ -n "$p" ] || continue
      name="$(basename "$p")"; name="${name%%.ko*}"
      case " ${order[*]:-} " in *" $name "*) continue ;; esac
      case "$p" in
        *.ko) cp "$moddir/$p" "$kdir.tmp/modules/$name.ko" ;;
        *.ko.xz) xz -dc "$moddir/$p" >"$kdir.tmp/modules/$name.ko" ;;
        *.ko.zst) zstd -dqc "$moddir/$p" >"$kdir.tmp/modules/$name.ko" ;;
        *) die "unknown module format $p" ;;
      esac
      order+=("$name")
    done
  done
  printf '%s\n' "${order[@]}" >"$kdir.tmp/modules.order"
  touch "$kdir.tmp/ready"
  rm -rf "$kdir" && mv "$kdir.tmp" "$kdir"
  rm -rf "$scratch"
  trap - EXIT
fi

# --- 3. the run directory: initramfs, the guest script, the command ---------------------
run="$(mktemp -d "$cache/run.XXXXXX")"
qemu_pid=""
cleanup() {
  if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
    kill -9 "$qemu_pid" 2>/dev/null || true
    wait "$qemu_pid" 2>/dev/null || true
  fi
  rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ird="$run/initrd"
mkdir -p "$ird"/{bin,dev,proc,sys,host,lib/modules,mnt}
cp "$(command -v busybox)" "$ird/bin/busybox"
case "$(ldd "$ird/bin/busybox" 2>&1 || true)" in *"not a dynamic"*) ;; *) die "busybox is not static (install busybox-static)" ;; esac
for app in $("$ird/bin/busybox" --list); do
  [ "$app" = busybox ] || ln -s busybox "$ird/bin/$app"
done
cp "$kdir"/modules/*.ko "$ird/lib/modules/"
cp "$kdir/modules.order" "$ird/modules.order"
cat >"$ird/init" <<'EOF'
#!/bin/sh
# PID 1 of the guest: modules, the host's root over 9p, then the run's guest.sh chrooted.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
fail() { echo "@@RDMA-VM-FAIL $*"; echo "@@RDMA-VM-EXIT 125"; poweroff -f; }
echo "@@RDMA-VM-STAGE init $(cut -d' ' -f1 /proc/uptime)"
for m in $(cat /modules.order); do
  insmod /lib/modules/$m.ko || fail "insmod $m"
done
echo "@@RDMA-VM-STAGE modules $(cut -d' ' -f1 /proc/uptime)"
run=$(sed -n 's/.*dlslime\.run=\([^ ]*\).*/\1/p' /proc/cmdline)
keep=$(sed -n 's/.*dlslime\.keep=\([^ ]*\).*/\1/p' /proc/cmdline)
nrw=$(sed -n 's/.*dlslime\.nrw=\([0-9]*\).*/\1/p' /proc/cmdline)
opts=trans=virtio,version=9p2000.L,msize=512000,cache=loose
mount -t 9p -o $opts,ro hostroot /host || fail "mount the host root (9p)"
# a kept directory under /tmp or /run survives the tmpfs that goes over them
if [ -n "$keep" ]; then mkdir -p /mnt/keep && mount --bind "/host$keep" /mnt/keep; fi
mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
mount -t devtmpfs dev /host/dev
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts devpts /host/dev/pts
mount -t tmpfs tmp /host/dev/shm
mount -t tmpfs tmp /host/tmp
mount -t tmpfs run /host/run
if [ -n "$keep" ]; then mkdir -p "/host$keep" && mount --bind /mnt/keep "/host$keep"; fi
i=0
while [ "$i" -lt "${nrw:-0}" ]; do
  p=$(sed -n "$((i + 1))p" "/host$run/rw")
  mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 rw$i "/host$p" || fail "mount rw share $p"
  i=$((i + 1))
done
echo "@@RDMA-VM-STAGE mounts $(cut -d' ' -f1 /proc/uptime)"
chroot /host /bin/bash "$run/guest.sh"
echo "@@RDMA-VM-EXIT $?"
poweroff -f
EOF
chmod +x "$ird/init"
(cd "$ird" && find . | cpio -o -H newc --quiet | gzip -1) >"$run/initrd.gz"
rm -rf "$ird"

# Variables COMMAND sees.
envfile="$run/env"
: >"$envfile"
for v in $(compgen -e); do
  case "$v" in
    CI | NO_COLOR | RUST_* | SLIME_* | DLSLIME_* | CARGO_TARGET_DIR) ;;
    *) case " ${RDMA_VM_ENV:-} " in *" $v "*) ;; *) continue ;; esac ;;
  esac
  printf 'export %s=%q\n' "$v" "${!v}" >>"$envfile"
done
printf '%q ' "$@" >"$run/cmd"

cat >"$run/guest.sh" <<EOF
# Runs in the guest, chrooted into the host's root, with the host's tools.
set -u; [ -n "${RDMA_VM_TRACE:-}" ] && { PS4='+ \$EPOCHREALTIME '; set -x; }
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$HOME/.cargo/bin
export HOME=/tmp LANG=C.UTF-8
fail() { echo "@@RDMA-VM-FAIL \$*"; exit 125; }
ip link set lo up
ip link add veth0 type veth peer name veth1 || fail "ip link add veth"
ip addr add 192.0.2.1/24 dev veth0 && ip addr add 192.0.2.2/24 dev veth1 || fail "ip addr"
ip link set veth0 up && ip link set veth1 up || fail "ip link up"
# Two addresses of one host talk over the wire between them instead of local delivery,
# so the IPv4 GIDs of rxe0 and rxe1 resolve each other (ARP) like two hosts.
for c in all veth0 veth1; do
  sysctl -qw net.ipv4.conf.\$c.accept_local=1 net.ipv4.conf.\$c.rp_filter=0 || fail sysctl
done
ip rule add pref 100 iif lo from 192.0.2.1 to 192.0.2.2 lookup 101 &&
ip rule add pref 101 iif lo from 192.0.2.2 to 192.0.2.1 lookup 102 &&
ip route add 192.0.2.2/32 dev veth0 src 192.0.2.1 table 101 &&
ip route add 192.0.2.1/32 dev veth1 src 192.0.2.2 table 102 &&
ip rule add pref 1000 lookup local && ip rule del pref 0 || fail "ip rule/route"
rdma link add rxe0 type rxe netdev veth0 || fail "rdma link add rxe0"
rdma link add rxe1 type rxe netdev veth1 || fail "rdma link add rxe1"
# ready: both ports ACTIVE with an IPv4 GID (index 1) in place
for i in \$(seq 1 200); do
  ok=1
  for d in rxe0 rxe1; do
    grep -q ACTIVE /sys/class/infiniband/\$d/ports/1/state 2>/dev/null || ok=0
    grep -q '^0000:0000:0000:0000:0000:ffff:c000' /sys/class/infiniband/\$d/ports/1/gids/1 2>/dev/null || ok=0
  done
  [ \$ok = 1 ] && break
  sleep 0.05
done
[ \$ok = 1 ] || fail "rxe ports not ACTIVE with an IPv4 GID"
echo "@@RDMA-VM-READY \$(cut -d' ' -f1 /proc/uptime)s after boot"
. "$run/env"
cd $(printf '%q' "$PWD") || fail "cd $PWD"
eval "\$(cat "$run/cmd")"
EOF

# Read-write shares (at the same path in the guest).
rw_args=()
: >"$run/rw"
n=0
IFS=: read -r -a rws <<<"${RDMA_VM_RW:-}"
for d in "${rws[@]}"; do
  [ -n "$d" ] || continue
  mkdir -p "$d"
  d="$(cd "$d" && pwd)"
  rw_args+=(-virtfs "local,path=$d,mount_tag=rw$n,security_model=none,multidevs=remap")
  echo "$d" >>"$run/rw"
  n=$((n + 1))
done
keep=""
case "$PWD/" in /tmp/* | /run/*) keep="$PWD" ;; esac

# --- 4. boot ---------------------------------------------------------------------------
consolelog="$run/console.log"
log "booting $pkg under TCG (2 vCPUs, ${mem} MiB), timeout ${timeout_s}s: $*"
start=$(date +%s)
qemu-system-x86_64 \
  -machine q35 -accel tcg,thread=multi -cpu qemu64 -smp 2 -m "$mem" \
  -display none -monitor none -serial stdio -nic none -no-reboot \
  -kernel "$kdir/vmlinuz" -initrd "$run/initrd.gz" \
  -append "console=ttyS0 panic=-1 ${RDMA_VM_KCMD:-quiet loglevel=3} dlslime.run=$run dlslime.nrw=$n${keep:+ dlslime.keep=$keep}" \
  -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap" \
  "${rw_args[@]}" </dev/null > >(tee "$consolelog" | sed -u 's/\r$//' | grep --line-buffered -v '^@@RDMA-VM-EXIT') 2>&1 &
qemu_pid=$!
deadline=$((start + timeout_s))
while kill -0 "$qemu_pid" 2>/dev/null; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    log "timeout after ${timeout_s}s: killing the guest"
    kill -9 "$qemu_pid" 2>/dev/null || true
    break
  fi
  sleep 1
done
wait "$qemu_pid" 2>/dev/null || true
qemu_pid=""
sleep 0.2 # let tee flush
status="$(tr -d '\r' <"$consolelog" | sed -n 's/^@@RDMA-VM-EXIT \([0-9]*\)$/\1/p' | tail -1)"
log "guest ran $(($(date +%s) - start))s"
if [ -z "$status" ]; then
  die "the guest did not report an exit status (boot failure or timeout); console log above"
fi
if grep -q '^@@RDMA-VM-FAIL' <(tr -d '\r' <"$consolelog"); then
  die "guest set-up failed: $(tr -d '\r' <"$consolelog" | sed -n 's/^@@RDMA-VM-FAIL //p' | head -1)"
fi
exit "$status"
