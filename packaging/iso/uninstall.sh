#!/bin/sh
# SPDX-License-Identifier: MIT
#
# Removes what install.sh installed; /etc/quantix-kvm/agent.toml is kept.
#
#   uninstall.sh [--root DIR]
set -eu

root=
while [ $# -gt 0 ]; do
  case "$1" in
    --root) [ $# -ge 2 ] || { echo "uninstall.sh: --root needs a directory" >&2; exit 2; }
            root=${2%/}; shift 2 ;;
    --root=*) root=${1#--root=}; root=${root%/}; shift ;;
    -h|--help) sed -n '3,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "uninstall.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done
manifest="$root/var/lib/quantix-kvm-agent/installed-files"
[ -f "$manifest" ] || { echo "uninstall.sh: nothing installed${root:+ in $root}" >&2; exit 1; }

if [ -z "$root" ]; then
  if [ -d /run/systemd/system ]; then
    systemctl stop quantix-kvm-agent.service 2>/dev/null || true
  elif [ -x /etc/init.d/quantix-kvm-agent ]; then
    /etc/init.d/quantix-kvm-agent stop 2>/dev/null || true
    command -v update-rc.d >/dev/null 2>&1 && update-rc.d -f quantix-kvm-agent remove >/dev/null 2>&1 || true
    command -v rc-update >/dev/null 2>&1 && rc-update del quantix-kvm-agent default >/dev/null 2>&1 || true
  fi
fi

while IFS= read -r f; do
  [ -n "$f" ] || continue
  rm -f "$root$f"
  # Remove directories the install created, as long as they are empty.
  d=$(dirname "$f")
  while [ "$d" != / ] && rmdir "$root$d" 2>/dev/null; do d=$(dirname "$d"); done
done < "$manifest"
rm -f "$manifest"
# What upgrades from the host left: the binary they replaced, a staged one, their record.
rm -f "$root/usr/sbin/quantix-kvm-agent.previous" "$root/usr/sbin/.quantix-kvm-agent.upgrade" \
  "$root/var/lib/quantix-kvm-agent/upgrade" "$root/var/lib/quantix-kvm-agent/upgrade.new"
rmdir "$root/var/lib/quantix-kvm-agent" "$root/var/lib" "$root/var" 2>/dev/null || true

if [ -z "$root" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  udevadm control --reload 2>/dev/null || true  # forget the removed rule now
fi
echo "uninstall.sh: removed quantix-kvm-agent; /etc/quantix-kvm/agent.toml is kept"
