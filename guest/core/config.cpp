// SPDX-License-Identifier: MIT
#include "qxa/guest/core/config.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "qxa/common/config.hpp"
#include "qxa/guest/core/operation.hpp"
#include "qxa/guest/platform/paths.hpp"

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
  auto& q = a.qemu_ga;
  std::string mode = q.enabled == qemu_ga_options::mode::on    ? "on"
                     : q.enabled == qemu_ga_options::mode::off ? "off"
                                                               : "auto";
  r.get("qemu_ga.mode", mode);
  if (mode == "on") {
    q.enabled = qemu_ga_options::mode::on;
  } else if (mode == "off") {
    q.enabled = qemu_ga_options::mode::off;
  } else if (mode == "auto") {
    q.enabled = qemu_ga_options::mode::automatic;
  } else {
    r.fail("qemu_ga.mode", fmt::format("is '{}'; use \"auto\", \"on\" or \"off\"", mode));
  }
  std::string qemu_ga_port = q.port.to_string();
  r.get("qemu_ga.port", qemu_ga_port);
  if (auto spec = port_spec::parse(qemu_ga_port)) {
    q.port = *spec;
  } else {
    r.fail("qemu_ga.port", spec.error().message);
  }
  std::int64_t command_bytes = static_cast<std::int64_t>(q.max_command_bytes);
  r.get("qemu_ga.max_command_bytes", command_bytes, 4096, std::int64_t{256} << 20);
  q.max_command_bytes = static_cast<std::size_t>(command_bytes);
  r.get("qemu_ga.max_open_files", q.max_open_files, 1, 1024);
  r.get("qemu_ga.block_rpcs", q.block_rpcs);
  r.get("qemu_ga.allow_rpcs", q.allow_rpcs);
  for (const auto* list : {&q.block_rpcs, &q.allow_rpcs}) {
    for (const auto& name : *list) {
      const auto& known = config.qemu_ga_commands;
      if (!known.empty() && std::find(known.begin(), known.end(), name) == known.end()) {
        r.fail(list == &q.block_rpcs ? "qemu_ga.block_rpcs" : "qemu_ga.allow_rpcs",
               fmt::format("names an unknown qemu-ga command '{}'", name));
      }
    }
  }
  r.get_duration("telemetry.interval", a.telemetry_interval, std::chrono::milliseconds(1));
  r.get_duration("telemetry.write_timeout", a.write_timeout, std::chrono::milliseconds(1));
  r.get("telemetry.failure_limit", a.failure_limit, 1, 1'000'000);
  r.get("telemetry.exclude_interfaces", a.exclude_interfaces);
  r.get("telemetry.primary_interface", a.primary_interface);
  r.get("limits.max_inflight_requests", a.max_inflight_requests, 1, 65'536);
  r.get("limits.max_frame_size", a.max_frame_size, 4096, 256u << 20);
  r.get_duration("limits.request_timeout", a.request_timeout, std::chrono::milliseconds(1));
  auto& f = a.freeze;
  r.get("freeze.hooks_dir", f.hooks_dir);
  r.get_duration("freeze.hook_timeout", f.hook_timeout, std::chrono::milliseconds(1));
  r.get_duration("freeze.default_lease", f.default_lease, std::chrono::milliseconds(100));
  r.get_duration("freeze.max_lease", f.max_lease, std::chrono::milliseconds(100));
  r.get_duration("freeze.max_frozen", f.max_frozen, std::chrono::milliseconds(100));
  r.get("freeze.state_file", f.state_file);
  r.get("power.hooks_dir", a.power.hooks_dir);
  r.get_duration("power.hook_timeout", a.power.hook_timeout, std::chrono::milliseconds(1));
  r.get_duration("port_tuning.host_poll_interval", a.port_tuning.host_poll_interval,
                 std::chrono::milliseconds(1));
  auto& p = a.policy;
  r.get("policy.allow", p.allow);
  r.get("policy.block", p.block);
  r.get("policy.exec", p.exec);
  r.get("policy.upgrade", p.upgrade);
  r.get("policy.exec_allow", p.exec_allow);
  r.get("policy.exec_env_allow", p.exec_env_allow);
  r.get("policy.read_roots", p.read_roots);
  r.get("policy.write_roots", p.write_roots);
  p.write_roots_listed = r.has("policy.write_roots");
  r.get("policy.write_setid", p.write_setid);
  r.get("policy.write_owner", p.write_owner);
  std::int64_t output = static_cast<std::int64_t>(p.max_output_bytes);
  r.get("policy.max_output_bytes", output, 0, std::int64_t{1} << 40);
  p.max_output_bytes = static_cast<std::uint64_t>(output);
  std::int64_t file = static_cast<std::int64_t>(p.max_file_bytes);
  r.get("policy.max_file_bytes", file, 0, std::int64_t{1} << 50);
  p.max_file_bytes = static_cast<std::uint64_t>(file);
  r.get("policy.max_chunk_bytes", p.max_chunk_bytes, 4096, a.max_frame_size / 2);
  r.get("policy.max_jobs", p.max_jobs, 0, 1024);
  r.get("policy.max_open_uploads", p.max_open_uploads, 1, 1024);
  std::int64_t job_output = static_cast<std::int64_t>(p.max_job_output_bytes);
  r.get("policy.max_job_output_bytes", job_output, 0, std::int64_t{1} << 30);
  p.max_job_output_bytes = static_cast<std::uint64_t>(job_output);
  r.get_duration("jobs.keep_finished", a.keep_finished_jobs, std::chrono::milliseconds(0));
  r.get("upgrade.state_dir", a.upgrade.state_dir);
  r.get_duration("upgrade.confirm_within", a.upgrade.confirm_within, min_confirm_within);
  if (a.upgrade.confirm_within > max_confirm_within) {
    r.fail("upgrade.confirm_within", "must be at most 1h");
  }
  if (a.upgrade.state_dir.empty() || a.upgrade.state_dir.front() != '/') {
    r.fail("upgrade.state_dir", "must be an absolute path");
  }
  for (const auto* list : {&p.read_roots, &p.write_roots, &p.exec_allow}) {
    const char* key = list == &p.read_roots    ? "policy.read_roots"
                      : list == &p.write_roots ? "policy.write_roots"
                                               : "policy.exec_allow";
    for (const auto& entry : *list) {
      if (entry.empty() || (list != &p.exec_allow && entry.front() != '/')) {
        r.fail(key, fmt::format("holds '{}', which is not an absolute path", entry));
      } else if (list != &p.exec_allow && !path_components(entry)) {
        r.fail(key, fmt::format("holds '{}', which has a '.' or '..' component", entry));
      }
    }
  }
  for (const auto& name : p.exec_env_allow) {
    if (name.empty() || name.find_first_of("= \t\n") != std::string::npos) {
      r.fail("policy.exec_env_allow",
             fmt::format("holds '{}', which is not a variable name", name));
    } else if (dangerous_env_name(name)) {
      r.fail("policy.exec_env_allow",
             fmt::format("holds '{}', which is never allowed: it changes what a program loads "
                         "or runs",
                         name));
    }
  }
  const auto operations = operation_names(config.operations);
  const auto known = [&](const std::string& op) {
    return operations.empty() ||
           std::find(operations.begin(), operations.end(), op) != operations.end();
  };
  for (const auto* list : {&p.allow, &p.block}) {
    for (const auto& op : *list) {
      if (!known(op)) {
        r.fail(list == &p.allow ? "policy.allow" : "policy.block",
               fmt::format("names an unknown operation '{}'", op));
      }
    }
  }
  return r.finish();
}

}  // namespace

std::optional<common::error_info> apply_agent_config(std::string_view text, std::string source,
                                                     agent_config& config) {
  auto reader = common::config_reader::from_string(text, std::move(source));
  if (!reader) return reader.error();
  return apply(*reader, config);
}

std::optional<common::error_info> load_agent_config(const std::string& path, agent_config& config) {
  auto reader = common::config_reader::from_file(path);
  if (!reader) return reader.error();
  return apply(*reader, config);
}

}  // namespace qxa::guest
