// The taskvent wire protocol: every message that crosses a socket, and its codec.
//
// A message is ZeroMQ frames [routing id...] [header] [body]. The header is four bytes,
// 'T' 'V' <version> <type>; the body is one msgpack array whose shape the type decides.
// Every message carries batches so that the per-task cost is a few hundred nanoseconds.
//
//   client         ventilator               worker                 sink
//     | --submit--->  |                        |                      |
//     | <-submit_ack- |                        |                      |
//     |               | <-------hello--------- |                      |
//     |               | -------welcome-------> |                      |
//     |               | -------tasks---------> |   (within credit)    |
//     |               | <--report(started)---- |                      |
//     |               |                        | -------results-----> |  (fsync)
//     |               | <--report(done,credit) |                      |
//     |               | <------------------confirm------------------- |
//     |               | ---results(dead)----------------------------> |
//     |               | <--heartbeat / report, both ways, every interval |
//
// Decoders run with msgpack unpack limits (see decode_limits) so that a five-byte frame
// cannot ask for gigabytes; anything malformed comes back as an error value.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "taskvent/error.hpp"
#include "taskvent/ids.hpp"

namespace taskvent::protocol {

inline constexpr std::uint8_t version = 1;
inline constexpr std::size_t header_size = 4;

/// Largest frame any taskvent socket accepts (ZMQ_MAXMSGSIZE). A batch of tasks is bounded
/// by the sender's batch size; this bound only stops a hostile peer.
inline constexpr std::int64_t max_frame_bytes = 64LL * 1024 * 1024;
/// Largest payload a single task may carry.
inline constexpr std::size_t max_payload_bytes = 16 * 1024 * 1024;

enum class msg_type : std::uint8_t {
    hello = 1,       ///< worker -> ventilator: register, with initial credit
    welcome = 2,     ///< ventilator -> worker: registration accepted, heartbeat settings
    report = 3,      ///< worker -> ventilator: started/done/failed/returned ids and new credit
    tasks = 4,       ///< ventilator -> worker: a batch of leased tasks
    results = 5,     ///< worker or ventilator -> sink: final outcomes
    confirm = 6,     ///< sink -> ventilator: ids made durable in the output
    submit = 7,      ///< client -> ventilator: a batch of new tasks
    submit_ack = 8,  ///< ventilator -> client: ids assigned to a submitted batch
    status_request = 9,
    status_reply = 10,
    sink_hello = 11,  ///< sink -> ventilator: "I am the sink; send dead records here"
    heartbeat = 12,   ///< either way: I am alive
    bye = 13,         ///< worker -> ventilator: drained, leaving
    reset = 14,       ///< ventilator -> worker: unknown registration, say hello again
    error = 15,       ///< any -> peer: the message you sent was refused, and why
};

std::string_view to_string(msg_type t) noexcept;

/// A task as leased to a worker.
struct task_item {
    task_id id;
    std::uint32_t attempt = 0;  ///< delivery count, 1 for the first lease
    std::string key;            ///< idempotency key, empty when none was given
    std::string payload;
    std::int64_t submitted_ns = 0;  ///< wall clock at acceptance, for end-to-end latency

    friend bool operator==(const task_item&, const task_item&) = default;
};

/// A task to lease, as views into the sender's own storage: the hot path encodes leases
/// from these without copying payloads. Same wire form as task_item.
struct task_view {
    task_id id;
    std::uint32_t attempt = 0;
    std::string_view key;
    std::string_view payload;
    std::int64_t submitted_ns = 0;
};

/// Names one lease: the attempt tells a late ack from an old lease apart from a current one.
struct lease_ref {
    task_id id;
    std::uint32_t attempt = 0;

    friend bool operator==(const lease_ref&, const lease_ref&) = default;
};

struct failure {
    task_id id;
    std::uint32_t attempt = 0;
    bool retryable = true;
    std::string reason;

    friend bool operator==(const failure&, const failure&) = default;
};

enum class outcome : std::uint8_t { ok = 0, failed = 1, dead = 2 };
std::string_view to_string(outcome o) noexcept;

/// A final outcome on its way to the sink.
struct result_item {
    task_id id;
    std::uint32_t attempt = 0;
    outcome status = outcome::ok;
    std::string key;
    std::string body;  ///< the handler's output for ok, the error text otherwise
    std::int64_t submitted_ns = 0;
    std::int64_t finished_ns = 0;
    std::string worker;  ///< the worker's name, or "ventilator" for dead records

    friend bool operator==(const result_item&, const result_item&) = default;
};

struct submit_item {
    std::string key;  ///< empty: no idempotency key
    std::string payload;

    friend bool operator==(const submit_item&, const submit_item&) = default;
};

struct hello {
    std::string name;
    std::uint32_t concurrency = 0;
    std::uint32_t credit = 0;  ///< how many tasks the ventilator may send at once
    std::uint32_t pid = 0;

    friend bool operator==(const hello&, const hello&) = default;
};

struct welcome {
    std::uint32_t heartbeat_interval_ms = 0;
    std::uint32_t heartbeat_liveness = 0;
    std::uint32_t worker = 0;  ///< registration number, for logs

    friend bool operator==(const welcome&, const welcome&) = default;
};

struct report {
    std::uint32_t credit = 0;  ///< additional credit granted by this report
    std::vector<lease_ref> started;
    std::vector<lease_ref> done;      ///< result (ok or final failure) pushed to the sink
    std::vector<failure> failed;      ///< failed; the ventilator decides retry or dead
    std::vector<lease_ref> returned;  ///< handed back unstarted (drain)

    friend bool operator==(const report&, const report&) = default;
};

struct tasks {
    std::vector<task_item> items;
    friend bool operator==(const tasks&, const tasks&) = default;
};

struct results {
    std::vector<result_item> items;
    friend bool operator==(const results&, const results&) = default;
};

struct confirm {
    std::vector<task_id> ids;
    friend bool operator==(const confirm&, const confirm&) = default;
};

struct submit {
    std::uint64_t session = 0;  ///< random per client run; lets --wait follow its own tasks
    std::uint64_t batch = 0;    ///< echoed in the ack
    std::vector<submit_item> items;
    friend bool operator==(const submit&, const submit&) = default;
};

struct submit_ack {
    std::uint64_t batch = 0;
    std::vector<task_id> ids;      ///< one per submitted item, in order
    std::uint32_t duplicates = 0;  ///< items whose key was already accepted (existing id given)
    friend bool operator==(const submit_ack&, const submit_ack&) = default;
};

struct status_request {
    std::uint64_t session = 0;  ///< 0: no per-session figures wanted
    friend bool operator==(const status_request&, const status_request&) = default;
};

struct status_reply {
    std::string json;  ///< the ventilator's view, a JSON object (see ventilator/README.md)
    friend bool operator==(const status_reply&, const status_reply&) = default;
};

struct sink_hello {
    std::string name;
    friend bool operator==(const sink_hello&, const sink_hello&) = default;
};

struct heartbeat {
    friend bool operator==(const heartbeat&, const heartbeat&) = default;
};

struct bye {
    friend bool operator==(const bye&, const bye&) = default;
};

struct reset {
    std::string reason;
    friend bool operator==(const reset&, const reset&) = default;
};

struct error {
    std::uint32_t code = 0;  ///< a taskvent::errc value
    std::string text;
    friend bool operator==(const error&, const error&) = default;
};

using message = std::variant<hello,
                             welcome,
                             report,
                             tasks,
                             results,
                             confirm,
                             submit,
                             submit_ack,
                             status_request,
                             status_reply,
                             sink_hello,
                             heartbeat,
                             bye,
                             reset,
                             error>;

msg_type type_of(const message& m) noexcept;

/// The limits every decoder runs with. Generous for real batches, tight enough that no
/// frame can make the decoder allocate more than a small multiple of its own size.
struct decode_limits {
    std::size_t array = 1u << 20;
    std::size_t map = 64;
    std::size_t str = max_payload_bytes;
    std::size_t bin = max_payload_bytes;
    std::size_t ext = 0;
    std::size_t depth = 8;
};

/// An encoded message: the header frame and the body frame.
struct frames {
    std::string header;
    std::string body;
};

frames encode(const message& m);
void encode_into(const message& m, std::string& header, std::string& body);

/// Encodes a `tasks` message straight from views, reusing the caller's buffers.
void encode_tasks(std::span<const task_view> items, std::string& header, std::string& body);

/// Decodes a header and body. Any malformed input is an error value, never an exception.
result<message> decode(std::span<const std::byte> header,
                       std::span<const std::byte> body,
                       const decode_limits& limits = {});

inline result<message> decode(std::string_view header,
                              std::string_view body,
                              const decode_limits& limits = {}) {
    return decode(std::as_bytes(std::span(header.data(), header.size())),
                  std::as_bytes(std::span(body.data(), body.size())),
                  limits);
}

}  // namespace taskvent::protocol
