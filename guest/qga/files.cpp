// SPDX-License-Identifier: MIT
// guest-file-open, -read, -write, -seek, -flush and -close: files opened by handle, the way
// qemu-guest-agent offers them, placed by the native file operations' rules. A path must lie
// under the policy's read_roots (reading) or write_roots (writing) and is walked from its root
// without following any link; only a regular file is opened, and one with other hard links is
// never written in place (a user could have linked a file of root's into a place they write).
// Reads and writes count against policy.max_file_bytes per handle, and the operations are the
// native ones for the policy's lists and the frozen state: "file-read" to read, "file-write"
// to write.
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "file_commands.hpp"
#include "qxa/common/log.hpp"
#include "qxa/common/text.hpp"
#include "qxa/guest/core/log_text.hpp"
#include "qxa/guest/ops/file_paths.hpp"
#include "qxa/guest/qga/qga.hpp"

namespace qxa::guest::qga {

namespace {

// The most one guest-file-read returns (a client asks again for more, as it must anyway).
constexpr std::int64_t max_read_count = 4 << 20;
// qemu-ga's own limit on `count`, which it refuses beyond.
constexpr std::int64_t qemu_ga_max_count = 48 << 20;

struct mode_bits {
  bool read = false, write = false, create = false, truncate = false, append = false;
};

std::optional<mode_bits> parse_mode(const std::string& m) {
  // fopen's modes, as qemu-ga takes them; 'b' changes nothing on Linux.
  std::string s;
  for (char c : m) {
    if (c != 'b') s += c;
  }
  if (s == "r") return mode_bits{true, false, false, false, false};
  if (s == "r+") return mode_bits{true, true, false, false, false};
  if (s == "w") return mode_bits{false, true, true, true, false};
  if (s == "w+") return mode_bits{true, true, true, true, false};
  if (s == "a") return mode_bits{false, true, true, false, true};
  if (s == "a+") return mode_bits{true, true, true, false, true};
  return std::nullopt;
}

// The native checks for an operation: file-read's or file-write's (see native_refusal).
std::optional<answer> gate(const context& ctx, const command_call& call,
                           pb::Envelope::BodyCase body) {
  return native_refusal(ctx, call, body);
}

request_context native_context(context& ctx) {
  return request_context{ctx.state, 0, ++ctx.commands, nullptr, nullptr};
}

answer from_reply(const pb::Envelope& e) { return answer::generic(e.error().message()); }

open_file* find(context& ctx, const command_call& call) {
  const auto handle = call.arguments["handle"].get<std::int64_t>();
  const auto it = ctx.files.find(handle);
  return it == ctx.files.end() ? nullptr : &it->second;
}

answer no_handle(const command_call& call) {
  return answer::generic(
      fmt::format("handle '{}' has not been found", call.arguments["handle"].get<std::int64_t>()));
}

}  // namespace

asio::awaitable<answer> file_open(context& ctx, const command_call& call) {
  const auto path = call.arguments["path"].get<std::string>();
  const auto mode = parse_mode(call.arguments.value("mode", std::string("r")));
  if (!mode) co_return answer::generic("Invalid parameter 'mode'");
  // Only the operations the mode needs are checked (and audited when refused).
  if (mode->read) {
    if (auto refused = gate(ctx, call, pb::Envelope::kFileReadRequest)) co_return *refused;
  }
  if (mode->write) {
    if (auto refused = gate(ctx, call, pb::Envelope::kFileWriteOpen)) co_return *refused;
  }
  if (ctx.files.size() >= ctx.state.options.qemu_ga.max_open_files) {
    co_return answer::generic(
        fmt::format("{} files are open already; close one first", ctx.files.size()));
  }
  const auto& policy = ctx.state.options.policy;
  const auto access = mode->write ? local_policy::access::write : local_policy::access::read;
  const char* op = mode->write ? "file-write" : "file-read";
  auto rc = native_context(ctx);
  // Both roots must hold it when it is opened for both.
  if (mode->read && mode->write) {
    if (auto no = policy.check_path(path, local_policy::access::read)) {
      co_return from_reply(refused(rc, "file-read", *no));
    }
  }
  const auto opened = [&](open_file f) {
    const auto handle = ctx.next_handle++;
    common::log_info("audit: op={} port=qemu-ga command=guest-file-open path={} mode={} handle={}",
                     op, common::log_value(path), call.arguments.value("mode", std::string("r")),
                     handle);
    ctx.files.emplace(handle, std::move(f));
    return answer::ok(handle);
  };
  if (mode->write && mode->truncate && !mode->read) {
    // "w": an upload, as cp makes one: the new file is written beside the old one and takes
    // its place at guest-file-close, with the native rules for its owner and mode.
    local_policy::located where;
    if (auto no = policy.locate(path, local_policy::access::write, where)) {
      co_return from_reply(refused(rc, op, *no));
    }
    auto upload = ctx.state.uploads->open(upload_session, {.root = where.root,
                                                           .relative = where.relative,
                                                           .allow_setid = policy.write_setid,
                                                           .keep_other_owner = policy.write_owner});
    if (!upload) {
      if (upload.code() == std::errc::operation_not_permitted) {
        co_return from_reply(
            refused(rc, op, refusal{"policy.write_setid", upload.error().message}));
      }
      co_return from_reply(ops::walk_failure(rc, op, path, access, upload.error()));
    }
    co_return opened(open_file{.path = path, .writable = true, .upload = *upload});
  }
  auto where = ops::place(rc, op, path, access);
  if (auto* failed = std::get_if<pb::Envelope>(&where)) co_return from_reply(*failed);
  auto& p = std::get<ops::placed>(where);
  if (p.name.empty()) co_return answer::generic(path + " is a directory");
  // The last component as cp treats it: opened as itself with the mount check of a walk (never
  // a step into a filesystem that might not answer), and only then, a regular file, reopened.
  auto node = open_node(p.dir.get(), p.name);
  if (!node && node.code() == std::errc::no_such_file_or_directory && mode->create) {
    // Made exclusively, never through a link planted at the name; then opened as above.
    unique_fd made(::openat(p.dir.get(), p.name.c_str(),
                            O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK,
                            0644));
    if (!made && errno != EEXIST) {
      co_return answer::generic(
          fmt::format("failed to open file '{}': {}", path, std::strerror(errno)));
    }
    node = open_node(p.dir.get(), p.name);
  }
  if (!node) {
    co_return from_reply(ops::walk_failure(
        rc, op, path, access,
        {node.code(), fmt::format("failed to open file '{}': {}", path, node.error().message)}));
  }
  const auto& st = node->second;
  if (S_ISLNK(st.mode)) {
    co_return from_reply(ops::walk_failure(
        rc, op, path, access,
        {std::make_error_code(std::errc::too_many_symbolic_link_levels),
         fmt::format("'{}' is a symbolic link, which the agent does not follow", path)}));
  }
  if (!S_ISREG(st.mode)) co_return answer::generic(path + " is not a regular file");
  if (mode->write) {
    // Written in place: the native rules for what an upload may replace.
    struct stat links {};
    if (::fstat(node->first.get(), &links) == 0 && links.st_nlink > 1) {
      common::log_warning("audit: op=file-write port=qemu-ga path={} outcome=refused has {} links",
                          common::log_value(path), links.st_nlink);
      co_return answer::generic(fmt::format(
          "{} has {} hard links: the agent does not write a file that is also elsewhere", path,
          links.st_nlink));
    }
    if ((st.mode & (S_ISUID | S_ISGID)) != 0 && !policy.write_setid) {
      co_return from_reply(refused(
          rc, op,
          refusal{"policy.write_setid",
                  fmt::format("{} is setuid or setgid (mode {:o}): writing it in place needs the "
                              "guest's policy.write_setid",
                              path, st.mode & 07777)}));
    }
    if (st.uid != ::geteuid() && !policy.write_owner) {
      co_return from_reply(refused(
          rc, op,
          refusal{"policy.write_owner",
                  fmt::format("{} belongs to uid {}: writing another user's file in place needs "
                              "the guest's policy.write_owner (mode \"w\" replaces it instead)",
                              path, st.uid)}));
    }
  }
  const int flags = (mode->read && mode->write ? O_RDWR
                     : mode->write             ? O_WRONLY
                                               : O_RDONLY) |
                    (mode->append ? O_APPEND : 0);
  auto fd = reopen_regular(p.dir.get(), p.name, node->first.get(), flags);
  if (!fd) {
    co_return answer::generic(
        fmt::format("failed to open file '{}': {}", path, fd.error().message));
  }
  if (mode->truncate && ::ftruncate(fd->get(), 0) != 0) {
    co_return answer::generic(fmt::format("cannot truncate '{}': {}", path, std::strerror(errno)));
  }
  // Blocking again: a regular file's reads and writes never wait for a peer.
  ::fcntl(fd->get(), F_SETFL, ::fcntl(fd->get(), F_GETFL) & ~O_NONBLOCK);
  co_return opened(open_file{
      .fd = std::move(*fd), .path = path, .readable = mode->read, .writable = mode->write});
}

asio::awaitable<answer> file_close(context& ctx, const command_call& call) {
  auto* f = find(ctx, call);
  if (f == nullptr) co_return no_handle(call);
  const auto upload = f->upload;
  const auto path = f->path;
  ctx.files.erase(call.arguments["handle"].get<std::int64_t>());
  if (upload != 0) {
    // "w": the new file takes the old one's place now.
    auto done = ctx.state.uploads->commit(upload_session, upload, {});
    common::log_info(
        "audit: op=file-write port=qemu-ga command=guest-file-close outcome={} {}",
        done ? "ok" : "failed",
        done ? fmt::format("path={} bytes={}", common::log_value(done->path), done->size)
             : "error=" + common::log_value(done.error().message));
    if (!done) co_return answer::generic(done.error().message);
  }
  co_return answer::ok(json::object());
}

asio::awaitable<answer> file_read(context& ctx, const command_call& call) {
  auto* f = find(ctx, call);
  if (f == nullptr) co_return no_handle(call);
  if (auto refused = gate(ctx, call, pb::Envelope::kFileReadRequest)) co_return *refused;
  const std::int64_t count = call.arguments.value("count", std::int64_t{4096});
  if (count < 0 || count > qemu_ga_max_count) {
    co_return answer::generic(fmt::format("value '{}' is invalid for argument count", count));
  }
  if (!f->readable) co_return answer::generic("the file was not opened for reading");
  const auto limit = ctx.state.options.policy.max_file_bytes;
  std::string data(static_cast<std::size_t>(std::min(count, max_read_count)), '\0');
  std::size_t got = 0;
  bool eof = false;
  while (got < data.size()) {
    const auto n = ::read(f->fd.get(), data.data() + got, data.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      co_return answer::generic(fmt::format("failed to read file: {}", std::strerror(errno)));
    if (n == 0) {
      eof = true;
      break;
    }
    got += static_cast<std::size_t>(n);
  }
  data.resize(got);
  f->read_bytes += got;
  if (f->read_bytes > limit) {
    co_return answer::generic(fmt::format(
        "more than {} bytes read through this handle, the guest's limit (policy.max_file_bytes)",
        limit));
  }
  co_return answer::ok({{"count", got}, {"buf-b64", to_base64(data)}, {"eof", eof}});
}

asio::awaitable<answer> file_write(context& ctx, const command_call& call) {
  auto* f = find(ctx, call);
  if (f == nullptr) co_return no_handle(call);
  if (auto refused = gate(ctx, call, pb::Envelope::kFileWriteOpen)) co_return *refused;
  if (!f->writable) co_return answer::generic("the file was not opened for writing");
  auto data = from_base64(call.arguments["buf-b64"].get<std::string>());
  if (!data) co_return answer::generic("Invalid parameter 'buf-b64': not base64");
  std::int64_t count = static_cast<std::int64_t>(data->size());
  if (call.arguments.contains("count")) {
    count = call.arguments["count"].get<std::int64_t>();
    if (count < 0 || count > static_cast<std::int64_t>(data->size())) {
      co_return answer::generic(fmt::format("value '{}' is invalid for argument count", count));
    }
  }
  const auto limit = ctx.state.options.policy.max_file_bytes;
  if (f->written_bytes + static_cast<std::uint64_t>(count) > limit) {
    co_return answer::generic(
        fmt::format("more than {} bytes written through this handle, the guest's limit "
                    "(policy.max_file_bytes)",
                    limit));
  }
  if (f->upload != 0) {
    auto n = ctx.state.uploads->append(
        upload_session, f->upload, f->written_bytes,
        std::string_view(*data).substr(0, static_cast<std::size_t>(count)), limit);
    if (!n) {
      f->upload = 0;  // discarded by the table
      co_return answer::generic(fmt::format("failed to write to file: {}", n.error().message));
    }
    f->written_bytes = *n;
    co_return answer::ok({{"count", count}, {"eof", false}});
  }
  std::size_t done = 0;
  while (done < static_cast<std::size_t>(count)) {
    const auto n =
        ::write(f->fd.get(), data->data() + done, static_cast<std::size_t>(count) - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      co_return answer::generic(fmt::format("failed to write to file: {}", std::strerror(errno)));
    done += static_cast<std::size_t>(n);
  }
  f->written_bytes += done;
  co_return answer::ok({{"count", done}, {"eof", false}});
}

asio::awaitable<answer> file_seek(context& ctx, const command_call& call) {
  auto* f = find(ctx, call);
  if (f == nullptr) co_return no_handle(call);
  const auto& w = call.arguments["whence"];
  int whence = -1;
  if (w.is_number_integer()) {
    const auto v = w.get<std::int64_t>();
    whence = v == 0 ? SEEK_SET : v == 1 ? SEEK_CUR : v == 2 ? SEEK_END : -1;
  } else if (w.is_string()) {
    const auto v = w.get<std::string>();
    whence = v == "set" ? SEEK_SET : v == "cur" ? SEEK_CUR : v == "end" ? SEEK_END : -1;
  }
  if (whence < 0) co_return answer::generic("Invalid parameter 'whence'");
  if (f->upload != 0) {
    // A file opened "w" is written from start to end: only where it stands.
    const auto offset = call.arguments["offset"].get<std::int64_t>();
    const auto at = static_cast<std::int64_t>(f->written_bytes);
    if ((whence == SEEK_SET ? offset : at + offset) == at) {  // its current place is its end
      co_return answer::ok({{"position", at}, {"eof", false}});
    }
    co_return answer::generic(
        "a file opened with mode \"w\" is written from its start to its end: it cannot seek");
  }
  const auto position = ::lseek(f->fd.get(), call.arguments["offset"].get<std::int64_t>(), whence);
  if (position < 0) {
    co_return answer::generic(fmt::format("failed to seek file: {}", std::strerror(errno)));
  }
  co_return answer::ok({{"position", position}, {"eof", false}});
}

asio::awaitable<answer> file_flush(context& ctx, const command_call& call) {
  // Writes go straight to the kernel (no buffer in the agent): there is nothing to flush.
  if (find(ctx, call) == nullptr) co_return no_handle(call);
  co_return answer::ok(json::object());
}

}  // namespace qxa::guest::qga
