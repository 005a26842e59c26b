#!/usr/bin/env bash
# Runs, on cgroup v2, in a qemu VM (TCG) booting Debian's amd64 kernel:
#   1. the cgroup tests of the job library (the qexec-job lib test binary, filtered
#      `cgroup::`), and
#   2. the escape suite (`tests/tests/escape.rs`, the `escape` test binary of
#      qexec-tests: a real in-process qexecd, jobs probing the sandbox with python3).
# Both run as root with CI=true, so a test that cannot run fails instead of skipping.
# CI tooling, not server runtime.
#
# The guest: a busybox initramfs loads virtio, 9p and overlayfs, mounts the host's
# root filesystem read-only over virtio-9p, lays a tmpfs-backed overlay over it (the
# guest may write anywhere, nothing reaches the host) and switch_roots into it, so the
# test binaries, python3, /bin/sh and /usr are the host's own, at the host's paths.
#
# Usage (from anywhere in the repository, as root):  vm/run-cgroup-v2.sh
# Environment:
#   QEXEC_VM_DIR      work/cache directory (default: <repo>/target/vm-cgroup-v2)
#   QEXEC_VM_TIMEOUT  seconds before the VM is declared hung (default: 600; a run takes about a minute)
#   QEXEC_VM_FILTER   test name filter for the qexec-job test binary (default: cgroup::)
#   QEXEC_VM_ESCAPE   0 skips the escape suite (default: 1)
# Exit status: 0 when every test of both suites passed in the VM, 1 on test failure,
# 2 on set-up failure, 124 on timeout.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
work=${QEXEC_VM_DIR:-$repo/target/vm-cgroup-v2}
timeout_s=${QEXEC_VM_TIMEOUT:-600}
filter=${QEXEC_VM_FILTER:-cgroup::}
escape=${QEXEC_VM_ESCAPE:-1}
start=$(date +%s)

say() { printf 'vm-cgroup-v2: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 2; }
# Any unexpected failure before the VM boots is a set-up failure (exit 2), not a
# test failure.
booted=0
on_exit() {
    local rc=$?
    if [ "$booted" = 0 ] && [ "$rc" -ne 0 ] && [ "$rc" -ne 2 ]; then
        say "error: set-up failed (status $rc)"
        exit 2
    fi
}
trap on_exit EXIT

mkdir -p "$work"

# 1. Host tools (qemu, a static busybox for the guest, cpio for the initramfs).
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v cpio >/dev/null || need+=(cpio)
command -v jq >/dev/null || need+=(jq)
command -v xz >/dev/null || need+=(xz-utils)
command -v zstd >/dev/null || need+=(zstd)
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" \
        >"$work/apt.log" 2>&1 || { cat "$work/apt.log" >&2; die "apt-get install failed"; }
fi
# The guest runs the host's python3 (the escape probes are `python3 -c …`).
[ "$escape" = 0 ] || command -v python3 >/dev/null || die "python3 is missing on the host"

# 2. Debian's kernel: downloaded, never installed. Only the kernel image and the
#    modules the guest loads (with their dependencies) are kept.
# Modules the guest needs, in no particular order (dependencies are added below):
#   virtio_pci           the PCI transport of every virtio device below
#   9pnet_virtio, 9p     the host's root filesystem over virtio-9p
#   overlay              a writable tmpfs layer over that read-only share
#   virtio-rng           entropy: TLS keys are made early after boot
#   brd                  a RAM disk, the real block device of the IO throttling test
modules=(virtio_pci 9pnet_virtio 9p overlay virtio-rng brd)
resolve_kernel() {
    apt-cache depends linux-image-amd64 2>/dev/null |
        awk '/Depends: linux-image-[0-9]/ {print $2; exit}'
}
kpkg=$(resolve_kernel)
if [ -z "$kpkg" ]; then
    say "apt lists lack linux-image-amd64: apt-get update"
    apt-get update >"$work/update.log" 2>&1 || { cat "$work/update.log" >&2; die "apt-get update failed"; }
    kpkg=$(resolve_kernel)
fi
[ -n "$kpkg" ] || die "cannot resolve linux-image-amd64 (run apt-get update)"
kdir="$work/kernel-$kpkg"
# A module's name with `-` and `_` made equal (the kernel treats them the same).
norm() { printf '%s' "$1" | tr - _; }
if [ "$(cat "$kdir/wanted" 2>/dev/null)" != "${modules[*]}" ]; then
    say "downloading $kpkg"
    rm -rf "$kdir" "$work/deb" "$work/unpacked"
    mkdir -p "$work/deb" "$work/unpacked" "$kdir/modules"
    (cd "$work/deb" && apt-get download "$kpkg" >"$work/download.log" 2>&1) ||
        { cat "$work/download.log" >&2; die "apt-get download $kpkg failed"; }
    dpkg -x "$work"/deb/*.deb "$work/unpacked"
    vmlinuz=$(ls "$work"/unpacked/boot/vmlinuz-* | head -1)
    cp "$vmlinuz" "$kdir/vmlinuz"
    # Every module file of the package, by name. (The package ships no modules.dep:
    # depmod makes it at install time.)
    declare -A path_of=() seen=()
    while read -r name file; do path_of[$name]=$file; done < <(
        find "$work/unpacked/lib/modules" -name '*.ko*' |
            awk '{ n = $0; sub(/.*\//, "", n); sub(/\.ko.*/, "", n); gsub(/-/, "_", n); print n, $0 }')
    # Depth-first over each module's `depends=` (its .modinfo section): a module is
    # appended to the load order after everything it depends on.
    add() {
        local name file dep
        name=$(norm "$1")
        [ -z "${seen[$name]:-}" ] || return 0
        seen[$name]=1
        file=${path_of[$name]:-}
        [ -n "$file" ] || die "module $name not found in $kpkg"
        case "$file" in
        *.xz) xz -dc "$file" >"$kdir/modules/$name.ko" ;;
        *.zst) zstd -qdc "$file" >"$kdir/modules/$name.ko" ;;
        *.gz) gzip -dc "$file" >"$kdir/modules/$name.ko" ;;
        *) cp "$file" "$kdir/modules/$name.ko" ;;
        esac
        for dep in $(tr '\0' '\n' <"$kdir/modules/$name.ko" | sed -n 's/^depends=//p' | tr , ' '); do
            add "$dep"
        done
        echo "$name" >>"$kdir/modules/order"
    }
    for m in "${modules[@]}"; do add "$m"; done
    rm -rf "$work/deb" "$work/unpacked"
    echo "${modules[*]}" >"$kdir/wanted"
fi
kver=${kpkg#linux-image-}

# 3. The test binaries (cargo's JSON names each one's path).
test_binary() { # <name> <cargo test args...>
    local name=$1
    shift
    (cd "$repo" && cargo test "$@" --locked --no-run --message-format=json 2>>"$work/build.log" |
        jq -r --arg name "$name" 'select(.reason == "compiler-artifact" and .target.name == $name
                  and .profile.test == true and .executable != null) | .executable' | tail -1)
}
: >"$work/build.log"
say "building the qexec-job test binary"
job_bin=$(test_binary qexec_job -p qexec-job --lib)
[ -n "$job_bin" ] && [ -x "$job_bin" ] || { cat "$work/build.log" >&2; die "qexec-job test binary not built"; }
escape_bin=
escape_tmp=
if [ "$escape" != 0 ]; then
    say "building the escape suite"
    escape_bin=$(test_binary escape -p qexec-tests --test escape)
    [ -n "$escape_bin" ] && [ -x "$escape_bin" ] || { cat "$work/build.log" >&2; die "escape test binary not built"; }
    # The escape tests make their directories under CARGO_TARGET_TMPDIR, a path
    # compiled into the binary: the guest must be able to write there.
    escape_tmp=$(cd "$repo" && cargo metadata --format-version 1 --no-deps | jq -r .target_directory)/tmp
fi

# The guest mounts a fresh tmpfs on /tmp, which would hide binaries built under it
# (.ci/run builds outside /tmp for the same reason: jobs get a private /tmp).
case "$job_bin $escape_bin" in
/tmp/* | *" /tmp/"*) die "the test binaries are under /tmp: set CARGO_TARGET_DIR outside it" ;;
esac

# 4. The guest's second stage: runs as PID 1 on the overlay root, after switch_root.
#    It is copied into the initramfs and moved into the overlay by /init.
root="$work/initramfs"
rm -rf "$root"
mkdir -p "$root"/{bin,dev,proc,sys,mnt/host,mnt/rw,newroot,modules}
cat >"$root/stage2" <<EOF
#!/qexec-vm/busybox sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
bb=/qexec-vm/busybox
echo "QEXEC-VM: kernel \$(\$bb uname -r), cgroup2 controllers: \$(\$bb cat /sys/fs/cgroup/cgroup.subtree_control)"
cd /tmp
echo "QEXEC-VM: === qexec-job tests, filter '$filter'"
CI=true QEXEC_CGROUP_TEST_IO_TARGET=/dev/ram0 RUST_BACKTRACE=1 \\
    '$job_bin' '$filter' --test-threads=1 --nocapture --color never
rc=\$?
# "No qexec cgroup remains after the tests."
left=\$(\$bb ls -d /sys/fs/cgroup/qexec* 2>/dev/null)
if [ -n "\$left" ]; then echo "QEXEC-VM: cgroups left behind: \$left"; [ \$rc -eq 0 ] && rc=1; fi
if [ \$rc -eq 0 ]; then echo "QEXEC-VM-CGROUP: PASS"; else echo "QEXEC-VM-CGROUP: FAIL (exit \$rc)"; fi
erc=0
if [ -n '$escape_bin' ]; then
    echo "QEXEC-VM: === escape suite"
    \$bb mkdir -p '$escape_tmp'
    # One test at a time: TCG is slow, and the verdict lines stay readable.
    CI=true RUST_BACKTRACE=1 '$escape_bin' --test-threads=1 --show-output --color never
    erc=\$?
    if [ \$erc -eq 0 ]; then echo "QEXEC-VM-ESCAPE: PASS"; else echo "QEXEC-VM-ESCAPE: FAIL (exit \$erc)"; fi
fi
if [ \$rc -eq 0 ] && [ \$erc -eq 0 ]; then echo "QEXEC-VM-RESULT: PASS"; else echo "QEXEC-VM-RESULT: FAIL"; fi
\$bb sync
\$bb poweroff -f
EOF
chmod +x "$root/stage2"

# 5. The initramfs: busybox, the modules, /init. /init builds the root the tests run on.
cp /bin/busybox "$root/bin/busybox"
cp "$kdir"/modules/*.ko "$kdir/modules/order" "$root/modules/"
cat >"$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
fail() { echo "QEXEC-VM: set-up failed: $*"; echo "QEXEC-VM-RESULT: SETUP-FAIL"; poweroff -f; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# Drivers: virtio PCI, 9p, overlayfs, virtio-rng, brd (a 64 MiB RAM disk: a real block
# device for the IO throttling test), each after its dependencies.
for m in $(cat /modules/order); do
    case $m in brd) args="rd_nr=1 rd_size=65536" ;; *) args= ;; esac
    insmod /modules/$m.ko $args || fail "insmod $m"
done
# The host's / (qemu exports it read-only). cache=loose: the share does not change
# during the run, and TCG makes every uncached 9p round trip expensive.
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot /mnt/host ||
    fail "mount the host root over 9p"
# A writable layer in guest RAM over it: the tests (and the server, its state and
# job directories, CARGO_TARGET_TMPDIR) write where they would on the host, and
# nothing reaches the host.
mount -t tmpfs -o mode=0755 rw /mnt/rw
mkdir -p /mnt/rw/upper /mnt/rw/work
mount -t overlay -o lowerdir=/mnt/host,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work overlay /newroot ||
    fail "mount the overlay root"
# Fresh kernel filesystems at the new root (the share shows the host's own /proc,
# /sys, /dev, /tmp underneath).
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
mount --move /dev /newroot/dev
mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup || fail "mount cgroup2"
# The root cgroup hands every controller qexec uses to its children.
echo "+cpu +memory +io +pids" >/newroot/sys/fs/cgroup/cgroup.subtree_control ||
    fail "delegate cgroup controllers"
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /newroot/dev/pts
mount -t tmpfs -o mode=1777 shm /newroot/dev/shm
# A clean /tmp and /run, as on a booted system (the host's show through otherwise).
mount -t tmpfs -o mode=1777 tmp /newroot/tmp || fail "tmpfs on /tmp"
mount -t tmpfs -o mode=0755 run /newroot/run || fail "tmpfs on /run"
# Loopback: the tests run qexecd on 127.0.0.1 and connect to it over QUIC.
ip link set lo up || fail "lo up"
# The second stage and its busybox live in the overlay (the initramfs is emptied by
# switch_root).
mkdir -p /newroot/qexec-vm
cp /bin/busybox /stage2 /newroot/qexec-vm/
# switch_root moves the overlay onto / and chroots: the root is then a real mount with
# a parent, which the job sandbox's pivot_root requires (it fails on the initramfs).
exec switch_root /newroot /qexec-vm/stage2
EOF
chmod +x "$root/init"
(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet) >"$work/initramfs.cpio"

# 6. Boot (TCG: /dev/kvm hangs on these hosts) and read the verdicts off the console.
#    The whole host root is shared read-only (multidevs=remap: it spans several host
#    filesystems, whose inode numbers could collide in one share).
say "booting $kver (TCG); console log: $work/console.log"
booted=1
set +e
timeout "$timeout_s" qemu-system-x86_64 -accel tcg -m 2G -smp 2 -nographic -no-reboot \
    -kernel "$kdir/vmlinuz" -initrd "$work/initramfs.cpio" \
    -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
    -device virtio-rng-pci \
    -append "console=ttyS0 panic=-1 quiet loglevel=3" </dev/null >"$work/console.log" 2>&1
qrc=$?
set -e
cat "$work/console.log"
elapsed=$(($(date +%s) - start))
say "per-test results in the VM:"
grep -aE '^test .* \.\.\. |^test result:|^QEXEC-VM-' "$work/console.log" | sed 's/\r$//' >&2 || true
if [ $qrc -eq 124 ]; then
    say "TIMEOUT after ${timeout_s}s (total ${elapsed}s)"
    exit 124
fi
# No cgroup verdict: the guest never reached its tests (set-up or boot failed).
if grep -aq '^QEXEC-VM-RESULT: SETUP-FAIL' "$work/console.log" ||
    ! grep -aq '^QEXEC-VM-CGROUP: ' "$work/console.log"; then
    say "guest set-up failed (qemu exit $qrc) in ${elapsed}s"
    exit 2
fi
if grep -aq '^QEXEC-VM-RESULT: PASS' "$work/console.log" &&
    grep -aq '^QEXEC-VM-CGROUP: PASS' "$work/console.log" &&
    { [ "$escape" = 0 ] || grep -aq '^QEXEC-VM-ESCAPE: PASS' "$work/console.log"; }; then
    say "PASS in ${elapsed}s"
    exit 0
fi
say "FAIL (qemu exit $qrc) in ${elapsed}s"
exit 1
