// SPDX-License-Identifier: MIT
// The guest's networking beyond its interfaces: addresses with whether each was configured
// dynamically (DHCP, SLAAC), the main routing table and the resolver (rtnetlink and
// resolv.conf), which interfaces the host is not told about, and which address is the guest's
// primary one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "qxa/guest/platform/system_info.hpp"

namespace qxa::guest {

/// Every IPv4 and IPv6 address of every interface from an RTM_GETADDR dump, with `dynamic` set
/// for those the kernel expires unless renewed (not IFA_F_PERMANENT: a DHCP lease, SLAAC).
/// Nothing when rtnetlink cannot be used.
std::optional<std::vector<address_entry>> netlink_addresses();

struct route_entry {
  ip_family family = ip_family::ipv4;
  std::string destination;  ///< "0.0.0.0/0", "10.1.0.0/16", "::/0"
  std::string gateway;      ///< empty for a directly connected network
  std::string interface;
  std::string source;  ///< the preferred source address, when the route names one
  std::uint32_t metric = 0;
  [[nodiscard]] bool is_default() const noexcept;
};

/// The unicast routes of the main table (RTM_GETROUTE), IPv4 first, at most `max`.
std::vector<route_entry> read_routes(std::size_t max = 64);

struct resolver_config {
  std::vector<std::string> servers;  ///< at most 8
  std::vector<std::string> search;   ///< at most 8 domains
};

/// nameserver, search and domain lines of a resolv.conf; comments ('#', ';') skipped.
resolver_config parse_resolv_conf(std::string_view text);

/// /etc/resolv.conf; when it only names systemd-resolved's stub (127.0.0.53), the servers
/// resolved uses (`/run/systemd/resolve/resolv.conf`).
resolver_config read_resolver(const std::string& etc_root = "/etc",
                              const std::string& run_root = "/run");

/// Names of interfaces the host is not told about by default: containers' and bridges' plumbing.
std::vector<std::string> default_excluded_interfaces();

/// Whether `name` matches one of the shell patterns in `patterns` ("docker*", "veth*").
bool excluded_interface(std::string_view name, const std::vector<std::string>& patterns);

/// The guest's primary address: the first global address of `preferred` when it names an
/// interface that has one; else the preferred source of the default route, or the first global
/// address of the default route's interface (IPv4 before IPv6); else the first global address
/// of any interface. Link-local and loopback addresses never are. Empty when there is none.
std::string primary_address(const std::vector<interface_entry>& interfaces,
                            const std::vector<route_entry>& routes, const std::string& preferred);

}  // namespace qxa::guest
