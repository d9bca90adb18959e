// SPDX-License-Identifier: MIT
// qxa-spawn-floor: the spawn floor of qx-bench. A small static process that starts PROGRAM
// COUNT times with posix_spawn and waits for each with waitpid, and prints each round's
// milliseconds on its own line: what starting a program costs on this machine, with nothing
// of ours around it.
// Usage: qxa-spawn-floor PROGRAM COUNT
#include <spawn.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>

extern char** environ;

int main(int argc, char** argv) {
  if (argc != 3 || std::atoi(argv[2]) <= 0) {
    std::fprintf(stderr, "usage: qxa-spawn-floor PROGRAM COUNT\n");
    return 2;
  }
  const int count = std::atoi(argv[2]);
  char* args[] = {argv[1], nullptr};
  for (int i = 0; i < count; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    pid_t pid = 0;
    if (::posix_spawn(&pid, argv[1], nullptr, nullptr, args, environ) != 0) {
      std::perror("posix_spawn");
      return 1;
    }
    int status = 0;
    if (::waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) {
      std::fprintf(stderr, "qxa-spawn-floor: %s did not exit normally\n", argv[1]);
      return 1;
    }
    const std::chrono::duration<double, std::milli> took = std::chrono::steady_clock::now() - t0;
    std::printf("%.6f\n", took.count());
  }
  return 0;
}
