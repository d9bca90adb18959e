// SPDX-License-Identifier: MIT
// Fuzz target: the path resolution every file operation goes through (policy.locate, then
// walk_beneath, open_node and read_regular_file), inside the sandbox of sandbox.hpp, over a
// tree planted the way a hostile user would: links to directories outside the root, to files,
// to "..", in loops; a FIFO; a link to /dev/zero.
//
// The input is: one byte of options, then a path (the rest). Properties:
//   - the directory a walk ends in is where the path's components lead with no link followed:
//     its real path is the root's real path plus those components;
//   - a walk that made directories made them only there, never outside the root;
//   - nothing blocks (a FIFO read would be a hang, which libFuzzer's -timeout reports), and
//     a file read is a regular file of at most the cap.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "qxa/guest/core/policy.hpp"
#include "qxa/guest/safe_fs/fs.hpp"
#include "sandbox.hpp"

namespace fs = std::filesystem;
namespace qg = qxa::guest;

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "property violated: %s\n", what);
    std::abort();
  }
}

const std::string root = "/srv/root";
const std::string outside = "/srv/outside";

std::string real_path_of(int fd) {
  char buf[PATH_MAX];
  const auto link = "/proc/self/fd/" + std::to_string(fd);
  const ssize_t n = ::readlink(link.c_str(), buf, sizeof buf);
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
}

std::size_t entries(const std::string& dir) {
  std::size_t n = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); it != fs::end(it); it.increment(ec)) {
    ++n;
  }
  return n;
}

void plant() {
  fs::create_directories(root + "/a/b/c");
  fs::create_directories(outside + "/secret-dir");
  std::FILE* f = std::fopen((root + "/a/file").c_str(), "w");
  std::fputs("inside\n", f);
  std::fclose(f);
  f = std::fopen((outside + "/secret").c_str(), "w");
  std::fputs("outside\n", f);
  std::fclose(f);
  ::mkfifo((root + "/fifo").c_str(), 0644);
  ::mkfifo((root + "/a/b/fifo").c_str(), 0644);
  fs::create_symlink(outside, root + "/away");
  fs::create_symlink("../../..", root + "/a/b/up");
  fs::create_symlink(outside + "/secret", root + "/a/secret-link");
  fs::create_symlink("/dev/zero", root + "/zero");
  fs::create_symlink("loop", root + "/loop");
  fs::create_symlink("c", root + "/a/b/c-link");
  fs::create_symlink(root, outside + "/into-root");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  qxa::fuzz::enter_sandbox(qxa::fuzz::libfuzzer_paths(*argc, *argv));
  plant();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t options = data[0];
  const std::string path(reinterpret_cast<const char*>(data + 1), size - 1);
  if (path.find('\0') != std::string::npos) return 0;  // not a path a host can send
  const bool create = (options & 1) != 0;
  const std::size_t outside_before = entries(outside);

  // As a file operation sees it: placed under the root by its components.
  qg::local_policy policy;
  policy.read_roots = {root};
  policy.write_roots = {root};
  qg::local_policy::located at;
  const std::string absolute = (options & 2) ? path : root + "/" + path;
  if (policy.locate(absolute, qg::local_policy::access::write, at)) return 0;
  check(at.root == root, "a path was placed under another root");
  qg::unique_fd start(::open(at.root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  check(static_cast<bool>(start), "the root cannot be opened");
  auto walked = qg::walk_beneath(start.get(), at.relative, create, at.root);
  if (walked) {
    const auto comps = qg::path_components(at.relative);
    check(comps.has_value(), "a walk accepted '.' or '..'");
    std::string expected = root;
    for (std::size_t i = 0; i + 1 < comps->size(); ++i) expected += "/" + (*comps)[i];
    check(real_path_of(walked->dir.get()) == expected,
          "a walk ended somewhere its components do not lead (a link was followed)");
    if (!walked->name.empty()) {
      auto node = qg::open_node(walked->dir.get(), walked->name);
      if (node) {
        check(real_path_of(node->first.get()) == expected + "/" + walked->name ||
                  S_ISLNK(node->second.mode),
              "a node opened somewhere else than its name");
        auto text = qg::read_regular_file(walked->dir.get(), walked->name, 4096);
        if (text) {
          check(S_ISREG(node->second.mode), "something other than a regular file was read");
          check(text->size() <= 4096, "a read went past its cap");
          check(text->find("outside") == std::string::npos, "a file outside the root was read");
        }
      }
    }
  }
  check(entries(outside) == outside_before, "something was made outside the root");
  // What a walk made stays for the next inputs; keep the tree small.
  if (entries(root) > 400) {
    fs::remove_all(root);
    fs::remove_all(outside);
    plant();
  }
  return 0;
}
