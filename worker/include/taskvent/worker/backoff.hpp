// Reconnect delays for a worker that lost the ventilator: exponential from min to max,
// back to min once a registration is welcomed. Pure arithmetic, no clock and no sockets,
// so that the schedule is tested without waiting for it.
#pragma once

#include <chrono>

namespace taskvent::worker {

class reconnect_backoff {
  public:
    /// Requires 0 < min <= max (validate() checks the flags that feed it).
    reconnect_backoff(std::chrono::milliseconds min, std::chrono::milliseconds max);

    /// The delay before the next attempt: min, 2*min, 4*min ... capped at max.
    /// `jitter` in [0, 1) shaves up to a quarter off (never below min) so that many
    /// workers cut off by the same event do not all come back in the same millisecond.
    std::chrono::milliseconds next(double jitter = 0.0);

    /// A registration was welcomed: the next loss starts again from min.
    void reset() noexcept { current_ = min_; }

  private:
    std::chrono::milliseconds min_;
    std::chrono::milliseconds max_;
    std::chrono::milliseconds current_;
};

}  // namespace taskvent::worker
