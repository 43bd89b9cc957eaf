#include "raw_peer.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <random>
#include <stdexcept>
#include <system_error>

namespace taskvent::testing {
namespace {

/// Closes a file descriptor on every path out of a function.
class fd_guard {
  public:
    explicit fd_guard(int fd) : fd_(fd) {}
    ~fd_guard() {
        if (fd_ >= 0) {
            ::close(fd_);
        }
    }
    fd_guard(const fd_guard&) = delete;
    fd_guard& operator=(const fd_guard&) = delete;
    int get() const { return fd_; }

  private:
    int fd_;
};

sockaddr_in loopback(std::uint16_t port) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return addr;
}

}  // namespace

std::string raw_header(std::uint8_t version, std::uint8_t type) {
    return std::string{'T', 'V', static_cast<char>(version), static_cast<char>(type)};
}

void send_raw_messages(zmq::context_t& ctx,
                       zmq::socket_type type,
                       const std::string& endpoint,
                       const std::vector<raw_message>& messages,
                       std::chrono::milliseconds timeout) {
    zmq::socket_t s(ctx, type);
    s.set(zmq::sockopt::linger, static_cast<int>(timeout.count()));
    s.set(zmq::sockopt::sndtimeo, static_cast<int>(timeout.count()));
    s.connect(endpoint);
    for (const auto& m : messages) {
        for (std::size_t i = 0; i < m.size(); ++i) {
            const auto flags = i + 1 < m.size() ? zmq::send_flags::sndmore : zmq::send_flags::none;
            if (!s.send(zmq::buffer(m[i]), flags)) {
                throw std::runtime_error("raw send to " + endpoint + " timed out");
            }
        }
    }
    // close() returns at once; the context keeps the pipe alive for up to `linger` until the
    // queued frames are written. The caller's context outlives this call, so the caller waits
    // on the receiver's counters rather than on the close.
    s.close();
}

std::uint16_t loopback_port(const std::string& endpoint) {
    const std::string prefix = "tcp://127.0.0.1:";
    if (endpoint.rfind(prefix, 0) != 0) {
        throw std::invalid_argument("not a loopback TCP endpoint: " + endpoint);
    }
    const auto port = std::stoul(endpoint.substr(prefix.size()));
    if (port == 0 || port > 65535) {
        throw std::invalid_argument("bad port in " + endpoint);
    }
    return static_cast<std::uint16_t>(port);
}

bool send_tcp_bytes(std::uint16_t port, const std::string& bytes) {
    fd_guard fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (fd.get() < 0) {
        throw std::system_error(errno, std::generic_category(), "socket");
    }
    const auto addr = loopback(port);
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
        return false;
    }
    std::size_t sent = 0;
    while (sent < bytes.size()) {
        const auto n = ::send(fd.get(), bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;  // the peer hung up on the garbage: what a careful peer does
        }
        sent += static_cast<std::size_t>(n);
    }
    return true;
}

silent_tcp_connection::silent_tcp_connection(std::uint16_t port)
    : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    if (fd_ < 0) {
        throw std::system_error(errno, std::generic_category(), "socket");
    }
    const auto addr = loopback(port);
    connected_ = ::connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0;
}

silent_tcp_connection::~silent_tcp_connection() {
    if (fd_ >= 0) {
        ::close(fd_);
    }
}

bool silent_tcp_connection::still_open() const {
    char byte = 0;
    // The program may send its own greeting; only an orderly close (0) or a reset counts.
    const auto n = ::recv(fd_, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
}

std::uint16_t unused_loopback_port() {
    fd_guard fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (fd.get() < 0) {
        throw std::system_error(errno, std::generic_category(), "socket");
    }
    auto addr = loopback(0);
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
        throw std::system_error(errno, std::generic_category(), "bind 127.0.0.1:0");
    }
    socklen_t len = sizeof addr;
    if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
        throw std::system_error(errno, std::generic_category(), "getsockname");
    }
    return ntohs(addr.sin_port);
}

std::string random_bytes(std::uint64_t seed, std::size_t n) {
    std::mt19937_64 gen(seed);
    std::uniform_int_distribution<int> byte(0, 255);
    std::string out(n, '\0');
    for (auto& c : out) {
        c = static_cast<char>(byte(gen));
    }
    return out;
}

}  // namespace taskvent::testing
