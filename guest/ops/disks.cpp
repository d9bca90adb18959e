// SPDX-License-Identifier: MIT
// disks: the guest's disk filesystems with the chain of block devices beneath each, and every
// block device with its place on the virtual machine (block_devices.hpp).
#include "qxa/common/text.hpp"
#include "qxa/guest/ops/ops.hpp"
#include "qxa/guest/platform/block_devices.hpp"

namespace qxa::guest::ops {

namespace {

using common::to_utf8;

constexpr std::size_t max_filesystems = 256;

void to_proto(const block_device& d, pb::BlockDevice& out) {
  out.set_name(to_utf8(d.name));
  out.set_kind(std::string(kind_name(d.kind)));
  out.set_alias(to_utf8(d.alias));
  out.set_size_bytes(d.size_bytes);
  out.set_read_only(d.read_only);
  out.set_partition(d.partition);
  for (const auto& p : d.parents) out.add_parents(to_utf8(p));
  const auto& id = d.identity;
  out.set_bus(id.bus);
  out.set_pci_path(to_utf8(id.pci_path));
  out.set_scsi_address(to_utf8(id.scsi_address));
  out.set_serial(to_utf8(id.serial));
  out.set_model(to_utf8(id.model));
  out.set_vendor(to_utf8(id.vendor));
  out.set_wwn(to_utf8(id.wwn));
  out.set_nvme_namespace(id.nvme_namespace);
}

}  // namespace

asio::awaitable<pb::Envelope> disks(request_context ctx, pb::Envelope) {
  auto text = read_file(ctx.state.options.freeze.mountinfo);
  if (!text) co_return error_reply(pb::ERROR_CODE_UNAVAILABLE, "cannot read the mount table");
  const auto devices = read_block_devices(ctx.state.options.sys_root);
  pb::Envelope reply;
  auto* r = reply.mutable_disks_reply();
  for (const auto& m : select_disks(parse_mountinfo(*text))) {
    if (static_cast<std::size_t>(r->filesystems_size()) >= max_filesystems) break;
    auto* fs = r->add_filesystems();
    fs->set_mount_point(to_utf8(m.mount_point));
    fs->set_fs_type(to_utf8(m.fs_type));
    fs->set_source(to_utf8(m.device));
    fs->set_read_only(m.read_only);
    if (auto usage = ctx.state.sampler.sources().usage(m.mount_point)) {
      fs->set_total_bytes(usage->total);
      fs->set_used_bytes(usage->used);
      fs->set_available_bytes(usage->available);
    }
    if (const auto* d = device_of_mount(devices, m)) {
      fs->set_device(to_utf8(d->name));
      for (const auto* disk : disks_below(devices, *d)) fs->add_disks(to_utf8(disk->name));
    }
  }
  for (const auto& d : devices) to_proto(d, *r->add_devices());
  co_return reply;
}

}  // namespace qxa::guest::ops
