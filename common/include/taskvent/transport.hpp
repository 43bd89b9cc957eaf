// Sockets as every taskvent program sets them up, and the send/receive of protocol
// messages over them. The one place that knows how frames map to messages.
#pragma once

#include <zmq.hpp>

#include <chrono>
#include <optional>
#include <span>
#include <string>

#include "taskvent/protocol.hpp"

namespace taskvent::transport {

/// Socket options that matter (DESIGN §4). Durations are kept as std::chrono inside.
struct socket_options {
    std::chrono::milliseconds linger{0};
    std::chrono::milliseconds connect_timeout{2000};
    std::chrono::milliseconds reconnect_ivl{100};
    std::chrono::milliseconds reconnect_ivl_max{5000};
    /// ZMTP heartbeats: liveness of the connection (the application heartbeats track the
    /// process). They also keep idle connections through NAT and overlay networks open.
    std::chrono::milliseconds zmtp_heartbeat_ivl{1000};
    std::chrono::milliseconds zmtp_heartbeat_timeout{5000};
    int send_hwm = 100000;
    int recv_hwm = 100000;
    bool immediate = false;
    bool router_mandatory = true;  ///< ROUTER only: unroutable sends fail instead of vanishing
    std::string routing_id;        ///< DEALER only: empty lets libzmq pick one
};

zmq::socket_t make_socket(zmq::context_t& ctx, zmq::socket_type type, const socket_options& opts);

/// The endpoint a socket actually bound, with the port filled in (for "tcp://127.0.0.1:*").
std::string last_endpoint(zmq::socket_t& socket);

/// zmq::poll that treats an interrupting signal as "nothing ready" instead of throwing.
/// Returns false when interrupted.
bool poll_sockets(std::span<zmq::pollitem_t> items, std::chrono::milliseconds timeout);

/// A received message: who sent it (ROUTER only) and what it decoded to.
struct incoming {
    std::string routing_id;
    result<protocol::message> msg{errc::short_message};
};

/// Receives one whole multipart message without blocking; empty when nothing is waiting.
/// `routed` sockets (ROUTER) expect a routing-id frame first. All frames are drained even
/// when the message is malformed, so one bad message never desynchronises the next.
std::optional<incoming> receive(zmq::socket_t& socket, bool routed);

enum class send_status { sent, would_block, unroutable };

/// Sends one message without blocking. `routing_id` is required on a ROUTER and must be
/// empty elsewhere. Never throws for a peer that went away or a full queue.
send_status send(zmq::socket_t& socket,
                 const protocol::message& msg,
                 std::string_view routing_id = {});

/// Sends pre-encoded frames (the hot path: callers reuse their buffers).
send_status send_frames(zmq::socket_t& socket,
                        std::string_view header,
                        std::string_view body,
                        std::string_view routing_id = {});

}  // namespace taskvent::transport
