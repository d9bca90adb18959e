// SPDX-License-Identifier: MIT
// The host's caps checked against the schema itself: every body of Envelope's oneof, read from the
// compiled-in descriptors, is either capped (filled past every limit, and what is left is
// bounded), bounded by its kind (no text nor list to grow), or a request (never taken from a
// guest). A body added to the schema and not placed fails here, and in how_taken()'s switch.
#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/dynamic_message.h>

#include <catch2/catch.hpp>
#include <memory>
#include <string>

#include "qxa/host/guest_data.hpp"
#include "qxa/proto/descriptor_set.hpp"

namespace gp = google::protobuf;
namespace pb = quantix::agent::v1;
namespace qh = qxa::host;

namespace {

constexpr int over_count = 65'537;          // past the largest count limit (vCPUs: 65,536)
constexpr std::size_t over_bytes = 20'000;  // past the longest text limit (a key: 16 KiB)
constexpr int max_count = 65'536;
constexpr std::size_t max_bytes = 16'384;

struct schema {
  gp::DescriptorPool pool;
  gp::DynamicMessageFactory factory{&pool};
  schema() {
    gp::FileDescriptorSet set;
    const auto bytes = qxa::proto::descriptor_set();
    REQUIRE(set.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())));
    for (const auto& file : set.file()) REQUIRE(pool.BuildFile(file) != nullptr);
  }
};

// Every text past the longest limit and every list past the largest; in a list of messages the
// first is filled so (to `depth`), the others left empty, which keeps the message small enough
// to make while every list is still over its limit.
void fill(gp::Message& m, int depth) {
  const auto* d = m.GetDescriptor();
  const auto* r = m.GetReflection();
  const std::string text(over_bytes, 'a');
  for (int i = 0; i < d->field_count(); ++i) {
    const auto* f = d->field(i);
    using T = gp::FieldDescriptor;
    if (f->is_repeated()) {
      for (int n = 0; n < over_count; ++n) {
        switch (f->cpp_type()) {
          case T::CPPTYPE_STRING:
            r->AddString(&m, f, n == 0 ? text : "a");
            break;
          case T::CPPTYPE_MESSAGE: {
            auto* sub = r->AddMessage(&m, f);
            if (n == 0 && depth > 0) fill(*sub, depth - 1);
            break;
          }
          case T::CPPTYPE_ENUM:
            r->AddEnumValue(&m, f, 1);
            break;
          case T::CPPTYPE_BOOL:
            r->AddBool(&m, f, true);
            break;
          case T::CPPTYPE_DOUBLE:
            r->AddDouble(&m, f, 1);
            break;
          case T::CPPTYPE_FLOAT:
            r->AddFloat(&m, f, 1);
            break;
          case T::CPPTYPE_INT32:
            r->AddInt32(&m, f, 1);
            break;
          case T::CPPTYPE_INT64:
            r->AddInt64(&m, f, 1);
            break;
          case T::CPPTYPE_UINT32:
            r->AddUInt32(&m, f, 1);
            break;
          case T::CPPTYPE_UINT64:
            r->AddUInt64(&m, f, 1);
            break;
        }
      }
    } else if (f->cpp_type() == T::CPPTYPE_STRING) {
      r->SetString(&m, f, text);
    } else if (f->cpp_type() == T::CPPTYPE_MESSAGE && depth > 0) {
      fill(*r->MutableMessage(&m, f), depth - 1);
    }
  }
}

// The first text or list of `m` over the bounds, by its path; empty when there is none.
std::string over_bounds(const gp::Message& m, const std::string& at) {
  const auto* d = m.GetDescriptor();
  const auto* r = m.GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const auto* f = d->field(i);
    const std::string path = at + "." + f->name();
    if (f->is_repeated()) {
      const int n = r->FieldSize(m, f);
      if (n > max_count) return path + ": " + std::to_string(n) + " entries";
      for (int k = 0; k < n; ++k) {
        if (f->cpp_type() == gp::FieldDescriptor::CPPTYPE_STRING &&
            r->GetRepeatedString(m, f, k).size() > max_bytes) {
          return path + ": an entry of " + std::to_string(r->GetRepeatedString(m, f, k).size()) +
                 " bytes";
        }
        if (f->cpp_type() == gp::FieldDescriptor::CPPTYPE_MESSAGE) {
          if (auto why = over_bounds(r->GetRepeatedMessage(m, f, k), path); !why.empty()) {
            return why;
          }
        }
      }
    } else if (f->cpp_type() == gp::FieldDescriptor::CPPTYPE_STRING &&
               r->GetString(m, f).size() > max_bytes) {
      return path + ": " + std::to_string(r->GetString(m, f).size()) + " bytes";
    } else if (f->cpp_type() == gp::FieldDescriptor::CPPTYPE_MESSAGE && r->HasField(m, f)) {
      if (auto why = over_bounds(r->GetMessage(m, f), path); !why.empty()) return why;
    }
  }
  return {};
}

// A text or a list anywhere in `d` (to `depth`): what a bounded body may not have.
std::string growable(const gp::Descriptor& d, const std::string& at, int depth) {
  for (int i = 0; i < d.field_count(); ++i) {
    const auto* f = d.field(i);
    const std::string path = at + "." + f->name();
    if (f->is_repeated()) return path + " is a list";
    if (f->type() == gp::FieldDescriptor::TYPE_STRING) return path + " is a text";
    if (f->cpp_type() == gp::FieldDescriptor::CPPTYPE_MESSAGE && depth > 0) {
      if (auto why = growable(*f->message_type(), path, depth - 1); !why.empty()) return why;
    }
  }
  return {};
}

}  // namespace

TEST_CASE(
    "every body of the schema is capped, bounded by its kind, or a request the host never takes "
    "from a guest, and each capped one stays within bounds when a guest sends it past every "
    "limit",
    "[host][hostile][schema]") {
  static schema s;
  const auto* envelope = s.pool.FindMessageTypeByName("quantix.agent.v1.Envelope");
  REQUIRE(envelope != nullptr);
  const auto* body = envelope->FindOneofByName("body");
  REQUIRE(body != nullptr);
  REQUIRE(body->field_count() > 60);
  int capped = 0, bounded = 0, requests = 0;
  for (int i = 0; i < body->field_count(); ++i) {
    const auto* field = body->field(i);
    const auto kind = qh::how_taken(static_cast<pb::Envelope::BodyCase>(field->number()));
    INFO(field->name() << " (" << field->message_type()->name() << ")");
    // What the host sends: requests, and the three messages of an upload.
    const bool asks =
        field->name().ends_with("_request") ||
        (field->name().starts_with("file_write_") && field->name() != "file_write_reply");
    switch (kind) {
      case qh::guest_body::not_taken: {
        ++requests;
        pb::Envelope e;
        std::unique_ptr<gp::Message> m(s.factory.GetPrototype(envelope)->New());
        m->GetReflection()->MutableMessage(m.get(), field);
        REQUIRE(e.ParseFromString(m->SerializeAsString()));
        CHECK(static_cast<int>(e.body_case()) == field->number());
        CHECK_FALSE(qh::cap_guest_message(e).empty());
        CHECK(e.has_error());
        break;
      }
      case qh::guest_body::bounded:
        ++bounded;
        CHECK_FALSE(asks);
        CHECK(growable(*field->message_type(), field->name(), 3).empty());
        break;
      case qh::guest_body::capped: {
        ++capped;
        CHECK_FALSE(asks);
        std::unique_ptr<gp::Message> m(s.factory.GetPrototype(envelope)->New());
        fill(*m->GetReflection()->MutableMessage(m.get(), field), 4);
        pb::Envelope e;
        REQUIRE(e.ParseFromString(m->SerializeAsString()));
        REQUIRE(static_cast<int>(e.body_case()) == field->number());
        // Cut, unless it has nothing to cut (an empty reply).
        CHECK(qh::cap_guest_message(e).empty() == (field->message_type()->field_count() == 0));
        // Read back through the schema, so that every field is looked at, known to the cap
        // or not.
        m->Clear();
        REQUIRE(m->ParseFromString(e.SerializeAsString()));
        const auto why = over_bounds(*m, "");
        INFO(why);
        CHECK(why.empty());
        CHECK(e.ByteSizeLong() < 16u << 20);
        break;
      }
    }
  }
  CHECK(capped + bounded + requests == body->field_count());
  CHECK(capped >= 20);
  CHECK(requests >= 30);
}
