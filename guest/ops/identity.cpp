// SPDX-License-Identifier: MIT
// Identity: a user's password and SSH authorized keys. The password never appears in a log
// line or on a command line: it goes to chpasswd on its standard input, or, in a guest without
// chpasswd, is hashed here (SHA-512 crypt) and written to /etc/shadow under the password lock.
// Authorized keys live in the user's home, which the user controls: the agent edits them only
// through its ssh-key helper, a run of its own program as that user (see identity.hpp).
#include "qxa/guest/mech/identity.hpp"

#include <crypt.h>
#include <fcntl.h>
#include <shadow.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "qxa/common/log.hpp"
#include "qxa/common/parse.hpp"
#include "qxa/common/posix.hpp"
#include "qxa/common/text.hpp"
#include "qxa/guest/mech/process.hpp"
#include "qxa/guest/ops/ops.hpp"
#include "qxa/guest/platform/accounts.hpp"
#include "qxa/guest/safe_fs/fs.hpp"

namespace qxa::guest::ops {

namespace {

bool valid_user_name(const std::string& name) {
  if (name.empty() || name.size() > 64 || name.front() == '-') return false;
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.' ||
          c == '$')) {
      return false;
    }
  }
  return true;
}

std::optional<std::string> sha512_crypt(const std::string& password) {
  unsigned char random[16];
  if (::getrandom(random, sizeof random, 0) != sizeof random) return std::nullopt;
  char salt[CRYPT_GENSALT_OUTPUT_SIZE];
  if (::crypt_gensalt_rn("$6$", 0, reinterpret_cast<const char*>(random), sizeof random, salt,
                         sizeof salt) == nullptr) {
    return std::nullopt;
  }
  crypt_data data{};
  const char* hash = ::crypt_r(password.c_str(), salt, &data);
  if (hash == nullptr || hash[0] == '*') return std::nullopt;
  std::string out = hash;
  ::explicit_bzero(&data, sizeof data);
  return out;
}

// Without chpasswd: edit /etc/shadow (or /etc/passwd when there is no shadow file) ourselves,
// through a descriptor of /etc (root's, writable by nobody else), keeping the file's owner,
// group and mode.
std::optional<std::string> set_password_directly(const std::string& user,
                                                 const std::string& password, bool crypted) {
  std::string hash;
  if (crypted) {
    if (password.find_first_of(":\n") != std::string::npos) return "the hash contains ':'";
    hash = password;
  } else {
    auto h = sha512_crypt(password);
    if (!h) return "cannot hash the password";
    hash = std::move(*h);
  }
  auto etc = open_trusted_directory("/etc");
  if (!etc) return "cannot use /etc: " + etc.error().message;
  if (::lckpwdf() != 0)
    return std::string("cannot lock the password files: ") + std::strerror(errno);
  std::optional<std::string> failure;
  auto shadow = open_node(etc->get(), "shadow");
  const std::string name = shadow ? "shadow" : "passwd";
  const std::string file = "/etc/" + name;
  auto node = shadow ? std::move(shadow) : open_node(etc->get(), name);
  auto text = read_regular_file(etc->get(), name, 64u << 20);
  if (!node || !text) {
    failure = "cannot read " + file + ": " + (text ? node.error().message : text.error().message);
  } else if (!replace_password_field(*text, user, hash)) {
    failure = "no user '" + user + "' in " + file;
  } else if (auto ec = replace_file_at(etc->get(), name, *text, node->second.mode & 07777,
                                       file_owner{node->second.uid, node->second.gid})) {
    failure = "cannot write " + file + ": " + ec.message();
  }
  ::ulckpwdf();
  return failure;
}

// With exec confined, a way into root's account (or an account sudo makes root) is exec by
// another road: refused, naming what confines exec.
std::optional<refusal> administrator_refusal(const request_context& ctx, const account& user,
                                             const char* what) {
  const auto confined = ctx.state.options.policy.exec_confined_by();
  if (!confined || !user.administrator) return std::nullopt;
  return refusal{
      "policy.exec",
      fmt::format("{} {} would let the host in as root ({} is {}), and exec is "
                  "confined in the guest's policy ({})",
                  what, user.name, user.name,
                  user.uid == 0 ? "root" : "in the sudo, wheel or admin group", *confined)};
}

}  // namespace

asio::awaitable<pb::Envelope> password(request_context ctx, pb::Envelope request) {
  const auto& req = request.password_request();
  if (!valid_user_name(req.user())) {
    co_return error_reply(pb::ERROR_CODE_INVALID_ARGUMENT, "invalid user name");
  }
  if (req.password().empty() || req.password().find('\n') != std::string::npos) {
    co_return error_reply(pb::ERROR_CODE_INVALID_ARGUMENT,
                          "the password must be one non-empty line");
  }
  if (req.password().find('\0') != std::string::npos) {
    // crypt(3) and chpasswd read C strings: the rest would be dropped without a word.
    co_return error_reply(pb::ERROR_CODE_INVALID_ARGUMENT, "the password contains a NUL byte");
  }
  const auto account = lookup_account(req.user());
  if (!account) {
    co_return error_reply(pb::ERROR_CODE_NOT_FOUND, "no user '" + req.user() + "' in /etc/passwd");
  }
  if (auto no = administrator_refusal(ctx, *account, "setting the password of")) {
    co_return refused(ctx, "password", *no);
  }
  std::optional<std::string> failure;
  const auto chpasswd = find_program("chpasswd", spawn_options{}.path);
  std::string method = chpasswd.empty() ? "shadow" : "chpasswd";
  if (!chpasswd.empty()) {
    spawn_options o;
    o.argv = {chpasswd};
    if (req.crypted()) o.argv.push_back("-e");
    o.env = {"PATH=" + o.path};
    auto child = co_await child_process::start(co_await asio::this_coro::executor, o,
                                               std::chrono::seconds(30));
    if (!child) {
      failure = child.error().message;
    } else {
      std::string line = req.user() + ":" + req.password() + "\n";
      auto done = co_await run_to_end(*child.value(), line, 4096, std::chrono::seconds(30));
      ::explicit_bzero(line.data(), line.size());
      const auto& st = done.status;
      if (done.timed_out) {
        failure = "chpasswd did not finish within 30 s";
      } else if (st.code != 0) {
        failure =
            fmt::format("chpasswd failed (status {}): {}", st.signal ? 128 + st.signal : st.code,
                        common::utf8_prefix(done.err.data, 200));
      }
    }
  } else {
    failure = set_password_directly(req.user(), req.password(), req.crypted());
  }
  common::log_info("audit: op=password session={:016x} request={} outcome={} user={} method={}",
                   ctx.session_id, ctx.request_id, failure ? "failed" : "ok", req.user(), method);
  if (failure) co_return error_reply(pb::ERROR_CODE_INTERNAL, *failure);
  pb::Envelope reply;
  reply.mutable_password_reply();
  co_return reply;
}

asio::awaitable<pb::Envelope> ssh_keys(request_context ctx, pb::Envelope request) {
  const auto& req = request.ssh_keys_request();
  if (!valid_user_name(req.user())) {
    co_return error_reply(pb::ERROR_CODE_INVALID_ARGUMENT, "invalid user name");
  }
  const auto user = lookup_account(req.user());
  if (!user) {
    co_return error_reply(pb::ERROR_CODE_NOT_FOUND, "no user '" + req.user() + "' in /etc/passwd");
  }
  if (req.action() == pb::SshKeysRequest::ACTION_ADD) {
    if (auto no = administrator_refusal(ctx, *user, "adding a key to")) {
      co_return refused(ctx, "ssh-key", *no);
    }
  }
  if (user->home.empty() || user->home.front() != '/') {
    co_return error_reply(pb::ERROR_CODE_FAILED_PRECONDITION,
                          req.user() + " has no home directory");
  }
  std::string input = req.action() == pb::SshKeysRequest::ACTION_ADD      ? "add\n"
                      : req.action() == pb::SshKeysRequest::ACTION_REMOVE ? "remove\n"
                                                                          : "list\n";
  for (const auto& k : req.keys()) {
    if (k.find_first_of(std::string_view("\n\0", 2)) != std::string::npos ||
        key_identity(k).empty()) {
      co_return error_reply(
          pb::ERROR_CODE_INVALID_ARGUMENT,
          "not an SSH public key line: '" + std::string(common::utf8_prefix(k, 40)) + "'");
    }
    input += k + "\n";
  }
  // The agent's own program, as the user, does the work in the user's home (identity.hpp).
  spawn_options o;
  o.argv = {ctx.state.options.helper_program, std::string(ssh_keys_helper_argument), user->home};
  o.user = *user;
  o.env = {"PATH=" + o.path, "HOME=" + user->home, "USER=" + user->name, "LOGNAME=" + user->name};
  o.working_directory = "/";
  // Editing a file of keys takes milliseconds; a helper held longer (a home that never
  // answers) is given up well before qx-agentd's own deadline (10 s by default), so that the
  // host learns why instead of a timeout.
  const auto helper_deadline = std::min<std::chrono::nanoseconds>(
      ctx.state.options.request_timeout / 2, std::chrono::seconds(5));
  auto child =
      co_await child_process::start(co_await asio::this_coro::executor, o, helper_deadline);
  if (!child) {
    co_return error_reply(pb::ERROR_CODE_INTERNAL,
                          "cannot start the ssh-key helper: " + child.error().message);
  }
  auto done = co_await run_to_end(*child.value(), std::move(input), max_authorized_keys_bytes + 64,
                                  helper_deadline);
  const auto action = req.action() == pb::SshKeysRequest::ACTION_ADD      ? "add"
                      : req.action() == pb::SshKeysRequest::ACTION_REMOVE ? "remove"
                                                                          : "list";
  std::optional<std::string> failure;
  if (done.timed_out) {
    failure = fmt::format(
        "the ssh-key helper did not finish within {} ms (in {})",
        std::chrono::duration_cast<std::chrono::milliseconds>(helper_deadline).count(), user->home);
  } else if (done.status.code != 0) {
    failure = done.err.data.empty()
                  ? fmt::format("the ssh-key helper failed (status {})",
                                done.status.signal ? 128 + done.status.signal : done.status.code)
                  : std::string(common::utf8_prefix(done.err.data, 1000));
  }
  // What the helper wrote came from a process the user could have interfered with: parsed as
  // untrusted, and only key lines are passed on.
  auto lines = split_lines(done.out.data);
  std::uint32_t changed = 0;
  if (!failure &&
      (lines.empty() || !lines.front().starts_with("changed ") || done.out.truncated())) {
    failure = "the ssh-key helper gave no answer";
  }
  if (!failure) {
    changed =
        common::to_number<std::uint32_t>(std::string_view(lines.front()).substr(8)).value_or(0);
    lines.erase(lines.begin());
  }
  if (req.action() != pb::SshKeysRequest::ACTION_LIST || failure) {
    common::log_info(
        "audit: op=ssh-key session={:016x} request={} outcome={} user={} action={} changed={}{}",
        ctx.session_id, ctx.request_id, failure ? "failed" : "ok", common::log_value(req.user()),
        action, changed, failure ? " error=" + common::log_value(*failure) : "");
  }
  if (failure) {
    co_return error_reply(
        done.timed_out ? pb::ERROR_CODE_TIMEOUT : pb::ERROR_CODE_FAILED_PRECONDITION, *failure);
  }
  pb::Envelope reply;
  auto* r = reply.mutable_ssh_keys_reply();
  for (const auto& l : lines) {
    if (!key_identity(l).empty() && !l.starts_with('#')) r->add_keys(l);
  }
  r->set_changed(changed);
  co_return reply;
}

}  // namespace qxa::guest::ops
