#!/bin/sh
# Builds the system rig's guest: Debian bookworm arm64 with systemd, udev and
# Debian's arm64 kernel, made with mmdebstrap from Debian's own packages, plus
# gpio-sim built as an out-of-tree module (Debian's kernel lacks
# CONFIG_GPIO_SIM). Writes, under $1 (default /var/cache/hl7edge-system-arm64):
#   <key>/disk.img   raw ext4 root file system (the rig boots a qcow2 overlay)
#   <key>/vmlinuz, <key>/initrd.img, <key>/id_ed25519 (root's ssh key)
# where <key> hashes this script and the patch, so an edit rebuilds. Nothing
# here goes into the repository (see .gitignore); the cache is reused.
#
# Needs root, mmdebstrap, qemu-user-static, binfmt-support, e2fsprogs, and
# binfmt_misc mounted (a cross-architecture chroot runs arm64 maintainer
# scripts through qemu-aarch64-static).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
cache=${1:-/var/cache/hl7edge-system-arm64}
key=$(cat "$here/image.sh" "$here/gpio-sim-noirq.patch" | sha256sum | cut -c1-12)
out=$cache/$key
if [ -s "$out/disk.img" ] && [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.img" ]; then
	echo "$out"
	exit 0
fi

for tool in mmdebstrap mkfs.ext4 ssh-keygen; do
	command -v "$tool" >/dev/null || {
		echo "image.sh: $tool is missing; apt-get install mmdebstrap qemu-user-static binfmt-support e2fsprogs openssh-client" >&2
		exit 1
	}
done
if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
	mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
	update-binfmts --enable >/dev/null 2>&1 || true
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
	echo "image.sh: no qemu-aarch64 binfmt handler; apt-get install qemu-user-static binfmt-support, then update-binfmts --enable" >&2
	exit 1
fi

work=$cache/build.$$
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
ssh-keygen -q -t ed25519 -N '' -C hl7edge-system-arm64 -f "$work/id_ed25519"
cp "$here/gpio-sim-noirq.patch" "$work/"

# MODULES=list: an initramfs with only what the virt machine's root needs
# takes seconds to build under qemu-user instead of minutes.
# linux-source-6.1 brings gpio-sim.c (and gpiolib.h, which it includes) of
# exactly the kernel the image runs; the tarball is removed once built.
mmdebstrap --arch=arm64 --variant=apt --format=directory \
	--aptopt='APT::Install-Recommends "false"' \
	--dpkgopt='path-exclude=/usr/share/man/*' \
	--dpkgopt='path-exclude=/usr/share/doc/*' \
	--dpkgopt='path-exclude=/usr/share/locale/*' \
	--include=systemd,systemd-sysv,udev,dbus,kmod,procps,iproute2,openssh-server,linux-image-arm64,initramfs-tools,linux-headers-arm64,linux-source-6.1,make,gcc,libc6-dev,xz-utils,e2fsprogs \
	--setup-hook='mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/usr/share/initramfs-tools/modules.d"' \
	--setup-hook='echo MODULES=list > "$1/etc/initramfs-tools/conf.d/hl7edge-rig"' \
	--setup-hook='printf "%s\n" virtio_mmio virtio_pci virtio_blk virtio_net ext4 crc32c_generic > "$1/usr/share/initramfs-tools/modules.d/hl7edge-rig"' \
	--customize-hook='echo hl7edge-rig > "$1/etc/hostname"' \
	--customize-hook='printf "/dev/vda / ext4 defaults,errors=remount-ro 0 1\n" > "$1/etc/fstab"' \
	--customize-hook='printf "[Match]\nName=en* eth*\n[Network]\nDHCP=ipv4\n" > "$1/etc/systemd/network/20-wired.network"' \
	--customize-hook='chroot "$1" systemctl enable systemd-networkd ssh >/dev/null' \
	--customize-hook='chroot "$1" systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer systemd-networkd-wait-online.service >/dev/null 2>&1 || true' \
	--customize-hook="mkdir -p \"\$1/root/.ssh\" && cp '$work/id_ed25519.pub' \"\$1/root/.ssh/authorized_keys\" && chmod 700 \"\$1/root/.ssh\"" \
	--customize-hook="mkdir -p \"\$1/usr/local/src/gpio-sim\" && tar -xJf \"\$1\"/usr/src/linux-source-6.1.tar.xz -C \"\$1/usr/local/src/gpio-sim\" --strip-components=3 --wildcards '*/drivers/gpio/gpio-sim.c' '*/drivers/gpio/gpiolib.h' && rm -f \"\$1\"/usr/src/linux-source-6.1.tar.xz && cd \"\$1/usr/local/src/gpio-sim\" && patch -p3 < '$work/gpio-sim-noirq.patch' && echo 'obj-m := gpio-sim.o' > Kbuild" \
	--customize-hook='kver=$(ls "$1/lib/modules" | head -1); chroot "$1" make -s -C "/usr/src/linux-headers-$kver" M=/usr/local/src/gpio-sim modules && mkdir -p "$1/lib/modules/$kver/updates" && cp "$1/usr/local/src/gpio-sim/gpio-sim.ko" "$1/lib/modules/$kver/updates/" && chroot "$1" depmod "$kver"' \
	--customize-hook="cp \"\$1\"/boot/vmlinuz-* '$work/vmlinuz' && cp \"\$1\"/boot/initrd.img-* '$work/initrd.img'" \
	bookworm "$work/root" http://deb.debian.org/debian

# 4 GiB: the system, the spool under load and two .debs with room to spare.
mkfs.ext4 -q -F -L hl7edge-rig -d "$work/root" "$work/disk.img" 4G
rm -rf "$work/root"
mkdir -p "$out"
mv "$work/disk.img" "$work/vmlinuz" "$work/initrd.img" "$work/id_ed25519" "$work/id_ed25519.pub" "$out/"
echo "$out"
