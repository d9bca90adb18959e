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

namespace {

struct path_flags {  // stat
  std::string path;
};
struct ls_flags {
  std::string path;
  bool long_list = false;
};
struct mkdir_flags {
  std::string path;
  bool parents = false;
  std::string mode_text;
};
struct rm_flags {
  std::string path;
  bool recursive = false, force = false;
};
struct mv_flags {
  std::string from, to;
  bool replace = false;
};

result<pb::Envelope> stat_request(const options&, const path_flags& own) {
  pb::Envelope e;
  e.mutable_file_stat_request()->set_path(own.path);
  return e;
}

void print_stat(const options&, const path_flags&, const pb::Envelope& reply, const round_trip&) {
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

asio::awaitable<int> run_ls(host::agent_access& access, const options& o, const ls_flags& own) {
  pb::Envelope request;
  auto* r = request.mutable_dir_list_request();
  r->set_path(own.path);
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
    } else if (own.long_list) {
      std::printf("%s\n", long_line(s).c_str());
    } else {
      std::printf("%s\n", shown(s.path()).c_str());
    }
  }
  if (o.json) print_json({{"path", common::to_utf8(own.path)}, {"entries", list}}, 2);
  co_return exit_ok;
}

result<pb::Envelope> mkdir_request(const options&, const mkdir_flags& own) {
  std::uint32_t mode = 0;
  if (!own.mode_text.empty()) {
    auto m = common::to_number<std::uint32_t>(own.mode_text, 8);
    if (!m || *m > 07777) return usage("mkdir: --mode: not an octal mode: '" + own.mode_text + "'");
    mode = *m;
  }
  pb::Envelope e;
  auto* r = e.mutable_mkdir_request();
  r->set_path(own.path);
  r->set_mode(mode);
  r->set_parents(own.parents);
  return e;
}

void print_mkdir(const options&, const mkdir_flags& own, const pb::Envelope& reply,
                 const round_trip&) {
  if (reply.file_change_reply().existed()) {
    std::printf("%s: already a directory\n", shown(own.path).c_str());
  } else {
    std::printf("%s: made\n", shown(own.path).c_str());
  }
}

result<pb::Envelope> rm_request(const options&, const rm_flags& own) {
  pb::Envelope e;
  auto* r = e.mutable_remove_request();
  r->set_path(own.path);
  r->set_recursive(own.recursive);
  r->set_missing_ok(own.force);
  return e;
}

void print_rm(const options&, const rm_flags& own, const pb::Envelope& reply, const round_trip&) {
  const auto& r = reply.file_change_reply();
  if (r.missing()) {
    std::printf("%s: not there\n", shown(own.path).c_str());
  } else {
    std::printf("%s: removed (%llu %s)\n", shown(own.path).c_str(),
                static_cast<unsigned long long>(r.removed()),
                r.removed() == 1 ? "entry" : "entries");
  }
}

result<pb::Envelope> mv_request(const options&, const mv_flags& own) {
  std::string to = own.to;
  // "mv VM a/b c/" moves into the directory, as mv(1) does.
  if (to.ends_with('/')) {
    const auto from = std::string_view(own.from);
    const auto slash = from.find_last_of('/', from.size() - 1);
    auto base = slash == std::string_view::npos ? from : from.substr(slash + 1);
    if (base.empty()) return usage("mv: '" + own.from + "' names no file to move into a directory");
    to += base;
  }
  pb::Envelope e;
  auto* r = e.mutable_move_request();
  r->set_from(own.from);
  r->set_to(to);
  r->set_replace(own.replace);
  return e;
}

void print_mv(const options&, const mv_flags& own, const pb::Envelope&, const round_trip&) {
  std::printf("%s: moved to %s\n", shown(own.from).c_str(), shown(own.to).c_str());
}

}  // namespace

std::vector<verb> file_verbs() {
  std::vector<verb> t;
  t.push_back(make_verb<path_flags>(
      {.name = "stat",
       .help = "describe a file in the guest (a link as itself)",
       .arguments =
           [](CLI::App& s, path_flags& f) {
             s.add_option("PATH", f.path, "absolute path in the guest")->required();
           },
       .request = stat_request,
       .text = print_stat,
       .to_json = [](const options&, const path_flags&, const pb::Envelope& r,
                     const round_trip&) { return file_json(r.file_stat()); }}));
  t.push_back(make_verb<ls_flags>(
      {.name = "ls",
       .help = "list a directory in the guest, every entry (dot files too), sorted",
       .arguments =
           [](CLI::App& s, ls_flags& f) {
             s.add_option("PATH", f.path, "absolute path of a directory")->required();
             s.add_flag("-l,--long", f.long_list,
                        "type and mode, owner, size, modification time (UTC)");
           },
       .run = run_ls}));
  t.push_back(make_verb<mkdir_flags>(
      {.name = "mkdir",
       .help = "make a directory in the guest",
       .arguments =
           [](CLI::App& s, mkdir_flags& f) {
             s.add_option("PATH", f.path, "absolute path of the new directory")->required();
             s.add_flag("-p,--parents", f.parents,
                        "make missing parents too; a directory already there is no error");
             s.add_option("--mode", f.mode_text, "permission bits in octal [0755]");
           },
       .request = mkdir_request,
       .text = print_mkdir}));
  t.push_back(make_verb<rm_flags>(
      {.name = "rm",
       .help = "remove a file, a link or an empty directory in the guest; -r: a directory with "
               "all it holds, on its own filesystem only",
       .arguments =
           [](CLI::App& s, rm_flags& f) {
             s.add_option("PATH", f.path, "absolute path in the guest")->required();
             s.add_flag("-r,--recursive", f.recursive,
                        "a directory and everything in it (never crossing a mount)");
             s.add_flag("-f,--force", f.force, "nothing at PATH is no error");
           },
       .request = rm_request,
       .text = print_rm,
       // A tree takes a while: the guest bounds it by its request timeout.
       .timeout_help = "how long to wait for the answer [60s]; the guest stops a removal after "
                       "its request timeout (30 s unless configured)",
       .timeout = std::chrono::seconds(60)}));
  t.push_back(make_verb<mv_flags>(
      {.name = "mv",
       .help = "rename a file or directory within one guest filesystem",
       .arguments =
           [](CLI::App& s, mv_flags& f) {
             s.add_option("FROM", f.from, "absolute path in the guest")->required();
             s.add_option("TO", f.to, "its new absolute path (ending in '/': into that directory)")
                 ->required();
             s.add_flag("--replace", f.replace, "replace what TO names");
           },
       .request = mv_request,
       .text = print_mv}));
  return t;
}

}  // namespace qxa::cli
