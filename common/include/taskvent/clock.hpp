// The clock that time-driven logic (task table, liveness, backoff) reads. Production code
// uses steady_clock; tests hand in a manual_clock and move time by hand instead of sleeping.
#pragma once

#include <chrono>

namespace taskvent {

using clock_duration = std::chrono::nanoseconds;
using time_point = std::chrono::time_point<std::chrono::steady_clock, clock_duration>;

class clock_source {
  public:
    virtual ~clock_source() = default;
    virtual time_point now() const = 0;
};

class steady_clock_source final : public clock_source {
  public:
    time_point now() const override { return std::chrono::steady_clock::now(); }
};

/// A clock that only moves when told to. Starts at an arbitrary non-zero point so that
/// "time zero" bugs show up.
class manual_clock final : public clock_source {
  public:
    time_point now() const override { return now_; }
    void advance(clock_duration d) { now_ += d; }

  private:
    time_point now_{std::chrono::hours(1)};
};

/// Wall-clock nanoseconds since the epoch, for timestamps that cross process boundaries.
inline std::int64_t wall_clock_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

}  // namespace taskvent
