// SPDX-License-Identifier: MIT
// qx-agent cp: a file to or from a guest, checked end to end with SHA-256. A download goes into
// a temporary file beside its destination, renamed over it once whole; an upload keeps several
// chunks in flight and is aborted in the guest when anything fails or the user interrupts.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <asio/co_spawn.hpp>
#include <asio/this_coro.hpp>
#include <cerrno>
#include <cstring>

#include "cli.hpp"
#include "qxa/common/async.hpp"
#include "qxa/common/posix.hpp"
#include "qxa/common/sha256.hpp"

namespace qxa::cli {

using namespace std::chrono_literals;

namespace {

/// "VM:PATH" -> {VM, PATH}; nothing for a local path.
std::optional<std::pair<std::string, std::string>> remote_path(const std::string& arg) {
  const auto colon = arg.find(':');
  if (colon == std::string::npos || colon == 0 || arg.find('/') < colon) return std::nullopt;
  std::string vm = arg.substr(0, colon);
  if (vm == ".-") vm = "-";  // see main()
  return std::pair{vm, arg.substr(colon + 1)};
}

/// Progress on a terminal, at most five times a second.
class progress_meter {
 public:
  progress_meter(std::string what, std::uint64_t total)
      : what_(std::move(what)), total_(total), on_(::isatty(STDERR_FILENO) == 1) {}
  void set_total(std::uint64_t total) { total_ = total; }
  void update(std::uint64_t done, bool last = false) {
    if (!on_) return;
    const auto now = std::chrono::steady_clock::now();
    if (!last && now - shown_ < std::chrono::milliseconds(200)) return;
    shown_ = now;
    const double secs = std::chrono::duration<double>(now - start_).count();
    const double rate = secs > 0 ? static_cast<double>(done) / secs : 0;
    std::fprintf(stderr, "\r%s  %s / %s  %s/s   ", shown(what_).c_str(), human_bytes(done).c_str(),
                 total_ ? human_bytes(total_).c_str() : "?",
                 human_bytes(static_cast<std::uint64_t>(rate)).c_str());
    if (last) std::fprintf(stderr, "\n");
  }

 private:
  std::string what_;
  std::uint64_t total_;
  bool on_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now(), shown_{};
};

struct local_file {
  int fd = -1;
  std::string temp;  // removed unless committed
  ~local_file() {
    if (fd >= 0) ::close(fd);
    if (!temp.empty()) ::unlink(temp.c_str());
  }
};

asio::awaitable<int> run_download(host::agent_access& b, const options& o, const std::string& vm,
                                  const std::string& path, std::string local) {
  struct stat st {};
  if (::stat(local.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    local += "/" + path.substr(path.rfind('/') + 1);
  }
  const auto slash = local.rfind('/');
  const std::string dir =
      slash == std::string::npos ? "." : (slash == 0 ? "/" : local.substr(0, slash));
  const std::string name = slash == std::string::npos ? local : local.substr(slash + 1);
  // Into a temporary file next to the destination, renamed over it once complete and checked.
  local_file out;
  out.temp = dir + "/." + name + ".qxa-XXXXXX";
  out.fd = ::mkostemp(out.temp.data(), O_CLOEXEC);
  if (out.fd < 0) {
    out.temp.clear();
    co_return report(
        {exit_remote, fmt::format("cannot create a file in {}: {}", dir, std::strerror(errno))});
  }
  pb::Envelope request;
  request.mutable_file_read_request()->set_path(path);
  common::sha256 digest;
  std::uint64_t received = 0;
  std::optional<std::string> write_error;
  progress_meter meter(path, 0);
  host::call_options call;
  call.timeout = o.timeout;
  call.on_progress = [&](const pb::Envelope& partial) {
    if (!partial.has_file_chunk() || write_error) return;
    const auto& c = partial.file_chunk();
    if (c.offset() != received) {
      write_error = fmt::format("chunk at offset {} after {} bytes", c.offset(), received);
      return;
    }
    if (!common::write_all(out.fd, c.data())) {
      write_error = fmt::format("cannot write {}: {}", out.temp, std::strerror(errno));
      return;
    }
    digest.update(c.data());
    if (received == 0) meter.set_total(c.file_size());
    received += c.data().size();
    meter.update(received);
  };
  auto r = co_await b.call(vm, std::move(request), std::move(call));
  if (!r && r.code() == common::errc::cancelled) {
    co_await asio::this_coro::reset_cancellation_state();
    co_await b.flush(settle_time);
    co_return exit_interrupted;  // the temporary file goes with `out`
  }
  if (auto f = failed(r)) co_return report(*f);
  if (write_error) co_return report({exit_remote, *write_error});
  const auto& result = r->file_read_result();
  const auto d = digest.finish();
  if (result.size() != received || result.sha256() != common::sha256::bytes(d)) {
    co_return report(
        {exit_tempfail, fmt::format("{} bytes arrived with SHA-256 {}, the guest sent {} bytes "
                                    "with {}",
                                    received, common::sha256::hex(d), result.size(),
                                    common::sha256::hex(result.sha256()))});
  }
  // The guest's permission bits, never its set-id bits, and this side's umask: a file a guest
  // user made 0777 is not world-writable here.
  const mode_t mask = ::umask(0);
  ::umask(mask);
  ::fchmod(out.fd, static_cast<mode_t>(result.mode() & 0777) & ~mask);
  if (::fsync(out.fd) != 0 || ::rename(out.temp.c_str(), local.c_str()) != 0) {
    co_return report(
        {exit_remote, fmt::format("cannot write {}: {}", local, std::strerror(errno))});
  }
  out.temp.clear();
  meter.update(received, true);
  if (o.json) {
    print_json({{"path", local}, {"bytes", received}, {"sha256", common::sha256::hex(d)}});
  }
  co_return exit_ok;
}

struct upload_window {
  explicit upload_window(const asio::any_io_executor& ex) : changed(ex) {}
  int in_flight = 0;
  std::optional<failure> error;
  common::async_event changed;
};

asio::awaitable<void> send_chunk(host::agent_access& b, std::string vm, pb::Envelope chunk,
                                 std::chrono::nanoseconds timeout,
                                 std::shared_ptr<upload_window> w) {
  auto r = co_await b.call(vm, std::move(chunk), timeout);
  if (!w->error) w->error = failed(r);
  --w->in_flight;
  w->changed.notify_all();
}

asio::awaitable<int> run_upload(host::agent_access& b, const options& o, bool create_parents,
                                const std::string& local, const std::string& vm, std::string path) {
  const int fd = ::open(local.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) co_return report({exit_usage, fmt::format("{}: {}", local, std::strerror(errno))});
  local_file in;
  in.fd = fd;
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    co_return report({exit_usage, local + " is not a regular file"});
  }
  if (path.empty() || path.back() == '/') path += local.substr(local.rfind('/') + 1);
  pb::Envelope open;
  auto* op = open.mutable_file_write_open();
  op->set_path(path);
  op->set_mode(st.st_mode & 0777);
  op->set_create_parents(create_parents);
  op->set_expected_size(static_cast<std::uint64_t>(st.st_size));
  progress_meter meter(path, static_cast<std::uint64_t>(st.st_size));
  auto sent = co_await upload_file(b, vm, fd, std::move(open), o.timeout,
                                   [&](std::uint64_t done) { meter.update(done); });
  if (sent.interrupted) co_return exit_interrupted;
  if (sent.error) co_return report(*sent.error);
  meter.update(sent.bytes, true);
  if (o.json) {
    print_json(
        {{"path", path}, {"bytes", sent.bytes}, {"sha256", common::sha256::hex(sent.sha256)}});
  }
  co_return exit_ok;
}

}  // namespace

asio::awaitable<upload_result> upload_file(host::agent_access& b, const std::string& vm, int fd,
                                           pb::Envelope open, std::chrono::nanoseconds timeout,
                                           std::function<void(std::uint64_t)> on_progress) {
  upload_result out;
  auto opened = co_await b.call(vm, std::move(open), timeout);
  if (!opened && opened.code() == common::errc::cancelled) {
    out.interrupted = true;
    co_return out;
  }
  if (auto f = failed(opened)) {
    out.error = f;
    co_return out;
  }
  const auto handle = opened->file_write_reply().handle();
  auto ex = co_await asio::this_coro::executor;
  // Several chunks in flight keep the channel busy; the agent writes them in order.
  constexpr std::size_t chunk_bytes = 512u << 10;
  constexpr int window = 8;
  auto w = std::make_shared<upload_window>(ex);
  asio::cancellation_state cs = co_await asio::this_coro::cancellation_state;
  auto interrupted = [&] { return cs.cancelled() != asio::cancellation_type::none; };
  common::sha256 digest;
  std::uint64_t offset = 0;
  std::string buf(chunk_bytes, '\0');
  for (;;) {
    while (w->in_flight >= window && !w->error && !interrupted()) co_await w->changed.wait();
    if (w->error || interrupted()) break;
    // pread: several uploads (upgrade --all) may read the same file at once.
    const ssize_t n = ::pread(fd, buf.data(), buf.size(), static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      w->error = failure{exit_remote, fmt::format("cannot read: {}", std::strerror(errno))};
      break;
    }
    if (n == 0) break;
    pb::Envelope chunk;
    auto* c = chunk.mutable_file_write_chunk();
    c->set_handle(handle);
    c->set_offset(offset);
    c->set_data(buf.data(), static_cast<std::size_t>(n));
    digest.update(buf.data(), static_cast<std::size_t>(n));
    offset += static_cast<std::uint64_t>(n);
    ++w->in_flight;
    asio::co_spawn(ex, send_chunk(b, vm, std::move(chunk), timeout, w),
                   common::contained("an upload chunk"));
    if (on_progress) on_progress(offset);
  }
  // Interrupted, the chunks in flight still end (they run on their own) and the upload is
  // aborted in the guest; only then does the program end.
  out.interrupted = interrupted();
  if (out.interrupted) co_await asio::this_coro::reset_cancellation_state();
  while (w->in_flight > 0) co_await w->changed.wait();
  pb::Envelope close;
  auto* cl = close.mutable_file_write_close();
  cl->set_handle(handle);
  const auto d = digest.finish();
  if (w->error || out.interrupted) {
    cl->set_abort(true);
    (void)co_await b.call(vm, close, timeout);
    out.error = w->error;
    co_return out;
  }
  cl->set_sha256(common::sha256::bytes(d));
  auto done = co_await b.call(vm, close, std::max(timeout, std::chrono::nanoseconds(60s)));
  if (auto f = failed(done)) {
    out.error = f;
    co_return out;
  }
  out.bytes = offset;
  out.sha256 = common::sha256::bytes(d);
  co_return out;
}

namespace {

struct cp_flags {
  std::string source, destination;
  bool create_parents = false;
};

asio::awaitable<int> run_cp(host::agent_access& b, const options& o, const cp_flags& own) {
  const auto from = remote_path(own.source);
  const auto to = remote_path(own.destination);
  if (from.has_value() == to.has_value()) {
    co_return report({exit_usage, "cp: exactly one of SOURCE and DESTINATION is VM:PATH"});
  }
  if (from) co_return co_await run_download(b, o, from->first, from->second, own.destination);
  co_return co_await run_upload(b, o, own.create_parents, own.source, to->first, to->second);
}

}  // namespace

verb cp_verb() {
  return make_verb<cp_flags>(
      {.name = "cp",
       .help = "copy a file to or from a guest: cp VM:PATH LOCAL or cp LOCAL VM:PATH",
       .takes_vm = false,
       .arguments =
           [](CLI::App& s, cp_flags& f) {
             s.add_option("SOURCE", f.source, "VM:PATH or a local file")->required();
             s.add_option("DESTINATION", f.destination, "LOCAL or VM:PATH")->required();
             s.add_flag("--parents", f.create_parents, "create missing directories in the guest");
           },
       .run = run_cp});
}

}  // namespace qxa::cli
