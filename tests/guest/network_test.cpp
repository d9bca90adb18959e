// SPDX-License-Identifier: MIT
// The network view's parts (network.hpp): resolv.conf, the exclusion patterns, the primary
// address, and rtnetlink against this machine's own interfaces.
#include "qxa/guest/platform/network.hpp"

#include <arpa/inet.h>
#include <ifaddrs.h>

#include <bit>
#include <catch2/catch.hpp>
#include <cstring>
#include <set>

#include "support/temp_dir.hpp"

using qxa::test::temp_dir;
namespace qg = qxa::guest;

namespace {

qg::interface_entry nic(std::string name, std::vector<std::string> addresses) {
  qg::interface_entry i;
  i.name = std::move(name);
  for (auto& a : addresses) {
    qg::address_entry e;
    e.interface = i.name;
    e.family = a.find(':') == std::string::npos ? qg::ip_family::ipv4 : qg::ip_family::ipv6;
    e.address = std::move(a);
    i.addresses.push_back(std::move(e));
  }
  return i;
}

qg::route_entry default_via(std::string interface, std::string source = {}) {
  qg::route_entry r;
  r.destination = "0.0.0.0/0";
  r.gateway = "10.0.0.1";
  r.interface = std::move(interface);
  r.source = std::move(source);
  return r;
}

}  // namespace

TEST_CASE("resolv.conf: servers, the last search or domain line, comments, bounds",
          "[unit][guest]") {
  std::string text =
      "# generated\n; also a comment\nnameserver 10.0.0.53\n"
      "domain old.test\nsearch a.test b.test\n  nameserver\t2001:db8::53 \n"
      "options ndots:2\nnameserver\n";
  for (int i = 0; i < 10; ++i) text += "nameserver 192.0.2." + std::to_string(i) + "\n";
  const auto r = qg::parse_resolv_conf(text);
  REQUIRE(r.servers.size() == 8);
  CHECK(r.servers[0] == "10.0.0.53");
  CHECK(r.servers[1] == "2001:db8::53");
  CHECK(r.search == std::vector<std::string>{"a.test", "b.test"});

  // systemd-resolved's stub: the servers it forwards to.
  temp_dir etc, run;
  etc.write("resolv.conf", "nameserver 127.0.0.53\nsearch lan\n");
  CHECK(qg::read_resolver(etc.path(), run.path()).servers ==
        std::vector<std::string>{"127.0.0.53"});
  run.write("systemd/resolve/resolv.conf", "nameserver 10.1.1.1\nnameserver 10.1.1.2\n");
  const auto resolved = qg::read_resolver(etc.path(), run.path());
  CHECK(resolved.servers == std::vector<std::string>{"10.1.1.1", "10.1.1.2"});
  CHECK(resolved.search == std::vector<std::string>{"lan"});
}

TEST_CASE("interfaces are left out by shell pattern, docker, veth and cni ones by default",
          "[unit][guest]") {
  const auto patterns = qg::default_excluded_interfaces();
  for (const char* out : {"docker0", "veth1a2b3c", "cni0"}) {
    CHECK(qg::excluded_interface(out, patterns));
  }
  for (const char* kept : {"eth0", "ens3", "br0", "mydocker"}) {
    CHECK_FALSE(qg::excluded_interface(kept, patterns));
  }
  CHECK(qg::excluded_interface("tap7", {"tap?"}));
  CHECK_FALSE(qg::excluded_interface("tap17", {"tap?"}));
  CHECK_FALSE(qg::excluded_interface("docker0", {}));
}

TEST_CASE(
    "the primary address: the configured interface, else the default route, else the "
    "first global one",
    "[unit][guest]") {
  const std::vector<qg::interface_entry> nics = {nic("eth0", {"fe80::1", "10.0.0.5"}),
                                                 nic("eth1", {"169.254.3.3", "192.168.7.2"}),
                                                 nic("eth2", {"2001:db8::2"})};
  CHECK(qg::primary_address(nics, {default_via("eth1")}, "") == "192.168.7.2");
  CHECK(qg::primary_address(nics, {default_via("eth1", "192.168.7.99")}, "") == "192.168.7.99");
  CHECK(qg::primary_address(nics, {default_via("eth1")}, "eth2") == "2001:db8::2");
  CHECK(qg::primary_address(nics, {default_via("eth1")}, "nosuch") == "192.168.7.2");
  CHECK(qg::primary_address(nics, {}, "") == "10.0.0.5");  // no default route: first global
  CHECK(qg::primary_address({nic("eth0", {"fe80::1", "169.254.1.1"})}, {}, "").empty());
  CHECK(qg::primary_address({nic("eth0", {"fe80::1", "2001:db8::9"})}, {}, "") == "2001:db8::9");
}

TEST_CASE("rtnetlink gives this machine's addresses, as getifaddrs does, and its routes",
          "[unit][guest]") {
  const auto from_netlink = qg::netlink_addresses();
  REQUIRE(from_netlink);
  std::set<std::string> netlink, expected;
  bool loopback_static = false;
  for (const auto& a : *from_netlink) {
    netlink.insert(a.interface + " " + a.address + "/" + std::to_string(a.prefix_length));
    if (a.address == "127.0.0.1") loopback_static = !a.dynamic && a.prefix_length == 8;
  }
  CHECK(loopback_static);
  // The same addresses as the C library's getifaddrs (IPv4: the one family it gives masks for
  // in a plain form).
  ifaddrs* list = nullptr;
  REQUIRE(::getifaddrs(&list) == 0);
  for (const ifaddrs* a = list; a != nullptr; a = a->ifa_next) {
    if (a->ifa_addr == nullptr || a->ifa_addr->sa_family != AF_INET) continue;
    sockaddr_in addr{}, mask{};
    std::memcpy(&addr, a->ifa_addr, sizeof addr);
    std::memcpy(&mask, a->ifa_netmask, sizeof mask);
    char text[INET_ADDRSTRLEN] = {};
    ::inet_ntop(AF_INET, &addr.sin_addr, text, sizeof text);
    expected.insert(std::string(a->ifa_name) + " " + text + "/" +
                    std::to_string(std::popcount(mask.sin_addr.s_addr)));
  }
  ::freeifaddrs(list);
  std::erase_if(netlink, [](const std::string& e) { return e.find(':') != std::string::npos; });
  CHECK(netlink == expected);
  for (const auto& r : qg::read_routes()) {
    INFO(r.destination);
    CHECK(r.destination.find('/') != std::string::npos);
    CHECK_FALSE(r.interface.empty());
  }
}
