#include "taskvent/ventilator/liveness.hpp"

namespace taskvent::ventilator {

void liveness_tracker::add(worker_id w) {
    const auto now = clock_.now();
    last_seen_[w] = now;
    heap_.push({now + window_, w});
}

void liveness_tracker::seen(worker_id w) {
    if (auto it = last_seen_.find(w); it != last_seen_.end()) {
        it->second = clock_.now();
    }
}

void liveness_tracker::remove(worker_id w) {
    last_seen_.erase(w);
}

std::vector<worker_id> liveness_tracker::expire() {
    std::vector<worker_id> dead;
    const auto now = clock_.now();
    while (!heap_.empty() && heap_.top().deadline <= now) {
        const auto top = heap_.top();
        heap_.pop();
        auto it = last_seen_.find(top.worker);
        if (it == last_seen_.end()) {
            continue;  // removed since; a stale heap entry
        }
        const auto real_deadline = it->second + window_;
        if (real_deadline <= now) {
            dead.push_back(top.worker);
            last_seen_.erase(it);
        } else {
            heap_.push({real_deadline, top.worker});
        }
    }
    return dead;
}

std::optional<time_point> liveness_tracker::next_deadline() const {
    if (heap_.empty()) {
        return std::nullopt;
    }
    return heap_.top().deadline;
}

}  // namespace taskvent::ventilator
