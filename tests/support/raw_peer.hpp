// Hostile peers for robustness tests: raw ZeroMQ sockets that send arbitrary frames, and
// plain TCP connections that send arbitrary bytes. Nothing here speaks the protocol on
// purpose; the point is to feed the programs what a broken or malicious peer would.
#pragma once

#include <zmq.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace taskvent::testing {

/// One multipart message as raw frames.
using raw_message = std::vector<std::string>;

/// A header frame: 'T' 'V' <version> <type>.
std::string raw_header(std::uint8_t version, std::uint8_t type);

/// Connects a socket of `type` (DEALER for a ROUTER, PUSH for a PULL) to `endpoint`, sends
/// every message and closes it with a linger of `timeout`, so `ctx` still delivers what was
/// queued. Delivery is proved by the receiver's counters, not by this call returning.
void send_raw_messages(zmq::context_t& ctx,
                       zmq::socket_type type,
                       const std::string& endpoint,
                       const std::vector<raw_message>& messages,
                       std::chrono::milliseconds timeout = std::chrono::seconds(10));

/// "tcp://127.0.0.1:1234" -> 1234. Throws for anything that is not a loopback TCP endpoint.
std::uint16_t loopback_port(const std::string& endpoint);

/// Opens a plain TCP connection to 127.0.0.1:`port`, writes `bytes`, and closes it. Returns
/// false when the connection was refused (the program is not listening).
bool send_tcp_bytes(std::uint16_t port, const std::string& bytes);

/// A plain TCP connection to 127.0.0.1:`port` that never says a word: no ZMTP greeting,
/// nothing. Held open until destroyed, like a port scanner or a stuck load balancer probe.
class silent_tcp_connection {
  public:
    explicit silent_tcp_connection(std::uint16_t port);
    ~silent_tcp_connection();
    silent_tcp_connection(const silent_tcp_connection&) = delete;
    silent_tcp_connection& operator=(const silent_tcp_connection&) = delete;

    bool connected() const { return connected_; }
    /// True while the program has not closed its end (a read would not return 0).
    bool still_open() const;

  private:
    int fd_ = -1;
    bool connected_ = false;
};

/// A port on 127.0.0.1 with nothing listening on it: bound by the kernel's choice, then
/// closed again.
std::uint16_t unused_loopback_port();

/// `n` bytes from a seeded generator, so a failure can be replayed.
std::string random_bytes(std::uint64_t seed, std::size_t n);

}  // namespace taskvent::testing
