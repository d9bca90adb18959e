#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# The guest's folders are its roles, as their includes draw them (guest/README.md):
#   - each role includes the headers of its own role and of the roles below it, never above
#     (the build enforces it too: a role's include path holds only what it links);
#   - platform and safe_fs include neither Asio nor protobuf, mech no protobuf, and common's
#     base (what the platform links) neither;
#   - no source of guest/ or common/ is over 500 lines without saying at its top (in its first
#     six lines) why it is one file.
# Prints every breach and exits 1 when there is one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

declare -A below=(
  [platform]="platform"
  [safe_fs]="safe_fs platform"
  [mech]="mech safe_fs platform"
  [core]="core mech safe_fs platform"
  [ops]="ops core mech safe_fs platform"
  [qga]="qga ops core mech safe_fs platform"
)
asio_includes='#include [<"](asio[/.]|qxa/common/(async|message_stream)\.hpp)'
proto_includes='#include [<"](quantix/agent/v1/|google/protobuf/|qxa/common/(envelope|message_stream)\.hpp)'
breaches=0
breach() {
  echo "layers: $*"
  breaches=$((breaches + 1))
}

for role in platform safe_fs mech core ops qga; do
  while IFS= read -r file; do
    while IFS= read -r line; do
      used=$(sed -n 's|.*"qxa/guest/\([a-z_]*\)/.*|\1|p' <<<"$line")
      if [[ -n "$used" && " ${below[$role]} " != *" $used "* ]]; then
        breach "$file: $role includes $used, a role above it ($line)"
      fi
    done < <(grep -h '^#include' "$file" || true)
    case "$role" in
      platform | safe_fs)
        if grep -Eq "$asio_includes" "$file"; then breach "$file: $role includes Asio"; fi
        if grep -Eq "$proto_includes" "$file"; then breach "$file: $role includes protobuf"; fi
        ;;
      mech)
        if grep -Eq "$proto_includes" "$file"; then breach "$file: mech includes protobuf"; fi
        ;;
    esac
  done < <(find "guest/$role" -name '*.cpp' -o -name '*.hpp' | sort)
done

for file in common/src/config.cpp common/src/duration.cpp common/src/error.cpp common/src/log.cpp \
  common/src/log_limiter.cpp common/src/posix.cpp common/src/systemd.cpp common/src/sha256.cpp \
  common/src/text.cpp; do
  if grep -Eq "$asio_includes|$proto_includes" "$file"; then
    breach "$file: common's base includes Asio or protobuf"
  fi
done

while IFS= read -r file; do
  lines=$(wc -l <"$file")
  if ((lines > 500)) && ! head -n 6 "$file" | grep -qi 'one file'; then
    breach "$file: $lines lines, and its top does not say why it is one file"
  fi
done < <(find guest common -name '*.cpp' -o -name '*.hpp' | sort)

if ((breaches > 0)); then
  echo "layers: $breaches breaches"
  exit 1
fi
echo "layers: every guest role includes only itself and the roles below it"
