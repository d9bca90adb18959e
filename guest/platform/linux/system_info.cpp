// SPDX-License-Identifier: MIT
// One file for the readers of system_info.hpp: small parsers of /proc, /sys and /etc text that
// share the same few helpers (read_u64, unquote, the pseudo-filesystem list). Each part is
// short and independent; splitting them would spread those helpers across files for no gain.
// Readers with logic of their own live apart (network.cpp, block_devices.cpp, clock.cpp).
#include "qxa/guest/platform/system_info.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <unordered_map>
#include <unordered_set>

#include "qxa/common/parse.hpp"
#include "qxa/guest/platform/network.hpp"

namespace qxa::guest {

using common::for_each_line;
using common::next_field;
using common::to_number;
using common::trim;

namespace {

std::uint64_t read_u64(const std::string& path, std::uint64_t fallback = 0) {
  auto text = read_file(path);
  if (!text) return fallback;
  return to_number<std::uint64_t>(trim(*text)).value_or(fallback);
}

// Filesystems that are not storage a hypervisor cares about.
bool is_pseudo_fs(std::string_view t) {
  static const std::unordered_set<std::string_view> pseudo = {
      "proc",        "sysfs",         "devtmpfs", "devpts",     "tmpfs",      "ramfs",
      "rootfs",      "cgroup",        "cgroup2",  "securityfs", "debugfs",    "tracefs",
      "pstore",      "bpf",           "mqueue",   "hugetlbfs",  "configfs",   "fusectl",
      "autofs",      "binfmt_misc",   "efivarfs", "rpc_pipefs", "nsfs",       "selinuxfs",
      "overlay",     "aufs",          "squashfs", "nfsd",       "fuse.lxcfs", "fuse.gvfsd-fuse",
      "fuse.portal", "fuse.snapfuse", "zram",     "cpuset",     "none"};
  return pseudo.contains(t);
}

std::string unquote(std::string_view v) {
  v = trim(v);
  if (v.size() >= 2 && (v.front() == '"' || v.front() == '\'') && v.back() == v.front()) {
    v = v.substr(1, v.size() - 2);
  }
  std::string out;
  out.reserve(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (v[i] == '\\' && i + 1 < v.size()) ++i;
    out.push_back(v[i]);
  }
  return out;
}

}  // namespace

std::optional<std::string> read_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::string out;
  char buf[8192];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      ::close(fd);
      return std::nullopt;
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return out;
}

std::optional<disk_usage> statvfs_usage(const std::string& path) {
  struct statvfs s {};
  if (::statvfs(path.c_str(), &s) != 0) return std::nullopt;
  const std::uint64_t frag = s.f_frsize ? s.f_frsize : s.f_bsize;
  disk_usage u;
  u.total = s.f_blocks * frag;
  u.used = (s.f_blocks - s.f_bfree) * frag;
  u.available = s.f_bavail * frag;
  return u;
}

std::optional<cpu_times> parse_proc_stat(std::string_view text) {
  cpu_times t;
  bool have_aggregate = false;
  for_each_line(text, [&](std::string_view line) {
    if (!line.starts_with("cpu")) return;  // the cpu lines come first; the rest is cheap to skip
    std::string_view rest = line;
    const auto label = next_field(rest);
    std::uint64_t v[8] = {};
    for (auto& x : v) {
      auto f = next_field(rest);
      if (f.empty()) break;
      x = to_number<std::uint64_t>(f).value_or(0);
    }
    if (label != "cpu") {
      ++t.cpu_count;
      const auto id = to_number<std::uint32_t>(label.substr(3));
      if (id && t.cpus.size() < max_reported_cpus) {
        t.cpus.push_back({*id, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]});
      }
      return;
    }
    // user nice system idle iowait irq softirq steal (guest time is already inside user).
    t.busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    t.total = t.busy + v[3] + v[4];
    have_aggregate = true;
  });
  if (!have_aggregate) return std::nullopt;
  return t;
}

std::vector<disk_io_entry> parse_diskstats(std::string_view text) {
  std::vector<disk_io_entry> out;
  for_each_line(text, [&](std::string_view line) {
    std::string_view rest = line;
    const auto major = to_number<std::uint32_t>(next_field(rest));
    const auto minor = to_number<std::uint32_t>(next_field(rest));
    const auto name = next_field(rest);
    // Then: reads merged sectors ms, writes merged sectors ms, in flight, io ms, weighted ms,
    // and (since 4.18) discards merged sectors ms.
    std::uint64_t v[15] = {};
    std::size_t n = 0;
    for (; n < std::size(v); ++n) {
      const auto f = next_field(rest);
      if (f.empty()) break;
      const auto x = to_number<std::uint64_t>(f);
      if (!x) return;
      v[n] = *x;
    }
    if (!major || !minor || name.empty() || n < 11) return;
    disk_io_entry e;
    e.major = *major;
    e.minor = *minor;
    e.name = std::string(name);
    e.reads = v[0];
    e.read_sectors = v[2];
    e.read_ms = v[3];
    e.writes = v[4];
    e.write_sectors = v[6];
    e.write_ms = v[7];
    e.in_flight = v[8];
    e.io_ms = v[9];
    if (n >= 15) {
      e.discards = v[11];
      e.discard_sectors = v[13];
    }
    out.push_back(std::move(e));
  });
  return out;
}

double cpu_percent(const cpu_times& before, const cpu_times& after) noexcept {
  if (after.total <= before.total || after.busy < before.busy) return 0.0;
  const double busy = static_cast<double>(after.busy - before.busy);
  const double total = static_cast<double>(after.total - before.total);
  return std::clamp(100.0 * busy / total, 0.0, 100.0);
}

std::optional<memory_info> parse_meminfo(std::string_view text) {
  std::optional<std::uint64_t> total, available, free_, buffers, cached, swap_total, swap_free;
  for_each_line(text, [&](std::string_view line) {
    const auto colon = line.find(':');
    if (colon == std::string_view::npos) return;
    const auto key = line.substr(0, colon);
    std::string_view rest = line.substr(colon + 1);
    const auto value = to_number<std::uint64_t>(next_field(rest));
    if (!value) return;
    const std::uint64_t bytes = next_field(rest) == "kB" ? *value * 1024 : *value;
    if (key == "MemTotal") {
      total = bytes;
    } else if (key == "MemAvailable") {
      available = bytes;
    } else if (key == "MemFree") {
      free_ = bytes;
    } else if (key == "Buffers") {
      buffers = bytes;
    } else if (key == "Cached") {
      cached = bytes;
    } else if (key == "SwapTotal") {
      swap_total = bytes;
    } else if (key == "SwapFree") {
      swap_free = bytes;
    }
  });
  if (!total) return std::nullopt;
  memory_info m;
  m.total = *total;
  m.free = free_.value_or(0);
  m.buffers = buffers.value_or(0);
  m.cached = cached.value_or(0);
  m.available = std::min(available.value_or(m.free + m.buffers + m.cached), m.total);
  m.used = m.total - m.available;
  m.swap_total = swap_total.value_or(0);
  m.swap_free = std::min(swap_free.value_or(0), m.swap_total);
  m.swap_used = m.swap_total - m.swap_free;
  return m;
}

std::optional<load_average> parse_loadavg(std::string_view text) {
  load_average l;
  auto a = to_number<double>(next_field(text));
  auto b = to_number<double>(next_field(text));
  auto c = to_number<double>(next_field(text));
  if (!a || !b || !c) return std::nullopt;
  l.load1 = *a;
  l.load5 = *b;
  l.load15 = *c;
  return l;
}

std::optional<double> parse_uptime(std::string_view text) {
  return to_number<double>(next_field(text));
}

std::string decode_mount_path(std::string_view escaped) {
  std::string out;
  out.reserve(escaped.size());
  for (std::size_t i = 0; i < escaped.size(); ++i) {
    if (escaped[i] == '\\' && i + 3 < escaped.size()) {
      const auto oct = escaped.substr(i + 1, 3);
      if (oct.size() == 3 &&
          std::all_of(oct.begin(), oct.end(), [](char c) { return c >= '0' && c <= '7'; })) {
        out.push_back(static_cast<char>((oct[0] - '0') * 64 + (oct[1] - '0') * 8 + (oct[2] - '0')));
        i += 3;
        continue;
      }
    }
    out.push_back(escaped[i]);
  }
  return out;
}

bool answered_elsewhere(std::string_view t) noexcept {
  static constexpr std::string_view remote[] = {
      "nfs",   "nfs4", "cifs",    "smb3",     "smbfs",    "ceph",  "glusterfs",
      "9p",    "afs",  "lustre",  "gpfs",     "ncpfs",    "coda",  "autofs",
      "davfs", "fuse", "fuseblk", "virtiofs", "orangefs", "ocfs2", "gfs2"};
  if (t.starts_with("fuse.")) return true;
  for (auto r : remote) {
    if (t == r) return true;
  }
  return false;
}

std::vector<mount_entry> parse_mountinfo(std::string_view text) {
  std::vector<mount_entry> out;
  for_each_line(text, [&](std::string_view line) {
    // id parent major:minor root mount_point options [optional...] - fstype source super_options
    std::string_view rest = line;
    const auto id = next_field(rest);
    next_field(rest);  // parent id
    const auto devno = next_field(rest);
    const auto root = next_field(rest);
    const auto mount_point = next_field(rest);
    const auto options = next_field(rest);
    std::string_view f;
    do {
      f = next_field(rest);
    } while (!f.empty() && f != "-");
    if (f != "-") return;
    const auto fs_type = next_field(rest);
    const auto source = next_field(rest);
    const auto colon = devno.find(':');
    if (mount_point.empty() || fs_type.empty() || colon == std::string_view::npos) return;
    mount_entry m;
    m.id = to_number<std::uint64_t>(id).value_or(0);
    m.major = to_number<std::uint32_t>(devno.substr(0, colon)).value_or(0);
    m.minor = to_number<std::uint32_t>(devno.substr(colon + 1)).value_or(0);
    m.root = decode_mount_path(root);
    m.mount_point = decode_mount_path(mount_point);
    m.fs_type = std::string(fs_type);
    m.device = decode_mount_path(source);
    m.read_only = options == "ro" || options.starts_with("ro,");
    out.push_back(std::move(m));
  });
  return out;
}

std::vector<mount_entry> select_disks(const std::vector<mount_entry>& mounts) {
  std::vector<mount_entry> out;
  // devno -> index in out; a whole mount ("/" root) replaces an earlier bind of a subtree.
  std::unordered_map<std::uint64_t, std::size_t> seen;
  seen.reserve(mounts.size());
  for (const auto& m : mounts) {
    // A FUSE or network filesystem is answered by a process or a server, which might never
    // answer a statfs (and a FUSE mount may be any user's): not a disk of this guest.
    if (is_pseudo_fs(m.fs_type) || answered_elsewhere(m.fs_type)) continue;
    const std::uint64_t key = (std::uint64_t{m.major} << 32) | m.minor;
    auto [it, inserted] = seen.emplace(key, out.size());
    if (inserted) {
      out.push_back(m);
    } else if (out[it->second].root != "/" && m.root == "/") {
      out[it->second] = m;
    }
  }
  return out;
}

common::result<std::vector<mount_entry>> writable_disks(const std::vector<mount_entry>& mounts,
                                                        const std::vector<std::string>& wanted,
                                                        std::string_view what) {
  using R = common::result<std::vector<mount_entry>>;
  std::vector<mount_entry> out;
  for (auto& m : select_disks(mounts)) {
    if (m.read_only) continue;  // nothing to flush or discard
    if (!wanted.empty() && std::find(wanted.begin(), wanted.end(), m.mount_point) == wanted.end()) {
      continue;
    }
    out.push_back(std::move(m));
  }
  for (const auto& w : wanted) {
    if (std::none_of(out.begin(), out.end(),
                     [&](const mount_entry& m) { return m.mount_point == w; })) {
      return R{common::errc::invalid_argument,
               w + " is not a " + std::string(what) + " mount point"};
    }
  }
  return R{std::move(out)};
}

os_identity parse_os_release(std::string_view text) {
  os_identity os;
  for_each_line(text, [&](std::string_view raw) {
    const auto line = trim(raw);
    const auto eq = line.find('=');
    if (line.empty() || line.front() == '#' || eq == std::string_view::npos) return;
    const auto key = line.substr(0, eq);
    auto value = unquote(line.substr(eq + 1));
    if (key == "NAME") {
      os.name = std::move(value);
    } else if (key == "VERSION_ID") {
      os.version = std::move(value);
    } else if (key == "VERSION") {
      os.version_name = std::move(value);
    } else if (key == "ID") {
      os.id = std::move(value);
    } else if (key == "PRETTY_NAME") {
      os.pretty_name = std::move(value);
    } else if (key == "VARIANT") {
      os.variant = std::move(value);
    } else if (key == "VARIANT_ID") {
      os.variant_id = std::move(value);
    }
  });
  return os;
}

std::vector<address_entry> list_addresses() {
  if (auto from_netlink = netlink_addresses()) return std::move(*from_netlink);
  std::vector<address_entry> out;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return out;
  for (const ifaddrs* a = list; a != nullptr; a = a->ifa_next) {
    if (a->ifa_addr == nullptr || a->ifa_name == nullptr) continue;
    address_entry e;
    e.interface = a->ifa_name;
    char text[INET6_ADDRSTRLEN] = {};
    if (a->ifa_addr->sa_family == AF_INET) {
      sockaddr_in addr{};
      std::memcpy(&addr, a->ifa_addr, sizeof addr);
      ::inet_ntop(AF_INET, &addr.sin_addr, text, sizeof text);
      e.family = ip_family::ipv4;
      if (a->ifa_netmask) {
        sockaddr_in mask{};
        std::memcpy(&mask, a->ifa_netmask, sizeof mask);
        e.prefix_length = static_cast<std::uint32_t>(std::popcount(mask.sin_addr.s_addr));
      }
    } else if (a->ifa_addr->sa_family == AF_INET6) {
      sockaddr_in6 addr{};
      std::memcpy(&addr, a->ifa_addr, sizeof addr);
      ::inet_ntop(AF_INET6, &addr.sin6_addr, text, sizeof text);
      e.family = ip_family::ipv6;
      if (a->ifa_netmask) {
        sockaddr_in6 mask{};
        std::memcpy(&mask, a->ifa_netmask, sizeof mask);
        for (unsigned char byte : mask.sin6_addr.s6_addr)
          e.prefix_length += static_cast<std::uint32_t>(std::popcount(byte));
      }
    } else {
      continue;
    }
    e.address = text;
    out.push_back(std::move(e));
  }
  ::freeifaddrs(list);
  return out;
}

std::vector<interface_entry> read_interfaces(const std::string& sys_root,
                                             const std::vector<address_entry>& addresses) {
  const std::string net = sys_root + "/class/net";
  std::vector<std::string> names;
  if (DIR* dir = ::opendir(net.c_str())) {
    while (const dirent* e = ::readdir(dir)) {
      if (e->d_name[0] == '.') continue;
      names.emplace_back(e->d_name);
    }
    ::closedir(dir);
  }
  std::sort(names.begin(), names.end());
  std::unordered_map<std::string_view, std::vector<const address_entry*>> by_interface;
  by_interface.reserve(names.size());
  for (const auto& a : addresses) by_interface[a.interface].push_back(&a);

  constexpr std::uint64_t iff_up = 0x1, iff_loopback = 0x8;
  std::vector<interface_entry> out;
  for (const auto& name : names) {
    const std::string dir = net + "/" + name;
    std::uint64_t flags = 0;
    if (auto text = read_file(dir + "/flags")) {
      auto s = trim(*text);
      if (s.starts_with("0x")) s.remove_prefix(2);
      flags = to_number<std::uint64_t>(s, 16).value_or(0);
    }
    if (flags & iff_loopback) continue;
    interface_entry i;
    i.name = name;
    if (auto mac = read_file(dir + "/address")) i.mac = trim(*mac);
    if (auto state = read_file(dir + "/operstate")) i.oper_state = trim(*state);
    // "unknown" is what virtual links without carrier detection report while they pass traffic.
    i.link_up = i.oper_state == "up" || (i.oper_state == "unknown" && (flags & iff_up));
    i.mtu = static_cast<std::uint32_t>(read_u64(dir + "/mtu"));
    const std::string stats = dir + "/statistics/";
    i.rx_bytes = read_u64(stats + "rx_bytes");
    i.rx_packets = read_u64(stats + "rx_packets");
    i.rx_errors = read_u64(stats + "rx_errors");
    i.rx_dropped = read_u64(stats + "rx_dropped");
    i.tx_bytes = read_u64(stats + "tx_bytes");
    i.tx_packets = read_u64(stats + "tx_packets");
    i.tx_errors = read_u64(stats + "tx_errors");
    i.tx_dropped = read_u64(stats + "tx_dropped");
    if (auto it = by_interface.find(name); it != by_interface.end()) {
      for (const auto* a : it->second) i.addresses.push_back(*a);
    }
    out.push_back(std::move(i));
  }
  return out;
}

os_identity read_os_info(const std::string& etc_root) {
  auto text = read_file(etc_root + "/os-release");
  if (!text) text = read_file("/usr/lib/os-release");
  os_identity os = text ? parse_os_release(*text) : os_identity{};
  utsname u{};
  if (::uname(&u) == 0) {
    os.kernel_release = u.release;
    os.kernel_version = u.version;
    os.architecture = u.machine;
    if (os.name.empty()) os.name = u.sysname;
  }
  return os;
}

std::string read_hostname(const std::string& proc_root) {
  if (auto text = read_file(proc_root + "/sys/kernel/hostname")) return std::string(trim(*text));
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) == 0) return buf;
  return {};
}

std::string read_boot_id(const std::string& proc_root) {
  if (auto text = read_file(proc_root + "/sys/kernel/random/boot_id")) {
    return std::string(trim(*text));
  }
  return {};
}

std::uint32_t count_processes(const std::string& proc_root) {
  std::uint32_t n = 0;
  if (DIR* dir = ::opendir(proc_root.c_str())) {
    while (const dirent* e = ::readdir(dir)) {
      if (e->d_name[0] >= '1' && e->d_name[0] <= '9') ++n;
    }
    ::closedir(dir);
  }
  return n;
}

process_usage read_self_usage() {
  process_usage u;
  if (auto text = read_file("/proc/self/stat")) {
    // Fields after the command name, which is in parentheses and may contain spaces.
    const auto close = text->rfind(')');
    if (close != std::string::npos) {
      std::string_view rest = std::string_view(*text).substr(close + 1);
      // state(3) ... utime is field 14, stime 15: skip 11 fields after the name.
      for (int i = 0; i < 11; ++i) next_field(rest);
      const auto utime = to_number<std::uint64_t>(next_field(rest)).value_or(0);
      const auto stime = to_number<std::uint64_t>(next_field(rest)).value_or(0);
      const long ticks = ::sysconf(_SC_CLK_TCK);
      u.cpu_seconds =
          static_cast<double>(utime + stime) / static_cast<double>(ticks > 0 ? ticks : 100);
    }
  }
  if (auto text = read_file("/proc/self/statm")) {
    std::string_view rest = *text;
    next_field(rest);  // size
    const auto resident = to_number<std::uint64_t>(next_field(rest)).value_or(0);
    u.rss_bytes = resident * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  }
  return u;
}

bool valid_hostname(std::string_view name) noexcept {
  if (name.empty() || name.size() > 253) return false;
  std::size_t label = 0;
  char prev = '.';
  for (char c : name) {
    if (c == '.') {
      if (label == 0 || prev == '-') return false;
      label = 0;
    } else {
      const bool ok =
          (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
      if (!ok || (label == 0 && c == '-') || ++label > 63) return false;
    }
    prev = c;
  }
  return prev != '.' && prev != '-';
}

}  // namespace qxa::guest
