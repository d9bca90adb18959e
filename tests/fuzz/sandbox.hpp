// SPDX-License-Identifier: MIT
// A sandbox for fuzzing the guest's request dispatch with its default policy, which lets the
// host run programs, write files anywhere, set the clock, power off and freeze filesystems.
//
// Before the first input, the fuzzing process moves into new user, mount and UTS namespaces
// and changes its root to a small tmpfs holding an /etc with a passwd, group and shadow file,
// an empty /tmp and a read-only /proc. Whatever a request asks, it happens there: no program
// exists to run, files written land in the tmpfs, and the operations that need privileges of
// the real machine (clock_settime, FIFREEZE, reboot) fail with EPERM, since the namespace's
// root has no capabilities outside it. The directories libFuzzer reads and writes (the corpora,
// the artifact prefix) are bind-mounted at their own paths so that it works as usual.
#pragma once

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

namespace qxa::fuzz {

[[noreturn]] inline void sandbox_fail(const std::string& what) {
  std::fprintf(stderr, "sandbox: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

inline void write_file(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
  if (!f) sandbox_fail("cannot write " + path);
}

/// Enters the sandbox. `keep` are paths (files or directories) that must stay reachable.
inline void enter_sandbox(const std::vector<std::string>& keep) {
  namespace fs = std::filesystem;
  const uid_t uid = ::geteuid();
  const gid_t gid = ::getegid();
  if (::unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWUTS) != 0) sandbox_fail("unshare");
  write_file("/proc/self/setgroups", "deny");
  write_file("/proc/self/uid_map", "0 " + std::to_string(uid) + " 1");
  write_file("/proc/self/gid_map", "0 " + std::to_string(gid) + " 1");
  // Nothing done here propagates back to the real mount table.
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) sandbox_fail("private /");
  // One empty directory serves every run: each mounts its tmpfs there in its own namespace.
  const std::string root = "/tmp/.qxa-fuzz-root";
  if (::mkdir(root.c_str(), 0700) != 0 && errno != EEXIST) sandbox_fail("mkdir " + root);
  if (::mount("qxa-fuzz", root.c_str(), "tmpfs", 0, "size=64m,mode=0755") != 0) {
    sandbox_fail("tmpfs");
  }
  for (const char* d : {"/etc", "/tmp", "/proc", "/run", "/home/alice"}) {
    fs::create_directories(root + d);
  }
  write_file(root + "/etc/passwd",
             "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n");
  write_file(root + "/etc/group", "root:x:0:\nalice:x:1000:\n");
  write_file(root + "/etc/shadow", "root:*:19000:0:99999:7:::\nalice:!:19000:0:99999:7:::\n");
  write_file(root + "/etc/hostname", "fuzz\n");
  write_file(root + "/etc/os-release", "ID=fuzz\nNAME=\"Fuzz sandbox\"\nVERSION_ID=1\n");
  if (::mount("/proc", (root + "/proc").c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0) {
    sandbox_fail("bind /proc");
  }
  // Each kept path is bound at its own path, and every directory above it in the tmpfs is made
  // a mount point of its own first (bound onto itself): a fuzzed rename or removal (mv, rm -r)
  // of an ancestor then fails with EBUSY instead of taking the corpora out of libFuzzer's reach.
  std::vector<std::pair<fs::path, std::string>> binds;
  std::vector<std::string> ancestors;
  for (const auto& k : keep) {
    std::error_code ec;
    fs::path p = fs::absolute(k, ec);
    if (ec) continue;
    if (!fs::is_directory(p, ec)) p = p.parent_path();
    if (p.empty() || !fs::exists(p, ec)) continue;
    const std::string inside = root + p.string();
    fs::create_directories(inside, ec);
    binds.emplace_back(p, inside);
    for (fs::path a = p.parent_path(); a.has_relative_path(); a = a.parent_path()) {
      ancestors.push_back(root + a.string());
    }
  }
  std::sort(ancestors.begin(), ancestors.end());  // a parent before its children
  ancestors.erase(std::unique(ancestors.begin(), ancestors.end()), ancestors.end());
  for (const auto& a : ancestors) {
    if (::mount(a.c_str(), a.c_str(), nullptr, MS_BIND, nullptr) != 0) {
      sandbox_fail("bind " + a + " onto itself");
    }
  }
  for (const auto& [p, inside] : binds) {
    if (::mount(p.c_str(), inside.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0) {
      sandbox_fail("bind " + p.string());
    }
  }
  const std::string cwd = fs::current_path().string();
  if (::chroot(root.c_str()) != 0) sandbox_fail("chroot");
  if (::chdir(cwd.c_str()) != 0 && ::chdir("/") != 0) sandbox_fail("chdir");
}

/// The paths a libFuzzer command line names: corpora and inputs, and the artifact prefix.
inline std::vector<std::string> libfuzzer_paths(int argc, char** argv) {
  std::vector<std::string> paths = {std::filesystem::current_path().string()};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.empty()) continue;
    if (a.front() != '-') {
      paths.push_back(a);
      continue;
    }
    for (const char* flag : {"-artifact_prefix=", "-exact_artifact_path=", "-dict="}) {
      const std::string f = flag;
      if (a.rfind(f, 0) == 0 && a.size() > f.size()) {
        std::string v = a.substr(f.size());
        if (f == "-artifact_prefix=" && v.back() != '/') {
          v = std::filesystem::path(v).parent_path().string();
        }
        if (!v.empty()) paths.push_back(v);
      }
    }
  }
  return paths;
}

}  // namespace qxa::fuzz
