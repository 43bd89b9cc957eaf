#include "taskvent/worker/config.hpp"

#include <unistd.h>

#include <limits>
#include <stdexcept>

#include <fmt/format.h>

namespace taskvent::worker {

std::string default_worker_name() {
    char host[256] = {};
    if (::gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') {
        return fmt::format("worker-{}", ::getpid());
    }
    return fmt::format("{}-{}", host, ::getpid());
}

void validate(const worker_config& cfg) {
    // Threads are real OS threads; thousands of them mean a configuration mistake.
    constexpr std::uint32_t max_concurrency = 4096;

    if (cfg.ventilator.empty()) {
        throw std::invalid_argument("--ventilator must name an endpoint");
    }
    if (cfg.sink.empty()) {
        throw std::invalid_argument("--sink must name an endpoint");
    }
    if (cfg.concurrency == 0 || cfg.concurrency > max_concurrency) {
        throw std::invalid_argument(
            fmt::format("--concurrency must be between 1 and {}", max_concurrency));
    }
    if (static_cast<std::uint64_t>(cfg.concurrency) + cfg.prefetch >
        std::numeric_limits<std::uint32_t>::max()) {
        throw std::invalid_argument("--prefetch is too large");
    }
    if (static_cast<std::uint64_t>(cfg.concurrency) + cfg.prefetch_max >
        std::numeric_limits<std::uint32_t>::max()) {
        throw std::invalid_argument("--prefetch-max is too large");
    }
    if (cfg.reconnect_min.count() <= 0) {
        throw std::invalid_argument("--reconnect-min-ms must be at least 1");
    }
    if (cfg.reconnect_max < cfg.reconnect_min) {
        throw std::invalid_argument("--reconnect-max-ms must not be below --reconnect-min-ms");
    }
    if (cfg.task_timeout.count() < 0 || cfg.drain_timeout.count() < 0 ||
        cfg.exec_timeout.count() < 0 || cfg.sleep.count() < 0) {
        throw std::invalid_argument("durations must not be negative");
    }
}

}  // namespace taskvent::worker
