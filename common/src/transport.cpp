#include "taskvent/transport.hpp"

#include <cerrno>

namespace taskvent::transport {

zmq::socket_t make_socket(zmq::context_t& ctx, zmq::socket_type type, const socket_options& opts) {
    zmq::socket_t s(ctx, type);
    s.set(zmq::sockopt::linger, static_cast<int>(opts.linger.count()));
    s.set(zmq::sockopt::maxmsgsize, protocol::max_frame_bytes);
    s.set(zmq::sockopt::connect_timeout, static_cast<int>(opts.connect_timeout.count()));
    s.set(zmq::sockopt::reconnect_ivl, static_cast<int>(opts.reconnect_ivl.count()));
    s.set(zmq::sockopt::reconnect_ivl_max, static_cast<int>(opts.reconnect_ivl_max.count()));
    s.set(zmq::sockopt::heartbeat_ivl, static_cast<int>(opts.zmtp_heartbeat_ivl.count()));
    s.set(zmq::sockopt::heartbeat_timeout, static_cast<int>(opts.zmtp_heartbeat_timeout.count()));
    s.set(zmq::sockopt::heartbeat_ttl, static_cast<int>(opts.zmtp_heartbeat_timeout.count()));
    s.set(zmq::sockopt::sndhwm, opts.send_hwm);
    s.set(zmq::sockopt::rcvhwm, opts.recv_hwm);
    if (type != zmq::socket_type::pull && type != zmq::socket_type::sub) {
        s.set(zmq::sockopt::immediate, opts.immediate);
    }
    if (type == zmq::socket_type::router) {
        s.set(zmq::sockopt::router_mandatory, opts.router_mandatory);
    }
    if (!opts.routing_id.empty()) {
        s.set(zmq::sockopt::routing_id, zmq::buffer(opts.routing_id));
    }
    return s;
}

std::string last_endpoint(zmq::socket_t& socket) {
    return socket.get(zmq::sockopt::last_endpoint);
}

bool poll_sockets(std::span<zmq::pollitem_t> items, std::chrono::milliseconds timeout) {
    try {
        zmq::poll(items.data(), items.size(), timeout);
        return true;
    } catch (const zmq::error_t& e) {
        if (e.num() == EINTR) {
            return false;
        }
        throw;
    }
}

std::optional<incoming> receive(zmq::socket_t& socket, bool routed) {
    zmq::message_t part;
    if (!socket.recv(part, zmq::recv_flags::dontwait)) {
        return std::nullopt;
    }

    // Expected: [routing id] header body. Anything else is drained and reported.
    zmq::message_t frames[3];
    const std::size_t expected = routed ? 3 : 2;
    std::size_t count = 0;
    frames[count++] = std::move(part);
    bool more = frames[0].more();
    bool overflow = false;
    while (more) {
        zmq::message_t next;
        // The rest of a multipart message is already queued: this never waits.
        (void)socket.recv(next, zmq::recv_flags::none);
        more = next.more();
        if (count < expected) {
            frames[count++] = std::move(next);
        } else {
            overflow = true;
        }
    }

    incoming in;
    if (routed) {
        in.routing_id.assign(static_cast<const char*>(frames[0].data()), frames[0].size());
    }
    if (overflow) {
        in.msg = errc::too_many_frames;
        return in;
    }
    if (count < expected) {
        in.msg = errc::short_message;
        return in;
    }
    const auto& header = frames[expected - 2];
    const auto& body = frames[expected - 1];
    in.msg =
        protocol::decode(std::span(static_cast<const std::byte*>(header.data()), header.size()),
                         std::span(static_cast<const std::byte*>(body.data()), body.size()));
    return in;
}

send_status send_frames(zmq::socket_t& socket,
                        std::string_view header,
                        std::string_view body,
                        std::string_view routing_id) {
    constexpr auto more = zmq::send_flags::sndmore | zmq::send_flags::dontwait;
    try {
        // Only the first frame can be refused: once it is queued, libzmq takes the rest
        // of the multipart message whatever the high-water mark says.
        if (!routing_id.empty()) {
            if (!socket.send(zmq::buffer(routing_id), more)) {
                return send_status::would_block;
            }
            (void)socket.send(zmq::buffer(header), more);
        } else if (!socket.send(zmq::buffer(header), more)) {
            return send_status::would_block;
        }
        (void)socket.send(zmq::buffer(body), zmq::send_flags::dontwait);
        return send_status::sent;
    } catch (const zmq::error_t& e) {
        if (e.num() == EHOSTUNREACH) {
            return send_status::unroutable;
        }
        if (e.num() == EAGAIN) {
            return send_status::would_block;
        }
        throw;
    }
}

send_status send(zmq::socket_t& socket, const protocol::message& msg, std::string_view routing_id) {
    const auto f = protocol::encode(msg);
    return send_frames(socket, f.header, f.body, routing_id);
}

}  // namespace taskvent::transport
