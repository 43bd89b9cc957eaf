// Logging set-up shared by every program: one named spdlog logger per component, messages
// with stable key=value fields, text by default or one JSON object per line on request.
#pragma once

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace taskvent::log {

enum class format { text, json };

struct options {
    std::string level = "info";  ///< trace, debug, info, warn, error, critical, off
    format fmt = format::text;
};

/// Configures the sink shared by all loggers (stderr). Call once, before make_logger.
/// Throws std::invalid_argument on an unknown level name.
void setup(const options& opts);

/// Returns the logger named after a component, creating it on first use.
std::shared_ptr<spdlog::logger> get(const std::string& component);

/// Lets through at most `burst` events per `window`; counts the rest so that the next
/// event let through can say how many were suppressed. For anything a peer can trigger
/// in a loop (malformed frames, unknown peers).
class rate_limiter {
  public:
    explicit rate_limiter(std::uint32_t burst = 5,
                          std::chrono::milliseconds window = std::chrono::seconds(10))
        : burst_(burst), window_(window) {}

    /// True if this event may be logged. `suppressed` receives the number of events
    /// dropped since the last one let through.
    bool allow(std::uint64_t& suppressed);

  private:
    std::uint32_t burst_;
    std::chrono::milliseconds window_;
    std::chrono::steady_clock::time_point window_start_{};
    std::uint32_t in_window_ = 0;
    std::uint64_t suppressed_ = 0;
};

}  // namespace taskvent::log
