#!/bin/busybox sh
# PTMT tiered-memory testbed: init of the guest's initramfs.
# Mounts the host root read-only over virtio-9p with a tmpfs overlay on top, mounts the run's output
# folder (writable 9p) at the same path as on the host, chroots and runs $OUT/cmd.sh. Host /tmp stays
# visible (through the overlay), so a checkout under /tmp runs too.
# Markers on the serial console: TIERVM_BOOTED, TIERVM_EXIT=<status>.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in /mods/*.ko; do insmod "$m" || echo "tiervm: insmod $m failed"; done
arg() { echo " $(cat /proc/cmdline) " | sed -n "s/.* $1=\([^ ]*\) .*/\1/p"; }
OUT=$(arg tiervm_out)
fail() { echo "tiervm: $*"; echo "TIERVM_EXIT=125"; poweroff -f; }
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro hostroot /lower \
  || fail "cannot mount the host root over 9p"
mount -t tmpfs -o mode=0755 rw /rw
mkdir -p /rw/upper /rw/work
if ! mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot; then
  echo "tiervm: overlay failed; read-only root with tmpfs /tmp"
  mount --bind /lower /newroot && mount -t tmpfs tmp /newroot/tmp
fi
for d in proc sys dev; do mount --move /$d /newroot/$d; done
mount -t tmpfs run /newroot/run
# /tmp stays the overlay of the host's /tmp: a checkout (and its virtualenv) under /tmp must be visible.
mkdir -p /newroot/dev/pts /newroot/dev/shm "/newroot$OUT"
mount -t devpts pts /newroot/dev/pts
mount -t tmpfs shm /newroot/dev/shm
mount -t debugfs debugfs /newroot/sys/kernel/debug
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 out "/newroot$OUT" \
  || fail "cannot mount the output folder over 9p"
echo "TIERVM_BOOTED uptime=$(cut -d' ' -f1 /proc/uptime 2>/dev/null || cut -d' ' -f1 /newroot/proc/uptime)"
chroot /newroot /usr/bin/env -i /bin/sh "$OUT/cmd.sh"
rc=$?
echo "$rc" > "/newroot$OUT/rc"
sync
echo "TIERVM_EXIT=$rc uptime=$(cut -d' ' -f1 /newroot/proc/uptime)"
poweroff -f
