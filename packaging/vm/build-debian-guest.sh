#!/bin/sh
# SPDX-License-Identifier: MIT
#
# Builds the Debian 12 test guest: a raw ext4 root filesystem made by mmdebstrap from Debian's
# packages (systemd as PID 1, udev, an unprivileged user alice), booted with the host's Debian
# kernel and its initramfs. No agent inside: the tests install it as users do, from the agent
# ISO or the Debian package.
#
#   build-debian-guest.sh OUT_DIR [KERNEL_RELEASE]
#
# Writes OUT_DIR/debian-guest.img and OUT_DIR/debian-guest.release (the kernel release whose
# modules are inside). The downloaded packages are kept in OUT_DIR/debs: a later build (after
# this script changes, say) installs from them as a flat local repository, without network.
# The image is rebuilt only when this script or the kernel changes.
set -eu

out=${1:?usage: build-debian-guest.sh OUT_DIR [KERNEL_RELEASE]}
here=$(cd "$(dirname "$0")" && pwd)
script="$here/$(basename "$0")"

if [ $# -ge 2 ]; then
  release=$2
else
  release=
  for m in /lib/modules/*; do
    [ -f "/boot/vmlinuz-${m##*/}" ] && release=${m##*/}
  done
fi
if [ -z "$release" ] || [ ! -f "/boot/initrd.img-$release" ]; then
  echo "build-debian-guest.sh: no kernel with an initramfs in /boot: install linux-image-amd64" >&2
  exit 1
fi
command -v mmdebstrap >/dev/null || {
  echo "build-debian-guest.sh: mmdebstrap is needed: install it (./tests/run.sh does)" >&2
  exit 1
}

image="$out/debian-guest.img"
stamp="$out/debian-guest.stamp"
want_stamp="$(sha256sum < "$script" | cut -d' ' -f1) $release"
if [ -s "$image" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want_stamp" ]; then
  echo "build-debian-guest.sh: $image is up to date"
  exit 0
fi
mkdir -p "$out/debs"
started=$(date +%s)

# The packages: what a small server guest has, plus what the tests use in it (lvm2: a
# filesystem on LVM on a partition, for the disks view).
packages=systemd-sysv,udev,dbus,util-linux,e2fsprogs,kmod,procps,iproute2,passwd,login,psmisc,less,tzdata,lvm2

# Where they come from: the cached packages when they cover the list (no network), otherwise
# the mirrors apt is configured with on this machine.
rootfs=$(mktemp -d "$out/rootfs.XXXXXX")
list=$(mktemp)
trap 'rm -rf "$rootfs" "$list"' EXIT
if [ -s "$out/debs/Packages" ] && [ "$(cat "$out/debs/packages" 2>/dev/null)" = "$packages" ]; then
  echo "build-debian-guest.sh: from the cached packages in $out/debs"
  echo "deb [trusted=yes] file://$(cd "$out/debs" && pwd) ./" > "$list"
else
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] && grep -E '^deb ' "$f" | grep -v 'deb-src' >> "$list" || true
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # deb822 to one-line entries: Types, URIs, Suites, Components of each stanza.
    awk -v RS= '{
      types=""; uris=""; suites=""; comps=""; signed=""
      n = split($0, lines, "\n")
      for (i = 1; i <= n; i++) {
        split(lines[i], kv, ": ")
        if (kv[1] == "Types") types = kv[2]
        else if (kv[1] == "URIs") uris = kv[2]
        else if (kv[1] == "Suites") suites = kv[2]
        else if (kv[1] == "Components") comps = kv[2]
        else if (kv[1] == "Signed-By") signed = kv[2]
      }
      if (types !~ /(^| )deb( |$)/) next
      ns = split(suites, s, " "); nu = split(uris, u, " ")
      for (j = 1; j <= nu; j++) for (k = 1; k <= ns; k++)
        printf "deb %s%s %s %s\n", (signed != "" ? "[signed-by=" signed "] " : ""), u[j], s[k], comps
    }' "$f" >> "$list"
  done
  [ -s "$list" ] || echo "deb http://deb.debian.org/debian bookworm main" > "$list"
fi

# The guest's console: the test types commands on ttyS0 and reads markers starting with "QXA-"
# (the same protocol as the busybox guest's /init). No login, no echo.
files="$rootfs.files"
mkdir -p "$files"
trap 'rm -rf "$rootfs" "$list" "$files"' EXIT
cat > "$files/qxa-console" <<'CONSOLE'
#!/bin/sh
# Commands from the test, one per console line; answers are markers starting with "QXA-".
stty -echo 2>/dev/null
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Plain text for the test to read: no colours, no pager, no terminal tricks.
export TERM=dumb SYSTEMD_COLORS=0 SYSTEMD_PAGER= SYSTEMD_URLIFY=0 LANG=C.UTF-8
echo "QXA-VM-READY kernel=$(uname -r) boot=$(cat /proc/sys/kernel/random/boot_id)"
while read -r cmd args; do
  case "$cmd" in
    qxa-agent-pid) echo "QXA-AGENT-PID $(pidof quantix-kvm-agent) QXA-END" ;;
    qxa-kill-agent) kill -9 $(pidof quantix-kvm-agent) && echo "QXA-KILLED" ;;
    qxa-run) sh -c "$args" < /dev/null 2>&1; echo "QXA-RAN status=$?" ;;
    qxa-poweroff) echo "QXA-POWEROFF"; systemctl poweroff --force --force ;;
    "") ;;
    *) echo "QXA-UNKNOWN-COMMAND $cmd" ;;
  esac
done
CONSOLE
cat > "$files/qxa-console.service" <<'UNIT'
[Unit]
Description=Quantix test console on ttyS0
After=multi-user.target
Conflicts=serial-getty@ttyS0.service

[Service]
ExecStart=/usr/local/sbin/qxa-console
StandardInput=tty-force
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
Restart=always

[Install]
WantedBy=multi-user.target
UNIT

mods="$out/modules.list"
# The host kernel's modules the guest needs after the initramfs (which has virtio_blk and
# ext4): the agent's port, the CD-ROM with the agent ISO, the NIC, FUSE, the automounter
# systemd asks for, device mapper (LVM) and a virtio-scsi disk; with their dependencies.
for m in virtio_console virtio_net sr_mod isofs ahci ata_piix fuse virtio_rng autofs4 dm_mod \
  virtio_scsi sd_mod; do
  modprobe -S "$release" --show-depends "$m" 2>/dev/null | awk '$1 == "insmod" { print $2 }'
done | sort -u > "$mods"

log="$out/mmdebstrap.log"
mmdebstrap --variant=apt --include="$packages" --skip=essential/unlink \
  --aptopt='Acquire::Retries "3"' \
  --setup-hook='mkdir -p "$1/var/cache/apt/archives"' \
  --setup-hook="sync-in '$out/debs' /var/cache/apt/archives" \
  --customize-hook="sync-out /var/cache/apt/archives '$out/debs'" \
  --customize-hook='echo qx-debian > "$1/etc/hostname"' \
  --customize-hook='printf "127.0.0.1 localhost\n127.0.1.1 qx-debian\n" > "$1/etc/hosts"' \
  --customize-hook='chroot "$1" useradd --create-home --uid 1000 --shell /bin/bash alice' \
  --customize-hook='printf "/dev/vda / ext4 rw,errors=remount-ro 0 1\n" > "$1/etc/fstab"' \
  --customize-hook="install -m 755 '$files/qxa-console' \"\$1/usr/local/sbin/\"" \
  --customize-hook="install -m 644 '$files/qxa-console.service' \"\$1/etc/systemd/system/\"" \
  --customize-hook='chroot "$1" systemctl enable qxa-console.service' \
  --customize-hook='chroot "$1" systemctl mask serial-getty@ttyS0.service getty@tty1.service' \
  --customize-hook='chroot "$1" systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer' \
  --customize-hook="mkdir -p \"\$1/lib/modules/$release\"" \
  --customize-hook="while read -r f; do mkdir -p \"\$1\$(dirname \"\$f\")\"; cp \"\$f\" \"\$1\$f\"; done < '$mods'" \
  --customize-hook="cp /lib/modules/$release/modules.order /lib/modules/$release/modules.builtin /lib/modules/$release/modules.builtin.modinfo \"\$1/lib/modules/$release/\"" \
  --customize-hook="depmod -b \"\$1\" $release" \
  bookworm "$rootfs" "$list" > "$log" 2>&1 || {
  tail -n 30 "$log" >&2
  echo "build-debian-guest.sh: mmdebstrap failed; its whole log is $log" >&2
  exit 1
}

# The packages, indexed as a flat repository for the next build.
(cd "$out/debs" && dpkg-scanpackages --multiversion . /dev/null > Packages 2>/dev/null)
echo "$packages" > "$out/debs/packages"
rm -rf "$rootfs/var/cache/apt/archives/"*.deb

# A sparse image, large enough for the tests' files: ext4 made from the tree, no root needed.
rm -f "$image.tmp"
mkfs.ext4 -q -F -L qx-root -d "$rootfs" "$image.tmp" 1536M
mv "$image.tmp" "$image"
echo "$release" > "$out/debian-guest.release"
echo "$want_stamp" > "$stamp"
echo "build-debian-guest.sh: $image ($release) in $(($(date +%s) - started)) s"
