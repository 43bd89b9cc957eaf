#include "taskvent/ventilator/task_table.hpp"

#include <algorithm>
#include <utility>

#include <fmt/format.h>

#include "taskvent/check.hpp"

namespace taskvent::ventilator {
namespace {

// Task ids: the epoch in the high 24 bits, a sequence number in the low 40 (a trillion
// tasks per incarnation).
constexpr int seq_bits = 40;
constexpr std::uint64_t seq_mask = (1ULL << seq_bits) - 1;

}  // namespace

task_table::task_table(table_config cfg, const clock_source& clock)
    : cfg_(std::move(cfg)), clock_(clock) {
    TASKVENT_CHECK(cfg_.max_attempts > 0, "max_attempts must be at least 1");
    TASKVENT_CHECK(cfg_.batch_size > 0, "batch_size must be at least 1");
    TASKVENT_CHECK(cfg_.epoch > 0 && cfg_.epoch < (1U << 24), "epoch must fit 24 bits");
}

task_id task_table::id_of(std::uint64_t seq) const {
    return task_id{(static_cast<std::uint64_t>(cfg_.epoch) << seq_bits) | seq};
}

task_table::task* task_table::find(task_id id) {
    return const_cast<task*>(std::as_const(*this).find(id));
}

const task_table::task* task_table::find(task_id id) const {
    if ((id.value >> seq_bits) != cfg_.epoch) {
        return nullptr;
    }
    const auto seq = id.value & seq_mask;
    if (seq < base_seq_ || seq >= next_seq_) {
        return nullptr;
    }
    const auto& t = tasks_[seq - base_seq_];
    return t.st == state::done ? nullptr : &t;
}

task_table::task* task_table::find_lease(worker_id w, protocol::lease_ref ref) {
    auto* t = find(ref.id);
    if (t == nullptr || t->st != state::leased || t->lease_worker != w.value ||
        t->attempts != ref.attempt) {
        ++counters_.stale_acks;
        return nullptr;
    }
    return t;
}

void task_table::set_state(task& t, state s) {
    --in_state_[static_cast<int>(t.st)];
    ++in_state_[static_cast<int>(s)];
    t.st = s;
}

task_table::accepted task_table::submit(std::string key,
                                        std::string payload,
                                        std::int64_t submitted_ns,
                                        std::uint64_t session) {
    const auto id = id_of(next_seq_);
    if (!key.empty()) {
        // One lookup for both the check and the insert: with a million keys each lookup
        // is a cache miss or two, and they were most of the cost of a submission.
        if (auto [it, inserted] = keys_.try_emplace(key, id); !inserted) {
            ++counters_.duplicate_keys;
            return {it->second, true};
        }
    }

    const auto seq = next_seq_++;
    auto& t = tasks_.emplace_back();
    ++in_state_[static_cast<int>(state::done)];  // set_state moves it out of "done"
    t.key = std::move(key);
    t.payload = std::move(payload);
    t.submitted_ns = submitted_ns;
    if (session != 0) {
        auto [it, inserted] =
            session_index_.try_emplace(session, static_cast<std::uint32_t>(sessions_.size()));
        if (inserted) {
            sessions_.emplace_back();
        }
        t.session = it->second;
        ++sessions_[t.session].accepted;
    }
    set_state(t, state::queued);
    queue_.push_back(seq);
    ++live_;
    live_bytes_ += t.key.size() + t.payload.size();
    ++counters_.submitted;
    return {id, false};
}

worker_id task_table::add_worker(std::string name, std::uint32_t credit) {
    const worker_id w{next_worker_++};
    auto& e = workers_[w.value];
    e.name = std::move(name);
    e.credit = credit;
    ++counters_.workers_joined;
    return w;
}

const std::string& task_table::worker_name(worker_id w) const {
    static const std::string unknown = "unknown";
    auto it = workers_.find(w.value);
    return it == workers_.end() ? unknown : it->second.name;
}

void task_table::add_credit(worker_id w, std::uint32_t n) {
    if (auto it = workers_.find(w.value); it != workers_.end()) {
        it->second.credit += n;
    }
}

void task_table::add_lease(worker_entry& we, std::uint64_t seq, task& t) {
    t.lease_slot = static_cast<std::uint32_t>(we.leased.size());
    we.leased.push_back(seq);
}

void task_table::drop_lease(worker_entry& we, task& t) {
    // The last entry takes the freed place.
    const auto slot = t.lease_slot;
    const auto last = we.leased.back();
    we.leased[slot] = last;
    tasks_[last - base_seq_].lease_slot = slot;
    we.leased.pop_back();
}

void task_table::release_lease(task& t) {
    if (auto it = workers_.find(t.lease_worker); it != workers_.end()) {
        drop_lease(it->second, t);
    }
    t.lease_worker = 0;
    t.started = false;
}

void task_table::requeue_front(std::uint64_t seq, task& t) {
    set_state(t, state::queued);
    queue_.push_front(seq);
}

clock_duration task_table::backoff_for(std::uint32_t attempts) const {
    // base * 2^(attempts-1), capped; the shift is bounded so it cannot overflow.
    const auto shift = std::min<std::uint32_t>(attempts > 0 ? attempts - 1 : 0, 30);
    const auto d = cfg_.backoff_base * (1LL << shift);
    return std::min<clock_duration>(d, cfg_.backoff_max);
}

void task_table::make_dead(std::uint64_t seq, task& t, std::string reason) {
    errors_[seq] = std::move(reason);
    ++t.gen;
    set_state(t, state::dead_pending);
    records_due_.push_back(seq);
    ++counters_.dead;
}

void task_table::finish(std::uint64_t seq, task& t) {
    set_state(t, state::done);
    --live_;
    live_bytes_ -= t.key.size() + t.payload.size();
    ++counters_.confirmed;
    if (t.session != 0) {
        ++sessions_[t.session].finished;
    }
    // Free the strings now: the slot stays until every older task is done too.
    std::string().swap(t.payload);
    std::string().swap(t.key);
    if (!errors_.empty()) {
        errors_.erase(seq);
    }
    while (!tasks_.empty() && tasks_.front().st == state::done) {
        tasks_.pop_front();
        --in_state_[static_cast<int>(state::done)];
        ++base_seq_;
    }
}

void task_table::remove_worker(worker_id w, removal why) {
    auto it = workers_.find(w.value);
    if (it == workers_.end()) {
        return;
    }
    const std::string name = it->second.name;
    auto seqs = std::move(it->second.leased);
    workers_.erase(it);
    if (why == removal::dead) {
        ++counters_.workers_dead;
    }

    // Oldest first, so that reissued tasks keep their relative order at the queue front.
    std::sort(seqs.begin(), seqs.end(), std::greater<>());
    for (auto seq : seqs) {
        auto& t = tasks_[seq - base_seq_];
        const bool was_started = t.started;
        t.lease_worker = 0;
        t.started = false;
        ++counters_.reissued;
        if (!was_started) {
            --t.attempts;  // only prefetched: the delivery does not count
            requeue_front(seq, t);
        } else if (t.attempts >= cfg_.max_attempts) {
            make_dead(seq,
                      t,
                      fmt::format("worker died while running (attempt {} of {}, worker {})",
                                  t.attempts,
                                  cfg_.max_attempts,
                                  name));
        } else {
            errors_[seq] = fmt::format("worker {} died while running", name);
            requeue_front(seq, t);
        }
    }
}

void task_table::on_started(worker_id w, protocol::lease_ref ref) {
    if (auto* t = find_lease(w, ref)) {
        t->started = true;
    }
}

void task_table::on_reported(worker_id w, protocol::lease_ref ref) {
    auto* t = find_lease(w, ref);
    if (t == nullptr) {
        return;
    }
    const auto seq = ref.id.value & seq_mask;
    release_lease(*t);
    ++t->gen;
    set_state(*t, state::reported);
    confirm_timers_.push({clock_.now() + cfg_.confirm_timeout, seq, t->gen});
}

void task_table::on_failed(worker_id w, const protocol::failure& f) {
    auto* t = find_lease(w, {f.id, f.attempt});
    if (t == nullptr) {
        return;
    }
    const auto seq = f.id.value & seq_mask;
    release_lease(*t);
    if (!f.retryable) {
        make_dead(seq, *t, f.reason);
        return;
    }
    if (t->attempts >= cfg_.max_attempts) {
        make_dead(seq, *t, fmt::format("failed {} times, last: {}", t->attempts, f.reason));
        return;
    }
    errors_[seq] = f.reason;
    ++t->gen;
    set_state(*t, state::backoff);
    backoff_timers_.push({clock_.now() + backoff_for(t->attempts), seq, t->gen});
    ++counters_.retried;
}

void task_table::on_returned(worker_id w, protocol::lease_ref ref) {
    auto* t = find_lease(w, ref);
    if (t == nullptr) {
        return;
    }
    const auto seq = ref.id.value & seq_mask;
    release_lease(*t);
    --t->attempts;
    requeue_front(seq, *t);
    ++counters_.returned;
}

bool task_table::on_confirmed(task_id id) {
    auto* t = find(id);
    if (t == nullptr) {
        return false;  // already done: a repeated confirmation
    }
    const auto seq = id.value & seq_mask;
    if (t->st == state::leased) {
        // An earlier attempt's result reached the sink first; the current lease is moot.
        release_lease(*t);
    }
    // A queued entry left in queue_ or a timer left in a heap no longer matches: both are
    // checked against the task's state when they come up.
    finish(seq, *t);
    return true;
}

void task_table::restore(task_id id,
                         std::string key,
                         std::string payload,
                         std::int64_t submitted_ns) {
    TASKVENT_CHECK((id.value >> seq_bits) == cfg_.epoch, "restored task from another epoch");
    const auto seq = id.value & seq_mask;
    TASKVENT_CHECK(seq >= next_seq_, "restored tasks must come in increasing id order");
    if (tasks_.empty()) {
        base_seq_ = seq;
        next_seq_ = seq;
    }
    // Tasks finished before the restart leave gaps; tombstones keep the index dense.
    while (next_seq_ < seq) {
        tasks_.emplace_back();
        ++in_state_[static_cast<int>(state::done)];
        ++next_seq_;
    }
    const auto r = submit(std::move(key), std::move(payload), submitted_ns);
    TASKVENT_CHECK(r.id == id && !r.duplicate, "restored task must keep its id and key");
    --counters_.submitted;  // accepted before the restart, not now
}

std::optional<lease_view> task_table::view(task_id id) const {
    const auto* t = find(id);
    if (t == nullptr) {
        return std::nullopt;
    }
    return lease_view{id, t->attempts, t->key, t->payload, t->submitted_ns};
}

void task_table::restore_key(std::string key, task_id id) {
    keys_.emplace(std::move(key), id);
}

void task_table::skip_to(std::uint64_t max_seq) {
    if (tasks_.empty() && max_seq + 1 > next_seq_) {
        base_seq_ = next_seq_ = max_seq + 1;
        return;
    }
    while (next_seq_ <= max_seq) {
        tasks_.emplace_back();
        ++in_state_[static_cast<int>(state::done)];
        ++next_seq_;
    }
}

void task_table::for_each_live(
    const std::function<void(task_id, std::string_view, std::string_view, std::int64_t)>& fn)
    const {
    for (std::size_t i = 0; i < tasks_.size(); ++i) {
        const auto& t = tasks_[i];
        if (t.st != state::done) {
            fn(id_of(base_seq_ + i), t.key, t.payload, t.submitted_ns);
        }
    }
}

void task_table::for_each_finished_key(
    const std::function<void(std::string_view, task_id)>& fn) const {
    for (const auto& [key, id] : keys_) {
        if (find(id) == nullptr) {
            fn(key, id);
        }
    }
}

std::size_t task_table::dispatch(const send_fn& send) {
    std::size_t sent_total = 0;
    bool progress = true;
    while (progress && !queue_.empty() && !workers_.empty()) {
        progress = false;
        // Round robin from the worker after the one served last.
        auto it = workers_.upper_bound(rr_cursor_);
        for (std::size_t n = 0; n < workers_.size() && !queue_.empty(); ++n, ++it) {
            if (it == workers_.end()) {
                it = workers_.begin();
            }
            auto& [wid, we] = *it;
            if (we.credit == 0) {
                continue;
            }
            rr_cursor_ = wid;

            batch_.clear();
            const auto want = std::min(we.credit, cfg_.batch_size);
            std::vector<std::uint64_t> seqs;
            seqs.reserve(want);
            while (batch_.size() < want && !queue_.empty()) {
                const auto seq = queue_.front();
                queue_.pop_front();
                if (seq < base_seq_) {
                    continue;
                }
                auto& t = tasks_[seq - base_seq_];
                if (t.st != state::queued) {
                    continue;  // confirmed while queued: a stale entry
                }
                ++t.attempts;
                t.lease_worker = wid;
                t.started = false;
                set_state(t, state::leased);
                add_lease(we, seq, t);
                seqs.push_back(seq);
                batch_.push_back({id_of(seq), t.attempts, t.key, t.payload, t.submitted_ns});
            }
            if (batch_.empty()) {
                break;
            }

            if (!send(worker_id{wid}, batch_)) {
                // Never left: undo, oldest back at the front, nothing charged.
                for (auto r = seqs.rbegin(); r != seqs.rend(); ++r) {
                    auto& t = tasks_[*r - base_seq_];
                    --t.attempts;
                    t.lease_worker = 0;
                    drop_lease(we, t);
                    requeue_front(*r, t);
                }
                continue;
            }
            we.credit -= static_cast<std::uint32_t>(batch_.size());
            counters_.leased += batch_.size();
            sent_total += batch_.size();
            progress = true;
        }
    }
    return sent_total;
}

void task_table::advance() {
    const auto now = clock_.now();
    while (!backoff_timers_.empty() && backoff_timers_.top().due <= now) {
        const auto tm = backoff_timers_.top();
        backoff_timers_.pop();
        if (tm.seq < base_seq_) {
            continue;
        }
        auto& t = tasks_[tm.seq - base_seq_];
        if (t.st == state::backoff && t.gen == tm.gen) {
            set_state(t, state::queued);
            queue_.push_back(tm.seq);
        }
    }
    while (!confirm_timers_.empty() && confirm_timers_.top().due <= now) {
        const auto tm = confirm_timers_.top();
        confirm_timers_.pop();
        if (tm.seq < base_seq_) {
            continue;
        }
        auto& t = tasks_[tm.seq - base_seq_];
        if (t.gen != tm.gen) {
            continue;
        }
        if (t.st == state::reported) {
            // The result never became durable (sink restarted, pipe dropped): run it again.
            // Not the task's fault, so the attempt is not charged.
            ++counters_.confirm_timeouts;
            ++counters_.reissued;
            --t.attempts;
            requeue_front(tm.seq, t);
        } else if (t.st == state::dead_pending) {
            records_due_.push_back(tm.seq);
        }
    }
}

std::optional<time_point> task_table::next_deadline() const {
    std::optional<time_point> next;
    if (!backoff_timers_.empty()) {
        next = backoff_timers_.top().due;
    }
    if (!confirm_timers_.empty() && (!next || confirm_timers_.top().due < *next)) {
        next = confirm_timers_.top().due;
    }
    return next;
}

std::vector<protocol::result_item> task_table::take_records() {
    std::vector<protocol::result_item> out;
    const auto now = clock_.now();
    while (!records_due_.empty()) {
        const auto seq = records_due_.front();
        records_due_.pop_front();
        if (seq < base_seq_) {
            continue;
        }
        auto& t = tasks_[seq - base_seq_];
        if (t.st != state::dead_pending) {
            continue;
        }
        ++t.gen;
        confirm_timers_.push({now + cfg_.confirm_timeout, seq, t.gen});
        out.push_back({id_of(seq),
                       t.attempts,
                       protocol::outcome::dead,
                       t.key,
                       errors_[seq],
                       t.submitted_ns,
                       wall_clock_ns(),
                       "ventilator"});
    }
    return out;
}

table_gauges task_table::gauges() const {
    table_gauges g;
    g.queued = in_state_[static_cast<int>(state::queued)];
    g.backoff = in_state_[static_cast<int>(state::backoff)];
    g.leased = in_state_[static_cast<int>(state::leased)];
    g.reported = in_state_[static_cast<int>(state::reported)] +
                 in_state_[static_cast<int>(state::dead_pending)];
    g.live = live_;
    g.workers = workers_.size();
    return g;
}

std::vector<worker_view> task_table::workers() const {
    std::vector<worker_view> out;
    out.reserve(workers_.size());
    for (const auto& [id, e] : workers_) {
        out.push_back({worker_id{id}, e.name, e.leased.size(), e.credit});
    }
    return out;
}

session_progress task_table::progress(std::uint64_t session) const {
    auto it = session_index_.find(session);
    return it == session_index_.end() ? session_progress{} : sessions_[it->second];
}

}  // namespace taskvent::ventilator
