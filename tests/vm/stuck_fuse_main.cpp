// SPDX-License-Identifier: MIT
// qxa-stuck-fuse DIR [SUBTYPE [SOURCE]]: mounts a FUSE filesystem that never answers on DIR and
// holds it until killed. Copied into the test guest (it is static) to show that the agent
// neither freezes, statfs-es nor steps into what a user-space filesystem answers for.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "support/stuck_fuse.hpp"

int main(int argc, char** argv) {
  if (argc < 2 || argc > 4) {
    std::fprintf(stderr, "usage: qxa-stuck-fuse DIR [SUBTYPE [SOURCE]]\n");
    return 2;
  }
  try {
    qxa::test::stuck_fuse fuse(argv[1], argc > 2 ? argv[2] : "stuck", argc > 3 ? argv[3] : "stuck");
    std::printf("QXA-FUSE-MOUNTED %s\n", argv[1]);
    std::fflush(stdout);
    for (;;) ::pause();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qxa-stuck-fuse: %s\n", e.what());
    return 1;
  }
}
