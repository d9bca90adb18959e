// SPDX-License-Identifier: MIT
// The qemu-guest-agent protocol, served by this agent on the port libvirt, Proxmox, OpenStack
// and KubeVirt talk to (org.qemu.guest_agent.0), so that `virsh` and what is built on it keep
// working beside the native channel. The same process, policy and handlers serve both: each
// qemu-ga command is translated into the native request of the same capability, run through
// the native handler after the native checks (the policy's operation lists, the frozen state),
// and its reply translated back with the QAPI schema's field names.
//
// The wire (QEMU's JSON streamer, as qemu-ga reads it):
// - the input is a stream of JSON objects `{"execute": NAME, "arguments": {...}, "id": ANY}`,
//   one after another; whitespace and newlines between them do not matter, and an object may
//   span lines. Each answer is one line: `{"return": VALUE}` or `{"error": {"class": C, "desc":
//   D}}`, with the request's "id" copied when it had one. Answers come in the order of the
//   commands: a client that gave up on an answer resynchronises with guest-sync.
// - a 0xFF byte, never valid in JSON, drops whatever part of a command was read (a client sends
//   it before guest-sync-delimited, whose answer starts with 0xFF too).
// - errors have qemu-ga's classes: "CommandNotFound" for an unknown command and for one that is
//   disabled (by the policy, or while filesystems are frozen: "Command NAME has been disabled"),
//   "GenericError" for everything else.
// Limits against a hostile client: one command is at most `max_command_bytes` (default 16 MiB),
// nests at most 32 levels and holds at most 65,536 values (what the parser's memory grows
// with); past that it is skipped to its end and answered with an error.
#pragma once

#include <asio/awaitable.hpp>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "qxa/guest/core/agent.hpp"
#include "qxa/guest/core/port.hpp"
#include "qxa/guest/safe_fs/fs.hpp"

namespace qxa::guest::qga {

using json = nlohmann::ordered_json;

using options = qemu_ga_options;

/// Whether `[qemu_ga] mode = "auto"` serves the port: no qemu-ga binary under `root`
/// (/usr/bin/qemu-ga, /usr/sbin/qemu-ga). The reason is logged.
bool automatic_mode_serves(const std::string& root = "/");

/// Cuts the byte stream into JSON texts, each a candidate command, without parsing them: it
/// follows strings (with their escapes) and the nesting of braces and brackets. Pure: bytes in,
/// pieces out.
class splitter {
 public:
  struct piece {
    enum class kind { text, error } type = kind::text;
    std::string text;  ///< a JSON text, or the error's description
  };

  /// `max_values`: the values (elements and members) one command may hold.
  explicit splitter(std::size_t max_bytes = 16u << 20, std::size_t max_depth = 32,
                    std::size_t max_values = 1u << 16)
      : max_bytes_(max_bytes), max_depth_(max_depth), max_values_(max_values) {}

  /// Adds bytes; appends each complete piece to `out`.
  void feed(std::string_view bytes, std::vector<piece>& out);
  /// Drops a partial command (0xFF does the same from inside the stream).
  void reset();
  /// Bytes of an unfinished command held.
  [[nodiscard]] std::size_t pending() const noexcept { return buffer_.size(); }
  /// 0xFF markers seen.
  [[nodiscard]] std::uint64_t resets() const noexcept { return resets_; }

 private:
  void finish(std::vector<piece>& out);

  std::size_t max_bytes_, max_depth_, max_values_;
  std::string buffer_;
  std::size_t depth_ = 0;
  std::size_t values_ = 0;
  bool in_string_ = false;
  bool escaped_ = false;
  bool in_token_ = false;  ///< a bare word or number at the top level
  bool too_big_ = false;   ///< skipping to the end of an oversized command
  bool too_deep_ = false;
  bool too_many_ = false;  ///< more values than max_values: skipped to its end
  std::uint64_t resets_ = 0;
};

/// An answer: a value, an error, or nothing (a command without a success response).
struct answer {
  json value = nullptr;
  std::string error_class;  ///< empty: success
  std::string desc;
  bool silent = false;  ///< guest-shutdown succeeded: qemu-ga sends no answer

  static answer ok(json v) { return {std::move(v), {}, {}, false}; }
  static answer generic(std::string d) { return {nullptr, "GenericError", std::move(d), false}; }
  static answer not_found(std::string d) {
    return {nullptr, "CommandNotFound", std::move(d), false};
  }
  [[nodiscard]] bool failed() const noexcept { return !error_class.empty(); }
};

/// A command read from the wire.
struct command_call {
  std::string name;
  json arguments = json::object();
  json id = nullptr;  ///< copied into the answer when present
  bool has_id = false;
};

/// Reads one JSON text as a command: its checks and messages are qemu-ga's ("QMP input must be
/// a JSON object", "QMP input member 'arguments' must be an object"...).
std::variant<command_call, answer> parse_command(std::string_view text);

/// The line sent for an answer ("\n"-terminated; empty for a silent one). `delimited`: the
/// answer of guest-sync-delimited, which starts with 0xFF.
std::string format_answer(const answer& a, const command_call* call, bool delimited = false);

/// A command's parameter, as the QAPI schema declares it.
struct parameter {
  enum class type { integer, string, boolean, number, string_list, object_list, any };
  const char* name;
  type kind;
  bool required;
};

/// Checks `arguments` against `params` with qemu-ga's messages ("Parameter 'id' is missing",
/// "Parameter 'x' is unexpected", "Invalid parameter type for 'id', expected: integer").
std::optional<answer> check_arguments(const json& arguments, std::span<const parameter> params);

/// Base64 as QAPI carries bytes; nothing when `text` is not base64.
std::string to_base64(std::string_view bytes);
std::optional<std::string> from_base64(std::string_view text);

/// A process guest-exec started: the native job that runs it.
struct exec_record {
  std::uint64_t job = 0;
  bool out = false, err = false;  ///< capture-output: the streams its status reports
};

/// A file guest-file-open opened.
struct open_file {
  unique_fd fd = {};
  std::string path = {};
  bool readable = false, writable = false;
  std::uint64_t read_bytes = 0, written_bytes = 0;  ///< through this handle, for the limit
  /// Opened "w": the upload (in the agent's upload table) that replaces the file when closed.
  std::uint64_t upload = 0;
};

/// The session the qemu-ga port's uploads are kept under in the agent's upload table.
inline constexpr std::uint64_t upload_session = ~std::uint64_t{0};

/// What the commands share across connections (a process started by guest-exec is asked
/// about by pid, perhaps by the next client, as qemu-ga allows).
struct context {
  agent_state& state;
  std::map<std::int64_t, exec_record> execs = {};  ///< by pid, until its exit was reported
  /// Open files by handle (from 1000, as qemu-ga counts): they stay open for the next client.
  std::map<std::int64_t, open_file> files = {};
  std::int64_t next_handle = 1000;
  std::uint64_t commands = 0;  ///< commands run, for the request ids of native calls
};

/// Runs one parsed command: the whole command table (commands.cpp).
asio::awaitable<answer> run_command(context& ctx, const command_call& call);
/// The commands this agent knows, in the order guest-info lists them.
std::vector<std::string> command_names();

/// Serves the protocol on `port` until the port fails for good: one client at a time, its
/// commands one after another, each bounded by the agent's request timeout.
asio::awaitable<void> serve(agent_state& state, port& p, const options& o);

}  // namespace qxa::guest::qga
