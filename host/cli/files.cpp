// SPDX-License-Identifier: MIT
// qx-agent's file verbs beside cp: stat, ls, mkdir, rm and mv, each one request (ls: one per
// page of a directory) under the guest's policy roots.
#include <algorithm>
#include <ctime>
#include <set>
#include <vector>

#include "cli.hpp"
#include "qxa/common/parse.hpp"
#include "qxa/common/text.hpp"
#include "qxa/host/json.hpp"

namespace qxa::cli {

using common::result;

namespace {

/// How long rm waits for its answer unless told: longer than the guest's request timeout.

char type_letter(pb::FileStat::Type t) {
  switch (t) {
    case pb::FileStat::TYPE_DIRECTORY:
      return 'd';
    case pb::FileStat::TYPE_SYMLINK:
      return 'l';
    case pb::FileStat::TYPE_FILE:
      return '-';
    default:
      return '?';
  }
}

const char* type_word(pb::FileStat::Type t) {
  switch (t) {
    case pb::FileStat::TYPE_DIRECTORY:
      return "directory";
    case pb::FileStat::TYPE_SYMLINK:
      return "symbolic link";
    case pb::FileStat::TYPE_FILE:
      return "file";
    case pb::FileStat::TYPE_OTHER:
      return "special file";
    default:
      return "unknown";
  }
}

/// "drwxr-sr-x", as ls shows it.
std::string mode_text(const pb::FileStat& s) {
  std::string out(10, '-');
  out[0] = type_letter(s.type());
  const std::uint32_t m = s.mode();
  const char* rwx = "rwxrwxrwx";
  for (int i = 0; i < 9; ++i) {
    if (m & (0400u >> i)) out[static_cast<std::size_t>(i) + 1] = rwx[i];
  }
  if (m & 04000) out[3] = out[3] == 'x' ? 's' : 'S';
  if (m & 02000) out[6] = out[6] == 'x' ? 's' : 'S';
  if (m & 01000) out[9] = out[9] == 'x' ? 't' : 'T';
  return out;
}

std::string utc_minutes(std::int64_t unix_ms) {
  const std::time_t secs = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  ::gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M", &tm);
  return buf;
}

std::string long_line(const pb::FileStat& s) {
  std::string line = fmt::format("{} {:>5} {:>5} {:>12} {} {}", mode_text(s), s.uid(), s.gid(),
                                 s.size(), utc_minutes(s.mtime_unix_ms()), shown(s.path()));
  if (s.type() == pb::FileStat::TYPE_SYMLINK) line += " -> " + shown(s.symlink_target());
  return line;
}

}  // namespace

json file_json(const pb::FileStat& s) {
  auto j = host::to_json(s);
  // Names are bytes on Linux: as text when they are UTF-8 (nearly always), and in base64 too
  // when they are not, so that a script can still name the file.
  for (const char* field : {"path", "symlink_target"}) {
    const std::string& bytes = field[0] == 'p' ? s.path() : s.symlink_target();
    j[field] = common::to_utf8(bytes);
    if (!common::is_utf8(bytes)) j[std::string(field) + "_base64"] = host::to_json(s)[field];
  }
  j["mode"] = fmt::format("{:04o}", s.mode());
  return j;
}

result<pb::Envelope> stat_request(const options& o) {
  pb::Envelope e;
  e.mutable_file_stat_request()->set_path(o.path);
  return e;
}

void print_stat(const options&, const pb::Envelope& reply, const round_trip&) {
  const auto& s = reply.file_stat();
  std::printf("%s: %s, %s, mode %04o (%s), uid %u gid %u, modified %s UTC\n",
              shown(s.path()).c_str(), type_word(s.type()),
              s.type() == pb::FileStat::TYPE_FILE ? human_bytes(s.size()).c_str()
                                                  : fmt::format("{} bytes", s.size()).c_str(),
              s.mode(), mode_text(s).c_str(), s.uid(), s.gid(),
              utc_minutes(s.mtime_unix_ms()).c_str());
  if (s.type() == pb::FileStat::TYPE_SYMLINK) {
    std::printf("  -> %s\n", shown(s.symlink_target()).c_str());
  }
}

asio::awaitable<int> run_ls(host::agent_access& access, const options& o) {
  pb::Envelope request;
  auto* r = request.mutable_dir_list_request();
  r->set_path(o.path);
  // By position: each page costs the agent the same however large the directory. An agent
  // that predates it answers by name (next_after), and is then asked by name.
  r->set_by_position(true);
  std::vector<pb::FileStat> entries;
  std::set<std::string> seen;  // a directory changing meanwhile may show an entry twice
  for (;;) {
    auto reply = co_await access.call(o.vm, request, o.timeout);
    if (auto f = failed(reply)) co_return report(*f);
    const auto& page = reply->dir_list();
    for (const auto& s : page.entries()) {
      if (seen.insert(s.path()).second) entries.push_back(s);
    }
    if (r->by_position() && page.next_position() != 0) {
      if (page.next_position() == r->position()) break;  // no progress: a broken agent
      r->set_position(page.next_position());
      continue;
    }
    // A page that ends early but names no next entry is the last; one that names one it has
    // already passed would loop: the guest's listing is sorted, so the name must grow.
    if (page.next_after().empty() || page.next_after() <= r->after()) break;
    r->set_by_position(false);
    r->set_after(page.next_after());
  }
  std::sort(entries.begin(), entries.end(),
            [](const pb::FileStat& a, const pb::FileStat& b) { return a.path() < b.path(); });
  json list = json::array();
  for (const auto& s : entries) {
    if (o.json) {
      list.push_back(file_json(s));
    } else if (o.long_list) {
      std::printf("%s\n", long_line(s).c_str());
    } else {
      std::printf("%s\n", shown(s.path()).c_str());
    }
  }
  if (o.json) print_json({{"path", common::to_utf8(o.path)}, {"entries", list}}, 2);
  co_return exit_ok;
}

result<pb::Envelope> mkdir_request(const options& o) {
  std::uint32_t mode = 0;
  if (!o.mode_text.empty()) {
    auto m = common::to_number<std::uint32_t>(o.mode_text, 8);
    if (!m || *m > 07777) return usage("mkdir: --mode: not an octal mode: '" + o.mode_text + "'");
    mode = *m;
  }
  pb::Envelope e;
  auto* r = e.mutable_mkdir_request();
  r->set_path(o.path);
  r->set_mode(mode);
  r->set_parents(o.create_parents);
  return e;
}

void print_mkdir(const options& o, const pb::Envelope& reply, const round_trip&) {
  if (reply.file_change_reply().existed()) {
    std::printf("%s: already a directory\n", shown(o.path).c_str());
  } else {
    std::printf("%s: made\n", shown(o.path).c_str());
  }
}

result<pb::Envelope> rm_request(const options& o) {
  pb::Envelope e;
  auto* r = e.mutable_remove_request();
  r->set_path(o.path);
  r->set_recursive(o.recursive);
  r->set_missing_ok(o.force);
  return e;
}

void print_rm(const options& o, const pb::Envelope& reply, const round_trip&) {
  const auto& r = reply.file_change_reply();
  if (r.missing()) {
    std::printf("%s: not there\n", shown(o.path).c_str());
  } else {
    std::printf("%s: removed (%llu %s)\n", shown(o.path).c_str(),
                static_cast<unsigned long long>(r.removed()),
                r.removed() == 1 ? "entry" : "entries");
  }
}

asio::awaitable<int> run_rm(host::agent_access& access, const options& o) {
  // A tree takes a while: the guest bounds it by its request timeout (30 s unless configured).
  const auto& v = *std::find_if(verbs().begin(), verbs().end(),
                                [](const verb& x) { return std::string_view(x.name) == "rm"; });
  co_return co_await one_shot(v, access, o,
                              o.timeout);
}

result<pb::Envelope> mv_request(const options& o) {
  std::string to = o.destination;
  // "mv VM a/b c/" moves into the directory, as mv(1) does.
  if (to.ends_with('/')) {
    const auto from = std::string_view(o.path);
    const auto slash = from.find_last_of('/', from.size() - 1);
    auto base = slash == std::string_view::npos ? from : from.substr(slash + 1);
    if (base.empty()) return usage("mv: '" + o.path + "' names no file to move into a directory");
    to += base;
  }
  pb::Envelope e;
  auto* r = e.mutable_move_request();
  r->set_from(o.path);
  r->set_to(to);
  r->set_replace(o.replace);
  return e;
}

void print_mv(const options& o, const pb::Envelope& reply, const round_trip&) {
  (void)reply;
  std::printf("%s: moved to %s\n", shown(o.path).c_str(), shown(o.destination).c_str());
}

}  // namespace qxa::cli
