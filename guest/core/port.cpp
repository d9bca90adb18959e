// SPDX-License-Identifier: MIT
#include "qxa/guest/core/port.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <asio/experimental/as_tuple.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "qxa/common/async.hpp"
#include "qxa/common/log.hpp"
#include "qxa/guest/core/log_text.hpp"

namespace qxa::guest {

using common::errc;
using common::result;
using namespace std::chrono_literals;

result<port_spec> port_spec::parse(std::string_view text) {
  port_spec spec;
  constexpr std::string_view listen_prefix = "unix-listen:";
  if (text.starts_with(listen_prefix)) {
    spec.type = kind::unix_listen;
    spec.path = std::string(text.substr(listen_prefix.size()));
  } else if (text.find(':') != std::string_view::npos && !text.starts_with("/")) {
    return {errc::invalid_argument,
            fmt::format("unknown port '{}': use a device path or unix-listen:PATH", text)};
  } else {
    spec.type = kind::device;
    spec.path = std::string(text);
  }
  if (spec.path.empty()) return {errc::invalid_argument, "port path is empty"};
  if (spec.type == kind::unix_listen && spec.path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return {errc::invalid_argument, fmt::format("unix socket path '{}' is longer than {} bytes",
                                                spec.path, sizeof(sockaddr_un{}.sun_path) - 1)};
  }
  return spec;
}

std::string port_spec::to_string() const {
  return type == kind::unix_listen ? "unix-listen:" + path : path;
}

namespace {

class device_port final : public port {
 public:
  device_port(asio::any_io_executor ex, std::string path, port_options o)
      : ex_(std::move(ex)), path_(std::move(path)), opt_(o) {}
  ~device_port() override { close(); }

  asio::awaitable<result<port_stream>> wait_for_host() override {
    auto backoff = opt_.retry_initial;
    int last_errno = 0;
    bool said_absent = false;
    for (;;) {
      if (fd_ < 0) {
        fd_ = ::open(path_.c_str(), O_RDWR | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
        if (fd_ < 0) {
          const int err = errno;
          if (err != last_errno) {
            // Logged once per kind of failure, not once per retry.
            if (err == EBUSY) {
              common::log_warning("port {}: {}", path_, log_text::port_busy);
            } else if (err == ENOENT || err == ENXIO || err == ENODEV) {
              common::log_info("port {}: not present ({}); waiting for it", path_,
                               std::strerror(err));
            } else {
              common::log_error("port {}: cannot open: {}; retrying", path_, std::strerror(err));
            }
            last_errno = err;
          }
          co_await common::sleep_for(backoff);
          backoff = std::min(backoff * 2, opt_.retry_max);
          continue;
        }
        if (last_errno != 0) common::log_info("port {}: opened", path_);
        last_errno = 0;
        backoff = opt_.retry_initial;
      }
      pollfd p{fd_, POLLIN | POLLOUT, 0};
      const int n = ::poll(&p, 1, 0);
      if (n < 0 && errno != EINTR) {
        common::log_error("port {}: poll failed: {}", path_, std::strerror(errno));
        reopen();
      } else if (n >= 0 && (p.revents & POLLNVAL)) {
        reopen();
      } else if (n >= 0 && !(p.revents & (POLLHUP | POLLERR))) {
        common::log_info("port {}: host connected", path_);
        port_stream stream(ex_, std::exchange(fd_, -1));
        co_return stream;
      } else if (!said_absent) {
        common::log_debug(
            "port {}: no host connected; polling every {} ms", path_,
            std::chrono::duration_cast<std::chrono::milliseconds>(opt_.host_poll_interval).count());
        said_absent = true;
      }
      // Host absent: read() would return 0 at once and poll() would not block, so wait on a
      // timer instead of spinning.
      co_await common::sleep_for(opt_.host_poll_interval);
    }
  }

  void close() override {
    if (fd_ >= 0) ::close(std::exchange(fd_, -1));
  }

  [[nodiscard]] std::string describe() const override { return path_; }

 private:
  void reopen() { close(); }

  asio::any_io_executor ex_;
  std::string path_;
  port_options opt_;
  int fd_ = -1;
};

class unix_listen_port final : public port {
 public:
  unix_listen_port(asio::any_io_executor ex, std::string path, port_options o)
      : acceptor_(ex), path_(std::move(path)), opt_(o) {}
  ~unix_listen_port() override { close(); }

  std::optional<common::error_info> listen() {
    using asio::local::stream_protocol;
    std::error_code ec;
    for (int attempt = 0; attempt < 2; ++attempt) {
      acceptor_.open(stream_protocol(), ec);
      if (!ec) {
        // The socket is the agent's door for root's work: 0600 whatever the umask, and from
        // its creation (a chmod after bind would leave a moment when it is open).
        const mode_t umask_before = ::umask(0177);
        acceptor_.bind(stream_protocol::endpoint(path_), ec);
        ::umask(umask_before);
      }
      if (ec == asio::error::address_in_use && attempt == 0) {
        // A file is there. Take it over only when nobody is listening on it.
        // A listener that goes away within a second is not another agent: a child that an agent
        // killed a moment ago forked (and that has not closed its copy of the socket yet) holds
        // it briefly.
        bool taken = true;
        for (int probe_round = 0; probe_round < 20 && taken; ++probe_round) {
          if (probe_round > 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
          stream_protocol::socket probe(acceptor_.get_executor());
          std::error_code probe_ec;
          probe.connect(stream_protocol::endpoint(path_), probe_ec);
          taken = !probe_ec;
        }
        if (taken) {
          return common::error_info{make_error_code(errc::invalid_argument),
                                    fmt::format("{}: another process is listening there", path_)};
        }
        acceptor_.close(ec);
        ::unlink(path_.c_str());
        continue;
      }
      break;
    }
    if (!ec) acceptor_.listen(4, ec);
    if (ec) {
      return common::error_info{ec, fmt::format("cannot listen on {}: {}", path_, ec.message())};
    }
    bound_ = true;
    return std::nullopt;
  }

  asio::awaitable<result<port_stream>> wait_for_host() override {
    for (;;) {
      auto [ec, socket] =
          co_await acceptor_.async_accept(asio::experimental::as_tuple(asio::use_awaitable));
      if (!ec) {
        common::log_info("port unix-listen:{}: host connected", path_);
        port_stream stream(acceptor_.get_executor(), socket.release());
        co_return stream;
      }
      if (!acceptor_.is_open() || ec == asio::error::operation_aborted) {
        co_return result<port_stream>{errc::closed, "port closed"};
      }
      // Out of descriptors and the like: wait rather than spin.
      common::log_error("port unix-listen:{}: accept failed: {}", path_, ec.message());
      co_await common::sleep_for(opt_.retry_max);
    }
  }

  void close() override {
    std::error_code ignored;
    acceptor_.close(ignored);
    if (bound_) {
      ::unlink(path_.c_str());
      bound_ = false;
    }
  }

  [[nodiscard]] std::string describe() const override { return "unix-listen:" + path_; }

 private:
  asio::local::stream_protocol::acceptor acceptor_;
  std::string path_;
  port_options opt_;
  bool bound_ = false;
};

}  // namespace

result<std::unique_ptr<port>> open_port(const asio::any_io_executor& ex, const port_spec& spec,
                                        port_options options) {
  if (spec.type == port_spec::kind::unix_listen) {
    auto p = std::make_unique<unix_listen_port>(ex, spec.path, options);
    if (auto err = p->listen()) return *err;
    return std::unique_ptr<port>(std::move(p));
  }
  return std::unique_ptr<port>(std::make_unique<device_port>(ex, spec.path, options));
}

}  // namespace qxa::guest
