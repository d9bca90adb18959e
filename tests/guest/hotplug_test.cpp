// SPDX-License-Identifier: MIT
// CPU and memory hotplug over a sysfs tree written here (the real one is in the VM test).
#include "qxa/guest/platform/hotplug.hpp"

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "guest/ops_test_support.hpp"
#include "support/temp_dir.hpp"

using qxa::test::handler_bench;
using qxa::test::run_async;
using qxa::test::temp_dir;
namespace pb = quantix::agent::v1;
namespace qg = qxa::guest;

namespace {

std::string contents(const std::string& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), {}};
}

/// cpu0 without an online file (the boot CPU), cpu1 online, cpu2 offline, cpu10 online;
/// memory0 online, memory1 offline, memory2 online but not removable; 128 MiB blocks.
void plant_sysfs(const temp_dir& sys) {
  std::filesystem::create_directories(sys / "devices/system/cpu/cpu0");
  std::filesystem::create_directories(sys / "devices/system/cpu/cpufreq");
  sys.write("devices/system/cpu/cpu1/online", "1\n");
  sys.write("devices/system/cpu/cpu2/online", "0\n");
  sys.write("devices/system/cpu/cpu10/online", "1\n");
  sys.write("devices/system/cpu/online", "0-1,10\n");
  sys.write("devices/system/memory/block_size_bytes", "8000000\n");
  sys.write("devices/system/memory/memory0/state", "online\n");
  sys.write("devices/system/memory/memory0/removable", "1\n");
  sys.write("devices/system/memory/memory1/state", "offline\n");
  sys.write("devices/system/memory/memory1/removable", "1\n");
  sys.write("devices/system/memory/memory2/state", "online\n");
  sys.write("devices/system/memory/memory2/removable", "0\n");
}

}  // namespace

TEST_CASE("hotplug lists vCPUs and memory blocks with their state, by id", "[unit][guest]") {
  temp_dir sys;
  plant_sysfs(sys);
  const auto cpus = qg::list_hotplug(sys.path(), qg::hotplug_kind::cpu);
  REQUIRE(cpus.size() == 4);
  CHECK(cpus[0].id == 0);
  CHECK(cpus[0].online);
  CHECK_FALSE(cpus[0].can_offline);
  CHECK(cpus[1].online);
  CHECK(cpus[1].can_offline);
  CHECK_FALSE(cpus[2].online);
  CHECK(cpus[3].id == 10);  // numeric order, not the directory's
  const auto memory = qg::list_hotplug(sys.path(), qg::hotplug_kind::memory_block);
  REQUIRE(memory.size() == 3);
  CHECK(memory[0].online);
  CHECK_FALSE(memory[1].online);
  CHECK_FALSE(memory[2].can_offline);
  CHECK(qg::memory_block_bytes(sys.path()) == 128u << 20);

  temp_dir empty;  // no hotplug at all
  CHECK(qg::list_hotplug(empty.path(), qg::hotplug_kind::cpu).empty());
  CHECK(qg::memory_block_bytes(empty.path()) == 0);
}

TEST_CASE("hotplug brings units online and offline, says why not, and reports each change",
          "[unit][guest]") {
  temp_dir sys;
  plant_sysfs(sys);
  qg::agent_options o;
  o.sys_root = sys.path();
  pb::Envelope request;
  auto* r = request.mutable_hotplug_request();
  auto change = [&](pb::HotplugChange::Kind kind, std::uint64_t id, bool online) {
    auto* c = r->add_changes();
    c->set_kind(kind);
    c->set_id(id);
    c->set_online(online);
  };
  change(pb::HotplugChange::KIND_CPU, 2, true);
  change(pb::HotplugChange::KIND_CPU, 1, false);
  change(pb::HotplugChange::KIND_CPU, 0, false);
  change(pb::HotplugChange::KIND_CPU, 9, true);
  change(pb::HotplugChange::KIND_MEMORY_BLOCK, 1, true);
  change(pb::HotplugChange::KIND_MEMORY_BLOCK, 0, true);  // online already: nothing to do
  pb::Envelope reply;
  run_async([&](asio::io_context& io) -> asio::awaitable<void> {
    handler_bench bench(io.get_executor(), o);
    reply = co_await qg::ops::hotplug(bench.context(), request);
  });
  REQUIRE(reply.has_hotplug_reply());
  const auto& h = reply.hotplug_reply();
  REQUIRE(h.outcomes_size() == 6);
  CHECK(h.outcomes(0).ok());
  CHECK(h.outcomes(1).ok());
  CHECK_FALSE(h.outcomes(2).ok());
  CHECK_THAT(h.outcomes(2).error(), Catch::Contains("cpu0 cannot be taken offline"));
  CHECK_FALSE(h.outcomes(3).ok());
  CHECK_THAT(h.outcomes(3).error(), Catch::Contains("no cpu9"));
  CHECK(h.outcomes(4).ok());
  CHECK(h.outcomes(5).ok());
  CHECK(contents(sys / "devices/system/cpu/cpu2/online") == "1");
  CHECK(contents(sys / "devices/system/cpu/cpu1/online") == "0");
  CHECK(contents(sys / "devices/system/memory/memory1/state") == "online");
  CHECK(contents(sys / "devices/system/memory/memory0/state") == "online\n");
  // The listing that follows shows the changes.
  REQUIRE(h.cpus_size() == 4);
  CHECK(h.cpus(1).online() == false);
  CHECK(h.cpus(2).online() == true);
  CHECK(h.memory_block_bytes() == 128u << 20);
  CHECK(h.memory_blocks(1).online());

  request.mutable_hotplug_request()->mutable_changes(0)->set_kind(
      pb::HotplugChange::KIND_UNSPECIFIED);
  run_async([&](asio::io_context& io) -> asio::awaitable<void> {
    handler_bench bench(io.get_executor(), o);
    reply = co_await qg::ops::hotplug(bench.context(), request);
  });
  REQUIRE(reply.has_error());
  CHECK(reply.error().code() == pb::ERROR_CODE_INVALID_ARGUMENT);
}
