// SPDX-License-Identifier: MIT
#include "qxa/guest/platform/network.hpp"

#include <arpa/inet.h>
#include <fnmatch.h>
#include <linux/if_addr.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <map>

#include "qxa/common/posix.hpp"

// The rtnetlink macros (NLMSG_*, RTA_*, IFA_*, RTM_*) are C: C casts, mixed signs. (Pushed and
// popped: a unity build puts other files after this one.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wold-style-cast"
#pragma GCC diagnostic ignored "-Wcast-align"
#pragma GCC diagnostic ignored "-Wsign-compare"

namespace qxa::guest {

using common::unique_fd;

namespace {

/// Sends one rtnetlink dump request and hands each message of the answer to `each`. False when
/// the socket cannot be had or the dump fails.
bool rtnetlink_dump(std::uint16_t type, std::uint8_t family,
                    const std::function<void(const nlmsghdr&)>& each) {
  unique_fd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
  if (!fd) return false;
  const timeval limit{2, 0};  // the kernel answers at once; never wait on it for long
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  struct {
    nlmsghdr header;
    rtgenmsg body;
  } request{};
  request.header.nlmsg_len = sizeof request;
  request.header.nlmsg_type = type;
  request.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  request.header.nlmsg_seq = 1;
  request.body.rtgen_family = family;
  if (::send(fd.get(), &request, sizeof request, 0) != static_cast<ssize_t>(sizeof request)) {
    return false;
  }
  std::vector<char> buf(32768);
  for (int reads = 0; reads < 4096; ++reads) {  // a dump of a few thousand entries at most
    const ssize_t n = ::recv(fd.get(), buf.data(), buf.size(), 0);
    if (n <= 0) return false;
    int left = static_cast<int>(n);
    for (auto* h = reinterpret_cast<const nlmsghdr*>(buf.data()); NLMSG_OK(h, left);
         h = NLMSG_NEXT(h, left)) {
      if (h->nlmsg_type == NLMSG_DONE) return true;
      if (h->nlmsg_type == NLMSG_ERROR) return false;
      each(*h);
    }
  }
  return false;
}

std::string address_text(int family, const void* bytes) {
  char text[INET6_ADDRSTRLEN] = {};
  ::inet_ntop(family, bytes, text, sizeof text);
  return text;
}

std::string interface_name(unsigned index, std::map<unsigned, std::string>& names) {
  if (auto it = names.find(index); it != names.end()) return it->second;
  char name[IF_NAMESIZE] = {};
  std::string n = ::if_indextoname(index, name) != nullptr ? name : std::to_string(index);
  names.emplace(index, n);
  return n;
}

bool link_local_or_loopback(const std::string& a) {
  return a.starts_with("169.254.") || a.starts_with("127.") || a.starts_with("fe80:") || a == "::1";
}

}  // namespace

std::optional<std::vector<address_entry>> netlink_addresses() {
  std::vector<address_entry> out;
  std::map<unsigned, std::string> names;
  const bool ok = rtnetlink_dump(RTM_GETADDR, AF_UNSPEC, [&](const nlmsghdr& h) {
    if (h.nlmsg_type != RTM_NEWADDR) return;
    const auto* ifa = static_cast<const ifaddrmsg*>(NLMSG_DATA(&h));
    if (ifa->ifa_family != AF_INET && ifa->ifa_family != AF_INET6) return;
    std::uint32_t flags = ifa->ifa_flags;
    const void* local = nullptr;
    const void* address = nullptr;
    int len = static_cast<int>(IFA_PAYLOAD(&h));
    for (auto* rta = IFA_RTA(ifa); RTA_OK(rta, len); rta = RTA_NEXT(rta, len)) {
      if (rta->rta_type == IFA_LOCAL) local = RTA_DATA(rta);
      if (rta->rta_type == IFA_ADDRESS) address = RTA_DATA(rta);
      if (rta->rta_type == IFA_FLAGS && RTA_PAYLOAD(rta) >= sizeof(std::uint32_t)) {
        std::memcpy(&flags, RTA_DATA(rta), sizeof flags);
      }
    }
    // On a point-to-point link IFA_ADDRESS is the peer: the interface's own is IFA_LOCAL.
    const void* own = local != nullptr ? local : address;
    if (own == nullptr) return;
    address_entry e;
    e.interface = interface_name(ifa->ifa_index, names);
    e.family = ifa->ifa_family == AF_INET ? ip_family::ipv4 : ip_family::ipv6;
    e.address = address_text(ifa->ifa_family, own);
    e.prefix_length = ifa->ifa_prefixlen;
    e.dynamic = (flags & IFA_F_PERMANENT) == 0;
    out.push_back(std::move(e));
  });
  if (!ok) return std::nullopt;
  return out;
}

bool route_entry::is_default() const noexcept {
  return destination == "0.0.0.0/0" || destination == "::/0";
}

std::vector<route_entry> read_routes(std::size_t max) {
  std::vector<route_entry> out;
  std::map<unsigned, std::string> names;
  rtnetlink_dump(RTM_GETROUTE, AF_UNSPEC, [&](const nlmsghdr& h) {
    if (h.nlmsg_type != RTM_NEWROUTE || out.size() >= max) return;
    const auto* rt = static_cast<const rtmsg*>(NLMSG_DATA(&h));
    if (rt->rtm_type != RTN_UNICAST || (rt->rtm_family != AF_INET && rt->rtm_family != AF_INET6)) {
      return;
    }
    std::uint32_t table = rt->rtm_table;
    route_entry r;
    r.family = rt->rtm_family == AF_INET ? ip_family::ipv4 : ip_family::ipv6;
    std::string destination;
    int len = static_cast<int>(RTM_PAYLOAD(&h));
    for (auto* rta = RTM_RTA(rt); RTA_OK(rta, len); rta = RTA_NEXT(rta, len)) {
      switch (rta->rta_type) {
        case RTA_TABLE:
          if (RTA_PAYLOAD(rta) >= sizeof table) std::memcpy(&table, RTA_DATA(rta), sizeof table);
          break;
        case RTA_DST:
          destination = address_text(rt->rtm_family, RTA_DATA(rta));
          break;
        case RTA_GATEWAY:
          r.gateway = address_text(rt->rtm_family, RTA_DATA(rta));
          break;
        case RTA_PREFSRC:
          r.source = address_text(rt->rtm_family, RTA_DATA(rta));
          break;
        case RTA_OIF: {
          std::uint32_t index = 0;
          if (RTA_PAYLOAD(rta) >= sizeof index) std::memcpy(&index, RTA_DATA(rta), sizeof index);
          r.interface = interface_name(index, names);
          break;
        }
        case RTA_PRIORITY:
          if (RTA_PAYLOAD(rta) >= sizeof r.metric) {
            std::memcpy(&r.metric, RTA_DATA(rta), sizeof r.metric);
          }
          break;
        default:
          break;
      }
    }
    if (table != RT_TABLE_MAIN) return;
    if (destination.empty()) destination = rt->rtm_family == AF_INET ? "0.0.0.0" : "::";
    r.destination = destination + "/" + std::to_string(rt->rtm_dst_len);
    out.push_back(std::move(r));
  });
  std::stable_sort(out.begin(), out.end(), [](const route_entry& a, const route_entry& b) {
    return a.family == ip_family::ipv4 && b.family == ip_family::ipv6;
  });
  return out;
}

resolver_config parse_resolv_conf(std::string_view text) {
  constexpr std::size_t max_entries = 8, max_name = 253;
  resolver_config r;
  while (!text.empty()) {
    const auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    std::vector<std::string_view> words;
    while (!line.empty()) {
      const auto start = line.find_first_not_of(" \t\r");
      if (start == std::string_view::npos) break;
      line.remove_prefix(start);
      const auto end = line.find_first_of(" \t\r");
      words.push_back(line.substr(0, end));
      line = end == std::string_view::npos ? std::string_view() : line.substr(end);
    }
    if (words.size() < 2 || words[0].starts_with('#') || words[0].starts_with(';')) continue;
    if (words[0] == "nameserver" && r.servers.size() < max_entries && words[1].size() <= max_name) {
      r.servers.emplace_back(words[1]);
    } else if (words[0] == "search" || words[0] == "domain") {
      r.search.clear();  // the last search or domain line wins, as in the resolver
      for (std::size_t i = 1; i < words.size() && r.search.size() < max_entries; ++i) {
        if (words[i].size() <= max_name) r.search.emplace_back(words[i]);
      }
    }
  }
  return r;
}

resolver_config read_resolver(const std::string& etc_root, const std::string& run_root) {
  auto r = parse_resolv_conf(read_file(etc_root + "/resolv.conf").value_or(""));
  if (r.servers == std::vector<std::string>{"127.0.0.53"}) {
    if (auto upstream = read_file(run_root + "/systemd/resolve/resolv.conf")) {
      auto u = parse_resolv_conf(*upstream);
      if (!u.servers.empty()) r.servers = std::move(u.servers);
    }
  }
  return r;
}

std::vector<std::string> default_excluded_interfaces() { return {"docker*", "veth*", "cni*"}; }

bool excluded_interface(std::string_view name, const std::vector<std::string>& patterns) {
  const std::string n(name);
  return std::any_of(patterns.begin(), patterns.end(),
                     [&](const std::string& p) { return ::fnmatch(p.c_str(), n.c_str(), 0) == 0; });
}

std::string primary_address(const std::vector<interface_entry>& interfaces,
                            const std::vector<route_entry>& routes, const std::string& preferred) {
  auto first_global = [&](const interface_entry& i, std::optional<ip_family> family) {
    for (const auto& a : i.addresses) {
      if ((!family || a.family == *family) && !link_local_or_loopback(a.address)) return a.address;
    }
    return std::string();
  };
  auto named = [&](const std::string& name) -> const interface_entry* {
    for (const auto& i : interfaces) {
      if (i.name == name) return &i;
    }
    return nullptr;
  };
  if (!preferred.empty()) {
    if (const auto* i = named(preferred)) {
      for (auto f : {ip_family::ipv4, ip_family::ipv6}) {
        if (auto a = first_global(*i, f); !a.empty()) return a;
      }
    }
  }
  for (const auto& r : routes) {  // IPv4 routes come first
    if (!r.is_default()) continue;
    if (!r.source.empty()) return r.source;
    if (const auto* i = named(r.interface)) {
      if (auto a = first_global(*i, r.family); !a.empty()) return a;
    }
  }
  for (auto f : {ip_family::ipv4, ip_family::ipv6}) {
    for (const auto& i : interfaces) {
      if (auto a = first_global(i, f); !a.empty()) return a;
    }
  }
  return {};
}

}  // namespace qxa::guest

#pragma GCC diagnostic pop
