// SPDX-License-Identifier: MIT
// Writes the seed corpora of the protocol fuzz targets: `qxa_fuzz_seeds DIR` fills
// DIR/frame_decoder, DIR/guest_dispatch, DIR/host_client, DIR/guest_data, DIR/path_walk and DIR/qga
// with one file per seed. The config
// targets' seeds are written by hand (corpus/agent_config, corpus/daemon_config).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "fuzz_input.hpp"
#include "quantix/agent/v1/agent.pb.h"
#include "qxa/common/frame.hpp"

namespace pb = quantix::agent::v1;
namespace fs = std::filesystem;
using bytes = std::vector<std::uint8_t>;

namespace {

bytes serialize(const pb::Envelope& e) {
  const auto s = e.SerializeAsString();
  return {s.begin(), s.end()};
}

bytes framed(const pb::Envelope& e) {
  bytes out;
  qxa::common::append_frame(serialize(e), out);
  return out;
}

void write(const fs::path& dir, const std::string& name, const bytes& data) {
  fs::create_directories(dir);
  std::ofstream f(dir / name, std::ios::binary);
  f.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
}

// Host requests, one of each kind the guest handles, and some it refuses.
std::vector<std::pair<std::string, pb::Envelope>> requests() {
  std::vector<std::pair<std::string, pb::Envelope>> r;
  auto add = [&](std::string name) -> pb::Envelope& {
    return r.emplace_back(name, pb::Envelope{}).second;
  };
  add("ping").mutable_ping()->set_nonce(42);
  add("info").mutable_info_request();
  add("telemetry").mutable_telemetry_request();
  add("time").mutable_time_request();
  add("time-set").mutable_time_request()->set_set(true);
  r.back().second.mutable_time_request()->set_set_unix_ns(1'700'000'000'000'000'000);
  add("hostname").mutable_hostname_request();
  add("hostname-set").mutable_hostname_request()->set_name("fuzzed-guest");
  {
    auto* x = add("exec").mutable_exec_request();
    x->add_argv("/bin/echo");
    x->add_argv("hello");
    x->set_stdin("input");
    (*x->mutable_env())["LANG"] = "C";
    x->set_timeout_ms(500);
  }
  add("exec-shell").mutable_exec_request()->set_shell_command("echo $HOME; ls /etc");
  add("read").mutable_file_read_request()->set_path("/etc/hostname");
  r.back().second.mutable_file_read_request()->set_chunk_bytes(4);
  add("read-proc").mutable_file_read_request()->set_path("/proc/self/status");
  {
    auto* o = add("write-open").mutable_file_write_open();
    o->set_path("/tmp/dir/file");
    o->set_create_parents(true);
    o->set_mode(0600);
  }
  {
    auto* c = add("write-chunk").mutable_file_write_chunk();
    c->set_handle(1);
    c->set_data("hello world");
  }
  add("write-close").mutable_file_write_close()->set_handle(1);
  add("stat").mutable_file_stat_request()->set_path("/etc/passwd");
  add("list").mutable_dir_list_request()->set_path("/etc");
  r.back().second.mutable_dir_list_request()->set_limit(2);
  add("power").mutable_power_request()->set_action(pb::PowerRequest::ACTION_REBOOT);
  r.back().second.mutable_power_request()->set_delay_seconds(1);
  add("freeze-status").mutable_freeze_status_request();
  add("freeze").mutable_freeze_request()->set_lease_ms(1000);
  add("thaw").mutable_thaw_request();
  {
    auto* p = add("password").mutable_password_request();
    p->set_user("alice");
    p->set_password("s3cret");
  }
  {
    auto* k = add("ssh-add").mutable_ssh_keys_request();
    k->set_user("alice");
    k->set_action(pb::SshKeysRequest::ACTION_ADD);
    k->add_keys("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFuzz fuzz@host");
  }
  add("ssh-list").mutable_ssh_keys_request()->set_user("alice");
  add("ssh-list-root").mutable_ssh_keys_request()->set_user("root");
  add("list-tmp").mutable_dir_list_request()->set_path("/tmp");
  add("stat-odd").mutable_file_stat_request()->set_path("/tmp/\xc3(");
  {
    auto* m = add("mkdir").mutable_mkdir_request();
    m->set_path("/tmp/made/deeper");
    m->set_parents(true);
    m->set_mode(0700);
  }
  {
    auto* m = add("mv").mutable_move_request();
    m->set_from("/tmp/made");
    m->set_to("/home/alice/moved");
  }
  {
    auto* rm = add("rm-r").mutable_remove_request();
    rm->set_path("/home/alice");
    rm->set_recursive(true);
  }
  add("users").mutable_users_request();
  add("network").mutable_network_request();
  add("hotplug").mutable_hotplug_request();
  add("disks").mutable_disks_request();
  {
    auto* x = add("exec-detach").mutable_exec_request();
    x->set_shell_command("echo job");
    x->set_detach(true);
  }
  add("jobs").mutable_jobs_request();
  {
    auto* a = add("attach").mutable_attach_request();
    a->set_job(1);
    a->set_follow(true);
    a->set_stdout_from(2);
  }
  {
    auto* k = add("kill-job").mutable_kill_job_request();
    k->set_job(1);
    k->set_signal(9);
  }
  add("suspend-disk").mutable_suspend_request()->set_mode(pb::SuspendRequest::MODE_DISK);
  {
    auto* f = add("freeze-serial").mutable_freeze_request();
    f->add_disk_serials("qx-data");
    f->set_lease_ms(1000);
  }
  {
    auto* c = add("hotplug-online").mutable_hotplug_request()->add_changes();
    c->set_kind(pb::HotplugChange::KIND_CPU);
    c->set_id(1);
    c->set_online(true);
  }
  {
    auto* o = add("upgrade-upload").mutable_file_write_open();
    o->set_agent_upgrade(true);
    o->set_expected_size(4096);
  }
  {
    auto* u = add("upgrade").mutable_upgrade_request();
    u->set_sha256(std::string(32, 'x'));
    u->set_confirm_within_ms(10'000);
  }
  add("upgrade-confirm").mutable_upgrade_confirm_request()->set_token("0123456789abcdef");
  add("upgrade-status").mutable_upgrade_status_request();
  add("cancel").mutable_cancel_request()->set_request_id(3);
  {
    auto& h = add("hello-again");
    h.mutable_hello()->set_session_id(0x1234);
    h.set_session_id(0x1234);
  }
  return r;
}

constexpr std::uint8_t request_flags = qxa::fuzz::fix_request_id | qxa::fuzz::fix_session;

void guest_dispatch(const fs::path& dir) {
  const auto all = requests();
  for (const auto& [name, e] : all) {
    bytes seed;
    qxa::fuzz::append_record(seed, request_flags, serialize(e));
    write(dir, name, seed);
  }
  // Sequences: an upload, a request then its cancel, a request of another session, noise
  // between requests, a request written one byte at a time.
  auto find = [&](const std::string& n) {
    for (const auto& [name, e] : all)
      if (name == n) return e;
    return pb::Envelope{};
  };
  {
    bytes seed;
    for (const char* n : {"write-open", "write-chunk", "write-close", "read"}) {
      qxa::fuzz::append_record(seed, request_flags, serialize(find(n)));
    }
    write(dir, "seq-upload", seed);
  }
  {
    bytes seed;
    for (const char* n : {"mkdir", "mv", "rm-r", "list-tmp"}) {
      qxa::fuzz::append_record(seed, request_flags, serialize(find(n)));
    }
    write(dir, "seq-file-changes", seed);
  }
  {
    bytes seed;
    qxa::fuzz::append_record(seed, request_flags, serialize(find("exec-shell")));
    qxa::fuzz::append_record(seed, request_flags, serialize(find("cancel")));
    qxa::fuzz::append_record(seed, request_flags, serialize(find("ping")));
    write(dir, "seq-cancel", seed);
  }
  {
    bytes seed;
    qxa::fuzz::append_record(seed, qxa::fuzz::fix_request_id, serialize(find("info")));
    const bytes noise = {0xF5, 0x51, 0x58, 0x41, 1, 0, 0, 0, 0xff, 0xff, 0, 0};
    qxa::fuzz::append_record(seed, qxa::fuzz::raw_bytes, noise);
    qxa::fuzz::append_record(seed, request_flags | qxa::fuzz::split_writes,
                             serialize(find("ping")));
    write(dir, "seq-noise", seed);
  }
  {
    bytes seed;
    for (const char* n : {"freeze", "write-open", "freeze-status", "thaw", "hostname-set"}) {
      qxa::fuzz::append_record(seed, request_flags, serialize(find(n)));
    }
    write(dir, "seq-freeze", seed);
  }
}

void frame_decoder(const fs::path& dir) {
  const auto all = requests();
  bytes stream = {0x40, 0x07};  // maximum 1040 bytes, piece pattern 7
  for (const auto& [name, e] : all) {
    const auto f = framed(e);
    stream.insert(stream.end(), f.begin(), f.end());
  }
  write(dir, "requests", stream);
  // Garbage, a cut frame, a frame over the maximum, good frames around them.
  bytes mixed = {0x01, 0x33};  // maximum 32 bytes
  auto ping = framed(all[0].second);
  mixed.insert(mixed.end(), {'n', 'o', 'i', 's', 'e', 0xF5, 0x51});
  mixed.insert(mixed.end(), ping.begin(), ping.end());
  mixed.insert(mixed.end(), ping.begin(), ping.begin() + 25);
  mixed.insert(mixed.end(), ping.begin(), ping.end());
  pb::Envelope big;
  big.mutable_exec_request()->set_shell_command(std::string(200, 'x'));
  auto b = framed(big);
  mixed.insert(mixed.end(), b.begin(), b.end());
  mixed.insert(mixed.end(), ping.begin(), ping.end());
  write(dir, "mixed", mixed);
  bytes empty_payload = {0x00, 0x00};
  qxa::common::append_frame({}, empty_payload);
  write(dir, "empty-payload", empty_payload);
}

void host_client(const fs::path& dir) {
  // Guest frames: answers to the pending requests (picked by the flags' high bits), events,
  // partial replies, noise.
  const std::uint8_t answer = qxa::fuzz::fix_request_id | qxa::fuzz::fix_session;
  pb::Envelope pong;
  pong.mutable_pong()->set_nonce(7);
  pb::Envelope info;
  info.mutable_info()->set_hostname("guest");
  info.mutable_info()->mutable_os()->set_name("Debian");
  pb::Envelope out;
  out.set_more(true);
  out.mutable_exec_output()->set_data("partial output\n");
  pb::Envelope result;
  result.mutable_exec_result()->set_exit_code(0);
  result.mutable_exec_result()->set_stdout("done\n");
  pb::Envelope error;
  error.mutable_error()->set_code(pb::ERROR_CODE_PERMISSION_DENIED);
  error.mutable_error()->set_message("refused");
  error.mutable_error()->set_rule("policy.block");
  pb::Envelope telemetry;
  telemetry.mutable_telemetry()->set_sequence(1);
  telemetry.mutable_telemetry()->set_hostname("guest");
  pb::Envelope ready;
  ready.mutable_agent_ready()->set_software_version("9.9");
  ready.mutable_agent_ready()->set_agent_pid(77);

  auto seed = [&](const std::string& name,
                  std::vector<std::pair<std::uint8_t, pb::Envelope>> recs) {
    bytes s;
    for (const auto& [flags, e] : recs) qxa::fuzz::append_record(s, flags, serialize(e));
    write(dir, name, s);
  };
  seed("answers", {{answer | 0x00, pong},
                   {answer | 0x10, info},
                   {answer | 0x20, out},
                   {answer | 0x20, result}});
  seed("errors", {{answer | 0x00, error}, {answer | 0x10, error}, {answer | 0x20, error}});
  seed("events", {{qxa::fuzz::fix_session, telemetry}, {0, ready}, {answer, pong}});
  seed("stale",
       {{qxa::fuzz::fix_request_id, pong}, {answer | 0x10 | qxa::fuzz::split_writes, info}});
  seed("twice", {{answer, pong}, {answer, pong}, {answer | 0x20, out}, {answer | 0x20, out}});
  bytes noisy;
  qxa::fuzz::append_record(noisy, qxa::fuzz::raw_bytes, bytes(300, 0xF5));
  qxa::fuzz::append_record(noisy, answer, serialize(pong));
  write(dir, "noise", noisy);
}

// What a guest sends that the host caps: oversized telemetry, long names, many capabilities.
void guest_data(const fs::path& dir) {
  pb::Envelope t;
  auto* tel = t.mutable_telemetry();
  tel->set_hostname(std::string(300, 'h'));
  for (int i = 0; i < 40; ++i) {
    auto* d = tel->add_disks();
    d->set_mount_point("/mnt/" + std::to_string(i) + std::string(200, 'm'));
    d->set_device("/dev/x\xE2\x9C\x93");
  }
  for (int i = 0; i < 3; ++i) {
    auto* n = tel->add_interfaces();
    n->set_name("eth" + std::to_string(i));
    for (int a = 0; a < 30; ++a) n->add_addresses()->set_address("10.0.0." + std::to_string(a));
  }
  write(dir, "telemetry", serialize(t));
  pb::Envelope h;
  auto* ack = h.mutable_hello_ack();
  ack->set_hostname("evil\x1b]0;owned\x07");
  ack->mutable_os()->set_pretty_name(std::string(500, 'p'));
  for (int i = 0; i < 100; ++i) ack->add_capabilities("cap" + std::to_string(i));
  write(dir, "hello-ack", serialize(h));
  pb::Envelope e;
  e.mutable_error()->set_message(std::string(10'000, 'e'));
  e.mutable_error()->set_rule(std::string(200, 'r'));
  write(dir, "error", serialize(e));
  pb::Envelope i;
  i.mutable_info()->set_hostname("guest");
  i.mutable_info()->mutable_os()->set_kernel_version(std::string(129, 'k'));
  write(dir, "info", serialize(i));
  pb::Envelope u;
  for (int n = 0; n < 300; ++n) {
    auto* s = u.mutable_users_reply()->add_sessions();
    s->set_user("user" + std::to_string(n));
    s->set_host(std::string(200, 'h'));
  }
  write(dir, "users", serialize(u));
  pb::Envelope tz;
  tz.mutable_time_reply()->set_timezone(std::string(300, 'z'));
  write(dir, "time", serialize(tz));
  pb::Envelope dr;
  auto* disks = dr.mutable_disks_reply();
  for (int n = 0; n < 300; ++n) {
    auto* b = disks->add_devices();
    b->set_name("sd" + std::to_string(n));
    b->set_serial(std::string(200, 's'));
    b->add_parents("sd" + std::to_string(n + 1));
    auto* fs = disks->add_filesystems();
    fs->set_mount_point("/mnt/" + std::to_string(n));
    fs->add_disks("sd" + std::to_string(n));
  }
  write(dir, "disks", serialize(dr));
  pb::Envelope pw;
  for (int n = 0; n < 100; ++n) {
    auto* hook = pw.mutable_power_reply()->add_hooks();
    hook->set_hook("/etc/quantix-kvm/power-hook.d/" + std::string(200, 'h'));
    hook->set_error(std::string(300, 'e'));
  }
  write(dir, "power-hooks", serialize(pw));
  pb::Envelope io;
  for (int n = 0; n < 100; ++n) {
    io.mutable_telemetry()->add_disk_io()->set_name("vd" + std::to_string(n % 70));
    io.mutable_telemetry()->add_cpus()->set_cpu(static_cast<std::uint32_t>(n % 50));
  }
  write(dir, "telemetry-io", serialize(io));
  pb::Envelope hp;
  for (int n = 0; n < 100; ++n)
    hp.mutable_hotplug_reply()->add_outcomes()->set_error(std::string(300, 'e'));
  write(dir, "hotplug", serialize(hp));
  pb::Envelope jobs;
  for (int n = 0; n < 100; ++n) {
    auto* j = jobs.mutable_jobs_reply()->add_jobs();
    j->set_id(static_cast<std::uint64_t>(n));
    for (int a = 0; a < 30; ++a) j->add_argv(std::string(200, 'a'));
    j->set_user(std::string(200, 'u'));
  }
  write(dir, "jobs", serialize(jobs));
  pb::Envelope up;
  auto* us = up.mutable_upgrade_status();
  us->set_to_version(std::string(300, 'v'));
  us->set_token(std::string(300, 't'));
  us->set_binary(std::string(5000, 'b'));
  us->set_detail(std::string(5000, 'd'));
  write(dir, "upgrade-status", serialize(up));
  pb::Envelope net;
  auto* nr = net.mutable_network_reply();
  for (int n = 0; n < 100; ++n) {
    auto* route = nr->add_routes();
    route->set_destination("10." + std::to_string(n) + ".0.0/16");
    route->set_interface(std::string(200, 'i'));
    nr->add_dns_servers("192.0.2." + std::to_string(n));
  }
  nr->set_primary_address(std::string(300, 'p'));
  write(dir, "network", serialize(net));
}

// Paths for fuzz_path_walk: an options byte (1: make missing directories, 2: absolute), then
// the path, through the tree it plants.
void path_walk(const fs::path& dir) {
  const std::vector<std::pair<std::string, std::string>> seeds = {
      {"file", std::string("\x00a/file")},
      {"deep", std::string("\x00a/b/c")},
      {"make", std::string("\x01a/new/dir/x")},
      {"away", std::string("\x00away/secret")},
      {"away-make", std::string("\x01away/new/x")},
      {"up", std::string("\x00a/b/up/srv/outside/secret")},
      {"secret-link", std::string("\x00a/secret-link")},
      {"fifo", std::string("\x00fifo")},
      {"deep-fifo", std::string("\x00a/b/fifo")},
      {"zero", std::string("\x00zero")},
      {"loop", std::string("\x00loop/x")},
      {"c-link", std::string("\x01a/b/c-link/x")},
      {"absolute", std::string("\x02/srv/root/a/file")},
      {"dots", std::string("\x00a/../away")},
  };
  for (const auto& [name, text] : seeds) write(dir, name, bytes(text.begin(), text.end()));
}

// Byte streams for fuzz_qga: a piece-size byte, then what a qemu-ga client sends.
void qga(const fs::path& dir) {
  const std::vector<std::pair<std::string, std::string>> seeds = {
      {"ping", "\x01{\"execute\":\"guest-ping\"}\n"},
      {"sync-delimited",
       "\x03\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":123}}\n"},
      {"exec",
       "\x07{\"execute\":\"guest-exec\",\"arguments\":{\"path\":\"/bin/sh\",\"arg\":["
       "\"-c\",\"echo \\\"}{\\\"\"],\"capture-output\":true},\"id\":\"a\"}"},
      {"two-lines", "\x05{\"execute\":\"guest-ping\"}{\"execute\":\"guest-get-time\"}\n[1]\n"},
      {"garbage", "\x02garbage }\n\"str\" 42 {\"foo\":1}"},
      {"half-then-reset",
       "\x04{\"execute\":\"guest-file-read\",\"arg\xff{\"execute\":\"guest-info\"}"},
      {"nested",
       "\x09{\"execute\":\"guest-set-vcpus\",\"arguments\":{\"vcpus\":[{\"logical-id\":1,"
       "\"online\":false}]}}"},
  };
  for (const auto& [name, text] : seeds) write(dir, name, bytes(text.begin(), text.end()));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: qxa_fuzz_seeds DIR\n");
    return 2;
  }
  const fs::path root = argv[1];
  frame_decoder(root / "frame_decoder");
  guest_dispatch(root / "guest_dispatch");
  host_client(root / "host_client");
  guest_data(root / "guest_data");
  path_walk(root / "path_walk");
  qga(root / "qga");
  return 0;
}
