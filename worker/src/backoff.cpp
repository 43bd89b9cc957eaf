#include "taskvent/worker/backoff.hpp"

#include <algorithm>

#include "taskvent/check.hpp"

namespace taskvent::worker {

reconnect_backoff::reconnect_backoff(std::chrono::milliseconds min, std::chrono::milliseconds max)
    : min_(min), max_(max), current_(min) {
    TASKVENT_CHECK(min.count() > 0 && min <= max, "reconnect backoff needs 0 < min <= max");
}

std::chrono::milliseconds reconnect_backoff::next(double jitter) {
    const auto base = current_;
    // Doubling until max; compared before multiplying so that a large max cannot overflow.
    current_ = current_ > max_ / 2 ? max_ : current_ * 2;

    jitter = std::clamp(jitter, 0.0, 1.0);
    const auto shaved = std::chrono::milliseconds(static_cast<std::chrono::milliseconds::rep>(
        static_cast<double>(base.count()) * 0.25 * jitter));
    return std::max(min_, base - shaved);
}

}  // namespace taskvent::worker
