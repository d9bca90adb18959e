// SPDX-License-Identifier: MIT
// The guest's block devices as the hypervisor sees them, read from sysfs: each device's kind
// (disk, partition, LVM volume, LUKS mapping, other device-mapper target, md array, loop), the
// devices directly beneath it, and for a disk its bus address (the PCI functions down to its
// controller, a SCSI H:C:T:L), serial, model and WWN: what maps a guest's filesystem to the
// virtual disk the host gave it (qemu-ga's guest-get-fsinfo and guest-get-disks), and what
// lets a freeze name disks by serial.
//
// sysfs is the kernel's: its names are not a user's. The reading is still bounded (a count of
// devices, a depth of chain, a length per attribute) so that a guest with thousands of devices
// answers with a bounded reply.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "qxa/common/error.hpp"
#include "qxa/guest/platform/system_info.hpp"

namespace qxa::guest {

/// Devices listed at most, and devices in one chain at most.
inline constexpr std::size_t max_block_devices = 256;
inline constexpr std::size_t max_chain_devices = 64;

enum class block_kind { disk, partition, lvm, crypt, dm, md, loop };
std::string_view kind_name(block_kind k) noexcept;

/// Where a disk sits on the virtual machine, and what it says it is.
struct disk_identity {
  std::string bus;           ///< virtio, scsi, nvme, ata, usb, mmc, xen; empty when unknown
  std::string pci_path;      ///< PCI functions from the root to the controller, '/'-joined
  std::string scsi_address;  ///< "host:channel:target:lun" on a SCSI (or ATA) bus
  std::string serial, model, vendor, wwn;
  std::uint32_t nvme_namespace = 0;
};

struct block_device {
  std::string name;  ///< the kernel's name: vda, vda1, dm-0, md0
  block_kind kind = block_kind::disk;
  /// The device-mapper name (vg-lv, luks-...) or a loop device's backing file.
  std::string alias;
  std::uint32_t major = 0, minor = 0;
  std::uint64_t size_bytes = 0;
  bool read_only = false;
  std::uint32_t partition = 0;       ///< a partition's number
  std::vector<std::string> parents;  ///< the devices directly beneath: a partition's disk, a
                                     ///< mapping's or array's members
  disk_identity identity;            ///< disks only
};

/// The block devices under `sys_root`/class/block with a size, by name (ram disks left out),
/// at most `limit` of them.
std::vector<block_device> read_block_devices(const std::string& sys_root,
                                             std::size_t limit = max_block_devices);

/// The device with this number, or nullptr.
const block_device* find_block_device(const std::vector<block_device>& devices, std::uint32_t major,
                                      std::uint32_t minor);

/// The device a mount lives on: by the mount's device number, else (btrfs and others report
/// an anonymous one) by its source when that is a block device under /dev. nullptr for none.
const block_device* device_of_mount(const std::vector<block_device>& devices,
                                    const mount_entry& mount);

/// `top` and everything beneath it, `top` first, each device once, at most max_chain_devices.
std::vector<const block_device*> chain_below(const std::vector<block_device>& devices,
                                             const block_device& top);

/// The disks at the bottom of `top`'s chain (devices with nothing beneath them).
std::vector<const block_device*> disks_below(const std::vector<block_device>& devices,
                                             const block_device& top);

/// The mount points among `mounts` that live on a disk with one of `serials`, in mount order.
/// An error (invalid_argument) names a serial no disk has, or one whose disk holds none of
/// `mounts`: a host that snapshots that disk must not think its filesystems were frozen.
common::result<std::vector<std::string>> mounts_on_disks(const std::vector<mount_entry>& mounts,
                                                         const std::vector<block_device>& devices,
                                                         const std::vector<std::string>& serials);

/// The payload of a SCSI Unit Serial Number VPD page (0x80), as sysfs's vpd_pg80 holds it:
/// empty when the page is malformed.
std::string parse_vpd_serial(std::string_view page);

}  // namespace qxa::guest
