// The ventilator's task table: every accepted task from submission until the sink has
// confirmed its one record. It decides what to lease to whom, what to reissue and when a
// task is dead. It holds no sockets and reads an injected clock; the server feeds it
// events and carries out what it asks (send these leases, send these dead records).
//
//   submitted -> queued -> leased(worker, attempt) -> reported -> done
//                  ^           |  worker dead / returned    |  confirm timeout
//                  +-----------+----------------------------+
//                  |  retryable failure -> backoff -> queued
//                  +  attempts exhausted -> dead record -> reported -> done
//
// Promises: a task is leased only within a worker's credit; a worker's death reissues all
// it held at once; a task started `max_attempts` times on workers that died, or failed that
// often, ends as exactly one dead record; timers are kept in heaps, never found by scanning.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <queue>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "taskvent/clock.hpp"
#include "taskvent/ids.hpp"
#include "taskvent/protocol.hpp"

namespace taskvent::ventilator {

struct table_config {
    std::uint32_t max_attempts = 5;
    clock_duration confirm_timeout = std::chrono::seconds(10);
    clock_duration backoff_base = std::chrono::milliseconds(100);
    clock_duration backoff_max = std::chrono::seconds(10);
    std::uint32_t batch_size = 256;  ///< most tasks in one lease message
    /// High bits of every task id (see task_id): distinguishes ventilator incarnations.
    std::uint32_t epoch = 1;
};

/// A leased task as handed to the sender; views into the table, valid until the next
/// call that changes the table.
using lease_view = protocol::task_view;

enum class removal { dead, left };

/// Counts since start, for status and metrics.
struct table_counters {
    std::uint64_t submitted = 0;
    std::uint64_t duplicate_keys = 0;
    std::uint64_t leased = 0;
    std::uint64_t reissued = 0;  ///< put back in the queue because a worker died or timed out
    std::uint64_t returned = 0;  ///< handed back unstarted by a draining worker
    std::uint64_t retried = 0;   ///< retryable failures sent back after backoff
    std::uint64_t confirm_timeouts = 0;
    std::uint64_t confirmed = 0;  ///< tasks done: the sink holds their record
    std::uint64_t dead = 0;
    std::uint64_t stale_acks = 0;      ///< acks for leases that are no longer current
    std::uint64_t workers_joined = 0;  ///< registrations, a worker that came back counting again
    std::uint64_t workers_dead = 0;
};

/// What the table holds right now.
struct table_gauges {
    std::size_t queued = 0;
    std::size_t backoff = 0;
    std::size_t leased = 0;
    std::size_t reported = 0;
    std::size_t live = 0;  ///< tasks not yet done
    std::size_t workers = 0;
};

/// One registered worker as status shows it: what it holds and what it may still take.
struct worker_view {
    worker_id id;
    std::string_view name;
    std::size_t held = 0;      ///< tasks leased to it, running or prefetched
    std::uint32_t credit = 0;  ///< tasks it may still be sent
};

struct session_progress {
    std::uint64_t accepted = 0;
    std::uint64_t finished = 0;
};

class task_table {
  public:
    task_table(table_config cfg, const clock_source& clock);

    struct accepted {
        task_id id;
        bool duplicate = false;  ///< the key was accepted before; `id` is that task's id
    };

    /// Accepts a task. A non-empty key already accepted returns the existing id and queues
    /// nothing (idempotent retries of a submission).
    accepted submit(std::string key,
                    std::string payload,
                    std::int64_t submitted_ns,
                    std::uint64_t session = 0);

    /// Registers a worker that may hold `credit` tasks at once.
    worker_id add_worker(std::string name, std::uint32_t credit);
    /// Removes a worker; everything it held is reissued at once. A task it had started
    /// counts toward max_attempts when the worker died; prefetched ones do not.
    void remove_worker(worker_id w, removal why);
    bool has_worker(worker_id w) const { return workers_.contains(w.value); }
    const std::string& worker_name(worker_id w) const;
    void add_credit(worker_id w, std::uint32_t n);

    void on_started(worker_id w, protocol::lease_ref ref);
    /// The worker pushed the task's final result to the sink; wait for the confirmation.
    void on_reported(worker_id w, protocol::lease_ref ref);
    void on_failed(worker_id w, const protocol::failure& f);
    /// Handed back unstarted (drain): not charged an attempt.
    void on_returned(worker_id w, protocol::lease_ref ref);
    /// The sink made the task's record durable: the task is done, whoever reported it.
    /// Returns true if this finished the task (false: unknown or already done).
    bool on_confirmed(task_id id);

    /// Journal replay: puts back a task accepted before a restart, queued as new. Tasks
    /// come in increasing id order and carry this table's epoch.
    void restore(task_id id, std::string key, std::string payload, std::int64_t submitted_ns);
    /// Journal replay: remembers the key of a task that finished before the restart.
    void restore_key(std::string key, task_id id);
    /// Journal replay: the next id handed out follows every id ever accepted.
    void skip_to(std::uint64_t max_seq);

    /// The stored form of a live task, for journaling what was just accepted.
    std::optional<lease_view> view(task_id id) const;
    /// Bytes of keys and payloads held by tasks not yet done.
    std::uint64_t live_bytes() const noexcept { return live_bytes_; }

    /// For journal compaction: every task not yet done, and the keys of finished ones.
    void for_each_live(
        const std::function<void(task_id, std::string_view, std::string_view, std::int64_t)>& fn)
        const;
    void for_each_finished_key(const std::function<void(std::string_view, task_id)>& fn) const;

    /// Leases queued tasks to workers with credit, round robin, at most batch_size per
    /// call of `send`. If `send` returns false the batch never left: it is put back in
    /// the queue uncharged and that worker gets no more this round.
    using send_fn = std::function<bool(worker_id, std::span<const lease_view>)>;
    std::size_t dispatch(const send_fn& send);

    /// Moves due timers: backoff ends, confirmation timeouts. Call when next_deadline()
    /// has passed (calling early is harmless).
    void advance();
    std::optional<time_point> next_deadline() const;

    /// Dead records the sink has not confirmed yet and that are due to be sent. The
    /// caller sends them; they come back after confirm_timeout until confirmed.
    std::vector<protocol::result_item> take_records();

    const table_counters& counters() const noexcept { return counters_; }
    table_gauges gauges() const;
    /// Every registered worker, in registration order; views valid until the next change.
    std::vector<worker_view> workers() const;
    session_progress progress(std::uint64_t session) const;
    bool idle() const { return live_ == 0; }

  private:
    enum class state : std::uint8_t { queued, backoff, leased, reported, dead_pending, done };

    struct task {
        std::string key;
        std::string payload;
        std::int64_t submitted_ns = 0;
        std::uint32_t attempts = 0;  ///< deliveries charged
        std::uint32_t lease_worker = 0;
        std::uint32_t lease_slot = 0;  ///< index in its worker's `leased` while leased
        std::uint32_t session = 0;     ///< index into sessions_, 0 for none
        std::uint32_t gen = 0;         ///< bumped on every timed state; stale timers do not match
        state st = state::done;
        bool started = false;
    };

    struct worker_entry {
        std::string name;
        std::uint32_t credit = 0;
        /// Sequence numbers of the tasks leased to it, in no order; a task knows its index
        /// (lease_slot), so adding and removing one allocates nothing and touches no
        /// hash bucket: with millions of tasks queued those were cache misses per lease.
        std::vector<std::uint64_t> leased;
    };

    struct timer {
        time_point due;
        std::uint64_t seq;
        std::uint32_t gen;
        bool operator>(const timer& o) const { return due > o.due; }
    };
    using timer_heap = std::priority_queue<timer, std::vector<timer>, std::greater<>>;

    task* find(task_id id);
    const task* find(task_id id) const;
    void add_lease(worker_entry& we, std::uint64_t seq, task& t);
    void drop_lease(worker_entry& we, task& t);
    task* find_lease(worker_id w, protocol::lease_ref ref);
    task_id id_of(std::uint64_t seq) const;
    void set_state(task& t, state s);
    void requeue_front(std::uint64_t seq, task& t);
    void make_dead(std::uint64_t seq, task& t, std::string reason);
    void finish(std::uint64_t seq, task& t);
    void release_lease(task& t);
    clock_duration backoff_for(std::uint32_t attempts) const;

    table_config cfg_;
    const clock_source& clock_;

    // Tasks by sequence number: tasks_[seq - base_seq_]. Done tasks at the front are
    // popped, so memory follows the live tasks rather than the history.
    std::deque<task> tasks_;
    std::uint64_t base_seq_ = 1;
    std::uint64_t next_seq_ = 1;
    std::size_t live_ = 0;  ///< tasks not done
    std::uint64_t live_bytes_ = 0;

    std::deque<std::uint64_t> queue_;  ///< queued sequence numbers, reissues at the front
    timer_heap backoff_timers_;
    timer_heap confirm_timers_;
    std::deque<std::uint64_t> records_due_;  ///< dead records to (re)send
    /// Last failure reason by sequence number (the reason of a dead record). Few tasks ever
    /// fail, so it lives here rather than as a string in every queued task.
    std::unordered_map<std::uint64_t, std::string> errors_;

    std::unordered_map<std::string, task_id> keys_;
    std::map<std::uint32_t, worker_entry> workers_;  ///< ordered: stable round robin
    std::uint32_t next_worker_ = 1;
    std::uint32_t rr_cursor_ = 0;

    std::vector<session_progress> sessions_{1};
    std::unordered_map<std::uint64_t, std::uint32_t> session_index_;

    std::size_t in_state_[6] = {};  ///< tasks per state, indexed by state
    table_counters counters_;
    std::vector<lease_view> batch_;
};

}  // namespace taskvent::ventilator
