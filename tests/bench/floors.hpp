// SPDX-License-Identifier: MIT
// qx-bench's floors: what the machine itself can do, measured in the same run as ours, so that
// each figure of ours is read against a limit rather than against a number from elsewhere.
//   - echo: a raw unix-socket round trip of a 64-byte message (the ping floor);
//   - raw stream: bytes through a unix socket and nothing else;
//   - verified copy: a file through a unix socket with SHA-256 computed on both ends, each end
//     on its own thread, as a verified transfer must (read: the file is read and hashed by the
//     sender; write: the receiver hashes, writes and fsyncs);
//   - spawn: posix_spawn + waitpid of a program from a small static process (qxa-spawn-floor).
#pragma once

#include <cmath>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench_io.hpp"
#include "qxa/common/sha256.hpp"

namespace qxa::bench {

struct floor_figures {
  latency rtt;
  double stream_mib_s = 0;  ///< raw stream, no digest
  double read_mib_s = 0;    ///< verified copy out of a file
  double write_mib_s = 0;   ///< verified copy into a file, fsync'd
  latency spawn;
};

inline double mib_s(std::size_t bytes, clock_type::time_point t0) {
  return static_cast<double>(bytes) / (1 << 20) / (ms_since(t0) / 1000);
}

inline constexpr std::size_t floor_block = 256u << 10;

/// The echo and raw-stream floors: one server thread, answering each 64-byte message; a first
/// byte of 'B' asks for `bytes` of stream instead.
inline void measure_echo_and_stream(const settings& s, const std::string& dir, floor_figures& f) {
  const auto path = dir + "/floor.sock";
  const int l = listen_unix(path);
  std::thread server([l, bytes = s.file_bytes] {
    const int c = ::accept(l, nullptr, nullptr);
    char msg[64];
    std::vector<char> block(floor_block, 'x');
    while (read_all(c, msg, sizeof msg)) {
      if (msg[0] == 'B') {
        for (std::size_t sent = 0; sent < bytes; sent += block.size()) {
          write_all(c, block.data(), std::min(block.size(), bytes - sent));
        }
      } else {
        write_all(c, msg, sizeof msg);
      }
    }
    ::close(c);
  });
  const int fd = connect_unix(path);
  char msg[64] = {'p'};
  for (int i = 0; i < s.pings; ++i) {
    const auto t0 = clock_type::now();
    write_all(fd, msg, sizeof msg);
    read_all(fd, msg, sizeof msg);
    f.rtt.ms.push_back(ms_since(t0));
  }
  msg[0] = 'B';
  std::vector<char> buf(floor_block);
  const auto t0 = clock_type::now();
  write_all(fd, msg, sizeof msg);
  for (std::size_t got = 0; got < s.file_bytes;) {
    const ssize_t r = ::read(fd, buf.data(), buf.size());
    if (r <= 0) die("the raw stream floor ended early");
    got += static_cast<std::size_t>(r);
  }
  f.stream_mib_s = mib_s(s.file_bytes, t0);
  ::close(fd);
  server.join();
  ::close(l);
}

/// One verified copy of `bytes` through a socket pair: the sender (its own thread) takes each
/// block from `next_block`, hashes it and writes it; the receiver (this thread) reads, hashes and
/// hands each piece to `sink`. Both digests must agree. Returns MiB/s.
template <typename NextBlock, typename Sink>
double verified_copy(std::size_t bytes, NextBlock next_block, Sink sink) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) die("socketpair failed");
  common::sha256::digest sent{};
  const auto t0 = clock_type::now();
  std::thread sender([&] {
    common::sha256 d;
    std::vector<char> block(floor_block);
    for (std::size_t off = 0; off < bytes; off += block.size()) {
      const std::size_t n = std::min(block.size(), bytes - off);
      next_block(block.data(), n, off);
      d.update(block.data(), n);
      write_all(sv[0], block.data(), n);
    }
    sent = d.finish();
    ::shutdown(sv[0], SHUT_WR);
  });
  common::sha256 d;
  std::vector<char> buf(floor_block);
  std::size_t got = 0;
  for (ssize_t r; (r = ::read(sv[1], buf.data(), buf.size())) > 0;) {
    d.update(buf.data(), static_cast<std::size_t>(r));
    sink(buf.data(), static_cast<std::size_t>(r));
    got += static_cast<std::size_t>(r);
  }
  const auto received = d.finish();
  sender.join();
  const double rate = mib_s(bytes, t0);
  ::close(sv[0]);
  ::close(sv[1]);
  if (got != bytes || received != sent) die("the verified-copy floor lost bytes");
  return rate;
}

inline void measure_verified_copy(const settings& s, const std::string& dir,
                                  const std::string& file, floor_figures& f) {
  {  // read: out of the file, as the agent serves a read
    const int in = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    f.read_mib_s = verified_copy(
        s.file_bytes,
        [in](char* p, std::size_t n, std::size_t off) {
          if (::pread(in, p, n, static_cast<off_t>(off)) != static_cast<ssize_t>(n)) {
            die("cannot read the test file");
          }
        },
        [](const char*, std::size_t) {});
    ::close(in);
  }
  {  // write: the data is in memory, as the host's is; the receiver writes the file, fsync'd
    std::string data(s.file_bytes, '\0');
    const int in = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (::pread(in, data.data(), data.size(), 0) != static_cast<ssize_t>(data.size())) {
      die("cannot read the test file");
    }
    ::close(in);
    const auto target = dir + "/floor-written.bin";
    const int out = ::open(target.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    const auto t0 = clock_type::now();
    verified_copy(
        data.size(),
        [&data](char* p, std::size_t n, std::size_t off) { std::memcpy(p, data.data() + off, n); },
        [out](const char* p, std::size_t n) {
          if (!write_all(out, p, n)) die("cannot write the floor's file");
        });
    ::fsync(out);
    f.write_mib_s = mib_s(data.size(), t0);  // the fsync belongs to the write, as in ours
    ::close(out);
    ::unlink(target.c_str());
  }
}

inline void measure_spawn(const settings& s, floor_figures& f) {
  std::istringstream lines(
      run_capture({QXA_SPAWN_FLOOR_PATH, "/bin/true", std::to_string(s.execs)}));
  for (double ms; lines >> ms;) f.spawn.ms.push_back(ms);
  if (f.spawn.ms.size() != static_cast<std::size_t>(s.execs)) die("the spawn floor failed");
}

inline floor_figures measure_floors(const settings& s, const std::string& dir,
                                    const std::string& file) {
  floor_figures f;
  measure_echo_and_stream(s, dir, f);
  measure_verified_copy(s, dir, file, f);
  measure_spawn(s, f);
  return f;
}

}  // namespace qxa::bench
