// SPDX-License-Identifier: MIT
// qx-agent's parts: its options, exit statuses and output helpers, the table of verbs, and the
// verbs that do more than one request (exec, cp). The program is main.cpp; it reaches agents
// through qxa::host::agent_access, via the daemon or straight to one VM's socket.
#pragma once

#include <CLI/CLI.hpp>
#include <asio/awaitable.hpp>
#include <chrono>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "quantix/agent/v1/control.pb.h"
#include "qxa/common/error.hpp"
#include "qxa/common/wall_clock.hpp"
#include "qxa/host/agent_access.hpp"

namespace qxa::cli {

namespace pb = ::quantix::agent::v1;
using json = nlohmann::ordered_json;

// Exit statuses, as --help and host/README.md give them.
inline constexpr int exit_ok = 0;
inline constexpr int exit_remote = 1;  ///< the agent answered with an error
inline constexpr int exit_usage = 2;
inline constexpr int exit_unavailable = 69;
inline constexpr int exit_tempfail = 75;      ///< timeout or connection lost
inline constexpr int exit_interrupted = 130;  ///< 128 + SIGINT, as a shell reports it

/// Everything the command line says; each verb reads its part.
struct options {
  bool json = false;
  std::string control_socket;
  std::string connect;
  std::string verb;
  std::string vm;
  std::string timeout_text;             // --timeout; parsed into timeout when given
  std::chrono::nanoseconds timeout{0};  // --timeout, or the verb's own default
  bool timeout_given = false;
  bool watch = false;  // telemetry
  bool set_time = false;
  bool slew = false;
  std::string new_hostname;
  // exec
  std::vector<std::string> argv;
  bool shell = false;
  bool send_stdin = false;
  std::string user;  // exec, passwd, ssh-key
  std::string cwd;
  std::vector<std::string> env;
  bool detach = false;
  // jobs: attach, kill
  std::uint64_t job = 0;
  bool no_follow = false;
  std::string signal_text = "TERM";
  // cp
  std::string source, destination;
  bool create_parents = false;
  // shutdown, reboot
  std::uint32_t delay_seconds = 0;
  bool halt = false;
  std::string suspend_mode = "ram";
  // freeze
  std::string lease_text = "60s";  // parsed into lease
  std::chrono::nanoseconds lease{0};
  std::vector<std::string> mounts;
  std::vector<std::string> disk_serials;
  bool freeze_status = false;
  // stat, ls, mkdir, rm, mv (mv's second path is `destination`; mkdir --parents is
  // create_parents)
  std::string path;
  bool long_list = false;
  std::string mode_text;
  bool recursive = false, force = false, replace = false;
  // hotplug: cpuN, memoryN
  std::vector<std::string> online, offline;
  // fstrim
  std::string trim_minimum_text = "0";
  // passwd, ssh-key
  bool crypted = false;
  std::string key_action, key;
  // upgrade
  std::string binary;
  bool all = false;
  std::uint32_t parallel = 4;
  std::string confirm_within_text = "2m";
  bool force_upgrade = false;
};

/// A verb that ends the program with `status`, saying `message` on standard error.
struct failure {
  int status;
  std::string message;
};

int status_for(std::error_code ec);
int status_for(pb::ErrorCode code);
/// Prints the failure; returns its status.
int report(const failure& f);
/// The one reply check: a local or daemon error, or an agent's refusal, as a failure; nothing
/// when the reply is the answer asked for.
std::optional<failure> failed(const common::result<pb::Envelope>& reply);
/// A request that cannot be made as the command line asks: `message` is the usage error.
inline common::result<pb::Envelope> usage(std::string message) {
  return common::result<pb::Envelope>{common::errc::invalid_argument, std::move(message)};
}

/// What a one-shot verb's printer knows of its round trip.
struct round_trip {
  std::chrono::system_clock::time_point sent_at;
  double ms = 0;
};

/// One verb of qx-agent. A verb is either one request and its reply (`request`, `text` and
/// optionally `to_json`: the reply body's JSON otherwise), or does more (`run`).
struct verb {
  const char* name;
  const char* help;
  bool takes_vm = true;
  /// Its own arguments and flags, after the VM.
  void (*arguments)(CLI::App& sub, options& o) = nullptr;
  common::result<pb::Envelope> (*request)(const options& o) = nullptr;
  void (*text)(const options& o, const pb::Envelope& reply, const round_trip& rt) = nullptr;
  json (*to_json)(const options& o, const pb::Envelope& reply, const round_trip& rt) = nullptr;
  asio::awaitable<int> (*run)(host::agent_access& access, const options& o) = nullptr;
  /// The exit status for an answer (a one-shot verb's partial success); exit_ok when absent.
  int (*status)(const pb::Envelope& reply) = nullptr;
  /// Its --timeout: what it bounds (nullptr: the verb takes none; a help that says its default
  /// in brackets has it shown so, else as TEXT=DEFAULT), and that default, which
  /// `options::timeout` holds unless --timeout is given.
  const char* timeout_help = "how long to wait for the answer";
  std::chrono::nanoseconds timeout = std::chrono::seconds(10);
};

/// Every verb, in the order --help lists them.
const std::vector<verb>& verbs();

/// Runs a one-shot verb: its request, the reply check, its output.
/// `wait` replaces --timeout as the time to wait for the answer (a verb whose request carries a
/// deadline of its own).
asio::awaitable<int> one_shot(const verb& v, host::agent_access& access, const options& o,
                              std::optional<std::chrono::nanoseconds> wait = std::nullopt);

// The verbs that do more than one request and its reply.
asio::awaitable<int> run_exec(host::agent_access& access, const options& o);
asio::awaitable<int> run_cp(host::agent_access& access, const options& o);
asio::awaitable<int> run_ls(host::agent_access& access, const options& o);
asio::awaitable<int> run_rm(host::agent_access& access, const options& o);
asio::awaitable<int> run_attach(host::agent_access& access, const options& o);

/// An upload's end (copy.cpp): what went wrong, or the bytes sent and their SHA-256 (raw).
struct upload_result {
  std::optional<failure> error;
  bool interrupted = false;
  std::uint64_t bytes = 0;
  std::string sha256;
};
/// Sends the file at `fd` (read from its start with pread) as the upload that `open` (a
/// FileWriteOpen) starts: several chunks in flight, then the close with the SHA-256. Aborted
/// in the guest when anything fails or the awaiting coroutine is cancelled.
asio::awaitable<upload_result> upload_file(host::agent_access& b, const std::string& vm, int fd,
                                           pb::Envelope open, std::chrono::nanoseconds timeout,
                                           std::function<void(std::uint64_t)> on_progress = {});
asio::awaitable<int> run_upgrade(host::agent_access& access, const options& o);
void print_upgrade_status(const options& o, const pb::UpgradeStatus& s);

// The job verbs' printers (jobs.cpp).
void print_job_started(const options& o, const pb::Job& j);
void print_jobs(const pb::JobsReply& r);
void print_job_killed(const options& o, const pb::Job& j);
/// "TERM", "SIGKILL", "9": the signal's number.
common::result<int> parse_signal(const std::string& text);

// The file verbs' requests and printers (files.cpp).
common::result<pb::Envelope> stat_request(const options& o);
common::result<pb::Envelope> mkdir_request(const options& o);
common::result<pb::Envelope> rm_request(const options& o);
common::result<pb::Envelope> mv_request(const options& o);
void print_stat(const options& o, const pb::Envelope& reply, const round_trip& rt);
void print_mkdir(const options& o, const pb::Envelope& reply, const round_trip& rt);
void print_rm(const options& o, const pb::Envelope& reply, const round_trip& rt);
void print_mv(const options& o, const pb::Envelope& reply, const round_trip& rt);
/// A file's description as JSON: names as text (and in base64 too when not UTF-8), the mode in
/// octal.
json file_json(const pb::FileStat& s);

// ---- output ------------------------------------------------------------------------------

/// Text from a guest for a terminal: control characters come out escaped, so a hostname or a
/// file name cannot retitle the terminal, clear it or move the cursor.
std::string shown(std::string_view text);
std::string human_bytes(std::uint64_t bytes);
/// "42s", "3m5s", ... since `since_unix_ms`; "-" for 0.
std::string human_age(std::int64_t since_unix_ms);
/// Writes `j` to standard output (`indent` -1: one line); text that is not UTF-8 (a local path,
/// say) is written with U+FFFD in its place.
void print_json(const json& j, int indent = -1);

void print_status_table(const pb::StatusReport& report);
void print_info(const pb::Info& info);
void print_hooks(const google::protobuf::RepeatedPtrField<pb::HookOutcome>& hooks);
void print_telemetry(const pb::Telemetry& t);
void print_freeze(const pb::FreezeStatus& f);
void print_trim(const pb::TrimReply& t);
void print_disks(const pb::DisksReply& d);
void print_interfaces(const google::protobuf::RepeatedPtrField<pb::Interface>& interfaces);
void print_network(const pb::NetworkReply& n);
/// A VM's status as JSON: its message, with the session id in hex and what dates from when.
json status_json(const pb::VmStatus& s);

// ---- local I/O -----------------------------------------------------------------------------

std::string read_all_stdin();

/// After an interruption, what the cancellation queued (the cancel for the guest) is written
/// before the program ends, for at most this long.
inline constexpr auto settle_time = std::chrono::seconds(2);

}  // namespace qxa::cli
