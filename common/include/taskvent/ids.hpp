// Strong identifier types. A task id and a worker slot are both integers on the wire;
// giving each its own type makes a swapped argument a compile error, not a lost task.
#pragma once

#include <cstdint>
#include <functional>
#include <ostream>

namespace taskvent {

/// Identifies one accepted task for its whole life, across reissues and restarts.
/// Assigned by the ventilator; the high bits hold the ventilator's epoch so that ids from
/// an in-memory ventilator that restarted never collide with ids the sink already wrote.
struct task_id {
    std::uint64_t value = 0;

    friend constexpr bool operator==(task_id, task_id) = default;
    friend constexpr auto operator<=>(task_id, task_id) = default;
};

inline std::ostream& operator<<(std::ostream& os, task_id id) {
    return os << id.value;
}

/// The ventilator's handle on one registration of a worker. A worker that reconnects
/// registers again and gets a new one, so stale acks from the old registration never match.
struct worker_id {
    std::uint32_t value = 0;

    friend constexpr bool operator==(worker_id, worker_id) = default;
    friend constexpr auto operator<=>(worker_id, worker_id) = default;
};

inline std::ostream& operator<<(std::ostream& os, worker_id id) {
    return os << id.value;
}

}  // namespace taskvent

template <>
struct std::hash<taskvent::task_id> {
    std::size_t operator()(taskvent::task_id id) const noexcept {
        // Ids are sequential; a multiplicative mix spreads them over hash buckets.
        return static_cast<std::size_t>(id.value * 0x9E3779B97F4A7C15ULL);
    }
};

template <>
struct std::hash<taskvent::worker_id> {
    std::size_t operator()(taskvent::worker_id id) const noexcept { return id.value; }
};
