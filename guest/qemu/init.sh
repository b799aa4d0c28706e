#!/bin/busybox sh
# The QEMU guest's init: fills part of its RAM with random bytes in a tmpfs, then prints their checksum once a second.
# A checksum that never changes, with the tick count going on, proves that guest memory stayed as it was through
# whatever the host did meanwhile (a live update, another file's creation in the pool).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t devtmpfs dev /dev
# guestmemfs.fill=N on the kernel command line: N MiB more of guest RAM in use (copies of the blob), so that a
# migration that copies RAM has as much to copy as a busy guest would give it.
fill=$(sed -n 's/.*guestmemfs\.fill=\([0-9]*\).*/\1/p' /proc/cmdline)
mkdir -p /work
mount -t tmpfs -o size=$((${fill:-0} + 96))M tmpfs /work
dd if=/dev/urandom of=/work/blob bs=1M count=32 2>/dev/null
copy=0
while [ $((copy * 32)) -lt "${fill:-0}" ]; do
  cat /work/blob > /work/fill$copy
  copy=$((copy + 1))
done
echo "guest-ready $(md5sum /work/blob | cut -d' ' -f1)"
tick=0
while true; do
  tick=$((tick + 1))
  echo "guest-tick $tick $(md5sum /work/blob | cut -d' ' -f1)"
  sleep 1
done
