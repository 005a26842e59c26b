#!/usr/bin/env bash
# Runs the cgroup test suite of the job library (qexec-job) on cgroup v2, in a qemu
# VM (TCG) booting Debian's amd64 kernel with a busybox initramfs. CI tooling, not
# server runtime.
#
# Usage (from anywhere in the repository, as root):  vm/run-cgroup-v2.sh
# Environment:
#   QEXEC_VM_DIR      work/cache directory (default: <repo>/target/vm-cgroup-v2)
#   QEXEC_VM_TIMEOUT  seconds before the VM is declared hung (default: 600)
#   QEXEC_VM_FILTER   test name filter passed to the test binary (default: cgroup::)
# Exit status: 0 when every test passed in the VM, 1 on test failure, 2 on set-up
# failure, 124 on timeout.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
work=${QEXEC_VM_DIR:-$repo/target/vm-cgroup-v2}
timeout_s=${QEXEC_VM_TIMEOUT:-600}
filter=${QEXEC_VM_FILTER:-cgroup::}
start=$(date +%s)

say() { printf 'vm-cgroup-v2: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 2; }

mkdir -p "$work"

# 1. Host tools (qemu, a static busybox for the guest, cpio for the initramfs).
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v cpio >/dev/null || need+=(cpio)
command -v jq >/dev/null || need+=(jq)
command -v xz >/dev/null || need+=(xz-utils)
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" \
        >"$work/apt.log" 2>&1 || { cat "$work/apt.log" >&2; die "apt-get install failed"; }
fi

# 2. Debian's kernel: downloaded and unpacked into the work dir, never installed.
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
kdir="$work/$kpkg"
if [ ! -d "$kdir/boot" ]; then
    say "downloading $kpkg"
    rm -rf "$kdir" "$work/deb"
    mkdir -p "$work/deb" "$kdir"
    (cd "$work/deb" && apt-get download "$kpkg" >"$work/download.log" 2>&1) ||
        { cat "$work/download.log" >&2; die "apt-get download $kpkg failed"; }
    dpkg -x "$work"/deb/*.deb "$kdir"
    rm -rf "$work/deb"
fi
vmlinuz=$(ls "$kdir"/boot/vmlinuz-* | head -1)
kver=${vmlinuz##*/vmlinuz-}
brd=$(find "$kdir/lib/modules/$kver" -name 'brd.ko*' | head -1)
[ -n "$brd" ] || die "brd module not found in $kpkg"

# 3. The test binary (unit tests of the qexec-job library; its cgroup tests are
#    cgroup::tests::*).
say "building the qexec-job test binary"
bin=$(cd "$repo" && cargo test -p qexec-job --lib --locked --no-run --message-format=json 2>"$work/build.log" |
    jq -r 'select(.reason == "compiler-artifact" and .target.name == "qexec_job"
                  and .profile.test == true and .executable != null) | .executable' | tail -1)
[ -n "$bin" ] && [ -x "$bin" ] || { cat "$work/build.log" >&2; die "test binary not built"; }

# 4. The initramfs: busybox, the test binary, its shared libraries, brd, /init.
root="$work/initramfs"
rm -rf "$root"
mkdir -p "$root"/{bin,dev,proc,sys,tmp,lib,lib64,etc}
cp /bin/busybox "$root/bin/busybox"
strip -o "$root/qexec-tests" "$bin" 2>/dev/null || cp "$bin" "$root/qexec-tests"
ldd "$bin" | awk '/=>/ {print $3} !/=>/ && $1 ~ /^\// {print $1}' | while read -r lib; do
    [ -f "$lib" ] || continue
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
case "$brd" in
*.xz) xz -dc "$brd" >"$root/brd.ko" ;;
*.zst) zstd -qdc "$brd" >"$root/brd.ko" ;;
*.gz) gzip -dc "$brd" >"$root/brd.ko" ;;
*) cp "$brd" "$root/brd.ko" ;;
esac
cat >"$root/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup
# The root cgroup hands every controller qexec uses to its children.
echo "+cpu +memory +io +pids" > /sys/fs/cgroup/cgroup.subtree_control
# A 64 MiB RAM disk: a real block device for the IO throttling test.
insmod /brd.ko rd_nr=1 rd_size=65536
echo "QEXEC-VM: kernel \$(uname -r), cgroup2 controllers: \$(cat /sys/fs/cgroup/cgroup.subtree_control)"
cd /tmp
CI=true QEXEC_CGROUP_TEST_IO_TARGET=/dev/ram0 RUST_BACKTRACE=1 \\
    /qexec-tests '$filter' --test-threads=1 --nocapture
rc=\$?
# "No qexec cgroup remains after the tests."
left=\$(ls -d /sys/fs/cgroup/qexec* 2>/dev/null)
if [ -n "\$left" ]; then echo "QEXEC-VM: cgroups left behind: \$left"; [ \$rc -eq 0 ] && rc=1; fi
if [ \$rc -eq 0 ]; then echo "QEXEC-VM-RESULT: PASS"; else echo "QEXEC-VM-RESULT: FAIL (exit \$rc)"; fi
poweroff -f
EOF
chmod +x "$root/init"
(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet) >"$work/initramfs.cpio"

# 5. Boot (TCG: /dev/kvm hangs on these hosts) and read the verdict off the console.
say "booting $kver (TCG); console log: $work/console.log"
set +e
timeout "$timeout_s" qemu-system-x86_64 -accel tcg -m 1G -smp 2 -nographic -no-reboot \
    -kernel "$vmlinuz" -initrd "$work/initramfs.cpio" \
    -append "console=ttyS0 panic=-1 quiet loglevel=3" </dev/null >"$work/console.log" 2>&1
qrc=$?
set -e
cat "$work/console.log"
elapsed=$(($(date +%s) - start))
if [ $qrc -eq 124 ]; then
    say "TIMEOUT after ${timeout_s}s (total ${elapsed}s)"
    exit 124
fi
if grep -q '^QEXEC-VM-RESULT: PASS' "$work/console.log"; then
    say "PASS in ${elapsed}s"
    exit 0
fi
say "FAIL (qemu exit $qrc) in ${elapsed}s"
exit 1
