#!/bin/sh
# SPDX-License-Identifier: MIT
#
# Builds the small test guest: Debian's kernel and a busybox initramfs that loads the virtio
# modules, makes /dev/virtio-ports/<name>, mounts /proc, /sys and /dev, and runs the static
# quantix-kvm-agent under a supervisor loop that restarts it when it exits, as a service
# manager would.
#
#   build-vm.sh OUT_DIR AGENT_BINARY [KERNEL_RELEASE]
#
# QXA_VM_EXTRA_PROGRAMS: more static programs, space-separated, copied into the guest's
# /usr/local/bin (the benchmarks' image carries its port echo this way; the tests' has none).
# Writes OUT_DIR/kernel (the uncompressed vmlinux when it can be extracted: it boots in about
# half the time under TCG thanks to its PVH entry point; otherwise the bzImage),
# OUT_DIR/initrd.cpio.gz and OUT_DIR/kernel-release.
set -eu

out=${1:?usage: build-vm.sh OUT_DIR AGENT_BINARY [KERNEL_RELEASE]}
agent=${2:?usage: build-vm.sh OUT_DIR AGENT_BINARY [KERNEL_RELEASE]}
here=$(cd "$(dirname "$0")" && pwd)

if [ $# -ge 3 ]; then
  release=$3
else
  # The newest installed Debian kernel that has its modules.
  release=
  for m in /lib/modules/*; do
    [ -f "/boot/vmlinuz-${m##*/}" ] && release=${m##*/}
  done
fi
if [ -z "$release" ] || [ ! -f "/boot/vmlinuz-$release" ]; then
  echo "build-vm.sh: no kernel found: install linux-image-amd64 (./tests/run.sh does)" >&2
  exit 1
fi
busybox=/bin/busybox
[ -x "$busybox" ] && "$busybox" --list >/dev/null 2>&1 && file -L "$busybox" 2>/dev/null | grep -q 'statically linked' || {
  echo "build-vm.sh: a static busybox is needed: install busybox-static" >&2
  exit 1
}
mkdir -p "$out"

# ---- kernel: extract vmlinux from the bzImage (xz, zstd or gzip payload) ----------------
vmlinuz=/boot/vmlinuz-$release
if [ ! -s "$out/kernel" ] || [ "$vmlinuz" -nt "$out/kernel" ] || [ "$(cat "$out/kernel-release" 2>/dev/null)" != "$release" ]; then
  rm -f "$out/kernel.tmp"
  try_extract() { # magic decompressor...
    magic=$1; shift
    for pos in $(LC_ALL=C grep -obUaP "$magic" "$vmlinuz" 2>/dev/null | cut -d: -f1 | head -5); do
      tail -c +"$((pos + 1))" "$vmlinuz" | "$@" > "$out/kernel.tmp" 2>/dev/null || true
      if [ -s "$out/kernel.tmp" ] && head -c 4 "$out/kernel.tmp" | grep -q 'ELF'; then
        return 0
      fi
    done
    return 1
  }
  if try_extract '\xFD\x37\x7A\x58\x5A\x00' xz -dc --single-stream ||
     try_extract '\x28\xB5\x2F\xFD' zstd -dc ||
     try_extract '\x1F\x8B\x08' gzip -dc; then
    mv "$out/kernel.tmp" "$out/kernel"
  else
    echo "build-vm.sh: cannot extract vmlinux; booting the compressed kernel (slower)" >&2
    cp "$vmlinuz" "$out/kernel"
  fi
  rm -f "$out/kernel.tmp"
fi
echo "$release" > "$out/kernel-release"

# ---- initramfs --------------------------------------------------------------------------
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
chmod 755 "$root"  # the guest's /: users other than root (alice) must be able to enter it
mkdir -p "$root/bin" "$root/sbin" "$root/etc/quantix-kvm" "$root/proc" "$root/sys" "$root/dev" \
         "$root/run" "$root/tmp" "$root/mnt" "$root/lib/modules/$release"
cp "$busybox" "$root/bin/busybox"
cp "$agent" "$root/sbin/quantix-kvm-agent"
cp "$here/init" "$root/init"
mkdir -p "$root/usr/local/bin"
for program in ${QXA_VM_EXTRA_PROGRAMS:-}; do
  cp "$program" "$root/usr/local/bin/"
  chmod 755 "$root/usr/local/bin/${program##*/}"
done
chmod 755 "$root/init" "$root/sbin/quantix-kvm-agent"
# Accounts: root, and alice for the password and SSH key tests.
cat > "$root/etc/passwd" <<'PW'
root:x:0:0:root:/root:/bin/sh
alice:x:1000:1000:Alice:/home/alice:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PW
cat > "$root/etc/group" <<'GR'
root:x:0:
alice:x:1000:
nogroup:x:65534:
GR
cat > "$root/etc/shadow" <<'SH'
root:*:19000:0:99999:7:::
alice:!:19000:0:99999:7:::
nobody:*:19000:0:99999:7:::
SH
chmod 640 "$root/etc/shadow"
mkdir -p "$root/root" "$root/home/alice" "$root/usr/local/sbin"
# The guest's power commands: say on the console what was asked, then do it at once (there is
# no service manager here to stop services first).
for action in poweroff reboot halt; do
  printf '#!/bin/sh\necho "QXA-POWER %s $*" > /dev/console\nexec /bin/busybox %s -f\n' \
    "$action" "$action" > "$root/usr/local/sbin/$action"
  chmod 755 "$root/usr/local/sbin/$action"
done
cat > "$root/etc/os-release" <<OS
NAME="Quantix test guest"
ID=quantix-test
VERSION_ID="1"
PRETTY_NAME="Quantix test guest (busybox, Debian kernel $release)"
OS

# Modules in load order, found with their dependencies in the installed tree.
modules="virtio_pci_legacy_dev virtio_pci_modern_dev virtio_ring virtio virtio_pci virtio_console \
failover net_failover virtio_net virtio_blk crc16 crc32c_generic crc32c_intel libcrc32c mbcache jbd2 ext4 \
scsi_common scsi_mod libata libahci ahci cdrom sr_mod isofs fuse"
: > "$root/etc/modules"
for m in $modules; do
  path=$(modinfo -k "$release" -n "$m" 2>/dev/null || true)
  case "$path" in
    /*) # a file: copy it (decompressing if the distribution compressed it)
      case "$path" in
        *.ko) cp "$path" "$root/lib/modules/$release/$m.ko" ;;
        *.ko.xz) xz -dc "$path" > "$root/lib/modules/$release/$m.ko" ;;
        *.ko.zst) zstd -dcq "$path" > "$root/lib/modules/$release/$m.ko" ;;
        *.ko.gz) gzip -dc "$path" > "$root/lib/modules/$release/$m.ko" ;;
      esac
      echo "$m" >> "$root/etc/modules" ;;
    *) ;; # built in, or absent: nothing to load
  esac
done

(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) | gzip -1 > "$out/initrd.cpio.gz.tmp"
mv "$out/initrd.cpio.gz.tmp" "$out/initrd.cpio.gz"
echo "build-vm.sh: $out/kernel ($(head -c 4 "$out/kernel" | grep -q ELF && echo vmlinux || echo bzImage), $release) and $out/initrd.cpio.gz ($(wc -c < "$out/initrd.cpio.gz") bytes)"
