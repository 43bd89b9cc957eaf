// Tracks when each worker was last heard from and says which ones have gone silent for
// longer than the liveness window. Holds no sockets and reads an injected clock, so tests
// drive it by hand. Deadlines sit in a min-heap and are re-checked lazily on expiry: a
// message costs one store, not a heap update.
#pragma once

#include <chrono>
#include <optional>
#include <queue>
#include <unordered_map>
#include <vector>

#include "taskvent/clock.hpp"
#include "taskvent/ids.hpp"

namespace taskvent::ventilator {

class liveness_tracker {
  public:
    liveness_tracker(const clock_source& clock, clock_duration window)
        : clock_(clock), window_(window) {}

    /// Starts tracking a worker as heard from now.
    void add(worker_id w);
    /// Records that the worker was heard from now.
    void seen(worker_id w);
    /// Stops tracking (left or declared dead).
    void remove(worker_id w);

    /// Workers silent for longer than the window; each is returned once and dropped.
    std::vector<worker_id> expire();

    /// When the next worker could expire, if any is tracked.
    std::optional<time_point> next_deadline() const;

    std::size_t size() const noexcept { return last_seen_.size(); }

  private:
    struct entry {
        time_point deadline;
        worker_id worker;
        bool operator>(const entry& o) const { return deadline > o.deadline; }
    };

    const clock_source& clock_;
    clock_duration window_;
    std::unordered_map<worker_id, time_point> last_seen_;
    std::priority_queue<entry, std::vector<entry>, std::greater<>> heap_;
};

}  // namespace taskvent::ventilator
