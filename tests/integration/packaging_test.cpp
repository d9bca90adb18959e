// SPDX-License-Identifier: MIT
// The systemd units, the agent ISO and its installer.
#include <fmt/format.h>
#include <sys/stat.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "support/files.hpp"
#include "support/process.hpp"
#include "support/temp_dir.hpp"

using namespace std::chrono_literals;
using qxa::test::child_process;
using qxa::test::temp_dir;
namespace fs = std::filesystem;

namespace {

qxa::test::command_result sh(const std::string& script) {
  return qxa::test::run_command({"/bin/sh", "-c", script}, 120s);
}

unsigned mode_of(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return 0;
  return st.st_mode & 07777;
}

std::set<std::string> files_under(const std::string& root) {
  std::set<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    if (!e.is_directory() || e.is_symlink()) out.insert(e.path().string().substr(root.size()));
  }
  return out;
}

const std::string iso = QXA_AGENT_ISO;
const std::string source = QXA_SOURCE_DIR;

// The ISO's contents, extracted as a guest would see them mounted.
std::string extract_iso(const temp_dir& dir) {
  const auto media = dir / "media";
  auto r = sh(fmt::format("xorriso -osirrox on -indev '{}' -extract / '{}' 2>&1", iso, media));
  REQUIRE(r.status == 0);
  return media;
}

}  // namespace

TEST_CASE("systemd-analyze verify accepts both units, their programs and their manual pages",
          "[integration][packaging]") {
  temp_dir dir;
  // verify checks that ExecStart exists: point it at the binaries just built. It also asks man
  // for each Documentation= page: give it the pages just built, where man looks for them.
  const fs::path man(dir / "man");
  for (const char* section : {"man1", "man5", "man8"}) fs::create_directories(man / section);
  for (const auto& page : fs::directory_iterator(std::string(QXA_BINARY_DIR) + "/packaging/man")) {
    const auto name = page.path().filename().string();  // NAME.N.gz
    fs::copy_file(page.path(), man / ("man" + name.substr(name.size() - 4, 1)) / name);
  }
  auto r = sh(fmt::format(
      "sed 's|/usr/sbin/quantix-kvm-agent|{}|' '{}/packaging/systemd/quantix-kvm-agent.service' > "
      "'{}' && "
      "sed 's|/usr/sbin/qx-agentd|{}|' '{}/packaging/systemd/qx-agentd.service' > '{}' && "
      "MANPATH='{}' systemd-analyze verify '{}' '{}' 2>&1",
      QXA_AGENT_PATH, source, dir / "quantix-kvm-agent.service", QXA_AGENTD_PATH, source,
      dir / "qx-agentd.service", man.string(), dir / "quantix-kvm-agent.service",
      dir / "qx-agentd.service"));
  INFO(r.out);
  CHECK(r.status == 0);
  CHECK(r.out.empty());  // not even a warning
}

TEST_CASE("the agent ISO holds the installer and checksums that verify",
          "[integration][packaging]") {
  REQUIRE(fs::exists(iso));
  auto listing = sh(fmt::format("xorriso -indev '{}' -pvd_info -find / -type f 2>&1", iso));
  REQUIRE(listing.status == 0);
  CHECK_THAT(listing.out, Catch::Contains("Volume Id    : QUANTIX_AGENT_TOOLS"));
  for (const char* f :
       {"quantix-kvm-agent", "install.sh", "uninstall.sh", "quantix-kvm-agent.service",
        "60-quantix-kvm-agent.rules", "agent.toml", "README.txt", "VERSION", "SHA256SUMS",
        "quantix-kvm-agent.8.gz", "agent.toml.5.gz"}) {
    CHECK_THAT(listing.out, Catch::Contains(fmt::format("'/{}'", f)));
  }
  temp_dir dir;
  const auto media = extract_iso(dir);
  auto check = sh(fmt::format("cd '{}' && sha256sum -c SHA256SUMS 2>&1", media));
  INFO(check.out);
  CHECK(check.status == 0);
  CHECK_THAT(check.out, Catch::Contains("quantix-kvm-agent: OK"));
  CHECK(mode_of(media + "/install.sh") & 0111);  // Rock Ridge kept it executable
  WARN(fmt::format("quantix-agent-tools.iso: {} bytes ({:.2f} MiB)", fs::file_size(iso),
                   static_cast<double>(fs::file_size(iso)) / (1 << 20)));
}

TEST_CASE("install.sh --root twice, then uninstall.sh --root, leaves only the kept config",
          "[integration][packaging]") {
  temp_dir dir;
  const auto media = extract_iso(dir);
  const auto root = dir / "root";
  // A root that runs systemd.
  fs::create_directories(root + "/lib/systemd");
  std::ofstream(root + "/lib/systemd/systemd") << "#!/bin/sh\n";
  fs::permissions(root + "/lib/systemd/systemd", fs::perms::owner_all);

  // The link install.sh of earlier ISOs made: the unit enabled as wanted by the port's device.
  const auto wants = root +
                     "/etc/systemd/system/dev-virtio\\x2dports-org.quantix.agent.0.device.wants/"
                     "quantix-kvm-agent.service";
  fs::create_directories(fs::path(wants).parent_path());
  fs::create_symlink("/lib/systemd/system/quantix-kvm-agent.service", wants);
  fs::create_directories(root + "/usr/share/man");  // a guest with a manual

  auto first = sh(fmt::format("sh '{}/install.sh' --root '{}' 2>&1", media, root));
  INFO(first.out);
  REQUIRE(first.status == 0);
  CHECK(mode_of(root + "/usr/sbin/quantix-kvm-agent") == 0755);
  CHECK(mode_of(root + "/lib/systemd/system/quantix-kvm-agent.service") == 0644);
  CHECK(mode_of(root + "/lib/udev/rules.d/60-quantix-kvm-agent.rules") == 0644);
  CHECK(mode_of(root + "/etc/quantix-kvm/agent.toml") == 0644);
  CHECK(mode_of(root + "/usr/share/man/man8/quantix-kvm-agent.8.gz") == 0644);
  CHECK(mode_of(root + "/usr/share/man/man5/agent.toml.5.gz") == 0644);
  // The unit is static, started by the port's device unit through the udev rule; the old link
  // is gone with the directory it was in.
  CHECK_FALSE(fs::exists(fs::path(wants).parent_path()));
  CHECK_THAT(qxa::test::file_contents(root + "/lib/udev/rules.d/60-quantix-kvm-agent.rules"),
             Catch::Contains("ENV{SYSTEMD_WANTS}+=\"quantix-kvm-agent.service\""));
  CHECK_THAT(qxa::test::file_contents(root + "/lib/systemd/system/quantix-kvm-agent.service"),
             !Catch::Contains("[Install]"));
  const auto after_first = files_under(root);

  // The administrator edits the config; a second run upgrades in place and keeps it.
  std::ofstream(root + "/etc/quantix-kvm/agent.toml") << "log_level = \"debug\"\n";
  auto second = sh(fmt::format("sh '{}/install.sh' --root '{}' 2>&1", media, root));
  INFO(second.out);
  REQUIRE(second.status == 0);
  CHECK_THAT(second.out, Catch::Contains("keeping the existing /etc/quantix-kvm/agent.toml"));
  CHECK(files_under(root) == after_first);
  auto cmp =
      sh(fmt::format("cmp '{}/quantix-kvm-agent' '{}/usr/sbin/quantix-kvm-agent'", media, root));
  CHECK(cmp.status == 0);

  auto removed = sh(fmt::format("sh '{}/uninstall.sh' --root '{}' 2>&1", media, root));
  INFO(removed.out);
  REQUIRE(removed.status == 0);
  CHECK(files_under(root) ==
        std::set<std::string>{"/etc/quantix-kvm/agent.toml", "/lib/systemd/systemd"});
  std::ifstream kept(root + "/etc/quantix-kvm/agent.toml");
  std::string line;
  std::getline(kept, line);
  CHECK(line == "log_level = \"debug\"");
}

TEST_CASE("the set-up says what it installs in a few lines, and all of apt's output when it fails",
          "[integration][packaging]") {
  // deps.sh against stand-ins for dpkg-query (nothing is installed), sudo and apt-get (apt's
  // and dpkg's lines for 300 packages, failing when asked).
  temp_dir dir;
  fs::create_directories(dir / "bin");
  fs::create_directories(dir / "tmp");
  std::ofstream(dir / "bin/dpkg-query") << "#!/bin/sh\necho unknown\n";
  std::ofstream(dir / "bin/sudo") << "#!/bin/sh\nexec \"$@\"\n";
  std::ofstream(dir / "bin/apt-get") << R"SH(#!/bin/sh
case " $* " in *" update "*) echo "Hit:1 http://deb.debian.org/debian bookworm InRelease"; exit 0 ;; esac
echo "0 upgraded, 300 newly installed, 0 to remove and 0 not upgraded."
for step in Get Unpacking Setting; do
  i=1
  while [ $i -le 300 ]; do
    case $step in
      Get) echo "Get:$i http://deb.debian.org/debian bookworm/main amd64 fake-$i amd64 1.0 [1 kB]" ;;
      Unpacking) echo "Unpacking fake-$i (1.0) ..." ;;
      Setting) echo "Setting up fake-$i (1.0) ..." ;;
    esac
    i=$((i + 1))
  done
done
if [ -n "${QXA_FAKE_APT_FAIL:-}" ]; then
  echo "E: Sub-process /usr/bin/dpkg returned an error code (1)" >&2
  exit 100
fi
)SH";
  for (const char* f : {"dpkg-query", "sudo", "apt-get"}) {
    fs::permissions(dir / (std::string("bin/") + f), fs::perms::owner_all);
  }
  const auto setup = [&](const std::string& env) {
    return sh(fmt::format(
        "{} TMPDIR='{}' PATH='{}':\"$PATH\" bash -c '. \"{}/packaging/deps.sh\"; "
        "qxa_packages=(qxa-fake-a qxa-fake-b); qxa_install_missing' 2>&1",
        env, dir / "tmp", dir / "bin", source));
  };
  auto ok = setup("");
  INFO(ok.out);
  CHECK(ok.status == 0);
  CHECK(std::count(ok.out.begin(), ok.out.end(), '\n') <= 12);
  CHECK_THAT(ok.out, Catch::Contains("installing 2 packages: qxa-fake-a qxa-fake-b"));
  CHECK_THAT(ok.out, Catch::Contains("apt: 300 packages to fetch and set up"));
  CHECK_THAT(ok.out, Catch::Contains("apt: fetched 100 %") && Catch::Contains("apt: set up 100 %"));
  CHECK_THAT(ok.out, !Catch::Contains("Unpacking"));

  auto failed = setup("QXA_FAKE_APT_FAIL=1");
  INFO(failed.out);
  CHECK(failed.status == 100);
  CHECK_THAT(failed.out, Catch::Contains("apt-get failed (status 100)"));
  CHECK_THAT(failed.out, Catch::Contains("Unpacking fake-1 (1.0)") &&
                             Catch::Contains("Setting up fake-300 (1.0)") &&
                             Catch::Contains("E: Sub-process /usr/bin/dpkg returned an error code"));
  CHECK(fs::is_empty(dir / "tmp"));  // the log is gone either way
}

TEST_CASE("the shipped alert rules pass promtool's checks and their unit tests",
          "[integration][packaging]") {
  const auto dir = source + "/packaging/prometheus";
  auto check = sh(fmt::format("promtool check rules '{}/quantix-kvm-alerts.yml' 2>&1", dir));
  INFO(check.out);
  CHECK(check.status == 0);
  CHECK_THAT(check.out, Catch::Contains("SUCCESS: 11 rules found"));
  // Each rule fires on the series of its trouble, not before its time, and never for the well
  // VM beside it (quantix-kvm-alerts.test.yml).
  auto unit =
      sh(fmt::format("cd '{}' && promtool test rules quantix-kvm-alerts.test.yml 2>&1", dir));
  INFO(unit.out);
  CHECK(unit.status == 0);
  CHECK_THAT(unit.out, Catch::Contains("SUCCESS"));
}

TEST_CASE("install.sh refuses damaged media and bad arguments", "[integration][packaging]") {
  temp_dir dir;
  const auto media = extract_iso(dir);
  fs::permissions(media, fs::perms::owner_all);
  fs::permissions(media + "/quantix-kvm-agent", fs::perms::owner_all);
  std::ofstream(media + "/quantix-kvm-agent", std::ios::app) << "tampered";
  fs::create_directories(dir / "root");
  auto r = sh(fmt::format("sh '{}/install.sh' --root '{}' 2>&1", media, dir / "root"));
  CHECK(r.status == 1);
  CHECK_THAT(r.out, Catch::Contains("checksum verification failed"));
  CHECK_FALSE(fs::exists(dir / "root/usr/sbin/quantix-kvm-agent"));
  CHECK(sh(fmt::format("sh '{}/install.sh' --frobnicate", media)).status == 2);
}

namespace {

// Builds both packages with CPack into `out`.
void build_debs(const std::string& out) {
  auto r = sh(fmt::format("cd '{}' && cpack -G DEB -B '{}' 2>&1", QXA_BINARY_DIR, out));
  INFO(r.out);
  REQUIRE(r.status == 0);
}

std::string only_file(const std::string& dir, const std::string& prefix) {
  for (const auto& e : fs::directory_iterator(dir)) {
    const auto name = e.path().filename().string();
    if (name.starts_with(prefix) && name.ends_with(".deb")) return e.path().string();
  }
  FAIL("no " << prefix << "*.deb in " << dir);
  return {};
}

}  // namespace

TEST_CASE("both Debian packages build with their dependencies, conffiles and files",
          "[integration][packaging]") {
  temp_dir dir;
  build_debs(dir.path());
  const auto host = only_file(dir.path(), "qx-agentd_");
  const auto guest = only_file(dir.path(), "quantix-kvm-agent_");

  auto hi = sh("dpkg-deb -I '" + host + "'");
  REQUIRE(hi.status == 0);
  CHECK_THAT(hi.out, Catch::Contains("Package: qx-agentd"));
  // The full protobuf runtime (qx-agent prints --json with its reflection), found by
  // dpkg-shlibdeps.
  CHECK_THAT(hi.out, Catch::Contains("Depends: systemd, ") && Catch::Contains("libprotobuf32 "));
  CHECK_THAT(hi.out, Catch::Contains("conffiles") && Catch::Contains("postinst") &&
                         Catch::Contains("prerm") && Catch::Contains("postrm"));
  auto hc = sh("dpkg-deb -c '" + host + "'");
  for (const char* f :
       {"./usr/sbin/qx-agentd", "./usr/bin/qx-agent", "./usr/lib/systemd/system/qx-agentd.service",
        "./usr/lib/tmpfiles.d/qx-agentd.conf", "./etc/quantix-kvm/qx-agentd.toml",
        "./usr/sbin/qx-libvirt-attach", "./usr/share/quantix-kvm/libvirt/agent-channel.xml",
        "./usr/share/quantix-kvm/libvirt/qemu-ga-channel.xml",
        "./usr/share/quantix-kvm/prometheus/quantix-kvm-alerts.yml",
        "./usr/share/quantix-kvm/prometheus/quantix-kvm-alerts.test.yml",
        "./usr/share/man/man8/qx-agentd.8.gz", "./usr/share/man/man1/qx-agent.1.gz",
        "./usr/share/man/man8/qx-libvirt-attach.8.gz", "./usr/share/man/man5/qx-agentd.toml.5.gz",
        "./usr/share/bash-completion/completions/qx-agent", "./usr/share/doc/qx-agentd/copyright",
        "./usr/share/doc/qx-agentd/changelog.Debian.gz",
        "./usr/share/lintian/overrides/qx-agentd"}) {
    CHECK_THAT(hc.out, Catch::Contains(f));
  }
  // Revision 1 of the upstream version, from one source package for both.
  CHECK(sh("dpkg-deb -f '" + host + "' Version").out == "0.1.0-1\n");
  CHECK(sh("dpkg-deb -f '" + guest + "' Version").out == "0.1.0-1\n");
  CHECK(sh("dpkg-deb -f '" + host + "' Source").out == "quantix-kvm\n");
  auto conf = sh("dpkg-deb --ctrl-tarfile '" + host + "' | tar -xO ./conffiles");
  CHECK(conf.out == "/etc/quantix-kvm/qx-agentd.toml\n");

  auto gi = sh("dpkg-deb -I '" + guest + "'");
  REQUIRE(gi.status == 0);
  CHECK_THAT(gi.out, Catch::Contains("Package: quantix-kvm-agent"));
  CHECK_THAT(gi.out, !Catch::Contains("Depends:"));  // static: depends on nothing
  CHECK_THAT(gi.out, Catch::Contains("Recommends: systemd, udev"));
  auto gc = sh("dpkg-deb -c '" + guest + "'");
  for (const char* f :
       {"./usr/sbin/quantix-kvm-agent", "./usr/lib/systemd/system/quantix-kvm-agent.service",
        "./usr/lib/udev/rules.d/60-quantix-kvm-agent.rules", "./etc/quantix-kvm/agent.toml",
        "./usr/share/man/man8/quantix-kvm-agent.8.gz", "./usr/share/man/man5/agent.toml.5.gz",
        "./usr/share/doc/quantix-kvm-agent/copyright",
        "./usr/share/doc/quantix-kvm-agent/changelog.Debian.gz",
        "./usr/share/lintian/overrides/quantix-kvm-agent"}) {
    CHECK_THAT(gc.out, Catch::Contains(f));
  }
  CHECK_THAT(gc.out, !Catch::Contains("qx-agentd"));
  WARN(fmt::format("qx-agentd.deb {} bytes, quantix-kvm-agent.deb {} bytes", fs::file_size(host),
                   fs::file_size(guest)));
}

TEST_CASE("lintian finds nothing in either package, at any level, but overrides that each say why",
          "[integration][packaging]") {
  if (sh("command -v lintian").status != 0) {
    WARN("lintian is not installed: not checked (tests/run.sh installs it)");
    return;
  }
  temp_dir dir;
  build_debs(dir.path());
  const auto host = only_file(dir.path(), "qx-agentd_");
  const auto guest = only_file(dir.path(), "quantix-kvm-agent_");
  // Errors, warnings, information, pedantic and experimental tags: none.
  const auto debs = fmt::format("'{}' '{}'", host, guest);
  auto r = sh("lintian --display-info --pedantic --display-experimental " + debs + " 2>&1");
  INFO(r.out);
  CHECK(r.status == 0);
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    if (line != "running with root privileges is not recommended!") FAIL_CHECK(line);
  }
  // The overridden ones, each shown as "O:" after its reason ("N:"): every override is used.
  auto shown = sh("lintian --display-info --pedantic --display-experimental --show-overrides " +
                  debs + " 2>&1");
  INFO(shown.out);
  std::istringstream shown_lines(shown.out);
  int overridden = 0;
  for (std::string line; std::getline(shown_lines, line);) overridden += line.starts_with("O: ");
  CHECK(overridden == 7);
  // Every override has its reason: a comment right above it.
  for (const auto& [deb, package] : {std::pair{host, "qx-agentd"}, {guest, "quantix-kvm-agent"}}) {
    auto text = sh(fmt::format(
        "dpkg-deb --fsys-tarfile '{}' | tar -xO ./usr/share/lintian/overrides/{}", deb, package));
    REQUIRE(text.status == 0);
    std::istringstream in(text.out);
    std::string previous;
    for (std::string line; std::getline(in, line); previous = line) {
      if (line.empty() || line.starts_with("#")) continue;
      INFO(package << ": " << line);
      CHECK(previous.starts_with("#"));
    }
  }
}

namespace {

const std::string man_dir = std::string(QXA_BINARY_DIR) + "/packaging/man";

}  // namespace

TEST_CASE(
    "the manual pages render without a warning, each named as apropos finds it, and say "
    "everything --help and the shipped configuration files say",
    "[integration][packaging]") {
  struct page_case {
    const char* file;
    const char* whatis;
  };
  for (const auto& p :
       {page_case{"qx-agentd.8.gz", "qx-agentd - Quantix KVM host daemon"},
        page_case{"qx-agent.1.gz", "qx-agent - Quantix KVM agent command line"},
        page_case{"quantix-kvm-agent.8.gz", "quantix-kvm-agent - Quantix KVM guest agent"},
        page_case{"qx-libvirt-attach.8.gz", "qx-libvirt-attach - add the Quantix agent's channel"},
        page_case{"qx-agentd.toml.5.gz", "qx-agentd.toml - settings of qx-agentd"},
        page_case{"agent.toml.5.gz", "agent.toml - settings of quantix-kvm-agent"}}) {
    const auto page = man_dir + "/" + p.file;
    INFO(page);
    // A warning would come before the rendered text: there must be none.
    const auto warnings =
        sh(fmt::format("MANWIDTH=80 man --warnings -l '{}' 2>&1 >/dev/null", page));
    CHECK(warnings.status == 0);
    CHECK(warnings.out.empty());
    // man-db's own parser of the NAME section (what mandb indexes for apropos and whatis).
    CHECK_THAT(sh(fmt::format("lexgrog '{}'", page)).out, Catch::Contains(p.whatis));
    CHECK(sh(fmt::format("gzip -t '{}'", page)).status == 0);
  }
  auto text = [](const std::string& file) {
    return sh(fmt::format("MANWIDTH=200 man -l '{}/{}' | col -b", man_dir, file)).out;
  };
  // Every option of each program, and every command of qx-agent with its options.
  const auto option_names = R"(sed -n 's/^  \(-[^ ]*\).*/\1/p' | tr ',' '\n' | grep -v '^-h$')";
  for (const auto& [program, file] : {std::pair{std::string(QXA_AGENTD_PATH), "qx-agentd.8.gz"},
                                      {std::string(QXA_AGENT_PATH), "quantix-kvm-agent.8.gz"},
                                      {std::string(QXA_CLI_PATH), "qx-agent.1.gz"}}) {
    const auto shown = text(file);
    auto options = sh(program + " --help | " + option_names);
    REQUIRE(!options.out.empty());
    std::istringstream in(options.out);
    for (std::string o; std::getline(in, o);) {
      INFO(file << ": " << o);
      CHECK_THAT(shown, Catch::Contains(o));
    }
  }
  const auto cli_page = text("qx-agent.1.gz");
  auto verbs = sh(std::string(QXA_CLI_PATH) +
                  R"( --help | sed -n '/^Subcommands:$/,$s/^  \([a-z][a-z-]*\)  .*/\1/p')");
  std::istringstream verb_lines(verbs.out);
  int verb_count = 0;
  for (std::string verb; std::getline(verb_lines, verb);) {
    ++verb_count;
    INFO(verb);
    auto usage = sh(std::string(QXA_CLI_PATH) + " " + verb + " --help | sed -n 's/^Usage: //p'");
    CHECK_THAT(cli_page, Catch::Contains(usage.out.substr(0, usage.out.size() - 1)));
    auto options = sh(std::string(QXA_CLI_PATH) + " " + verb + " --help | " + option_names);
    std::istringstream in(options.out);
    for (std::string o; std::getline(in, o);) {
      INFO(o);
      if (o != "--help") CHECK_THAT(cli_page, Catch::Contains(o));
    }
  }
  CHECK(verb_count >= 30);
  // Every setting of each shipped configuration file, with its default, under its table.
  for (const auto& [config, file] :
       {std::pair{"agent.toml", "agent.toml.5.gz"}, {"qx-agentd.toml", "qx-agentd.toml.5.gz"}}) {
    const auto shown = text(file);
    std::ifstream in(source + "/packaging/config/" + config);
    int settings = 0;
    for (std::string line; std::getline(in, line);) {
      if (line.starts_with("[")) {
        CHECK_THAT(shown, Catch::Contains(line));
      } else if (line.size() > 2 && line.starts_with("# ") &&
                 line.find(" = ") != std::string::npos &&
                 std::islower(static_cast<unsigned char>(line[2]))) {
        ++settings;
        const auto setting = line.substr(
            2, line.find("  ") == std::string::npos ? std::string::npos : line.find("  ") - 2);
        INFO(config << ": " << setting);
        CHECK_THAT(shown, Catch::Contains(setting));
      }
    }
    CHECK(settings >= 9);
  }
}

TEST_CASE(
    "the host package's tmpfiles.d entry makes the socket directory, root's and 0755, as "
    "systemd-tmpfiles does at boot before any VM manager starts a domain",
    "[integration][packaging]") {
  temp_dir dir;
  build_debs(dir.path());
  const auto root = dir / "root";
  REQUIRE(sh("dpkg-deb -x '" + only_file(dir.path(), "qx-agentd_") + "' '" + root + "'").status ==
          0);
  auto made = sh("systemd-tmpfiles --root='" + root + "' --create '" + root +
                 "/usr/lib/tmpfiles.d/qx-agentd.conf' 2>&1");
  INFO(made.out);
  REQUIRE(made.status == 0);
  for (const auto& d : {root + "/run/quantix-kvm", root + "/run/quantix-kvm/vms"}) {
    struct stat st {};
    REQUIRE(::lstat(d.c_str(), &st) == 0);
    CHECK(S_ISDIR(st.st_mode));
    CHECK((st.st_mode & 07777) == 0755);
    CHECK(st.st_uid == 0);
  }
  // The unit makes the same directories, with the same mode, when it starts.
  const auto unit = qxa::test::file_contents(source + "/packaging/systemd/qx-agentd.service");
  CHECK_THAT(unit, Catch::Contains("RuntimeDirectory=quantix-kvm quantix-kvm/vms") &&
                       Catch::Contains("RuntimeDirectoryMode=0755"));
}

#if QXA_SYSTEM_INSTALL_TEST
// Registered only where the build was configured with CI set: it changes the machine.
TEST_CASE("installing the host package and purging it leaves the machine as it was",
          "[integration][packaging]") {
  REQUIRE(::geteuid() == 0);
  temp_dir dir;
  build_debs(dir.path());
  const auto host = only_file(dir.path(), "qx-agentd_");
  const std::string snapshot =
      "find /etc /usr/sbin /usr/bin /usr/lib/systemd /usr/lib/tmpfiles.d /lib/systemd "
      "/usr/share/quantix-kvm "
      "/var/lib/systemd "
      "-xdev 2>/dev/null | LC_ALL=C sort; dpkg-query -W -f='${Package} ${Status}\\n' | LC_ALL=C "
      "sort";
  const auto before = sh(snapshot).out;
  // Gone before the install where nothing is in it, so that the install must make it.
  sh("rmdir /run/quantix-kvm/vms /run/quantix-kvm 2>/dev/null");
  auto install = sh("dpkg -i '" + host + "' 2>&1");
  INFO(install.out);
  REQUIRE(install.status == 0);
  CHECK(fs::exists("/usr/sbin/qx-agentd"));
  CHECK(fs::exists("/etc/quantix-kvm/qx-agentd.toml"));
  CHECK(sh("dpkg-query -W -f='${Status}' qx-agentd").out == "install ok installed");
  // The postinst made the socket directory at once (tmpfiles.d), without qx-agentd running.
  CHECK(fs::is_directory("/run/quantix-kvm/vms"));
  auto purge = sh("dpkg --purge qx-agentd 2>&1");
  INFO(purge.out);
  REQUIRE(purge.status == 0);
  const auto after = sh(snapshot).out;
  CHECK(after == before);
}
#endif
