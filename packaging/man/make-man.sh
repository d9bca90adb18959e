#!/bin/sh
# SPDX-License-Identifier: MIT
# Makes the manual pages, each from one source of truth: the programs' own --help (help2man;
# NAME.h2m adds what --help has no place for: signals, exit status, files) and the
# configuration files as shipped, whose comments document each setting.
#
#   make-man.sh OUTDIR VERSION QX_AGENTD QX_AGENT QUANTIX_KVM_AGENT
#
# Writes OUTDIR/NAME.SECTION.gz, compressed as Debian wants (gzip -9n), for qx-agentd(8),
# qx-agent(1), quantix-kvm-agent(8), qx-libvirt-attach(8), qx-agentd.toml(5), agent.toml(5).
set -eu
usage="usage: make-man.sh OUTDIR VERSION QX_AGENTD QX_AGENT QUANTIX_KVM_AGENT"
out=${1:?$usage}
version=${2:?$usage}
agentd=${3:?$usage}
cli=${4:?$usage}
agent=${5:?$usage}
here=$(cd "$(dirname "$0")" && pwd)
pkg=$(dirname "$here")
# Dated by the release (the Debian changelog's entry), not by the build: reproducible pages.
: "${SOURCE_DATE_EPOCH:=$(dpkg-parsechangelog -l "$pkg/deb/changelog" -STimestamp)}"
export SOURCE_DATE_EPOCH
date=$(LC_ALL=C date -u -d "@$SOURCE_DATE_EPOCH" '+%B %Y')
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$out"

compress() { # NAME.SECTION
  gzip -9n < "$stage/$1" > "$out/$1.gz.new"
  mv -f "$out/$1.gz.new" "$out/$1.gz"
}

program_page() { # PROGRAM SECTION [help2man options...]
  program=$1
  section=$2
  shift 2
  name=$(basename "$program")
  help2man --no-info --section="$section" --source="quantix-kvm $version" \
    --include="$here/$name.h2m" "$@" --output="$stage/$name.$section" "$program"
  compress "$name.$section"
}

config_page() { # FILE PROGRAM SECTION SUMMARY RELOAD
  awk -v page="$(basename "$1")" -v path="/etc/quantix-kvm/$(basename "$1")" -v program="$2" \
    -v section="$3" -v summary="$4" -v reload="$5" -v version="$version" -v date="$date" \
    -f "$here/config2man.awk" "$1" > "$stage/$(basename "$1").5"
  compress "$(basename "$1").5"
}

program_page "$agentd" 8
program_page "$agent" 8
# qx-agent's commands, each from its own --help.
"$cli" --help | sed -n '/^Subcommands:$/,$s/^  \([a-z][a-z-]*\)  .*/\1/p' > "$stage/verbs"
[ -s "$stage/verbs" ] || { echo "make-man.sh: no commands in $cli --help" >&2; exit 1; }
while read -r verb; do "$cli" "$verb" --help; echo; done < "$stage/verbs" |
  awk -f "$here/commands2man.awk" > "$stage/commands.h2m"
program_page "$cli" 1 --include="$stage/commands.h2m"
program_page "$pkg/libvirt/qx-libvirt-attach" 8 --version-string="$version"
config_page "$pkg/config/qx-agentd.toml" qx-agentd 8 "settings of qx-agentd, the Quantix KVM host daemon" \
  ", and again on SIGHUP"
config_page "$pkg/config/agent.toml" quantix-kvm-agent 8 \
  "settings of quantix-kvm-agent, the Quantix KVM guest agent" ""
