// SPDX-License-Identifier: MIT
#include "qxa/common/text.hpp"
#include "qxa/common/version.hpp"
#include "qxa/guest/ops/mapping.hpp"
#include "qxa/guest/ops/ops.hpp"

namespace qxa::guest::ops {

pb::Info make_info(const agent_state& state) {
  pb::Info info;
  info.set_software_version(common::software_version);
  *info.mutable_os() = to_proto(read_os_info());
  info.set_hostname(common::to_utf8(read_hostname()));
  info.set_boot_id(state.boot_id);
  if (auto text = read_file("/proc/uptime")) {
    if (auto up = parse_uptime(*text)) info.set_uptime_seconds(*up);
  }
  info.set_agent_pid(state.pid);
  info.set_agent_started_unix_ms(state.started_unix_ms);
  const auto usage = read_self_usage();
  info.set_agent_cpu_seconds(usage.cpu_seconds);
  info.set_agent_rss_bytes(usage.rss_bytes);
  for (const auto& name : capabilities(table())) info.add_capabilities(name);
  info.set_telemetry_sent(state.telemetry_sent);
  info.set_sessions(state.sessions);
  if (state.last_resume) *info.mutable_last_resume() = *state.last_resume;
  return info;
}

asio::awaitable<pb::Envelope> info(request_context ctx, pb::Envelope) {
  pb::Envelope reply;
  *reply.mutable_info() = make_info(ctx.state);
  co_return reply;
}

}  // namespace qxa::guest::ops
