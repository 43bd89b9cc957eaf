#include "taskvent/metrics.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <system_error>

#include <fmt/format.h>

namespace taskvent::metrics {

histogram::histogram(std::vector<double> bounds_ms)
    : bounds_(std::move(bounds_ms)),
      buckets_(std::make_unique<std::atomic<std::uint64_t>[]>(bounds_.size() + 1)) {}

void histogram::observe_ms(double ms) noexcept {
    std::size_t i = 0;
    while (i < bounds_.size() && ms > bounds_[i]) {
        ++i;
    }
    buckets_[i].fetch_add(1, std::memory_order_relaxed);
    count_.fetch_add(1, std::memory_order_relaxed);
    sum_us_.fetch_add(static_cast<std::uint64_t>(std::max(0.0, ms) * 1000.0),
                      std::memory_order_relaxed);
}

std::string histogram::render(const std::string& name, const std::string& help) const {
    std::string out = fmt::format("# HELP {} {}\n# TYPE {} histogram\n", name, help, name);
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < bounds_.size(); ++i) {
        cumulative += buckets_[i].load(std::memory_order_relaxed);
        out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, bounds_[i], cumulative);
    }
    cumulative += buckets_[bounds_.size()].load(std::memory_order_relaxed);
    out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n", name, cumulative);
    out += fmt::format("{}_sum {}\n", name, static_cast<double>(sum_us_.load()) / 1000.0);
    out += fmt::format("{}_count {}\n", name, count_.load());
    return out;
}

counter& registry::make_counter(const std::string& name, const std::string& help) {
    std::lock_guard lock(mutex_);
    for (auto& e : counters_) {
        if (e.name == name) {
            return e.c;
        }
    }
    auto& e = counters_.emplace_back();
    e.name = name;
    e.help = help;
    return e.c;
}

histogram& registry::make_histogram(const std::string& name,
                                    const std::string& help,
                                    std::vector<double> bounds_ms) {
    std::lock_guard lock(mutex_);
    auto& e = histograms_.emplace_back();
    e.name = name;
    e.help = help;
    e.h = std::make_unique<histogram>(std::move(bounds_ms));
    return *e.h;
}

void registry::make_gauge(const std::string& name,
                          const std::string& help,
                          std::function<double()> read) {
    std::lock_guard lock(mutex_);
    gauges_.push_back({name, help, std::move(read)});
}

std::string registry::render() const {
    std::lock_guard lock(mutex_);
    std::string out;
    for (const auto& e : counters_) {
        out += fmt::format("# HELP {} {}\n# TYPE {} counter\n{} {}\n",
                           e.name,
                           e.help,
                           e.name,
                           e.name,
                           e.c.value());
    }
    for (const auto& e : gauges_) {
        out += fmt::format(
            "# HELP {} {}\n# TYPE {} gauge\n{} {}\n", e.name, e.help, e.name, e.name, e.read());
    }
    for (const auto& e : histograms_) {
        out += e.h->render(e.name, e.help);
    }
    return out;
}

http_server::http_server(std::uint16_t port, const registry& reg) : registry_(reg) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listen_fd_ < 0) {
        throw std::system_error(errno, std::generic_category(), "metrics socket");
    }
    int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    addr.sin_port = htons(port);
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(listen_fd_, 16) != 0) {
        const int err = errno;
        ::close(listen_fd_);
        throw std::system_error(err, std::generic_category(), fmt::format("metrics port {}", port));
    }
    socklen_t len = sizeof addr;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    if (::pipe2(wake_fd_, O_CLOEXEC) != 0) {
        ::close(listen_fd_);
        throw std::system_error(errno, std::generic_category(), "metrics pipe");
    }
    thread_ = std::thread([this] { serve(); });
}

http_server::~http_server() {
    const char b = 'x';
    (void)::write(wake_fd_[1], &b, 1);
    thread_.join();
    ::close(listen_fd_);
    ::close(wake_fd_[0]);
    ::close(wake_fd_[1]);
}

void http_server::serve() {
    for (;;) {
        pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_[0], POLLIN, 0}};
        if (::poll(fds, 2, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            return;
        }
        if (fds[1].revents != 0) {
            return;
        }
        const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) {
            continue;
        }
        // One short request per connection; a client that sends nothing for a second is
        // dropped so that it cannot hold the scrape thread.
        timeval tv{1, 0};
        ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        // Read the request head, which may arrive in several pieces, up to 1 KiB.
        char buf[1024];
        std::size_t got = 0;
        while (got < sizeof buf - 1) {
            const auto n = ::recv(fd, buf + got, sizeof buf - 1 - got, 0);
            if (n <= 0) {
                break;
            }
            got += static_cast<std::size_t>(n);
            if (std::string_view(buf, got).find("\r\n\r\n") != std::string_view::npos) {
                break;
            }
        }
        std::string_view req(buf, got);
        std::string body;
        std::string status = "200 OK";
        if (req.starts_with("GET /metrics")) {
            body = registry_.render();
        } else if (req.starts_with("GET /healthz")) {
            body = "ok\n";
        } else {
            status = "404 Not Found";
            body = "not found: try /metrics\n";
        }
        const auto resp = fmt::format(
            "HTTP/1.0 {}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: "
            "{}\r\nConnection: close\r\n\r\n{}",
            status,
            body.size(),
            body);
        std::size_t off = 0;
        while (off < resp.size()) {
            const auto w = ::send(fd, resp.data() + off, resp.size() - off, MSG_NOSIGNAL);
            if (w <= 0) {
                break;
            }
            off += static_cast<std::size_t>(w);
        }
        // Half-close and drain what the client still sends, so that closing does not
        // reset the connection before the client has read the answer.
        ::shutdown(fd, SHUT_WR);
        while (::recv(fd, buf, sizeof buf, 0) > 0) {
        }
        ::close(fd);
    }
}

}  // namespace taskvent::metrics
