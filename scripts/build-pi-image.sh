#!/usr/bin/env bash
# A Raspberry-Pi-OS-like arm64 disk image, for booting under qemu-system-aarch64 (-M virt) where no
# Raspberry Pi OS download is at hand. Laid out as Raspberry Pi OS lays out its card:
#   MBR, partition 1: FAT32 "bootfs" at 8 MiB (kernel8.img, initramfs8, cmdline.txt, config.txt),
#        partition 2: ext4 "rootfs" (Debian bookworm arm64: systemd, cloud-init reading the boot
#        partition through NoCloud as Raspberry Pi OS does, mounted at /boot/firmware, python3-venv,
#        docker.io, openssh-server, netplan).
# The root file system comes from debootstrap (second stage under qemu-user-static through binfmt)
# and is cached as a tarball under $TINYFLEET_IMAGE_CACHE (default /var/cache/tinyfleet), keyed by
# what goes into it: a second run on the same machine skips debootstrap.
#
#   bash scripts/build-pi-image.sh OUT.img.xz      # needs root, debootstrap, qemu-user-static, e2fsprogs,
#                                                  # dosfstools, mtools, fdisk, xz-utils
#
# Lab-only additions (not in Raspberry Pi OS, needed because the VM's network is qemu user-mode):
# a wired DHCP .network for systemd-networkd and tinyfleet-lab-forward, which reads
# /sys/firmware/qemu_fw_cfg/by_name/opt/tinyfleet/loopback-ports (given with qemu's -fw_cfg) and
# forwards those 127.0.0.1 ports to 10.0.2.100 (guestfwd'ed by qemu to the host's loopback), so an
# image reference like 127.0.0.1:PORT/app@digest means the same registry on the host and on the board.
set -euo pipefail

OUT=${1:?usage: build-pi-image.sh OUT.img.xz}
SUITE=bookworm
MIRROR=${TINYFLEET_DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${TINYFLEET_IMAGE_CACHE:-/var/cache/tinyfleet}
DISK_ID=7469f1ee                 # the MBR disk identifier: PARTUUIDs are 7469f1ee-01 and -02
BOOT_MIB=256
ROOT_MIB=2560
PACKAGES=(systemd systemd-sysv udev dbus kmod procps iproute2 ca-certificates sudo less
          linux-image-arm64 initramfs-tools
          cloud-init python3-cffi-backend netplan.io openssh-server
          python3 python3-venv
          docker.io
          dosfstools)
RECIPE_VERSION=1                 # bump when the chroot configuration below changes

log() { printf '\033[1m[pi-image]\033[0m %s\n' "$*" >&2; }
[ "$(id -u)" -eq 0 ] || { log "needs root (debootstrap, chroot)"; exit 1; }
for tool in debootstrap mkfs.ext4 mkfs.vfat mcopy sfdisk xz; do
  command -v "$tool" >/dev/null || { log "missing $tool (bash scripts/dev.sh setup installs it)"; exit 1; }
done
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || {
  log "qemu-aarch64 is not registered with binfmt_misc (bash scripts/dev.sh setup registers it)"; exit 1; }

KEY=$( { echo "$SUITE $MIRROR $RECIPE_VERSION ${PACKAGES[*]}"; sed -n '/^configure_root()/,/^}/p;/^build_root()/,/^}/p' "$0"; } \
       | sha256sum | cut -c1-16)
mkdir -p "$CACHE"
ROOT_TAR="$CACHE/rootfs-$SUITE-arm64-$KEY.tar"
# Build in memory when there is room: dpkg's fsyncs under qemu-user emulation cost minutes on a disk.
SCRATCH=${TMPDIR:-/tmp}
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && \
   [ "$(df --output=avail -k /dev/shm | tail -1)" -gt $(( 6 * 1024 * 1024 )) ]; then SCRATCH=/dev/shm; fi
WORK=$(mktemp -d "$SCRATCH/pi-image.XXXXXX")
cleanup() {
  for m in proc sys dev/pts dev; do umount -l "$WORK/root/$m" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

configure_root() {
  local r=$1
  cat > "$r/etc/fstab" <<EOF
PARTUUID=$DISK_ID-02  /               ext4    defaults,noatime  0       1
PARTUUID=$DISK_ID-01  /boot/firmware  vfat    defaults          0       2
EOF
  mkdir -p "$r/boot/firmware"
  echo raspberrypi > "$r/etc/hostname"
  printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\traspberrypi\n' > "$r/etc/hosts"
  # cloud-init: NoCloud only (Raspberry Pi OS: the boot partition is the seed, ds=nocloud on cmdline.txt)
  cat > "$r/etc/cloud/cloud.cfg.d/90-pi-like.cfg" <<'EOF'
datasource_list: [NoCloud, None]
datasource:
  NoCloud:
    seedfrom: file:///boot/firmware/
EOF
  # the seed lives on /boot/firmware: cloud-init's local stage must wait for that mount
  mkdir -p "$r/etc/systemd/system/cloud-init-local.service.d"
  printf '[Unit]\nRequiresMountsFor=/boot/firmware\n' > "$r/etc/systemd/system/cloud-init-local.service.d/boot-firmware.conf"
  # wired network: DHCP on any ethernet (Raspberry Pi OS: NetworkManager does the same by default)
  cat > "$r/etc/systemd/network/20-wired.network" <<'EOF'
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
EOF
  # lab only: forward the loopback ports qemu names (-fw_cfg) to the host side of the user-mode network
  cat > "$r/usr/local/sbin/tinyfleet-lab-forward" <<'EOF'
#!/bin/sh
# Start a systemd-socket-proxyd per port named in qemu's fw_cfg entry opt/tinyfleet/loopback-ports
# (space separated); 127.0.0.1:PORT on this VM then reaches 10.0.2.100:PORT, which qemu's guestfwd
# leads to the host's 127.0.0.1:PORT. Nothing named: nothing started.
set -eu
modprobe qemu_fw_cfg 2>/dev/null || true
F=/sys/firmware/qemu_fw_cfg/by_name/opt/tinyfleet/loopback-ports/raw
[ -r "$F" ] || exit 0
for port in $(cat "$F"); do
  systemd-run --unit "tinyfleet-lab-forward-$port" --property Restart=always \
    --socket-property ListenStream=127.0.0.1:"$port" /lib/systemd/systemd-socket-proxyd 10.0.2.100:"$port" || true
done
EOF
  chmod 0755 "$r/usr/local/sbin/tinyfleet-lab-forward"
  cat > "$r/etc/systemd/system/tinyfleet-lab-forward.service" <<'EOF'
[Unit]
Description=lab only: loopback ports forwarded to the host (qemu fw_cfg)
Before=docker.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/tinyfleet-lab-forward

[Install]
WantedBy=multi-user.target
EOF
  chroot "$r" systemctl enable systemd-networkd.service tinyfleet-lab-forward.service >/dev/null 2>&1
  chroot "$r" systemctl disable ssh.service >/dev/null 2>&1 || true   # Raspberry Pi OS: off until asked for
  # root has no password (Raspberry Pi OS has no root login); cloud-init creates the user it is given
  chroot "$r" passwd -l root >/dev/null
  rm -f "$r/etc/ssh/ssh_host_"*   # per board, made on first boot
  : > "$r/etc/machine-id"         # per board, made on first boot
  rm -f "$r/var/lib/dbus/machine-id"
  chroot "$r" apt-get clean
  rm -rf "$r/var/lib/apt/lists/"* "$r/var/log/"*.log "$r/debootstrap"
}

build_root() {
  local r=$WORK/root
  log "debootstrap $SUITE arm64 (first stage)"
  local include
  include=$(IFS=,; echo "${PACKAGES[*]}")
  debootstrap --arch=arm64 --foreign --variant=minbase --include="$include" "$SUITE" "$r" "$MIRROR" \
    > "$WORK/debootstrap-1.log" 2>&1 || { tail -30 "$WORK/debootstrap-1.log" >&2; exit 1; }
  log "debootstrap second stage under qemu-user (slow)"
  # Only while building: dpkg without fsync (the result is tarred, then fsynced once), and no manual
  # pages or translations to unpack under emulation (a board's man pages are not what this image tests).
  mkdir -p "$r/etc/dpkg/dpkg.cfg.d"
  printf 'force-unsafe-io\n' > "$r/etc/dpkg/dpkg.cfg.d/zz-build-unsafe-io"
  printf 'path-exclude=/usr/share/man/*\npath-exclude=/usr/share/locale/*\npath-include=/usr/share/locale/locale.alias\n' \
    > "$r/etc/dpkg/dpkg.cfg.d/lab-no-man-pages"
  # The initramfs carries the few modules a qemu -M virt board needs to find its root (virtio, ext4,
  # vfat), not Debian's MODULES=most: generating that one under emulation took over ten minutes.
  mkdir -p "$r/etc/initramfs-tools/conf.d" "$r/usr/share/initramfs-tools/modules.d"
  printf 'MODULES=list\nFSTYPE=ext4\n' > "$r/etc/initramfs-tools/conf.d/lab-virt.conf"
  printf '%s\n' virtio_pci virtio_mmio virtio_blk virtio_net ext4 vfat nls_cp437 nls_ascii \
    > "$r/usr/share/initramfs-tools/modules.d/lab-virt"
  local stage2
  stage2=$(date +%s)
  chroot "$r" /debootstrap/debootstrap --second-stage > "$WORK/debootstrap-2.log" 2>&1 || {
    tail -30 "$WORK/debootstrap-2.log" >&2; tail -50 "$r/debootstrap/debootstrap.log" >&2 || true; exit 1; }
  rm -f "$r/etc/dpkg/dpkg.cfg.d/zz-build-unsafe-io"
  log "second stage took $(( $(date +%s) - stage2 )) s"
  echo "deb $MIRROR $SUITE main" > "$r/etc/apt/sources.list"
  configure_root "$r"
  log "caching the root file system: $ROOT_TAR"
  tar --numeric-owner --xattrs -C "$r" -cf "$ROOT_TAR.tmp" .
  sync "$ROOT_TAR.tmp"
  mv -f "$ROOT_TAR.tmp" "$ROOT_TAR"
  find "$CACHE" -maxdepth 1 -name "rootfs-$SUITE-arm64-*.tar" ! -path "$ROOT_TAR" -delete   # superseded recipes
}

if [ -f "$ROOT_TAR" ]; then
  log "root file system from the cache: $ROOT_TAR"
else
  start=$(date +%s)
  build_root
  log "root file system built in $(( $(date +%s) - start )) s"
  rm -rf "$WORK/root"
fi

log "assembling the disk image"
mkdir -p "$WORK/rootfs"
tar --numeric-owner --xattrs -C "$WORK/rootfs" -xf "$ROOT_TAR"
# the root file system has no `locales` package (Raspberry Pi OS has): cloud-init leaves the locale alone
printf 'locale: false\n' > "$WORK/rootfs/etc/cloud/cloud.cfg.d/91-no-locales.cfg"
KERNEL=$(ls "$WORK"/rootfs/boot/vmlinuz-* | sort -V | tail -1)
INITRD=$(ls "$WORK"/rootfs/boot/initrd.img-* | sort -V | tail -1)

# partition 1: FAT32 bootfs, as Raspberry Pi OS's (the Pi firmware's files replaced by what qemu boots)
mkfs.vfat -F 32 -n bootfs -C "$WORK/boot.fat" $((BOOT_MIB * 1024)) >/dev/null
cat > "$WORK/cmdline.txt" <<EOF
console=ttyAMA0,115200 console=tty1 root=PARTUUID=$DISK_ID-02 rootfstype=ext4 fsck.repair=yes rootwait apparmor=0
EOF
cat > "$WORK/config.txt" <<'EOF'
# For more options and information see
# http://rptl.io/configtxt
dtparam=audio=on
camera_auto_detect=1
display_auto_detect=1
auto_initramfs=1
dtoverlay=vc4-kms-v3d
max_framebuffers=2
disable_fw_kms_setup=1
arm_64bit=1
disable_overscan=1
arm_boost=1

[cm4]
otg_mode=1

[all]
EOF
mcopy -i "$WORK/boot.fat" "$KERNEL" ::kernel8.img
mcopy -i "$WORK/boot.fat" "$INITRD" ::initramfs8
mcopy -i "$WORK/boot.fat" "$WORK/cmdline.txt" ::cmdline.txt
mcopy -i "$WORK/boot.fat" "$WORK/config.txt" ::config.txt
# the NoCloud seed templates Raspberry Pi OS ships on its boot partition (pi-gen stage2/04-cloud-init)
printf '#cloud-config\n# Raspberry Pi Imager (or tinyfleet provision) writes the first-boot settings here\n' > "$WORK/user-data"
printf 'instance-id: rpi-image\n' > "$WORK/meta-data"
printf '# network settings for cloud-init (netplan v2); none by default\n' > "$WORK/network-config"
for f in user-data meta-data network-config; do mcopy -i "$WORK/boot.fat" "$WORK/$f" ::$f; done

# partition 2: ext4 rootfs straight from the directory (no loop mount)
mkfs.ext4 -q -L rootfs -E root_owner=0:0 -d "$WORK/rootfs" "$WORK/root.ext4" "${ROOT_MIB}M"
rm -rf "$WORK/rootfs"

IMG="$WORK/pi.img"
truncate -s $(( (8 + BOOT_MIB + ROOT_MIB) * 1024 * 1024 )) "$IMG"
sfdisk -q "$IMG" <<EOF
label: dos
label-id: 0x$DISK_ID
start=8MiB, size=${BOOT_MIB}MiB, type=c
start=$((8 + BOOT_MIB))MiB, type=83
EOF
dd if="$WORK/boot.fat" of="$IMG" bs=1M seek=8 conv=notrunc,sparse status=none
dd if="$WORK/root.ext4" of="$IMG" bs=1M seek=$((8 + BOOT_MIB)) conv=notrunc,sparse status=none
rm -f "$WORK/boot.fat" "$WORK/root.ext4"

log "compressing to $OUT"
mkdir -p "$(dirname "$OUT")"
xz -T0 -1 -c "$IMG" > "$OUT.tmp"
mv -f "$OUT.tmp" "$OUT"
log "done: $OUT ($(du -h "$OUT" | cut -f1))"
