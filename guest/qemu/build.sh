#!/usr/bin/env bash
# Builds the QEMU guest (a Debian kernel and a busybox initramfs) from Debian packages, into a cache outside the
# repository: GUESTMEMFS_QEMU_GUEST (default ~/.cache/guestmemfs/qemu-guest). Prints the directory it left
# vmlinuz and initramfs.cpio in. Safe to run again: a complete cache is reused.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${GUESTMEMFS_QEMU_GUEST:-${XDG_CACHE_HOME:-$HOME/.cache}/guestmemfs/qemu-guest}"
if [ -s "$cache/vmlinuz" ] && [ -s "$cache/initramfs.cpio" ] && cmp -s "$here/init.sh" "$cache/init.sh"; then
  echo "$cache"
  exit 0
fi
mkdir -p "$cache"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The newest 6.1 cloud kernel: it has the 8250 serial console and initramfs support built in, and fewer drivers to
# probe under TCG than the generic image.
kernel="$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-cloud-amd64$' | cut -d' ' -f1 | sort -V | tail -1)"
if [ -z "$kernel" ]; then
  echo "no linux-image-6.1.0-*-cloud-amd64 package is known to apt: run apt-get update" >&2
  exit 1
fi
(cd "$work" && apt-get download "$kernel" busybox-static >/dev/null 2>&1) || {
  echo "apt-get download $kernel busybox-static failed" >&2
  exit 1
}
dpkg -x "$work"/linux-image-*.deb "$work/kernel"
dpkg -x "$work"/busybox-static_*.deb "$work/busybox"
cp "$work"/kernel/boot/vmlinuz-* "$cache/vmlinuz.tmp"
node "$here/initramfs.mjs" "$work/busybox/bin/busybox" "$here/init.sh" "$cache/initramfs.cpio.tmp"
mv "$cache/vmlinuz.tmp" "$cache/vmlinuz"
mv "$cache/initramfs.cpio.tmp" "$cache/initramfs.cpio"
cp "$here/init.sh" "$cache/init.sh"
echo "$kernel" > "$cache/kernel-package"
echo "$cache"
