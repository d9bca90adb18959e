// SPDX-License-Identifier: MIT
// The guest agent: a port, one session per period of host presence, and the telemetry loop
// that spans sessions.
#pragma once

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "quantix/agent/v1/agent.pb.h"
#include "quantix/agent/v1/telemetry.pb.h"
#include "qxa/common/async.hpp"
#include "qxa/common/frame.hpp"
#include "qxa/guest/core/operation.hpp"
#include "qxa/guest/core/policy.hpp"
#include "qxa/guest/core/port.hpp"
#include "qxa/guest/core/run_operation.hpp"
#include "qxa/guest/mech/freezer.hpp"
#include "qxa/guest/mech/jobs.hpp"
#include "qxa/guest/mech/upgrade.hpp"
#include "qxa/guest/mech/uploads.hpp"
#include "qxa/guest/platform/network.hpp"
#include "qxa/guest/platform/sampler.hpp"

namespace qxa::guest {

/// Exit status after too many consecutive telemetry failures (EX_TEMPFAIL): the service manager
/// restarts the agent with a clean state.
inline constexpr int exit_telemetry_failed = 75;

/// Power hooks: run before poweroff, reboot, halt and suspend, and after resume.
struct power_options {
  std::string hooks_dir = "/etc/quantix-kvm/power-hook.d";
  std::chrono::nanoseconds hook_timeout = std::chrono::seconds(30);
  /// Where systemd, when it is the service manager, says so (tests point elsewhere).
  std::string systemd_dir = "/run/systemd/system";
};

/// The qemu-guest-agent protocol on its own port, beside the native one (qga.hpp).
struct qemu_ga_options {
  /// automatic: served unless qemu-guest-agent is installed in the guest (the two would fight
  /// over the port); on: always; off: never.
  enum class mode { off, on, automatic };
  mode enabled = mode::automatic;
  port_spec port = {port_spec::kind::device, "/dev/virtio-ports/org.qemu.guest_agent.0"};
  /// The longest command read; a longer one is skipped and answered with an error.
  std::size_t max_command_bytes = 16u << 20;
  /// Files open at once through guest-file-open.
  std::uint32_t max_open_files = 32;
  /// Commands refused on this port alone whatever the policy allows, as qemu-ga's --block-rpcs
  /// and --allow-rpcs (an allow list, when given, names all that may run). For what the policy
  /// cannot block: guest-ping (the native heartbeat is never blocked), guest-info.
  std::vector<std::string> block_rpcs, allow_rpcs;
};

struct agent_options {
  port_spec port;
  port_options port_tuning;
  std::chrono::nanoseconds telemetry_interval = std::chrono::seconds(5);
  /// Hands the heap's free pages back at each telemetry tick. Off where thousands of agents
  /// share one process and one heap (qx-bench's fleet simulator): there each trim would walk
  /// everyone's heap.
  bool trim_heap = true;
  std::chrono::nanoseconds write_timeout = std::chrono::seconds(5);
  std::uint32_t failure_limit = 50;
  std::uint32_t max_inflight_requests = 64;
  std::uint32_t max_frame_size = common::default_max_frame_size;
  /// A session stops reading requests while more than this many reply bytes wait to be written.
  std::size_t max_queued_reply_bytes = 8u << 20;
  /// The longest any single request may run.
  std::chrono::nanoseconds request_timeout = std::chrono::seconds(30);
  /// The agent's own program, run as a user for the work in that user's home (ssh-key).
  std::string helper_program = "/proc/self/exe";
  /// The configuration file it was started with: one of the agent's own paths.
  std::string config_file = "/etc/quantix-kvm/agent.toml";
  /// The hardware clock `time --set` writes, the login records `users` reads and sysfs, where
  /// hotplug works (tests point them elsewhere).
  std::string rtc_device = "/dev/rtc0";
  std::string utmp_path = "/var/run/utmp";
  std::string sys_root = "/sys";
  /// Interfaces left out of telemetry and the network view (shell patterns), and the one whose
  /// address is the primary one (empty: the default route's).
  std::vector<std::string> exclude_interfaces = default_excluded_interfaces();
  std::string primary_interface;
  /// Where telemetry is read from: the system itself. (exclude_interfaces and
  /// primary_interface above override the fields of the same names.) qx-bench's fleet
  /// simulator points thousands of agents at one snapshot.
  sampler_sources telemetry_sources;
  /// What the host may ask of this guest.
  local_policy policy;
  freeze_options freeze;
  power_options power;
  /// How long a finished detached job's status and output tail are kept.
  std::chrono::nanoseconds keep_finished_jobs = std::chrono::hours(1);
  upgrade_options upgrade;
  qemu_ga_options qemu_ga;
};

class session;
struct agent_state;

/// What the layers above the core give the agent: its operations, and the protobuf of what it
/// says of itself. main.cpp, the composition root, takes them from ops (ops::parts()) and adds
/// the qemu-guest-agent protocol's server.
struct agent_parts {
  operation_table operations = {};
  /// The Info body, also used to fill HelloAck.
  std::function<pb::Info(const agent_state&)> info = nullptr;
  /// One telemetry sample as the wire has it; the agent sets its sequence number.
  std::function<pb::Telemetry(agent_state&)> telemetry = nullptr;
  /// Serves the qemu-guest-agent protocol on a port until it fails for good; empty: the port is
  /// not served.
  std::function<asio::awaitable<void>(agent_state&, port&)> serve_qemu_ga = nullptr;
};

/// What every session and operation shares. Lives as long as the agent.
struct agent_state {
  agent_options options;
  agent_parts parts;
  telemetry_sampler sampler;
  std::string boot_id;
  std::int64_t started_unix_ms = 0;
  std::uint32_t pid = 0;
  std::uint64_t telemetry_sent = 0;
  std::uint64_t telemetry_sequence = 0;
  std::uint64_t sessions = 0;  // handshakes completed
  std::shared_ptr<freezer> freeze = nullptr;
  std::shared_ptr<upload_table> uploads = nullptr;
  std::shared_ptr<job_table> jobs = nullptr;
  /// The requests running, whichever port asked (limits.max_inflight_requests).
  std::shared_ptr<inflight_limit> inflight = nullptr;
  /// A suspend runs from its request until the resume hooks ran after the wake-up.
  bool suspending = false;
  /// How the last suspend that returned went (Info.last_resume).
  std::optional<pb::ResumeRecord> last_resume = std::nullopt;
  /// Set by a handler whose reply must reach the host before the agent exits with this status
  /// (an upgrade): the session writes the reply, waits for it to drain, then calls exit_now.
  std::optional<int> exit_after_reply = std::nullopt;
  std::function<void()> exit_now = nullptr;
  /// An upgrade request is between its checks and its reply.
  bool upgrading = false;

  [[nodiscard]] bool frozen() const noexcept;
  /// One telemetry sample, pushed or asked for: the next in sequence.
  pb::Telemetry telemetry_sample();
};

/// The job table's limits as the options set them.
job_limits job_limits_of(const agent_options& options);

/// The paths through which a host could have code run as root besides exec, as configured and
/// as real paths: /etc/quantix-kvm and the configuration file, the hooks' directories, the
/// agent's binary (and its
/// staged and previous copies), its upgrade records, its unit, the exec_allow programs. With
/// exec confined, no file change reaches them (local_policy::protected_paths).
std::vector<std::string> agent_paths(const agent_options& options);

class agent {
 public:
  /// `qemu_ga`: the port of the qemu-guest-agent protocol, or null when it is not served.
  agent(asio::any_io_executor ex, agent_options options, agent_parts parts, std::unique_ptr<port> p,
        std::unique_ptr<port> qemu_ga = nullptr);
  ~agent();

  /// Runs until the telemetry loop gives up (returns exit_telemetry_failed) or the port fails
  /// for good (returns 1). Stopping the agent is done by stopping its io_context.
  asio::awaitable<int> run();

  [[nodiscard]] const agent_state& state() const noexcept { return *state_; }
  /// Undoes what must not outlive the agent (a freeze). Call before stopping the io_context.
  asio::awaitable<void> prepare_exit();

 private:
  asio::awaitable<void> serve_hosts();
  asio::awaitable<int> telemetry_loop();
  asio::awaitable<int> exit_when_asked();
  asio::awaitable<void> serve_qemu_ga();
  void note_pending_upgrade() const;
  void warn_about_write_roots() const;

  asio::any_io_executor ex_;
  std::unique_ptr<agent_state> state_;
  std::unique_ptr<port> port_;
  std::unique_ptr<port> qemu_ga_port_;
  std::shared_ptr<session> current_;
  std::unique_ptr<common::async_event> exit_asked_;
  bool exit_wanted_ = false;
};

}  // namespace qxa::guest
