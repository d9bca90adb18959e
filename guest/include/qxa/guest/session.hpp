// SPDX-License-Identifier: MIT
// One period of host presence on the port: AgentReady, the Hello handshake, then requests.
// Only requests stamped with the session the host opened in its latest Hello are executed; the
// rest are refused with a structured error and a log line.
#pragma once

#include <asio/awaitable.hpp>
#include <cstdint>
#include <memory>

#include "qxa/common/message_stream.hpp"
#include "qxa/guest/agent.hpp"
#include "qxa/guest/port.hpp"

namespace qxa::guest {

using guest_stream = common::message_stream<port_stream>;

class session : public std::enable_shared_from_this<session> {
 public:
  session(agent_state& state, std::shared_ptr<guest_stream> stream);

  /// Runs until the host goes away or the stream fails; then closes the stream.
  asio::awaitable<void> run();

  /// True once a Hello has been answered on this connection.
  [[nodiscard]] bool handshaken() const noexcept { return session_id_ != 0; }
  [[nodiscard]] std::uint64_t id() const noexcept { return session_id_; }
  [[nodiscard]] guest_stream& stream() noexcept { return *stream_; }
  [[nodiscard]] bool is_open() const noexcept { return stream_->is_open(); }

 private:
  void handle(pb::Envelope envelope);
  void answer_hello(const pb::Envelope& request);
  void refuse(const pb::Envelope& request, pb::ErrorCode code, std::string message,
              std::string rule = {});
  void reply(std::uint64_t request_id, pb::Envelope body);
  asio::awaitable<void> execute(pb::Envelope request);

  agent_state& state_;
  std::shared_ptr<guest_stream> stream_;
  std::uint64_t session_id_ = 0;
  std::uint32_t inflight_ = 0;
};

}  // namespace qxa::guest
