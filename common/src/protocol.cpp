#include "taskvent/protocol.hpp"

#include <msgpack.hpp>

#include <algorithm>
#include <cstring>
#include <type_traits>

namespace taskvent::protocol {
namespace {

constexpr char magic0 = 'T';
constexpr char magic1 = 'V';

// ---- encoding -------------------------------------------------------------------------

/// A msgpack output buffer that appends to a std::string, so the body needs no extra copy.
struct string_buffer {
    std::string& out;
    void write(const char* data, std::size_t size) { out.append(data, size); }
};

using packer = msgpack::packer<string_buffer>;

void pack_str(packer& pk, std::string_view s) {
    pk.pack_str(static_cast<std::uint32_t>(s.size()));
    pk.pack_str_body(s.data(), static_cast<std::uint32_t>(s.size()));
}

void pack_bin(packer& pk, std::string_view s) {
    pk.pack_bin(static_cast<std::uint32_t>(s.size()));
    pk.pack_bin_body(s.data(), static_cast<std::uint32_t>(s.size()));
}

void pack_lease_refs(packer& pk, const std::vector<lease_ref>& refs) {
    pk.pack_array(static_cast<std::uint32_t>(refs.size() * 2));
    for (const auto& r : refs) {
        pk.pack_uint64(r.id.value);
        pk.pack_uint32(r.attempt);
    }
}

void pack_body(packer& pk, const hello& m) {
    pk.pack_array(4);
    pack_str(pk, m.name);
    pk.pack_uint32(m.concurrency);
    pk.pack_uint32(m.credit);
    pk.pack_uint32(m.pid);
}

void pack_body(packer& pk, const welcome& m) {
    pk.pack_array(3);
    pk.pack_uint32(m.heartbeat_interval_ms);
    pk.pack_uint32(m.heartbeat_liveness);
    pk.pack_uint32(m.worker);
}

void pack_body(packer& pk, const report& m) {
    pk.pack_array(5);
    pk.pack_uint32(m.credit);
    pack_lease_refs(pk, m.started);
    pack_lease_refs(pk, m.done);
    pk.pack_array(static_cast<std::uint32_t>(m.failed.size()));
    for (const auto& f : m.failed) {
        pk.pack_array(4);
        pk.pack_uint64(f.id.value);
        pk.pack_uint32(f.attempt);
        if (f.retryable) {
            pk.pack_true();
        } else {
            pk.pack_false();
        }
        pack_str(pk, f.reason);
    }
    pack_lease_refs(pk, m.returned);
}

template <typename Item>
void pack_task(packer& pk, const Item& t) {
    pk.pack_array(5);
    pk.pack_uint64(t.id.value);
    pk.pack_uint32(t.attempt);
    pack_str(pk, t.key);
    pack_bin(pk, t.payload);
    pk.pack_int64(t.submitted_ns);
}

void pack_body(packer& pk, const tasks& m) {
    pk.pack_array(static_cast<std::uint32_t>(m.items.size()));
    for (const auto& t : m.items) {
        pack_task(pk, t);
    }
}

void pack_body(packer& pk, const results& m) {
    pk.pack_array(static_cast<std::uint32_t>(m.items.size()));
    for (const auto& r : m.items) {
        pk.pack_array(8);
        pk.pack_uint64(r.id.value);
        pk.pack_uint32(r.attempt);
        pk.pack_uint8(static_cast<std::uint8_t>(r.status));
        pack_str(pk, r.key);
        pack_bin(pk, r.body);
        pk.pack_int64(r.submitted_ns);
        pk.pack_int64(r.finished_ns);
        pack_str(pk, r.worker);
    }
}

void pack_body(packer& pk, const confirm& m) {
    pk.pack_array(static_cast<std::uint32_t>(m.ids.size()));
    for (auto id : m.ids) {
        pk.pack_uint64(id.value);
    }
}

void pack_body(packer& pk, const submit& m) {
    pk.pack_array(3);
    pk.pack_uint64(m.session);
    pk.pack_uint64(m.batch);
    pk.pack_array(static_cast<std::uint32_t>(m.items.size() * 2));
    for (const auto& item : m.items) {
        pack_str(pk, item.key);
        pack_bin(pk, item.payload);
    }
}

void pack_body(packer& pk, const submit_ack& m) {
    pk.pack_array(3);
    pk.pack_uint64(m.batch);
    pk.pack_array(static_cast<std::uint32_t>(m.ids.size()));
    for (auto id : m.ids) {
        pk.pack_uint64(id.value);
    }
    pk.pack_uint32(m.duplicates);
}

void pack_body(packer& pk, const status_request& m) {
    pk.pack_array(1);
    pk.pack_uint64(m.session);
}

void pack_body(packer& pk, const status_reply& m) {
    pk.pack_array(1);
    pack_str(pk, m.json);
}

void pack_body(packer& pk, const sink_hello& m) {
    pk.pack_array(1);
    pack_str(pk, m.name);
}

void pack_body(packer& pk, const heartbeat&) {
    pk.pack_array(0);
}
void pack_body(packer& pk, const bye&) {
    pk.pack_array(0);
}

void pack_body(packer& pk, const reset& m) {
    pk.pack_array(1);
    pack_str(pk, m.reason);
}

void pack_body(packer& pk, const error& m) {
    pk.pack_array(2);
    pk.pack_uint32(m.code);
    pack_str(pk, m.text);
}

// ---- decoding -------------------------------------------------------------------------

/// Thrown only inside this file, when a body parses as msgpack but has the wrong shape.
struct bad_shape {};

std::uint64_t as_u64(const msgpack::object& o) {
    if (o.type != msgpack::type::POSITIVE_INTEGER) {
        throw bad_shape{};
    }
    return o.via.u64;
}

std::uint32_t as_u32(const msgpack::object& o) {
    const auto v = as_u64(o);
    if (v > UINT32_MAX) {
        throw bad_shape{};
    }
    return static_cast<std::uint32_t>(v);
}

std::int64_t as_i64(const msgpack::object& o) {
    if (o.type == msgpack::type::POSITIVE_INTEGER) {
        if (o.via.u64 > static_cast<std::uint64_t>(INT64_MAX)) {
            throw bad_shape{};
        }
        return static_cast<std::int64_t>(o.via.u64);
    }
    if (o.type == msgpack::type::NEGATIVE_INTEGER) {
        return o.via.i64;
    }
    throw bad_shape{};
}

bool as_bool(const msgpack::object& o) {
    if (o.type != msgpack::type::BOOLEAN) {
        throw bad_shape{};
    }
    return o.via.boolean;
}

std::string as_bytes(const msgpack::object& o) {
    if (o.type == msgpack::type::STR) {
        return {o.via.str.ptr, o.via.str.size};
    }
    if (o.type == msgpack::type::BIN) {
        return {o.via.bin.ptr, o.via.bin.size};
    }
    throw bad_shape{};
}

std::span<const msgpack::object> as_array(const msgpack::object& o) {
    if (o.type != msgpack::type::ARRAY) {
        throw bad_shape{};
    }
    return {o.via.array.ptr, o.via.array.size};
}

std::span<const msgpack::object> as_array(const msgpack::object& o, std::size_t n) {
    auto a = as_array(o);
    if (a.size() != n) {
        throw bad_shape{};
    }
    return a;
}

std::vector<lease_ref> as_lease_refs(const msgpack::object& o) {
    auto a = as_array(o);
    if (a.size() % 2 != 0) {
        throw bad_shape{};
    }
    std::vector<lease_ref> out;
    out.reserve(a.size() / 2);
    for (std::size_t i = 0; i < a.size(); i += 2) {
        out.push_back({task_id{as_u64(a[i])}, as_u32(a[i + 1])});
    }
    return out;
}

std::vector<task_id> as_ids(const msgpack::object& o) {
    auto a = as_array(o);
    std::vector<task_id> out;
    out.reserve(a.size());
    for (const auto& e : a) {
        out.push_back(task_id{as_u64(e)});
    }
    return out;
}

message decode_body(msg_type type, const msgpack::object& root) {
    switch (type) {
        case msg_type::hello: {
            auto a = as_array(root, 4);
            return hello{as_bytes(a[0]), as_u32(a[1]), as_u32(a[2]), as_u32(a[3])};
        }
        case msg_type::welcome: {
            auto a = as_array(root, 3);
            return welcome{as_u32(a[0]), as_u32(a[1]), as_u32(a[2])};
        }
        case msg_type::report: {
            auto a = as_array(root, 5);
            report m;
            m.credit = as_u32(a[0]);
            m.started = as_lease_refs(a[1]);
            m.done = as_lease_refs(a[2]);
            auto failed = as_array(a[3]);
            m.failed.reserve(failed.size());
            for (const auto& f : failed) {
                auto fa = as_array(f, 4);
                m.failed.push_back(
                    {task_id{as_u64(fa[0])}, as_u32(fa[1]), as_bool(fa[2]), as_bytes(fa[3])});
            }
            m.returned = as_lease_refs(a[4]);
            return m;
        }
        case msg_type::tasks: {
            auto a = as_array(root);
            tasks m;
            m.items.reserve(a.size());
            for (const auto& t : a) {
                auto ta = as_array(t, 5);
                m.items.push_back({task_id{as_u64(ta[0])},
                                   as_u32(ta[1]),
                                   as_bytes(ta[2]),
                                   as_bytes(ta[3]),
                                   as_i64(ta[4])});
            }
            return m;
        }
        case msg_type::results: {
            auto a = as_array(root);
            results m;
            m.items.reserve(a.size());
            for (const auto& r : a) {
                auto ra = as_array(r, 8);
                const auto status = as_u32(ra[2]);
                if (status > static_cast<std::uint32_t>(outcome::dead)) {
                    throw bad_shape{};
                }
                m.items.push_back({task_id{as_u64(ra[0])},
                                   as_u32(ra[1]),
                                   static_cast<outcome>(status),
                                   as_bytes(ra[3]),
                                   as_bytes(ra[4]),
                                   as_i64(ra[5]),
                                   as_i64(ra[6]),
                                   as_bytes(ra[7])});
            }
            return m;
        }
        case msg_type::confirm:
            return confirm{as_ids(root)};
        case msg_type::submit: {
            auto a = as_array(root, 3);
            submit m;
            m.session = as_u64(a[0]);
            m.batch = as_u64(a[1]);
            auto items = as_array(a[2]);
            if (items.size() % 2 != 0) {
                throw bad_shape{};
            }
            m.items.reserve(items.size() / 2);
            for (std::size_t i = 0; i < items.size(); i += 2) {
                m.items.push_back({as_bytes(items[i]), as_bytes(items[i + 1])});
            }
            return m;
        }
        case msg_type::submit_ack: {
            auto a = as_array(root, 3);
            return submit_ack{as_u64(a[0]), as_ids(a[1]), as_u32(a[2])};
        }
        case msg_type::status_request: {
            auto a = as_array(root, 1);
            return status_request{as_u64(a[0])};
        }
        case msg_type::status_reply: {
            auto a = as_array(root, 1);
            return status_reply{as_bytes(a[0])};
        }
        case msg_type::sink_hello: {
            auto a = as_array(root, 1);
            return sink_hello{as_bytes(a[0])};
        }
        case msg_type::heartbeat:
            as_array(root, 0);
            return heartbeat{};
        case msg_type::bye:
            as_array(root, 0);
            return bye{};
        case msg_type::reset: {
            auto a = as_array(root, 1);
            return reset{as_bytes(a[0])};
        }
        case msg_type::error: {
            auto a = as_array(root, 2);
            return error{as_u32(a[0]), as_bytes(a[1])};
        }
    }
    throw bad_shape{};
}

bool keep_references(msgpack::type::object_type, std::size_t, void*) {
    // Strings and binaries point into the frame, which outlives decoding; no zone copy.
    return true;
}

template <typename T>
struct tag_of;
#define TASKVENT_TAG(T, V) \
    template <>            \
    struct tag_of<T> : std::integral_constant<msg_type, msg_type::V> {}
TASKVENT_TAG(hello, hello);
TASKVENT_TAG(welcome, welcome);
TASKVENT_TAG(report, report);
TASKVENT_TAG(tasks, tasks);
TASKVENT_TAG(results, results);
TASKVENT_TAG(confirm, confirm);
TASKVENT_TAG(submit, submit);
TASKVENT_TAG(submit_ack, submit_ack);
TASKVENT_TAG(status_request, status_request);
TASKVENT_TAG(status_reply, status_reply);
TASKVENT_TAG(sink_hello, sink_hello);
TASKVENT_TAG(heartbeat, heartbeat);
TASKVENT_TAG(bye, bye);
TASKVENT_TAG(reset, reset);
TASKVENT_TAG(error, error);
#undef TASKVENT_TAG

}  // namespace

std::string_view to_string(msg_type t) noexcept {
    switch (t) {
        case msg_type::hello:
            return "hello";
        case msg_type::welcome:
            return "welcome";
        case msg_type::report:
            return "report";
        case msg_type::tasks:
            return "tasks";
        case msg_type::results:
            return "results";
        case msg_type::confirm:
            return "confirm";
        case msg_type::submit:
            return "submit";
        case msg_type::submit_ack:
            return "submit_ack";
        case msg_type::status_request:
            return "status_request";
        case msg_type::status_reply:
            return "status_reply";
        case msg_type::sink_hello:
            return "sink_hello";
        case msg_type::heartbeat:
            return "heartbeat";
        case msg_type::bye:
            return "bye";
        case msg_type::reset:
            return "reset";
        case msg_type::error:
            return "error";
    }
    return "unknown";
}

std::string_view to_string(outcome o) noexcept {
    switch (o) {
        case outcome::ok:
            return "ok";
        case outcome::failed:
            return "failed";
        case outcome::dead:
            return "dead";
    }
    return "unknown";
}

msg_type type_of(const message& m) noexcept {
    return std::visit([](const auto& v) { return tag_of<std::decay_t<decltype(v)>>::value; }, m);
}

void encode_into(const message& m, std::string& header, std::string& body) {
    header.assign({magic0, magic1, static_cast<char>(version), static_cast<char>(type_of(m))});
    body.clear();
    string_buffer buf{body};
    packer pk(buf);
    std::visit([&](const auto& v) { pack_body(pk, v); }, m);
}

void encode_tasks(std::span<const task_view> items, std::string& header, std::string& body) {
    header.assign({magic0, magic1, static_cast<char>(version), static_cast<char>(msg_type::tasks)});
    body.clear();
    string_buffer buf{body};
    packer pk(buf);
    pk.pack_array(static_cast<std::uint32_t>(items.size()));
    for (const auto& t : items) {
        pack_task(pk, t);
    }
}

frames encode(const message& m) {
    frames f;
    encode_into(m, f.header, f.body);
    return f;
}

result<message> decode(std::span<const std::byte> header,
                       std::span<const std::byte> body,
                       const decode_limits& limits) {
    if (header.size() != header_size || static_cast<char>(header[0]) != magic0 ||
        static_cast<char>(header[1]) != magic1) {
        return errc::bad_header;
    }
    if (static_cast<std::uint8_t>(header[2]) != version) {
        return errc::wrong_version;
    }
    const auto raw_type = static_cast<std::uint8_t>(header[3]);
    if (raw_type < static_cast<std::uint8_t>(msg_type::hello) ||
        raw_type > static_cast<std::uint8_t>(msg_type::error)) {
        return errc::unknown_type;
    }

    // Every element takes at least one byte of input, so no honest body declares more
    // elements than it has bytes. Capping the limits by the body size keeps what msgpack-c
    // allocates up front proportional to the frame, whatever its headers claim.
    const std::size_t n = body.size();
    const msgpack::unpack_limit limit(std::min(limits.array, n),
                                      std::min(limits.map, n / 2),
                                      std::min(limits.str, n),
                                      std::min(limits.bin, n),
                                      limits.ext,
                                      limits.depth);
    try {
        std::size_t offset = 0;
        bool referenced = false;
        auto handle = msgpack::unpack(reinterpret_cast<const char*>(body.data()),
                                      n,
                                      offset,
                                      referenced,
                                      keep_references,
                                      nullptr,
                                      limit);
        if (offset != n) {
            return errc::malformed_body;
        }
        return decode_body(static_cast<msg_type>(raw_type), handle.get());
    } catch (const msgpack::size_overflow&) {  // also depth_size_overflow
        return errc::limit_exceeded;
    } catch (const bad_shape&) {
        return errc::malformed_body;
    } catch (const std::exception&) {
        // parse_error, insufficient_bytes, type_error, bad_alloc from a hostile frame.
        return errc::malformed_body;
    }
}

}  // namespace taskvent::protocol
