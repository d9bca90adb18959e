// SPDX-License-Identifier: MIT
// hotplug: the guest's vCPUs and memory blocks, and bringing them online or offline. The changes
// run on a thread of their own (own_thread.hpp): offlining memory migrates its pages and can
// take long.
#include "qxa/guest/platform/hotplug.hpp"

#include <memory>

#include "qxa/common/log.hpp"
#include "qxa/guest/mech/own_thread.hpp"
#include "qxa/guest/ops/ops.hpp"

namespace qxa::guest::ops {

namespace {

constexpr int max_changes = 1024;

hotplug_kind kind_of(pb::HotplugChange::Kind k) {
  return k == pb::HotplugChange::KIND_CPU ? hotplug_kind::cpu : hotplug_kind::memory_block;
}

struct change_work final : thread_work {
  std::string sys_root;
  std::vector<pb::HotplugChange> changes;
  std::vector<pb::HotplugOutcome> outcomes;  // the thread's until it is done

  void run() override {
    for (const auto& c : changes) {
      pb::HotplugOutcome o;
      *o.mutable_change() = c;
      if (stop) {
        o.set_error("not done: the request ended");
      } else if (auto why = set_online(sys_root, kind_of(c.kind()), c.id(), c.online())) {
        o.set_error(*why);
      } else {
        o.set_ok(true);
      }
      outcomes.push_back(std::move(o));
    }
  }
};

void add_units(google::protobuf::RepeatedPtrField<pb::HotplugUnit>* out,
               const std::vector<hotplug_unit>& units) {
  for (const auto& u : units) {
    auto* p = out->Add();
    p->set_id(u.id);
    p->set_online(u.online);
    p->set_can_offline(u.can_offline);
  }
}

}  // namespace

asio::awaitable<pb::Envelope> hotplug(request_context ctx, pb::Envelope request) {
  const auto& req = request.hotplug_request();
  if (req.changes_size() > max_changes) {
    co_return error_reply(
        pb::ERROR_CODE_INVALID_ARGUMENT,
        fmt::format("{} changes in one request; at most {}", req.changes_size(), max_changes));
  }
  for (const auto& c : req.changes()) {
    if (c.kind() != pb::HotplugChange::KIND_CPU &&
        c.kind() != pb::HotplugChange::KIND_MEMORY_BLOCK) {
      co_return error_reply(pb::ERROR_CODE_INVALID_ARGUMENT,
                            "a change names neither a CPU nor a memory block");
    }
  }
  const std::string& sys_root = ctx.state.options.sys_root;
  pb::Envelope reply;
  auto* r = reply.mutable_hotplug_reply();
  if (req.changes_size() > 0) {
    auto work = std::make_shared<change_work>();
    work->sys_root = sys_root;
    work->changes.assign(req.changes().begin(), req.changes().end());
    if (auto ec = co_await run_on_own_thread(work)) {
      co_return system_error(ec.value(), "cannot start the changes");
    }
    for (auto& o : work->outcomes) {
      common::log_info("audit: op=hotplug session={:016x} request={} outcome={} unit={}{} to={}",
                       ctx.session_id, ctx.request_id, o.ok() ? "ok" : "failed",
                       o.change().kind() == pb::HotplugChange::KIND_CPU ? "cpu" : "memory",
                       o.change().id(), o.change().online() ? "online" : "offline");
      *r->add_outcomes() = std::move(o);
    }
  }
  add_units(r->mutable_cpus(), list_hotplug(sys_root, hotplug_kind::cpu));
  add_units(r->mutable_memory_blocks(), list_hotplug(sys_root, hotplug_kind::memory_block));
  r->set_memory_block_bytes(memory_block_bytes(sys_root));
  co_return reply;
}

}  // namespace qxa::guest::ops
