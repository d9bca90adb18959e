#!/bin/sh
# SPDX-License-Identifier: MIT
#
# Installs the Quantix KVM guest agent from this media (the agent ISO). POSIX sh: runs under
# busybox too. Idempotent: running it again upgrades in place and keeps the configuration.
#
#   install.sh [--root DIR] [--no-start]
#
#   --root DIR   install into another root (image builders, tests); nothing is started
#   --no-start   install and enable, but do not start the agent now
set -eu

root=
start=1
while [ $# -gt 0 ]; do
  case "$1" in
    --root) [ $# -ge 2 ] || { echo "install.sh: --root needs a directory" >&2; exit 2; }
            root=${2%/}; shift 2 ;;
    --root=*) root=${1#--root=}; root=${root%/}; shift ;;
    --no-start) start=0; shift ;;
    -h|--help) sed -n '3,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done
[ -z "$root" ] || [ -d "$root" ] || { echo "install.sh: $root is not a directory" >&2; exit 2; }
[ -n "$root" ] && start=0

here=$(cd "$(dirname "$0")" && pwd)
say() { echo "install.sh: $*"; }

# 1. The media is intact.
(cd "$here" && sha256sum -c SHA256SUMS >/dev/null 2>&1) || {
  echo "install.sh: checksum verification failed: the media is damaged or was altered" >&2
  (cd "$here" && sha256sum -c SHA256SUMS 2>&1 | grep -v ': OK$') >&2 || true
  exit 1
}
version=$(cat "$here/VERSION")
say "installing quantix-kvm-agent $version${root:+ into $root}"

# Files go in place by rename, so that a running agent is replaced whole, never half-written.
manifest_dir="$root/var/lib/quantix-kvm-agent"
manifest="$manifest_dir/installed-files"
mkdir -p "$manifest_dir"
: > "$manifest.new"
put() { # SRC DEST MODE
  mkdir -p "$(dirname "$root$2")"
  cp "$1" "$root$2.new.$$"
  chmod "$3" "$root$2.new.$$"
  mv -f "$root$2.new.$$" "$root$2"
  echo "$2" >> "$manifest.new"
}

put "$here/quantix-kvm-agent" /usr/sbin/quantix-kvm-agent 0755

# The configuration is the administrator's: installed once, kept on upgrade and uninstall.
if [ -e "$root/etc/quantix-kvm/agent.toml" ]; then
  say "keeping the existing /etc/quantix-kvm/agent.toml"
else
  mkdir -p "$root/etc/quantix-kvm"
  cp "$here/agent.toml" "$root/etc/quantix-kvm/agent.toml"
  chmod 0644 "$root/etc/quantix-kvm/agent.toml"
fi

# The manual pages, where the guest has a manual (minimal guests often have none).
if [ -d "$root/usr/share/man" ]; then
  for page in "$here"/*.[1-8].gz; do
    [ -e "$page" ] || continue
    name=$(basename "$page")
    section=${name%.gz}
    section=${section##*.}
    put "$page" "/usr/share/man/man$section/$name" 0644
  done
fi

# Which service manager runs in the target?
if [ -d "$root/run/systemd/system" ] || [ -x "$root/lib/systemd/systemd" ] || [ -x "$root/usr/lib/systemd/systemd" ]; then
  manager=systemd
elif [ -x "$root/sbin/openrc-run" ] || [ -x "$root/usr/sbin/openrc-run" ] || [ -x "$root/sbin/openrc" ]; then
  manager=openrc
elif [ -d "$root/etc/init.d" ]; then
  manager=sysv
else
  manager=none
fi

case "$manager" in
  systemd)
    put "$here/quantix-kvm-agent.service" /lib/systemd/system/quantix-kvm-agent.service 0644
    put "$here/60-quantix-kvm-agent.rules" /lib/udev/rules.d/60-quantix-kvm-agent.rules 0644
    # Nothing to enable: the udev rule makes the port's device unit want the agent. Earlier
    # install.sh enabled it as wanted by that device unit; that link goes.
    wants="/etc/systemd/system/dev-virtio\\x2dports-org.quantix.agent.0.device.wants"
    rm -f "$root$wants/quantix-kvm-agent.service"
    rmdir "$root$wants" 2>/dev/null || true
    ;;
  openrc)
    put "$here/quantix-kvm-agent.openrc" /etc/init.d/quantix-kvm-agent 0755
    mkdir -p "$root/etc/runlevels/default"
    ln -sf /etc/init.d/quantix-kvm-agent "$root/etc/runlevels/default/quantix-kvm-agent"
    echo "/etc/runlevels/default/quantix-kvm-agent" >> "$manifest.new"
    ;;
  sysv)
    put "$here/quantix-kvm-agent.sysv" /etc/init.d/quantix-kvm-agent 0755
    ;;
  none)
    say "no service manager found: start /usr/sbin/quantix-kvm-agent from your init system and"
    say "restart it when it exits (it exits 75 when it needs a clean restart)"
    ;;
esac
mv -f "$manifest.new" "$manifest"

if [ "$start" = 1 ]; then
  case "$manager" in
    systemd)
      systemctl daemon-reload
      udevadm control --reload 2>/dev/null || true
      udevadm trigger --settle --subsystem-match=virtio-ports --attr-match=name=org.quantix.agent.0 \
        --action=add 2>/dev/null || true
      if [ -e /dev/virtio-ports/org.quantix.agent.0 ]; then
        # The unit is Type=notify: restart returns once the agent has opened the port, and
        # fails when it cannot start (a bad configuration, the port held by another process).
        if systemctl restart quantix-kvm-agent.service && systemctl is-active --quiet quantix-kvm-agent.service; then
          say "started (systemd): quantix-kvm-agent.service is active"
        else
          echo "install.sh: installed, but quantix-kvm-agent.service did not start:" >&2
          journalctl -u quantix-kvm-agent.service -n 5 -o cat --no-pager >&2 2>/dev/null || true
          exit 1
        fi
      else
        say "installed; the agent starts when the org.quantix.agent.0 port appears"
      fi ;;
    openrc) rc-service quantix-kvm-agent restart && say "started (OpenRC)" ;;
    sysv)
      if command -v update-rc.d >/dev/null 2>&1; then update-rc.d quantix-kvm-agent defaults >/dev/null; fi
      /etc/init.d/quantix-kvm-agent restart && say "started (SysV init)" ;;
    none) ;;
  esac
else
  say "installed; not started (--no-start or --root)"
fi
