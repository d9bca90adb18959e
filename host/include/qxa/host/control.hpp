// SPDX-License-Identifier: MIT
// The daemon's control socket, what both of its sides share: the stream type, the default path,
// and how local errors travel on the wire. The server is control_server.hpp (in qx-agentd), the
// client control_client.hpp (for qx-agent and for programs that embed qxa::host). Same framing
// as the agent channel, ControlMessage bodies.
#pragma once

#include <asio/local/stream_protocol.hpp>
#include <string>

#include "quantix/agent/v1/control.pb.h"
#include "qxa/common/message_stream.hpp"

namespace qxa::host {

namespace pb = ::quantix::agent::v1;

using control_stream =
    common::message_stream<asio::local::stream_protocol::socket, pb::ControlMessage>;

inline constexpr const char* default_control_socket = "/run/quantix-kvm/qx-agentd.sock";

/// The error code carried on the wire for a local error.
pb::ErrorCode wire_code(std::error_code ec) noexcept;
/// The local error for a code from the wire (the daemon's answer to a control request):
/// wire_code's inverse where there is one, remote_error otherwise.
std::error_code local_code(pb::ErrorCode code) noexcept;

}  // namespace qxa::host
