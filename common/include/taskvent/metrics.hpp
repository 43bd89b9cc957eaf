// Prometheus text metrics. Each program keeps one registry; counters are atomics that the
// event loop bumps, gauges are read on scrape. An optional tiny HTTP server serves
// GET /metrics on a port of its own thread, so a scrape never stalls the event loop.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace taskvent::metrics {

class counter {
  public:
    void inc(std::uint64_t n = 1) noexcept { value_.fetch_add(n, std::memory_order_relaxed); }
    std::uint64_t value() const noexcept { return value_.load(std::memory_order_relaxed); }

  private:
    std::atomic<std::uint64_t> value_{0};
};

/// A histogram of durations in milliseconds with fixed buckets.
class histogram {
  public:
    explicit histogram(std::vector<double> bounds_ms);
    void observe_ms(double ms) noexcept;
    std::string render(const std::string& name, const std::string& help) const;

  private:
    std::vector<double> bounds_;
    std::unique_ptr<std::atomic<std::uint64_t>[]> buckets_;
    std::atomic<std::uint64_t> count_{0};
    std::atomic<std::uint64_t> sum_us_{0};
};

class registry {
  public:
    /// Returns the counter named `name` (a `_total` suffix is expected), creating it.
    counter& make_counter(const std::string& name, const std::string& help);
    histogram& make_histogram(const std::string& name,
                              const std::string& help,
                              std::vector<double> bounds_ms);
    /// A gauge read at scrape time; `read` runs on the HTTP thread and must be thread-safe.
    void make_gauge(const std::string& name, const std::string& help, std::function<double()> read);

    std::string render() const;

  private:
    struct counter_entry {
        std::string name, help;
        counter c;
    };
    struct histogram_entry {
        std::string name, help;
        std::unique_ptr<histogram> h;
    };
    struct gauge_entry {
        std::string name, help;
        std::function<double()> read;
    };
    mutable std::mutex mutex_;
    std::deque<counter_entry> counters_;
    std::deque<histogram_entry> histograms_;
    std::deque<gauge_entry> gauges_;
};

/// Serves GET /metrics (and GET /healthz) over HTTP/1.0 on 0.0.0.0:port until destroyed.
class http_server {
  public:
    /// Binds at once; port 0 picks a free one (see port()). Throws std::system_error.
    http_server(std::uint16_t port, const registry& reg);
    ~http_server();
    http_server(const http_server&) = delete;
    http_server& operator=(const http_server&) = delete;

    std::uint16_t port() const noexcept { return port_; }

  private:
    void serve();

    const registry& registry_;
    int listen_fd_ = -1;
    int wake_fd_[2] = {-1, -1};
    std::uint16_t port_ = 0;
    std::thread thread_;
};

}  // namespace taskvent::metrics
