// SPDX-License-Identifier: MIT
#include "qxa/guest/config.hpp"

#include <fmt/format.h>

#include "qxa/common/config.hpp"

namespace qxa::guest {
namespace {

std::optional<common::error_info> apply(common::config_reader& r, agent_config& config) {
  auto& a = config.agent;
  std::string port = a.port.to_string();
  r.get("port", port);
  if (auto spec = port_spec::parse(port)) {
    a.port = *spec;
  } else {
    r.fail("port", spec.error().message);
  }
  r.get("log_level", config.log_level);
  r.get_duration("telemetry.interval", a.telemetry_interval, std::chrono::milliseconds(1));
  r.get_duration("telemetry.write_timeout", a.write_timeout, std::chrono::milliseconds(1));
  r.get("telemetry.failure_limit", a.failure_limit, 1, 1'000'000);
  r.get("limits.max_inflight_requests", a.max_inflight_requests, 1, 65'536);
  r.get("limits.max_frame_size", a.max_frame_size, 4096, 256u << 20);
  r.get_duration("limits.request_timeout", a.request_timeout, std::chrono::milliseconds(1));
  r.get_duration("port_tuning.host_poll_interval", a.port_tuning.host_poll_interval,
                 std::chrono::milliseconds(1));
  return r.finish();
}

}  // namespace

std::optional<common::error_info> apply_agent_config(std::string_view text, std::string source,
                                                     agent_config& config) {
  auto reader = common::config_reader::from_string(text, std::move(source));
  if (!reader) return reader.error();
  return apply(*reader, config);
}

std::optional<common::error_info> load_agent_config(const std::string& path,
                                                    agent_config& config) {
  auto reader = common::config_reader::from_file(path);
  if (!reader) return reader.error();
  return apply(*reader, config);
}

}  // namespace qxa::guest
