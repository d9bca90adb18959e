// SPDX-License-Identifier: MIT
// qxa-broken-agent: a new agent binary that does not start, for the upgrade tests. It names
// itself as an agent when asked (--version), so the guest's checks take it, and fails at once
// otherwise: what the guest's guard must roll back.
#include <cstdio>
#include <cstring>

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "--version") == 0) {
    std::puts("quantix-kvm-agent 0.0.0-broken");
    return 0;
  }
  std::fputs("qxa-broken-agent: this agent does not start\n", stderr);
  return 1;
}
