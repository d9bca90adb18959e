// SPDX-License-Identifier: MIT
// file-list: a directory a page at a time, by position (each page reads only its part of the
// directory) or, for older hosts, by name (each page found on a thread of its own). Placed and
// walked as every file operation's path is (file_paths.hpp).
#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "qxa/guest/mech/own_thread.hpp"
#include "qxa/guest/ops/file_paths.hpp"
#include "qxa/guest/ops/ops.hpp"
#include "qxa/guest/safe_fs/fs.hpp"

namespace qxa::guest::ops {

namespace {

// An entry of a listing, described from its directory without following it and without asking
// a FUSE filesystem mounted on it anything (statx with AT_STATX_DONT_SYNC). False when it is
// gone meanwhile.
bool describe_entry(int dir_fd, const std::string& name, pb::FileStat& out) {
  struct statx sx {};
  if (::statx(dir_fd, name.c_str(), AT_SYMLINK_NOFOLLOW | AT_STATX_DONT_SYNC, STATX_BASIC_STATS,
              &sx) != 0) {
    return false;
  }
  node_info st;
  st.mode = sx.stx_mode;
  st.uid = sx.stx_uid;
  st.gid = sx.stx_gid;
  st.size = sx.stx_size;
  st.mtime_ms =
      static_cast<std::int64_t>(sx.stx_mtime.tv_sec) * 1000 + sx.stx_mtime.tv_nsec / 1'000'000;
  fill_stat(out, name, st, dir_fd, name.c_str());
  return true;
}

// By position: from `position`, at most `limit` entries (and `room` bytes) in the directory's
// own order, reading only as much of the directory as the page needs.
void list_by_position(int dir_fd, std::uint64_t position, std::size_t limit, std::size_t room,
                      pb::DirList& out) {
  if (::lseek(dir_fd, static_cast<off_t>(position), SEEK_SET) < 0) return;
  alignas(8) char buf[32u << 10];
  std::size_t bytes = 0;
  std::uint64_t next = 0;  // where the entry after the last one taken starts
  for (;;) {
    const auto n = ::syscall(SYS_getdents64, dir_fd, buf, sizeof buf);
    if (n <= 0) {
      next = 0;  // the end (or an error): nothing follows
      break;
    }
    bool full = false;
    for (long at = 0; at < n;) {
      struct linux_dirent64 {
        ino64_t d_ino;
        off64_t d_off;
        unsigned short d_reclen;
        unsigned char d_type;
        char d_name[1];
      };
      const auto* e = reinterpret_cast<const linux_dirent64*>(buf + at);
      at += e->d_reclen;
      const std::string name = e->d_name;
      if (name == "." || name == "..") {
        next = static_cast<std::uint64_t>(e->d_off);
        continue;
      }
      if (static_cast<std::size_t>(out.entries_size()) >= limit || bytes >= room) {
        full = true;
        break;
      }
      next = static_cast<std::uint64_t>(e->d_off);
      pb::FileStat entry;
      if (!describe_entry(dir_fd, name, entry)) continue;
      bytes += entry.ByteSizeLong();
      *out.add_entries() = std::move(entry);
    }
    if (full) break;
  }
  out.set_next_position(next);
}

// By name, for hosts that page by `after`: the `limit` smallest names after it, kept in a heap
// of that size (the whole directory is read once per page: done on a thread of its own).
struct name_page final : thread_work {
  unique_fd dir;
  std::string after;
  std::size_t limit = 0, room = 0;
  pb::DirList out;
  void run() override {
    DIR* d = ::fdopendir(::fcntl(dir.get(), F_DUPFD_CLOEXEC, 0));
    if (d == nullptr) return;
    std::vector<std::string> heap;  // a max-heap of the smallest names seen
    bool more = false;
    while (const dirent* e = ::readdir(d)) {
      if (stop) break;
      std::string name = e->d_name;
      if (name == "." || name == ".." || (!after.empty() && name <= after)) continue;
      if (heap.size() < limit) {
        heap.push_back(std::move(name));
        std::push_heap(heap.begin(), heap.end());
      } else if (name < heap.front()) {
        std::pop_heap(heap.begin(), heap.end());
        heap.back() = std::move(name);
        std::push_heap(heap.begin(), heap.end());
        more = true;
      } else {
        more = true;
      }
    }
    std::sort_heap(heap.begin(), heap.end());
    std::size_t bytes = 0;
    std::size_t i = 0;
    for (; i < heap.size() && bytes < room; ++i) {
      auto* entry = out.add_entries();
      if (!describe_entry(::dirfd(d), heap[i], *entry)) {
        out.mutable_entries()->RemoveLast();
        continue;
      }
      bytes += entry->ByteSizeLong();
    }
    if ((more || i < heap.size()) && i > 0) out.set_next_after(heap[i - 1]);
    ::closedir(d);
  }
};

}  // namespace

asio::awaitable<pb::Envelope> dir_list(request_context ctx, pb::Envelope request) {
  const auto& req = request.dir_list_request();
  auto where = place(ctx, "file-list", req.path(), local_policy::access::read);
  if (auto* failed = std::get_if<pb::Envelope>(&where)) co_return std::move(*failed);
  auto node = node_of(std::get<placed>(where));
  if (!node) {
    co_return walk_failure(
        ctx, "file-list", req.path(), local_policy::access::read,
        {node.code(), "cannot list " + req.path() + ": " + node.error().message});
  }
  if (S_ISLNK(node->second.mode)) {
    co_return walk_failure(
        ctx, "file-list", req.path(), local_policy::access::read,
        {std::make_error_code(std::errc::too_many_symbolic_link_levels),
         fmt::format("'{}' is a symbolic link, which the agent does not follow", req.path())});
  }
  if (!S_ISDIR(node->second.mode)) {
    co_return error_reply(pb::ERROR_CODE_INVALID_ARGUMENT, req.path() + " is not a directory");
  }
  auto opened = open_directory(node->first.get());
  if (!opened) co_return system_error(opened.code().value(), "cannot list " + req.path());
  const std::size_t limit = req.limit() > 0 ? std::min<std::uint32_t>(req.limit(), 10'000) : 1000;
  const std::size_t room = ctx.max_reply_bytes() / 2;
  pb::Envelope reply;
  if (req.by_position()) {
    list_by_position(opened->get(), req.position(), limit, room, *reply.mutable_dir_list());
    co_return reply;
  }
  auto work = std::make_shared<name_page>();
  work->dir = std::move(*opened);  // lives as long as the work, which may outlive the request
  work->after = req.after();
  work->limit = limit;
  work->room = room;
  if (auto ec = co_await run_on_own_thread(work)) {
    co_return system_error(ec.value(), "cannot list " + req.path());
  }
  *reply.mutable_dir_list() = std::move(work->out);
  co_return reply;
}

}  // namespace qxa::guest::ops
