// SPDX-License-Identifier: MIT
// Identity: a user's password and SSH authorized keys. The password never appears in a log
// line or on a command line: it goes to chpasswd on its standard input, or, in a guest without
// chpasswd, is hashed here (SHA-512 crypt) and written to /etc/shadow under the password lock.
#include "qxa/guest/identity.hpp"

#include <crypt.h>
#include <fcntl.h>
#include <shadow.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <asio/experimental/as_tuple.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <cerrno>
#include <cstring>

#include "handlers.hpp"
#include "qxa/common/log.hpp"
#include "qxa/guest/accounts.hpp"
#include "qxa/guest/process.hpp"
#include "qxa/guest/uploads.hpp"

namespace qxa::guest {

bool replace_password_field(std::string& text, const std::string& user, const std::string& hash) {
  std::size_t pos = 0;
  while (pos < text.size()) {
    const auto end = text.find('\n', pos);
    const auto line_end = end == std::string::npos ? text.size() : end;
    if (text.compare(pos, user.size() + 1, user + ":") == 0) {
      const auto field = pos + user.size() + 1;
      const auto field_end = text.find(':', field);
      if (field_end == std::string::npos || field_end > line_end) return false;
      text.replace(field, field_end - field, hash);
      return true;
    }
    pos = line_end + 1;
  }
  return false;
}

std::string key_identity(std::string_view line) {
  // "[options] type base64 [comment]": the type and the base64 body identify a key.
  static constexpr std::string_view types[] = {"ssh-", "ecdsa-", "sk-"};
  std::vector<std::string_view> words;
  while (!line.empty()) {
    const auto start = line.find_first_not_of(" \t");
    if (start == std::string_view::npos) break;
    line.remove_prefix(start);
    const auto end = line.find_first_of(" \t");
    words.push_back(line.substr(0, end));
    if (end == std::string_view::npos) break;
    line.remove_prefix(end);
  }
  for (std::size_t i = 0; i + 1 < words.size(); ++i) {
    for (auto t : types) {
      if (words[i].starts_with(t)) return std::string(words[i]) + " " + std::string(words[i + 1]);
    }
  }
  return {};
}

unsigned edit_authorized_keys(std::vector<std::string>& lines, bool add,
                              const std::vector<std::string>& keys) {
  unsigned changed = 0;
  for (const auto& k : keys) {
    const auto id = key_identity(k);
    if (add) {
      bool present = false;
      for (const auto& l : lines) present = present || key_identity(l) == id;
      if (!present) {
        lines.push_back(k);
        ++changed;
      }
    } else {
      const auto before = lines.size();
      std::erase_if(lines, [&](const std::string& l) { return key_identity(l) == id; });
      changed += static_cast<unsigned>(before - lines.size());
    }
  }
  return changed;
}

}  // namespace qxa::guest

namespace qxa::guest::handlers {

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

// Without chpasswd: edit /etc/shadow (or /etc/passwd when there is no shadow file) ourselves.
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
  if (::lckpwdf() != 0)
    return std::string("cannot lock the password files: ") + std::strerror(errno);
  std::optional<std::string> failure;
  const std::string file = ::access("/etc/shadow", F_OK) == 0 ? "/etc/shadow" : "/etc/passwd";
  auto text = read_file(file);
  struct stat st {};
  if (!text || ::stat(file.c_str(), &st) != 0) {
    failure = "cannot read " + file;
  } else if (!replace_password_field(*text, user, hash)) {
    failure = "no user '" + user + "' in " + file;
  } else if (int err = write_file_atomically(file, *text, st.st_mode & 07777)) {
    failure = "cannot write " + file + ": " + std::strerror(err);
  } else if (::chown(file.c_str(), st.st_uid, st.st_gid) != 0) {
    failure = "cannot keep the owner of " + file;
  }
  ::ulckpwdf();
  return failure;
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
  if (!lookup_account(req.user())) {
    co_return error_reply(pb::ERROR_CODE_NOT_FOUND, "no user '" + req.user() + "' in /etc/passwd");
  }
  std::optional<std::string> failure;
  const auto chpasswd = find_program("chpasswd", spawn_options{}.path);
  std::string method = chpasswd.empty() ? "shadow" : "chpasswd";
  if (!chpasswd.empty()) {
    spawn_options o;
    o.argv = {chpasswd};
    if (req.crypted()) o.argv.push_back("-e");
    o.env = {"PATH=" + o.path};
    auto child = child_process::spawn(co_await asio::this_coro::executor, o);
    if (!child) {
      failure = child.error().message;
    } else {
      auto& c = *child.value();
      std::string line = req.user() + ":" + req.password() + "\n";
      auto [ec, n] = co_await asio::async_write(c.stdin_pipe(), asio::buffer(line),
                                                asio::experimental::as_tuple(asio::use_awaitable));
      ::explicit_bzero(line.data(), line.size());
      (void)n;
      std::error_code ignored;
      c.stdin_pipe().close(ignored);
      const auto st = co_await c.wait();
      if (ec || st.code != 0) {
        failure = fmt::format("chpasswd failed (status {})", st.signal ? 128 + st.signal : st.code);
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
  if (user->home.empty() || user->home.front() != '/') {
    co_return error_reply(pb::ERROR_CODE_FAILED_PRECONDITION,
                          req.user() + " has no home directory");
  }
  for (const auto& k : req.keys()) {
    if (k.find('\n') != std::string::npos || key_identity(k).empty()) {
      co_return error_reply(pb::ERROR_CODE_INVALID_ARGUMENT,
                            "not an SSH public key line: '" + k.substr(0, 40) + "'");
    }
  }
  const std::string dir = user->home + "/.ssh";
  const std::string file = dir + "/authorized_keys";
  std::vector<std::string> lines;
  if (auto text = read_file(file)) {
    std::string_view rest = *text;
    while (!rest.empty()) {
      const auto nl = rest.find('\n');
      lines.emplace_back(rest.substr(0, nl));
      if (nl == std::string_view::npos) break;
      rest.remove_prefix(nl + 1);
    }
  }
  std::uint32_t changed = 0;
  if (req.action() != pb::SshKeysRequest::ACTION_LIST) {
    changed = edit_authorized_keys(lines, req.action() == pb::SshKeysRequest::ACTION_ADD,
                                   {req.keys().begin(), req.keys().end()});
  }
  if (changed > 0) {
    struct stat st {};
    const bool existed = ::stat(file.c_str(), &st) == 0;
    if (::access(dir.c_str(), F_OK) != 0) {
      if (::mkdir(dir.c_str(), 0700) != 0 || ::chown(dir.c_str(), user->uid, user->gid) != 0) {
        co_return system_error(errno, "cannot create " + dir);
      }
    }
    std::string text;
    for (const auto& l : lines) text += l + "\n";
    if (int err = write_file_atomically(file, text, existed ? st.st_mode & 07777 : 0600)) {
      co_return system_error(err, "cannot write " + file);
    }
    if (::chown(file.c_str(), existed ? st.st_uid : user->uid, existed ? st.st_gid : user->gid) !=
        0) {
      co_return system_error(errno, "cannot set the owner of " + file);
    }
  }
  if (req.action() != pb::SshKeysRequest::ACTION_LIST) {
    common::log_info(
        "audit: op=ssh-key session={:016x} request={} outcome=ok user={} action={} "
        "changed={}",
        ctx.session_id, ctx.request_id, req.user(),
        req.action() == pb::SshKeysRequest::ACTION_ADD ? "add" : "remove", changed);
  }
  pb::Envelope reply;
  auto* r = reply.mutable_ssh_keys_reply();
  for (const auto& l : lines) {
    if (!key_identity(l).empty() && !l.starts_with('#')) r->add_keys(l);
  }
  r->set_changed(changed);
  co_return reply;
}

}  // namespace qxa::guest::handlers
