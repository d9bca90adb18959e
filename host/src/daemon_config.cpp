// SPDX-License-Identifier: MIT
#include "qxa/host/daemon_config.hpp"

#include <fmt/format.h>

#include "qxa/common/config.hpp"

namespace qxa::host {
namespace {

std::optional<common::error_info> apply(common::config_reader& r, daemon_config& c) {
  auto& m = c.manager;
  r.get("socket_dir", m.socket_dir);
  r.get("control_socket", c.control_socket);
  r.get("metrics_listen", c.metrics_listen);
  r.get("log_level", c.log_level);
  r.get("socket_owners", m.socket_owners);
  const auto ms = std::chrono::milliseconds(1);
  r.get_duration("heartbeat.interval", m.heartbeat_interval, ms);
  r.get_duration("heartbeat.timeout", m.heartbeat_timeout, ms);
  r.get_duration("reconnect.initial", m.reconnect_initial, ms);
  r.get_duration("reconnect.max", m.reconnect_max, ms);
  r.get_duration("rescan_interval", m.rescan_interval, ms);
  r.get_duration("limits.request_timeout", m.client.request_timeout, ms);
  r.get_duration("limits.handshake_timeout", m.client.handshake_timeout, ms);
  r.get_duration("limits.write_timeout", m.client.write_timeout, ms);
  r.get("limits.max_frame_size", m.client.max_frame_size, 4096, 256u << 20);
  r.get("limits.max_inflight_requests", m.client.max_inflight, 1, 1u << 20);
  r.get("clock.sync", m.clock.enabled);
  r.get_duration("clock.max_offset", m.clock.max_offset, ms);
  r.get_duration("clock.min_interval", m.clock.min_interval, ms);
  if (m.reconnect_max < m.reconnect_initial) {
    r.fail("reconnect.max", "must not be less than reconnect.initial");
  }
  if (m.socket_dir.empty()) r.fail("socket_dir", "must not be empty");
  if (c.control_socket.empty()) r.fail("control_socket", "must not be empty");
  return r.finish();
}

}  // namespace

std::optional<common::error_info> apply_daemon_config(std::string_view text, std::string source,
                                                      daemon_config& config) {
  auto reader = common::config_reader::from_string(text, std::move(source));
  if (!reader) return reader.error();
  return apply(*reader, config);
}

std::optional<common::error_info> load_daemon_config(const std::string& path,
                                                     daemon_config& config) {
  auto reader = common::config_reader::from_file(path);
  if (!reader) return reader.error();
  return apply(*reader, config);
}

}  // namespace qxa::host
