// SPDX-License-Identifier: MIT
// agent_client against an in-process fake guest on a real unix socket.
#include "qxa/host/agent_client.hpp"

#include <fmt/format.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/steady_timer.hpp>
#include <asio/write.hpp>
#include <catch2/catch.hpp>
#include <functional>
#include <vector>

#include "qxa/common/text.hpp"
#include "qxa/host/daemon_config.hpp"
#include "qxa/host/guest_data.hpp"
#include "support/fake_guest.hpp"
#include "support/run.hpp"
#include "support/temp_dir.hpp"

namespace qc = qxa::common;
namespace qh = qxa::host;
namespace pb = quantix::agent::v1;
using namespace std::chrono_literals;
using asio::awaitable;
using qxa::test::behaviour;
using qxa::test::fake_guest;
using qxa::test::ping_request;
using qxa::test::run_async;
using qxa::test::temp_dir;
using qxa::test::unix_socket;
using guest_stream = qxa::test::fake_guest::stream;

TEST_CASE("100 requests in flight when the guest closes all fail with connection_lost at once",
          "[host]") {
  temp_dir dir;
  const auto path = dir / "vm.agent.sock";
  run_async([&](asio::io_context& io) -> awaitable<void> {
    fake_guest guest(io, path, behaviour::hold);
    qh::client_options o;
    o.request_timeout = 30s;  // far beyond the test's deadline
    auto client = qh::agent_client::create(io.get_executor(), path, o);
    auto ec = co_await client->connect();
    REQUIRE_FALSE(ec);
    CHECK(client->hello().agent_pid() == 4242);
    int lost = 0, other = 0;
    for (int i = 0; i < 100; ++i) {
      asio::co_spawn(
          io,
          [&, client]() -> awaitable<void> {
            auto r = co_await client->request(ping_request());
            if (!r && r.code() == qc::errc::connection_lost)
              ++lost;
            else
              ++other;
          },
          asio::detached);
    }
    while (guest.requests_seen < 100) co_await asio::post(asio::use_awaitable);
    CHECK(client->pending() == 100);
    guest.streams.front()->close();  // the guest side goes away
    while (lost + other < 100) co_await asio::post(asio::use_awaitable);
    // Each failed with connection_lost, not at its 30 s deadline: at once, when the reader ended.
    CHECK(lost == 100);
    CHECK_FALSE(client->is_connected());
    CHECK(client->stats().connection_lost == 100);
  });
}

TEST_CASE("is_connected turns false when the reader ends, while the writer still exists",
          "[host]") {
  temp_dir dir;
  const auto path = dir / "vm.agent.sock";
  run_async([&](asio::io_context& io) -> awaitable<void> {
    fake_guest guest(io, path, behaviour::answer);
    auto client = qh::agent_client::create(io.get_executor(), path);
    auto ec = co_await client->connect();
    REQUIRE_FALSE(ec);
    REQUIRE(client->is_connected());
    REQUIRE(client->is_ready());
    // Half-close from the guest: our reader sees end of file, but our write side is still open.
    guest.streams.front()->next_layer().shutdown(asio::socket_base::shutdown_send);
    co_await client->wait_closed();
    CHECK_FALSE(client->is_connected());
    CHECK(client->end_reason() == "end of file");
    auto r = co_await client->request(ping_request());
    CHECK(r.code() == qc::errc::not_connected);

    SECTION("and the next connect to the same path succeeds") {
      auto again = qh::agent_client::create(io.get_executor(), path);
      auto ec2 = co_await again->connect();
      REQUIRE_FALSE(ec2);
      auto pong = co_await again->request(ping_request());
      REQUIRE(pong);
      CHECK(pong->has_pong());
    }
  });
}

TEST_CASE("a guest that stops answering makes requests fail at their deadline", "[host]") {
  temp_dir dir;
  const auto path = dir / "vm.agent.sock";
  run_async([&](asio::io_context& io) -> awaitable<void> {
    fake_guest guest(io, path, behaviour::hold);
    auto client = qh::agent_client::create(io.get_executor(), path);
    auto ec = co_await client->connect();
    REQUIRE_FALSE(ec);
    const auto t0 = std::chrono::steady_clock::now();
    auto r = co_await client->request(ping_request(), 200ms);
    const auto took = std::chrono::steady_clock::now() - t0;
    CHECK(r.code() == qc::errc::request_timeout);
    CHECK(took >= 200ms);  // never early; how late depends on the machine, not on the client
    CHECK(client->is_connected());  // a late reply is not a dead connection
    CHECK(client->stats().timeouts == 1);
  });
}

TEST_CASE("a guest that stops reading trips the write deadline and the connection closes",
          "[host]") {
  temp_dir dir;
  const auto path = dir / "vm.agent.sock";
  run_async([&](asio::io_context& io) -> awaitable<void> {
    fake_guest guest(io, path, behaviour::stop_reading);
    qh::client_options o;
    o.write_timeout = 300ms;
    o.request_timeout = 20s;
    auto client = qh::agent_client::create(io.get_executor(), path, o);
    auto ec = co_await client->connect();
    REQUIRE_FALSE(ec);
    // Big requests fill the socket the guest no longer reads. (The clock starts before they are
    // queued: co_spawn may run each at once, and every frame's deadline counts from its queueing.)
    const auto t0 = std::chrono::steady_clock::now();
    int failed = 0;
    std::error_code seen;
    for (int i = 0; i < 40; ++i) {
      asio::co_spawn(
          io,
          [&, client]() -> awaitable<void> {
            pb::Envelope big;
            big.mutable_error()->set_message(std::string(256u << 10, 'x'));
            auto r = co_await client->request(std::move(big));
            seen = r.code();
            ++failed;
          },
          asio::detached);
    }
    co_await client->wait_closed();
    const auto took = std::chrono::steady_clock::now() - t0;
    while (failed < 40) co_await asio::post(asio::use_awaitable);
    CHECK(took >= 250ms);
    CHECK(seen == qc::errc::connection_lost);
    CHECK_FALSE(client->is_connected());
    CHECK_THAT(client->end_reason(), Catch::Contains("write timed out"));
  });
}

TEST_CASE("replies to unknown ids are counted and dropped, frames before the handshake ignored",
          "[host]") {
  temp_dir dir;
  const auto path = dir / "vm.agent.sock";
  run_async([&](asio::io_context& io) -> awaitable<void> {
    fake_guest guest(io, path, behaviour::answer);
    guest.on_handshake = [](guest_stream& s) {
      pb::Envelope stray;
      stray.set_reply_to(987654);
      stray.mutable_pong();
      (void)s.post(stray);
    };
    // Before the guest answers Hello it would normally send AgentReady; anything before the
    // HelloAck that is not its answer is dropped.
    auto client = qh::agent_client::create(io.get_executor(), path);
    auto ec = co_await client->connect();
    REQUIRE_FALSE(ec);
    auto r = co_await client->request(ping_request());
    REQUIRE(r);
    CHECK(r->has_pong());
    CHECK(client->stats().unknown_replies == 1);
  });
}

TEST_CASE("a slow event consumer loses old telemetry, never the connection", "[host]") {
  temp_dir dir;
  const auto path = dir / "vm.agent.sock";
  run_async([&](asio::io_context& io) -> awaitable<void> {
    fake_guest guest(io, path, behaviour::answer);
    guest.on_handshake = [](guest_stream& s) {
      for (int i = 1; i <= 500; ++i) {
        pb::Envelope t;
        t.mutable_telemetry()->set_sequence(static_cast<std::uint64_t>(i));
        (void)s.post(t);
      }
    };
    qh::client_options o;
    o.event_queue = 8;
    auto client = qh::agent_client::create(io.get_executor(), path, o);
    auto ec = co_await client->connect();
    REQUIRE_FALSE(ec);
    // A request after the burst proves the reader got through it without waiting for us.
    auto r = co_await client->request(ping_request());
    REQUIRE(r);
    std::vector<std::uint64_t> seqs;
    while (seqs.size() < 8) {
      auto e = co_await client->next_event();
      REQUIRE(e);
      seqs.push_back(e->telemetry().sequence());
    }
    CHECK(seqs.back() == 500);  // the newest survived
    CHECK(seqs.front() == 493);
    CHECK(client->stats().events_dropped == 492);
    CHECK(client->is_connected());
  });
}

TEST_CASE("a daemon config is as strict as the agent's", "[host]") {
  qh::daemon_config c;
  CHECK_FALSE(
      qh::apply_daemon_config(
          "socket_dir = \"/tmp/vms\"\n[heartbeat]\ninterval = \"1s\"\ntimeout = \"500ms\"\n",
          "qx-agentd.toml", c)
          .has_value());
  CHECK(c.manager.socket_dir == "/tmp/vms");
  CHECK(c.manager.heartbeat_interval == 1s);
  CHECK(c.manager.heartbeat_timeout == 500ms);
  auto err = qh::apply_daemon_config("[heartbeat]\nintervall = \"1s\"\n", "qx-agentd.toml", c);
  REQUIRE(err);
  CHECK(err->message == "qx-agentd.toml:2: unknown key 'heartbeat.intervall'");
  err =
      qh::apply_daemon_config("[reconnect]\ninitial = \"5s\"\nmax = \"1s\"\n", "qx-agentd.toml", c);
  REQUIRE(err);
  CHECK_THAT(err->message,
             Catch::Contains("'reconnect.max' must not be less than reconnect.initial"));
}

TEST_CASE("the qx-agentd.toml the packages install loads as shipped", "[host]") {
  qh::daemon_config shipped;
  const auto err = qh::load_daemon_config(
      std::string(QXA_SOURCE_DIR) + "/packaging/config/qx-agentd.toml", shipped);
  INFO((err ? err->message : std::string()));
  REQUIRE_FALSE(err);
  const qh::daemon_config defaults;
  CHECK(shipped.manager.socket_dir == defaults.manager.socket_dir);
  CHECK(shipped.manager.heartbeat_interval == defaults.manager.heartbeat_interval);
  CHECK(shipped.control_socket == defaults.control_socket);
}

namespace {

// A frame whose Info body has a hostname that is not UTF-8: protobuf refuses to parse it.
std::vector<std::uint8_t> info_reply_with_bad_utf8(std::uint64_t reply_to, std::uint64_t session) {
  pb::Envelope e;
  e.set_reply_to(reply_to);
  e.set_session_id(session);
  e.mutable_info()->set_hostname("host-@@");
  std::string payload = e.SerializeAsString();
  payload.replace(payload.find("@@"), 2, "\xFF\xFE");
  std::vector<std::uint8_t> frame;
  qc::append_frame({reinterpret_cast<const std::uint8_t*>(payload.data()), payload.size()}, frame);
  return frame;
}

}  // namespace

TEST_CASE("a reply that does not parse fails its call at once, not at its deadline", "[host]") {
  temp_dir dir;
  const auto path = dir / "vm.agent.sock";
  run_async([&](asio::io_context& io) -> awaitable<void> {
    asio::local::stream_protocol::acceptor acceptor(io,
                                                    asio::local::stream_protocol::endpoint(path));
    asio::co_spawn(
        io,
        [&]() -> awaitable<void> {
          auto socket = co_await acceptor.async_accept(asio::use_awaitable);
          auto s = guest_stream::create(std::move(socket));
          s->start();
          for (;;) {
            auto r = co_await s->receive();
            if (!r) co_return;
            if (r->has_hello()) {
              co_await s->send(qxa::test::hello_ack_for(*r));
              continue;
            }
            // Written behind the stream's back: the frame itself is sound, its body is not.
            const auto bad = info_reply_with_bad_utf8(r->request_id(), r->session_id());
            co_await asio::async_write(s->next_layer(), asio::buffer(bad), asio::use_awaitable);
          }
        },
        asio::detached);
    auto client = qh::agent_client::create(io.get_executor(), path);
    const auto connected = co_await client->connect();  // not inside a macro: GCC evaluates
    REQUIRE_FALSE(connected);                           // co_await in __builtin_constant_p
    pb::Envelope info;
    info.mutable_info_request();
    auto r = co_await client->request(info, 20s);
    REQUIRE_FALSE(r);
    CHECK(r.code() == qc::errc::bad_frame);
    CHECK_THAT(r.error().message, Catch::Contains("could not be decoded"));
    CHECK(client->is_connected());
    CHECK(client->pending() == 0);
  });
}

TEST_CASE("telemetry from a guest is capped when it arrives", "[host]") {
  pb::Telemetry t;
  t.set_hostname(std::string(100'000, 'h'));
  auto* eth = t.add_interfaces();
  eth->set_name("eth0");
  for (int i = 0; i < 150'000; ++i) {
    auto* a = eth->add_addresses();
    a->set_address(fmt::format("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255));
    a->set_prefix_length(32);
  }
  for (int i = 0; i < 1000; ++i) {
    auto* d = t.add_disks();
    d->set_mount_point("/mnt/" + std::to_string(i) + std::string(5000, 'm'));
    d->set_device("/dev/x\xE2\x9C\x93" + std::string(300, 'd'));
  }
  for (int i = 0; i < 100; ++i) t.add_interfaces()->set_name("if" + std::to_string(i));
  const qh::guest_data_limits limits;
  const auto cut = qh::cap_telemetry(t, limits);
  CHECK_THAT(cut, Catch::Contains("968 disks over the limit of 32"));
  CHECK_THAT(cut, Catch::Contains("69 interfaces over the limit of 32"));
  CHECK_THAT(cut, Catch::Contains("149984 addresses over the limit of 16"));
  CHECK(t.disks_size() == 32);
  CHECK(t.interfaces_size() == 32);
  int addresses = 0;
  for (const auto& i : t.interfaces()) addresses += i.addresses_size();
  CHECK(addresses <= 64);
  CHECK(t.hostname().size() == 128);
  for (const auto& d : t.disks()) {
    CHECK(d.mount_point().size() <= 128);
    CHECK(qc::is_utf8(d.device()));  // never cut inside a character
  }
  // Whatever a guest reports, one VM's share of a status report stays small.
  CHECK(t.ByteSizeLong() < 40'000);
  pb::Telemetry fine;
  fine.set_hostname("web-1");
  fine.add_disks()->set_mount_point("/");
  CHECK(qh::cap_telemetry(fine, limits).empty());
}

TEST_CASE("disk I/O and CPU times from a guest are capped, and a repeated disk or CPU kept once",
          "[host]") {
  pb::Telemetry t;
  for (int i = 0; i < 1000; ++i) t.add_disk_io()->set_name("vd" + std::to_string(i % 10));
  for (int i = 0; i < 5000; ++i) t.add_cpus()->set_cpu(static_cast<std::uint32_t>(i % 300));
  t.add_disks()->set_mount_point("/");
  t.add_disks()->set_mount_point("/");  // two series with the same labels in /metrics
  const auto cut = qh::cap_telemetry(t);
  CHECK_THAT(cut, Catch::Contains("936 disk I/O counters over the limit of 64"));
  CHECK_THAT(cut, Catch::Contains("54 repeated disk I/O counters"));
  CHECK_THAT(cut, Catch::Contains("4744 CPU times over the limit of 256"));
  CHECK_THAT(cut, Catch::Contains("1 repeated disks"));
  CHECK(t.disk_io_size() == 10);
  CHECK(t.disk_io(9).name() == "vd9");
  CHECK(t.cpus_size() == 256);
  CHECK(t.cpus(255).cpu() == 255);
  CHECK(t.disks_size() == 1);

  // A disks reply: its lists and names.
  pb::Envelope e;
  auto* d = e.mutable_disks_reply();
  for (int i = 0; i < 1000; ++i) {
    auto* b = d->add_devices();
    b->set_name("sd" + std::to_string(i));
    b->set_serial(std::string(10'000, 's'));
    for (int p = 0; p < 100; ++p) b->add_parents("x");
  }
  for (int i = 0; i < 300; ++i) d->add_filesystems()->set_mount_point(std::string(1000, 'm'));
  const auto cut2 = qh::cap_guest_message(e);
  CHECK_THAT(cut2, Catch::Contains("744 block devices over the limit of 256"));
  CHECK_THAT(cut2, Catch::Contains("44 filesystems over the limit of 256"));
  CHECK(e.disks_reply().devices(0).serial().size() == 128);
  CHECK(e.disks_reply().devices(0).parents_size() == 64);
  CHECK(e.ByteSizeLong() < 300'000);
}

TEST_CASE("power hook outcomes from a guest are capped in power, suspend and info replies",
          "[host]") {
  for (int which = 0; which < 3; ++which) {
    pb::Envelope e;
    google::protobuf::RepeatedPtrField<pb::HookOutcome>* hooks =
        which == 0   ? e.mutable_power_reply()->mutable_hooks()
        : which == 1 ? e.mutable_suspend_reply()->mutable_hooks()
                     : e.mutable_info()->mutable_last_resume()->mutable_hooks();
    for (int i = 0; i < 1000; ++i) {
      auto* h = hooks->Add();
      h->set_hook(std::string(5000, 'h'));
      h->set_error(std::string(5000, 'e'));
    }
    const auto cut = qh::cap_guest_message(e);
    INFO(which);
    CHECK_THAT(cut, Catch::Contains("936 hook outcomes over the limit of 64"));
    CHECK(hooks->size() == 64);
    CHECK(hooks->Get(0).hook().size() == 128);
    CHECK(hooks->Get(63).error().size() == 128);
  }
}

TEST_CASE("job lists and jobs from a guest are capped: their count, arguments and command lines",
          "[host]") {
  pb::Envelope list;
  for (int i = 0; i < 2000; ++i) {
    auto* j = list.mutable_jobs_reply()->add_jobs();
    j->set_id(static_cast<std::uint64_t>(i));
    j->add_argv("sh");
    j->set_user(std::string(300, 'u'));
  }
  auto cut = qh::cap_guest_message(list);
  CHECK_THAT(cut, Catch::Contains("976 jobs over the limit of 1024"));
  CHECK(list.jobs_reply().jobs_size() == 1024);
  CHECK(list.jobs_reply().jobs(1023).user().size() == 128);

  pb::Envelope one;
  one.mutable_job()->set_id(7);
  for (int i = 0; i < 1000; ++i) one.mutable_job()->add_argv(std::string(100, 'a'));
  cut = qh::cap_guest_message(one);
  CHECK_THAT(cut, Catch::Contains("744 arguments of a job over the limit of 256"));
  CHECK_THAT(cut, Catch::Contains("job 7's command cut to 4096 bytes"));
  std::size_t total = 0;
  for (const auto& a : one.job().argv()) total += a.size();
  CHECK(total == 4096);
  CHECK(one.job().argv(40).size() == 96);  // 40 whole ones, then what is left
  CHECK(one.job().argv(41).empty());

  pb::Envelope fine;
  fine.mutable_job()->add_argv("/bin/sh");
  fine.mutable_job()->add_argv("-c");
  fine.mutable_job()->add_argv(std::string(3000, 'x'));
  CHECK(qh::cap_guest_message(fine).empty());
  CHECK(fine.job().argv(2).size() == 3000);
}

TEST_CASE("the host keeps only the fields it knows of a guest's telemetry, and all of those",
          "[host]") {
  // Every field set: a copy that forgot one would change the bytes.
  pb::Telemetry full;
  full.set_sequence(1);
  full.set_sample_unix_ms(2);
  full.set_cpu_percent(3.5);
  full.set_load1(4);
  full.set_load5(5);
  full.set_load15(6);
  full.set_uptime_seconds(7);
  auto* m = full.mutable_memory();
  m->set_total_bytes(8);
  m->set_available_bytes(9);
  m->set_used_bytes(10);
  m->set_free_bytes(11);
  m->set_buffers_bytes(12);
  m->set_cached_bytes(13);
  full.mutable_swap()->set_total_bytes(14);
  full.mutable_swap()->set_free_bytes(15);
  full.mutable_swap()->set_used_bytes(16);
  full.set_process_count(17);
  full.set_hostname("h");
  auto* d = full.add_disks();
  d->set_mount_point("/");
  d->set_device("/dev/vda1");
  d->set_fs_type("ext4");
  d->set_total_bytes(18);
  d->set_used_bytes(19);
  d->set_available_bytes(20);
  d->set_read_only(true);
  auto* i = full.add_interfaces();
  i->set_name("eth0");
  i->set_mac("52:54:00:00:00:01");
  i->set_link_up(true);
  i->set_oper_state("up");
  i->set_mtu(1500);
  i->set_rx_bytes(21);
  i->set_rx_packets(22);
  i->set_rx_errors(23);
  i->set_tx_bytes(24);
  i->set_tx_packets(25);
  i->set_tx_errors(26);
  auto* a = i->add_addresses();
  a->set_family(pb::IpAddress::FAMILY_IPV6);
  a->set_address("fe80::1");
  a->set_prefix_length(64);
  full.set_cpu_count(27);
  full.set_primary_address("fe80::1");
  auto* io = full.add_disk_io();
  io->set_name("vda");
  io->set_reads(28);
  io->set_read_bytes(29);
  io->set_writes(30);
  io->set_written_bytes(31);
  io->set_discards(32);
  io->set_discarded_bytes(33);
  io->set_io_ms(34);
  io->set_in_flight(35);
  io->set_read_ms(36);
  io->set_write_ms(37);
  auto* cpu = full.add_cpus();
  cpu->set_cpu(3);
  cpu->set_user_ms(38);
  cpu->set_nice_ms(39);
  cpu->set_system_ms(40);
  cpu->set_idle_ms(41);
  cpu->set_iowait_ms(42);
  cpu->set_irq_ms(43);
  cpu->set_softirq_ms(44);
  cpu->set_steal_ms(45);
  full.mutable_freeze()->set_frozen(true);
  full.mutable_freeze()->set_frozen_ms(46);
  full.mutable_freeze()->set_lease_remaining_ms(-47);
  pb::Telemetry copy = full;
  CHECK(qh::cap_telemetry(copy).empty());
  CHECK(copy.SerializeAsString() == full.SerializeAsString());

  // A megabyte in a field this build does not know (number 999), kept by protobuf as it came.
  std::string bytes = full.SerializeAsString();
  bytes += "\xBA\x3E";  // field 999, length-delimited
  std::size_t n = 1u << 20;
  while (n >= 0x80) {
    bytes += static_cast<char>((n & 0x7F) | 0x80);
    n >>= 7;
  }
  bytes += static_cast<char>(n);
  bytes += std::string(1u << 20, 'u');
  pb::Envelope e;
  REQUIRE(e.mutable_telemetry()->ParseFromString(bytes));
  REQUIRE(e.telemetry().ByteSizeLong() > (1u << 20));
  const auto cut = qh::cap_guest_message(e);
  CHECK_THAT(cut, Catch::Contains("bytes of unknown fields dropped"));
  CHECK(e.telemetry().SerializeAsString() == full.SerializeAsString());
}

TEST_CASE(
    "what a guest says of an upgrade is capped: versions and token as names, paths and "
    "detail at 4 KiB",
    "[host]") {
  pb::Envelope e;
  auto* u = e.mutable_upgrade_status();
  u->set_to_version(std::string(300, 'v'));
  u->set_token(std::string(300, 't'));
  u->set_binary(std::string(5000, 'b'));
  u->set_detail(std::string(9000, 'd'));
  const auto cut = qh::cap_guest_message(e);
  CHECK_THAT(cut, Catch::Contains("2 upgrade texts cut to 4096 bytes"));
  CHECK_THAT(cut, Catch::Contains("2 names cut to 128 bytes"));
  CHECK(u->to_version().size() == 128);
  CHECK(u->binary().size() == 4096);
  CHECK(u->detail().size() == 4096);
  CHECK(qh::cap_guest_message(e).empty());
}

namespace {

// What a guest saw of one streamed call: the window the request asked for, and the replies each
// StreamCredit gave back, in order; and what the caller saw.
struct paced_call {
  std::uint32_t window_asked = 0;
  std::vector<std::uint32_t> credits;
  std::size_t credits_while_held = 0;  // before the caller's `taken` let go
  int partials_seen = 0;
  bool completed = false;
};

// One exec with stream_window 8 against a guest that lists "stream-credit" or not, sends 8
// partial replies at once, and then the final reply once credit for all 8 came back (an agent
// that does not pace: at once). With `hold`, the caller takes no reply until every partial one
// has arrived and a ping has made the round trip after them (so that a credit sent too early
// would have reached the guest).
paced_call run_paced_call(bool guest_paces, bool hold) {
  temp_dir dir;
  const auto path = dir / "vm.agent.sock";
  paced_call seen;
  constexpr std::uint32_t window = 8;
  run_async([&](asio::io_context& io) -> awaitable<void> {
    asio::local::stream_protocol::acceptor acceptor(io,
                                                    asio::local::stream_protocol::endpoint(path));
    asio::co_spawn(
        io,
        [&]() -> awaitable<void> {
          auto socket = co_await acceptor.async_accept(asio::use_awaitable);
          auto s = guest_stream::create(std::move(socket));
          s->start();
          pb::Envelope call;  // the exec, once it came
          std::uint32_t credited = 0;
          const auto reply = [&](bool more) {
            pb::Envelope e;
            e.set_reply_to(call.request_id());
            e.set_session_id(call.session_id());
            e.set_more(more);
            if (more) {
              e.mutable_exec_output()->set_data("output");
            } else {
              e.mutable_exec_result()->set_exit_code(0);
            }
            return e;
          };
          for (;;) {
            auto r = co_await s->receive();
            if (!r) co_return;
            pb::Envelope answer;
            if (r->has_hello()) {
              answer = qxa::test::hello_ack_for(*r);
              if (guest_paces) answer.mutable_hello_ack()->add_capabilities("stream-credit");
            } else if (r->has_ping()) {
              answer.set_reply_to(r->request_id());
              answer.set_session_id(r->session_id());
              answer.mutable_pong();
            } else if (r->has_exec_request()) {
              call = *r;
              seen.window_asked = r->stream_window();
              for (std::uint32_t i = 0; i < window; ++i) co_await s->send(reply(true));
              if (!guest_paces) co_await s->send(reply(false));
              continue;
            } else if (r->has_stream_credit()) {
              if (r->stream_credit().request_id() != call.request_id()) continue;  // counted below
              seen.credits.push_back(r->stream_credit().replies());
              credited += r->stream_credit().replies();
              if (credited == window) co_await s->send(reply(false));
              continue;
            } else {
              continue;
            }
            co_await s->send(std::move(answer));
          }
        },
        asio::detached);

    auto client = qh::agent_client::create(io.get_executor(), path);
    const auto connected = co_await client->connect();
    REQUIRE_FALSE(connected);
    // Events as timers: expired, a wait completes at once whether it began before or after.
    using clock = asio::steady_timer::clock_type;
    const auto fire = [](asio::steady_timer& t) { t.expires_at(clock::time_point::min()); };
    const auto wait = [](asio::steady_timer& t) {
      return t.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
    };
    asio::steady_timer all_arrived(io, clock::time_point::max());
    asio::steady_timer released(io, clock::time_point::max());
    asio::steady_timer finished(io, clock::time_point::max());
    qh::call_options o;
    o.timeout = 5s;
    o.stream_window = window;
    o.on_progress = [&](const pb::Envelope&) {
      if (++seen.partials_seen == static_cast<int>(window)) fire(all_arrived);
    };
    if (hold) {
      o.taken = [&]() -> awaitable<void> { co_await wait(released); };
    }
    pb::Envelope exec;
    exec.mutable_exec_request()->add_argv("true");
    asio::co_spawn(
        io,
        [&, o]() mutable -> awaitable<void> {
          auto r = co_await client->request(exec, std::move(o));
          seen.completed = r.has_value();
          fire(all_arrived);
          fire(finished);
        },
        asio::detached);
    co_await wait(all_arrived);
    auto ping = co_await client->request(qxa::test::ping_request(), 5s);
    REQUIRE(ping);
    seen.credits_while_held = seen.credits.size();
    fire(released);
    co_await wait(finished);
    client->close();
  });
  return seen;
}

}  // namespace

TEST_CASE(
    "a paced call credits the agent a quarter of its window at a time, and only replies the "
    "caller has taken",
    "[host]") {
  SECTION("replies taken at once: credit in batches of 2 of the window of 8") {
    const auto seen = run_paced_call(true, false);
    CHECK(seen.window_asked == 8);
    CHECK(seen.partials_seen == 8);
    CHECK(seen.credits == std::vector<std::uint32_t>{2, 2, 2, 2});
    CHECK(seen.completed);
  }
  SECTION("replies held by the caller: no credit until they are taken, then all of it at once") {
    const auto seen = run_paced_call(true, true);
    CHECK(seen.window_asked == 8);
    CHECK(seen.partials_seen == 8);
    CHECK(seen.credits_while_held == 0);
    CHECK(seen.credits == std::vector<std::uint32_t>{8});
    CHECK(seen.completed);
  }
  SECTION("an agent that does not list stream-credit is asked for no window and sent no credit") {
    const auto seen = run_paced_call(false, false);
    CHECK(seen.window_asked == 0);
    CHECK(seen.partials_seen == 8);
    CHECK(seen.credits.empty());
    CHECK(seen.completed);
  }
}
