// SPDX-License-Identifier: MIT
// network: the interfaces (as telemetry has them, the excluded ones left out), the primary
// address, the main routing table and the resolver.
#include "qxa/guest/platform/network.hpp"

#include "qxa/common/text.hpp"
#include "qxa/guest/ops/mapping.hpp"
#include "qxa/guest/ops/ops.hpp"
#include "qxa/guest/platform/sampler.hpp"

namespace qxa::guest::ops {

asio::awaitable<pb::Envelope> network(request_context ctx, pb::Envelope) {
  const auto& sampler = ctx.state.sampler;
  system_sample s;
  s.interfaces = sampler.interfaces(s.primary_address);
  auto t = to_proto(s);
  pb::Envelope reply;
  auto* n = reply.mutable_network_reply();
  n->mutable_interfaces()->Swap(t.mutable_interfaces());
  n->set_primary_address(t.primary_address());
  for (const auto& r : sampler.sources().routes()) {
    // The routes of an interface left out are left out with it.
    if (excluded_interface(r.interface, sampler.sources().exclude_interfaces)) continue;
    auto* out = n->add_routes();
    out->set_family(r.family == ip_family::ipv6 ? pb::IpAddress::FAMILY_IPV6
                                                : pb::IpAddress::FAMILY_IPV4);
    out->set_destination(r.destination);
    out->set_gateway(r.gateway);
    out->set_interface(common::to_utf8(r.interface));
    out->set_source(r.source);
    out->set_metric(r.metric);
  }
  const auto resolver = read_resolver();
  for (const auto& server : resolver.servers) n->add_dns_servers(common::to_utf8(server));
  for (const auto& domain : resolver.search) n->add_search_domains(common::to_utf8(domain));
  for (const auto& p : sampler.sources().exclude_interfaces) {
    n->add_excluded_patterns(common::to_utf8(p));
  }
  co_return reply;
}

}  // namespace qxa::guest::ops
