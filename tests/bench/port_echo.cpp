// SPDX-License-Identifier: MIT
// qxa-port-echo: the real channel's floor, run inside qx-bench's guest on the agent's
// virtio-serial port while the agent is stopped. It does the least a program can do with the
// port, so that qx-bench can read our figures over the same port against it:
//
//   qxa-port-echo PORT FILE
//
// The host sends commands of 9 bytes: one letter and a 64-bit little-endian count.
//   e N  echo N bytes back as they come (the round trip of a small message, repeated)
//   r N  read N bytes, then answer with the 8 bytes of N (host to guest bulk)
//   s N  send N bytes (guest to host bulk)
//   S N  send the first N bytes of FILE, hashing them, then their SHA-256 (a verified read)
//   R N  read N bytes, hashing them, into FILE.copy, fsync it, then answer with the SHA-256
//        (a verified write)
//   q 0  end
// Static, with the C library and libcrypto's SHA-256 (the agent's): the guest has no other.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "qxa/common/sha256.hpp"

namespace {

int port = -1;

/// Reads what has arrived, at most `n` bytes; -1 on an error. The port reads 0 bytes while no
/// host is connected (not an end of file): wait a little and read again.
ssize_t read_some(char* p, std::size_t n) {
  for (;;) {
    const ssize_t r = ::read(port, p, n);
    if (r > 0 || (r < 0 && errno != EINTR)) return r;
    if (r == 0) {
      const timespec pause{0, 10'000'000};
      ::nanosleep(&pause, nullptr);
    }
  }
}

bool read_exactly(char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t r = read_some(p, n);
    if (r < 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

/// Writes all `n` bytes (the driver takes at most 32 KiB a call).
bool write_exactly(const char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(port, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: qxa-port-echo PORT FILE\n");
    return 2;
  }
  const std::string file = argv[2];
  port = ::open(argv[1], O_RDWR | O_CLOEXEC);
  if (port < 0) {
    std::fprintf(stderr, "qxa-port-echo: %s: %s\n", argv[1], std::strerror(errno));
    return 1;
  }
  std::vector<char> buffer(256u << 10, 'x');
  for (;;) {
    char command[9];
    if (!read_exactly(command, sizeof command)) break;
    std::uint64_t count = 0;
    for (int i = 8; i >= 1; --i) count = count << 8 | static_cast<unsigned char>(command[i]);
    switch (command[0]) {
      case 'e':
        // Each read returns what has arrived (one message), which goes straight back.
        while (count > 0) {
          const ssize_t r = read_some(buffer.data(), std::min<std::uint64_t>(count, 4096));
          if (r < 0) return 1;
          if (!write_exactly(buffer.data(), static_cast<std::size_t>(r))) return 1;
          count -= static_cast<std::uint64_t>(r);
        }
        break;
      case 'r':
        for (std::uint64_t left = count; left > 0;) {
          const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(left, buffer.size()));
          if (!read_exactly(buffer.data(), n)) return 1;
          left -= n;
        }
        if (!write_exactly(command + 1, 8)) return 1;
        break;
      case 's':
        for (std::uint64_t left = count; left > 0;) {
          const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(left, buffer.size()));
          if (!write_exactly(buffer.data(), n)) return 1;
          left -= n;
        }
        break;
      case 'S': {
        const int in = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
        if (in < 0) return 1;
        qxa::common::sha256 digest;
        for (std::uint64_t off = 0; off < count;) {
          const auto n =
              static_cast<std::size_t>(std::min<std::uint64_t>(count - off, buffer.size()));
          const ssize_t r = ::pread(in, buffer.data(), n, static_cast<off_t>(off));
          if (r <= 0) return 1;
          digest.update(buffer.data(), static_cast<std::size_t>(r));
          if (!write_exactly(buffer.data(), static_cast<std::size_t>(r))) return 1;
          off += static_cast<std::uint64_t>(r);
        }
        ::close(in);
        const auto d = digest.finish();
        if (!write_exactly(reinterpret_cast<const char*>(d.data()), d.size())) return 1;
        break;
      }
      case 'R': {
        const auto copy = file + ".copy";
        const int out = ::open(copy.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (out < 0) return 1;
        qxa::common::sha256 digest;
        for (std::uint64_t left = count; left > 0;) {
          const ssize_t r = read_some(buffer.data(), std::min<std::uint64_t>(left, buffer.size()));
          if (r < 0) return 1;
          digest.update(buffer.data(), static_cast<std::size_t>(r));
          if (::write(out, buffer.data(), static_cast<std::size_t>(r)) != r) return 1;
          left -= static_cast<std::uint64_t>(r);
        }
        if (::fsync(out) != 0 || ::close(out) != 0) return 1;
        const auto d = digest.finish();
        if (!write_exactly(reinterpret_cast<const char*>(d.data()), d.size())) return 1;
        break;
      }
      case 'q':
        return 0;
      default:
        std::fprintf(stderr, "qxa-port-echo: unknown command %d\n", command[0]);
        return 1;
    }
  }
  return 1;
}
