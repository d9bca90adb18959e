// SPDX-License-Identifier: MIT
#include "qxa/guest/platform/block_devices.hpp"

#include <dirent.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <memory>
#include <optional>

#include "qxa/common/parse.hpp"
#include "qxa/guest/platform/paths.hpp"
#include "qxa/guest/platform/system_info.hpp"

namespace qxa::guest {

using common::to_number;
using common::trim;

namespace {

// An attribute longer than this is cut: no serial, model or name comes close.
constexpr std::size_t max_attribute_bytes = 256;

std::string attribute(const std::string& path) {
  auto text = read_file(path);
  if (!text) return {};
  auto v = std::string(trim(*text));
  if (v.size() > max_attribute_bytes) v.resize(max_attribute_bytes);
  return v;
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

std::string real_path(const std::string& path) {
  std::unique_ptr<char, decltype(&std::free)> p(::realpath(path.c_str(), nullptr), &std::free);
  return p ? std::string(p.get()) : std::string();
}

std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return out;
  while (const dirent* e = ::readdir(d)) {
    const std::string_view n = e->d_name;
    if (n != "." && n != "..") out.emplace_back(n);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// "prefix" followed by a number: ata1, host2, virtio3.
bool numbered(std::string_view s, std::string_view prefix) {
  return s.starts_with(prefix) && all_digits(s.substr(prefix.size()));
}

// A PCI function: 0000:00:04.0
bool pci_function(std::string_view s) {
  if (s.size() != 12 || s[4] != ':' || s[7] != ':' || s[10] != '.') return false;
  for (std::size_t i : {0, 1, 2, 3, 5, 6, 8, 9, 11}) {
    if (!std::isxdigit(static_cast<unsigned char>(s[i]))) return false;
  }
  return true;
}

// H:C:T:L
bool scsi_address(std::string_view s) {
  int parts = 0;
  while (true) {
    const auto colon = s.find(':');
    if (!all_digits(s.substr(0, colon))) return false;
    ++parts;
    if (colon == std::string_view::npos) break;
    s.remove_prefix(colon + 1);
  }
  return parts == 4;
}

// The bus and addresses from where the disk sits in the device tree.
void place_disk(std::string_view device_path, disk_identity& id) {
  bool nvme = false, usb = false, ata = false, virtio = false, scsi_host = false, mmc = false,
       xen = false;
  while (!device_path.empty()) {
    const auto slash = device_path.find('/');
    const auto c = device_path.substr(0, slash);
    device_path.remove_prefix(slash == std::string_view::npos ? device_path.size() : slash + 1);
    if (pci_function(c)) {
      id.pci_path += (id.pci_path.empty() ? "" : "/") + std::string(c);
    } else if (scsi_address(c)) {
      id.scsi_address = std::string(c);
    }
    nvme |= c == "nvme" || c.starts_with("nvme-subsys");
    usb |= numbered(c, "usb");
    ata |= numbered(c, "ata");
    virtio |= numbered(c, "virtio");
    scsi_host |= numbered(c, "host");
    mmc |= numbered(c, "mmc") || c == "mmc_host";
    xen |= c.starts_with("vbd-");
  }
  id.bus = nvme        ? "nvme"
           : usb       ? "usb"
           : ata       ? "ata"
           : scsi_host ? "scsi"  // virtio-scsi too: its disks sit on a SCSI host
           : virtio    ? "virtio"
           : mmc       ? "mmc"
           : xen       ? "xen"
                       : "";
}

void identify_disk(const std::string& dir, const std::string& real, const std::string& sys_root,
                   disk_identity& id) {
  const std::string devices = sys_root + "/devices/";
  place_disk(real.starts_with(devices) ? std::string_view(real).substr(devices.size())
                                       : std::string_view(real),
             id);
  // virtio-blk has the serial on the disk, NVMe on the controller, SCSI in its VPD page.
  id.serial = attribute(dir + "/serial");
  if (id.serial.empty()) id.serial = attribute(dir + "/device/serial");
  if (id.serial.empty()) {
    if (auto page = read_file(dir + "/device/vpd_pg80")) id.serial = parse_vpd_serial(*page);
  }
  id.model = attribute(dir + "/device/model");
  id.vendor = attribute(dir + "/device/vendor");
  id.wwn = attribute(dir + "/wwid");
  if (id.wwn.empty()) id.wwn = attribute(dir + "/device/wwid");
  id.nvme_namespace = to_number<std::uint32_t>(attribute(dir + "/nsid")).value_or(0);
}

std::optional<block_device> read_device(const std::string& sys_root, const std::string& name) {
  const std::string dir = sys_root + "/class/block/" + name;
  block_device d;
  d.name = name;
  const auto devno = attribute(dir + "/dev");
  const auto colon = devno.find(':');
  if (colon == std::string::npos) return std::nullopt;
  d.major = to_number<std::uint32_t>(std::string_view(devno).substr(0, colon)).value_or(0);
  d.minor = to_number<std::uint32_t>(std::string_view(devno).substr(colon + 1)).value_or(0);
  d.size_bytes = to_number<std::uint64_t>(attribute(dir + "/size")).value_or(0) * 512;
  if (d.size_bytes == 0) return std::nullopt;  // an empty drive, an unbound loop device
  d.read_only = attribute(dir + "/ro") == "1";

  const std::string real = real_path(dir);
  if (const auto number = attribute(dir + "/partition"); !number.empty()) {
    d.kind = block_kind::partition;
    d.partition = to_number<std::uint32_t>(number).value_or(0);
    // A partition's directory sits in its disk's.
    const auto slash = real.rfind('/');
    if (slash != std::string::npos && slash > 0) {
      const auto parent = real.substr(0, slash);
      d.parents.push_back(parent.substr(parent.rfind('/') + 1));
    }
    return d;
  }
  d.parents = entries(dir + "/slaves");
  if (exists(dir + "/dm")) {
    d.alias = attribute(dir + "/dm/name");
    const auto uuid = attribute(dir + "/dm/uuid");
    d.kind = uuid.starts_with("LVM-")     ? block_kind::lvm
             : uuid.starts_with("CRYPT-") ? block_kind::crypt
                                          : block_kind::dm;
  } else if (exists(dir + "/md")) {
    d.kind = block_kind::md;
  } else if (exists(dir + "/loop")) {
    d.kind = block_kind::loop;
    d.alias = attribute(dir + "/loop/backing_file");
  } else if (d.parents.empty()) {
    d.kind = block_kind::disk;
    identify_disk(dir, real, sys_root, d.identity);
  } else {
    d.kind = block_kind::dm;  // stacked on others by a driver we do not know: not a disk
  }
  return d;
}

const block_device* by_name(const std::vector<block_device>& devices, std::string_view name) {
  const auto it = std::find_if(devices.begin(), devices.end(),
                               [&](const block_device& d) { return d.name == name; });
  return it == devices.end() ? nullptr : &*it;
}

}  // namespace

std::string_view kind_name(block_kind k) noexcept {
  switch (k) {
    case block_kind::disk:
      return "disk";
    case block_kind::partition:
      return "partition";
    case block_kind::lvm:
      return "lvm";
    case block_kind::crypt:
      return "crypt";
    case block_kind::dm:
      return "dm";
    case block_kind::md:
      return "md";
    case block_kind::loop:
      return "loop";
  }
  return "disk";
}

std::string parse_vpd_serial(std::string_view page) {
  if (page.size() < 4 || static_cast<unsigned char>(page[1]) != 0x80) return {};
  const std::size_t length = (static_cast<std::size_t>(static_cast<unsigned char>(page[2])) << 8) |
                             static_cast<unsigned char>(page[3]);
  auto serial = page.substr(4, std::min(length, page.size() - 4));
  while (!serial.empty() && (serial.back() == ' ' || serial.back() == '\0'))
    serial.remove_suffix(1);
  while (!serial.empty() && serial.front() == ' ') serial.remove_prefix(1);
  return std::string(serial.substr(0, max_attribute_bytes));
}

std::vector<block_device> read_block_devices(const std::string& sys_root, std::size_t limit) {
  std::vector<block_device> out;
  for (const auto& name : entries(sys_root + "/class/block")) {
    if (out.size() >= limit) break;
    if (name.starts_with("ram") || name.starts_with("zram")) continue;  // memory, not storage
    if (auto d = read_device(sys_root, name)) out.push_back(std::move(*d));
  }
  return out;
}

const block_device* find_block_device(const std::vector<block_device>& devices, std::uint32_t major,
                                      std::uint32_t minor) {
  const auto it = std::find_if(devices.begin(), devices.end(), [&](const block_device& d) {
    return d.major == major && d.minor == minor;
  });
  return it == devices.end() ? nullptr : &*it;
}

const block_device* device_of_mount(const std::vector<block_device>& devices,
                                    const mount_entry& mount) {
  if (mount.major != 0) {
    if (const auto* d = find_block_device(devices, mount.major, mount.minor)) return d;
  }
  // /dev is root's (devtmpfs): what a source there names is a device node the kernel made.
  // Not so the source of a FUSE mount, which its user names as they like ("/dev/../home/u/x",
  // "/dev/shm/a-link"): it is never looked at, nor a name with "..", lest the agent follow a
  // user's link into a mount that never answers.
  if (answered_elsewhere(mount.fs_type) || !mount.device.starts_with("/dev/") ||
      !path_components(mount.device)) {
    return nullptr;
  }
  struct stat st {};
  if (::stat(mount.device.c_str(), &st) == 0 && S_ISBLK(st.st_mode)) {
    return find_block_device(devices, major(st.st_rdev), minor(st.st_rdev));
  }
  return nullptr;
}

std::vector<const block_device*> chain_below(const std::vector<block_device>& devices,
                                             const block_device& top) {
  std::vector<const block_device*> chain = {&top};
  // Breadth first; a device reached twice (an md array's members on one disk) is kept once.
  for (std::size_t i = 0; i < chain.size() && chain.size() < max_chain_devices; ++i) {
    for (const auto& p : chain[i]->parents) {
      const auto* d = by_name(devices, p);
      if (d == nullptr || std::find(chain.begin(), chain.end(), d) != chain.end()) continue;
      chain.push_back(d);
      if (chain.size() >= max_chain_devices) break;
    }
  }
  return chain;
}

std::vector<const block_device*> disks_below(const std::vector<block_device>& devices,
                                             const block_device& top) {
  auto chain = chain_below(devices, top);
  std::erase_if(chain, [&](const block_device* d) {
    return std::any_of(d->parents.begin(), d->parents.end(),
                       [&](const std::string& p) { return by_name(devices, p) != nullptr; });
  });
  return chain;
}

common::result<std::vector<std::string>> mounts_on_disks(const std::vector<mount_entry>& mounts,
                                                         const std::vector<block_device>& devices,
                                                         const std::vector<std::string>& serials) {
  using R = common::result<std::vector<std::string>>;
  for (const auto& serial : serials) {
    if (serial.empty()) return R{common::errc::invalid_argument, "a disk serial is empty"};
    if (std::none_of(devices.begin(), devices.end(), [&](const block_device& d) {
          return d.kind == block_kind::disk && d.identity.serial == serial;
        })) {
      return R{common::errc::invalid_argument, "no disk has the serial " + serial};
    }
  }
  std::vector<std::string> out;
  std::vector<std::string> used;  // the serials something was found on
  for (const auto& m : mounts) {
    const auto* top = device_of_mount(devices, m);
    if (top == nullptr) continue;
    bool wanted = false;
    for (const auto* disk : disks_below(devices, *top)) {
      const auto& serial = disk->identity.serial;
      if (serial.empty() || std::find(serials.begin(), serials.end(), serial) == serials.end()) {
        continue;
      }
      wanted = true;
      if (std::find(used.begin(), used.end(), serial) == used.end()) used.push_back(serial);
    }
    if (wanted) out.push_back(m.mount_point);
  }
  for (const auto& serial : serials) {
    if (std::find(used.begin(), used.end(), serial) == used.end()) {
      return R{common::errc::invalid_argument,
               "the disk with the serial " + serial + " holds no writable filesystem"};
    }
  }
  return R{std::move(out)};
}

}  // namespace qxa::guest
