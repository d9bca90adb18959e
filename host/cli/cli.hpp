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

/// What every verb is given: the program's own flags, the verb's name, the VM and the
/// --timeout. A verb's other flags are its own: a struct only its file knows (make_verb()).
struct options {
  bool json = false;
  std::string control_socket;
  std::string connect;
  std::string verb;
  std::string vm;
  std::string timeout_text;             // --timeout; parsed into timeout when given
  std::chrono::nanoseconds timeout{0};  // --timeout, or the verb's own default
  bool timeout_given = false;
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

/// One verb of qx-agent, as the program runs it. A verb is either one request and its reply
/// (`request`, `text` and optionally `to_json`: the reply body's JSON otherwise), or does more
/// (`run`). A verb with flags of its own is made by make_verb() from a verb_spec over its own
/// option struct; one without is written as a verb directly.
struct verb {
  const char* name;
  const char* help;
  bool takes_vm = true;
  /// Without takes_vm: the help of an optional VM argument, or nullptr for none.
  const char* optional_vm = nullptr;
  /// Its own arguments and flags, after the VM.
  std::function<void(CLI::App& sub)> arguments = {};
  std::function<common::result<pb::Envelope>(const options& o)> request = {};
  std::function<void(const options& o, const pb::Envelope& reply, const round_trip& rt)> text = {};
  std::function<json(const options& o, const pb::Envelope& reply, const round_trip& rt)> to_json =
      {};
  std::function<asio::awaitable<int>(host::agent_access& access, const options& o)> run = {};
  /// Whether an interruption (Ctrl-C) is how this run ends well (telemetry --watch): exit 0.
  std::function<bool()> interrupt_ends_well = {};
  /// The exit status for an answer (a one-shot verb's partial success); exit_ok when absent.
  int (*status)(const pb::Envelope& reply) = nullptr;
  /// Its --timeout: what it bounds (nullptr: the verb takes none; a help that says its default
  /// in brackets has it shown so, else as TEXT=DEFAULT), and that default, which
  /// `options::timeout` holds unless --timeout is given.
  const char* timeout_help = "how long to wait for the answer";
  std::chrono::nanoseconds timeout = std::chrono::seconds(10);
};

/// A verb with flags of its own, `Own`: each function is given them beside the common options.
template <typename Own>
struct verb_spec {
  const char* name;
  const char* help;
  bool takes_vm = true;
  const char* optional_vm = nullptr;
  void (*arguments)(CLI::App& sub, Own& own) = nullptr;
  common::result<pb::Envelope> (*request)(const options& o, const Own& own) = nullptr;
  void (*text)(const options& o, const Own& own, const pb::Envelope& reply,
               const round_trip& rt) = nullptr;
  json (*to_json)(const options& o, const Own& own, const pb::Envelope& reply,
                  const round_trip& rt) = nullptr;
  asio::awaitable<int> (*run)(host::agent_access& access, const options& o,
                              const Own& own) = nullptr;
  bool (*interrupt_ends_well)(const Own& own) = nullptr;
  int (*status)(const pb::Envelope& reply) = nullptr;
  const char* timeout_help = "how long to wait for the answer";
  std::chrono::nanoseconds timeout = std::chrono::seconds(10);
};

/// The verb of `spec`, holding its own flags (one set per program: the table is made once).
template <typename Own>
verb make_verb(const verb_spec<Own>& spec) {
  auto own = std::make_shared<Own>();
  verb v{.name = spec.name,
         .help = spec.help,
         .takes_vm = spec.takes_vm,
         .optional_vm = spec.optional_vm,
         .status = spec.status,
         .timeout_help = spec.timeout_help,
         .timeout = spec.timeout};
  if (auto* f = spec.arguments) v.arguments = [own, f](CLI::App& sub) { f(sub, *own); };
  if (auto* f = spec.request) v.request = [own, f](const options& o) { return f(o, *own); };
  if (auto* f = spec.text) {
    v.text = [own, f](const options& o, const pb::Envelope& r, const round_trip& rt) {
      f(o, *own, r, rt);
    };
  }
  if (auto* f = spec.to_json) {
    v.to_json = [own, f](const options& o, const pb::Envelope& r, const round_trip& rt) {
      return f(o, *own, r, rt);
    };
  }
  if (auto* f = spec.run) {
    v.run = [own, f](host::agent_access& access, const options& o) { return f(access, o, *own); };
  }
  if (auto* f = spec.interrupt_ends_well) v.interrupt_ends_well = [own, f] { return f(*own); };
  return v;
}

/// Every verb, in the order --help lists them.
const std::vector<verb>& verbs();

/// Runs a one-shot verb: its request, the reply check, its output.
/// `wait` replaces --timeout as the time to wait for the answer (a verb whose request carries a
/// deadline of its own).
asio::awaitable<int> one_shot(const verb& v, host::agent_access& access, const options& o,
                              std::optional<std::chrono::nanoseconds> wait = std::nullopt);

// The verbs that live in files of their own, each with its own flags (verbs.cpp places them in
// the table).
verb exec_verb();                // exec.cpp
verb attach_verb();              // jobs.cpp
verb kill_verb();                // jobs.cpp
verb cp_verb();                  // copy.cpp
std::vector<verb> file_verbs();  // files.cpp: stat, ls, mkdir, rm, mv
verb upgrade_verb();             // upgrade.cpp

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
void print_upgrade_status(const options& o, const pb::UpgradeStatus& s);

// The job verbs' printers (jobs.cpp).
void print_job_started(const options& o, const pb::Job& j);
void print_jobs(const pb::JobsReply& r);

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
