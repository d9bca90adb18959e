// SPDX-License-Identifier: MIT
// qxa-listen-probe.so, an LD_PRELOAD shim for tests: when a program calls listen() on a unix
// socket, appends "PATH MODE" (the socket file's mode at that moment, in octal) to the file
// named by QXA_LISTEN_PROBE, then listens. It shows what a client could do between a socket's
// bind and any chmod that follows.
#include <dlfcn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cstdio>
#include <cstdlib>

extern "C" int listen(int fd, int backlog) {
  using listen_fn = int (*)(int, int);
  static const auto real = reinterpret_cast<listen_fn>(::dlsym(RTLD_NEXT, "listen"));
  sockaddr_un address{};
  socklen_t length = sizeof address;
  const char* out = std::getenv("QXA_LISTEN_PROBE");
  if (out != nullptr && ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0 &&
      address.sun_family == AF_UNIX && address.sun_path[0] != '\0') {
    struct stat st {};
    if (::stat(address.sun_path, &st) == 0) {
      if (FILE* f = std::fopen(out, "a")) {
        std::fprintf(f, "%s %o\n", address.sun_path, st.st_mode & 07777);
        std::fclose(f);
      }
    }
  }
  return real(fd, backlog);
}
