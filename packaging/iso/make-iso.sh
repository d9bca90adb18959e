#!/bin/sh
# SPDX-License-Identifier: MIT
# Makes the agent ISO: make-iso.sh OUT.iso AGENT_BINARY VERSION [MANUAL_PAGE.gz...]
set -eu
out=${1:?usage: make-iso.sh OUT.iso AGENT_BINARY VERSION [MANUAL_PAGE.gz...]}
agent=${2:?}
version=${3:?}
shift 3
here=$(cd "$(dirname "$0")" && pwd)
pkg=$(dirname "$here")
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp "$agent" "$stage/quantix-kvm-agent"
cp "$here/install.sh" "$here/uninstall.sh" "$here/README.txt" \
   "$here/quantix-kvm-agent.sysv" "$here/quantix-kvm-agent.openrc" "$stage/"
cp "$pkg/systemd/quantix-kvm-agent.service" "$pkg/udev/60-quantix-kvm-agent.rules" \
   "$pkg/config/agent.toml" "$stage/"
# The agent's manual pages, installed by install.sh where the guest has a manual.
for page in "$@"; do cp "$page" "$stage/"; done
chmod 0755 "$stage/quantix-kvm-agent" "$stage/install.sh" "$stage/uninstall.sh" \
   "$stage/quantix-kvm-agent.sysv" "$stage/quantix-kvm-agent.openrc"
echo "$version" > "$stage/VERSION"
(cd "$stage" && find . -type f ! -name SHA256SUMS | sed 's|^\./||' | LC_ALL=C sort |
   xargs sha256sum > SHA256SUMS)
rm -f "$out"
# Rock Ridge keeps the modes (install.sh stays executable), Joliet the long names.
xorriso -report_about SORRY -as mkisofs -quiet -V QUANTIX_AGENT_TOOLS -R -J -o "$out" "$stage"
echo "make-iso.sh: $out ($(wc -c < "$out") bytes)"
