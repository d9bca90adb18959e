// SPDX-License-Identifier: MIT
#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "qxa/common/log.hpp"
#include "qxa/common/text.hpp"
#include "qxa/guest/ops/ops.hpp"

namespace qxa::guest::ops {

namespace {
// The name is the operation the policy's allow and block lists speak of.
constexpr bool own_deadline = true;
constexpr bool while_frozen = true;
constexpr std::array entries = {
    operation{pb::Envelope::kPing, "ping", &ping, !own_deadline, while_frozen},
    operation{pb::Envelope::kInfoRequest, "info", &info, !own_deadline, while_frozen},
    operation{pb::Envelope::kTelemetryRequest, "telemetry", &telemetry, !own_deadline,
              while_frozen},
    operation{pb::Envelope::kTimeRequest, "time", &time},
    operation{pb::Envelope::kHostnameRequest, "hostname", &hostname},
    operation{pb::Envelope::kUsersRequest, "users", &users, !own_deadline, while_frozen},
    operation{pb::Envelope::kNetworkRequest, "network", &network, !own_deadline, while_frozen},
    operation{pb::Envelope::kExecRequest, "exec", &exec, own_deadline},
    // Jobs touch no file: listed, attached to and killed while frozen too. An attach follows a
    // job for as long as it runs.
    operation{pb::Envelope::kJobsRequest, "job-list", &job_list, !own_deadline, while_frozen},
    operation{pb::Envelope::kAttachRequest, "job-attach", &job_attach, own_deadline, while_frozen},
    operation{pb::Envelope::kKillJobRequest, "job-kill", &job_kill, !own_deadline, while_frozen},
    operation{pb::Envelope::kFileReadRequest, "file-read", &file_read, own_deadline},
    operation{pb::Envelope::kFileWriteOpen, "file-write", &file_write},
    operation{pb::Envelope::kFileWriteChunk, "file-write", &file_write},
    operation{pb::Envelope::kFileWriteClose, "file-write", &file_write},
    operation{pb::Envelope::kFileStatRequest, "file-stat", &file_stat},
    operation{pb::Envelope::kDirListRequest, "file-list", &dir_list},
    operation{pb::Envelope::kMkdirRequest, "file-mkdir", &make_directory},
    operation{pb::Envelope::kRemoveRequest, "file-remove", &remove_path},
    operation{pb::Envelope::kMoveRequest, "file-move", &move_path},
    // The power hooks run before the reply, each bounded by power.hook_timeout: cutting them
    // off at limits.request_timeout would leave a hook's work half done and the action unrun.
    operation{pb::Envelope::kPowerRequest, "power", &power, own_deadline},
    operation{pb::Envelope::kSuspendRequest, "suspend", &suspend, own_deadline},
    operation{pb::Envelope::kFreezeRequest, "freeze", &freeze, own_deadline, while_frozen},
    operation{pb::Envelope::kThawRequest, "thaw", &thaw, own_deadline, while_frozen},
    operation{pb::Envelope::kFreezeStatusRequest, "freeze-status", &freeze_status, !own_deadline,
              while_frozen},
    // Trims take minutes: the request carries its own deadline.
    operation{pb::Envelope::kTrimRequest, "fstrim", &fstrim, own_deadline},
    operation{pb::Envelope::kDisksRequest, "disks", &disks, !own_deadline, while_frozen},
    operation{pb::Envelope::kPasswordRequest, "password", &password},
    operation{pb::Envelope::kSshKeysRequest, "ssh-key", &ssh_keys},
    operation{pb::Envelope::kHotplugRequest, "hotplug", &hotplug},
    // The confirmation writes the upgrade's record: not while frozen either.
    operation{pb::Envelope::kUpgradeRequest, "upgrade", &upgrade},
    operation{pb::Envelope::kUpgradeConfirmRequest, "upgrade", &upgrade},
    operation{pb::Envelope::kUpgradeStatusRequest, "upgrade-status", &upgrade_status, !own_deadline,
              while_frozen},
};
}  // namespace

operation_table table() { return entries; }

const operation* find(pb::Envelope::BodyCase request) { return find_operation(entries, request); }

agent_parts parts() {
  return agent_parts{.operations = entries, .info = &make_info, .telemetry = &telemetry_of};
}

}  // namespace qxa::guest::ops
