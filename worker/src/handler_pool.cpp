#include "handler_pool.hpp"

#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <system_error>

namespace taskvent::worker::detail {

struct handler_pool::shared_state {
    shared_state(handler h_in, std::chrono::milliseconds timeout)
        : h(std::move(h_in)), task_timeout(timeout) {
        efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (efd < 0) {
            throw std::system_error(errno, std::generic_category(), "eventfd");
        }
    }
    // Destroyed by the last owner, which may be a detached stuck thread: the eventfd must
    // outlive every thread that could still post to it.
    ~shared_state() { ::close(efd); }

    void signal() const noexcept {
        const std::uint64_t one = 1;
        (void)!::write(efd, &one, sizeof one);
    }

    /// Returns the event's ticket: its place among started events (0 for others).
    std::uint64_t post(pool_event ev) {
        bool was_empty = false;
        std::uint64_t ticket = 0;
        {
            std::lock_guard lock(events_mutex);
            if (ev.what == pool_event::kind::started) {
                ticket = ++last_ticket;
            }
            was_empty = events.empty();
            events.push_back(std::move(ev));
        }
        // The I/O thread clears the eventfd before it takes the vector, so one signal per
        // empty -> non-empty transition is enough and saves a syscall per event.
        if (was_empty) {
            signal();
        }
        return ticket;
    }

    void wait_reported(std::uint64_t ticket) {
        std::unique_lock lock(report_mutex);
        report_cv.wait_for(lock, handler_pool::report_wait, [&] {
            return reported_through >= ticket || stopping_reports;
        });
    }

    const handler h;
    const std::chrono::milliseconds task_timeout;
    int efd = -1;

    std::mutex queue_mutex;
    std::condition_variable queue_cv;
    std::deque<std::shared_ptr<task_run>> queue;
    std::size_t idle = 0;  ///< threads waiting on queue_cv
    bool stopping = false;

    std::mutex events_mutex;
    std::vector<pool_event> events;
    std::uint64_t last_ticket = 0;    ///< under events_mutex
    std::uint64_t taken_through = 0;  ///< under events_mutex: tickets take_events returned

    std::atomic<bool> report_before_run{true};
    std::mutex report_mutex;
    std::condition_variable report_cv;
    std::uint64_t reported_through = 0;  ///< under report_mutex
    bool stopping_reports = false;       ///< under report_mutex

    std::atomic<std::size_t> stuck{0};
    std::mutex live_mutex;
    std::condition_variable live_cv;
    std::size_t live = 0;
};

namespace {

handler_result invoke(const handler& h, const task_context& ctx) {
    try {
        return h(ctx);
    } catch (const std::exception& e) {
        return handler_result::retry(e.what());
    } catch (...) {
        return handler_result::retry("handler threw an exception not derived from std::exception");
    }
}

}  // namespace

handler_pool::handler_pool(handler h, std::chrono::milliseconds task_timeout)
    : state_(std::make_shared<shared_state>(std::move(h), task_timeout)) {}

handler_pool::~handler_pool() {
    stop(std::chrono::milliseconds(0));
}

void handler_pool::start(std::size_t threads) {
    for (std::size_t i = 0; i < threads; ++i) {
        spawn();
    }
}

void handler_pool::set_report_before_run(bool on) noexcept {
    state_->report_before_run.store(on, std::memory_order_relaxed);
}

void handler_pool::mark_reported() {
    std::uint64_t ticket = 0;
    {
        std::lock_guard lock(state_->events_mutex);
        ticket = state_->taken_through;
    }
    {
        std::lock_guard lock(state_->report_mutex);
        if (ticket <= state_->reported_through) {
            return;
        }
        state_->reported_through = ticket;
    }
    state_->report_cv.notify_all();
}

int handler_pool::event_fd() const noexcept {
    return state_->efd;
}

void handler_pool::wake() noexcept {
    state_->signal();
}

void handler_pool::push(std::vector<std::shared_ptr<task_run>>&& runs) {
    if (runs.empty()) {
        return;
    }
    std::size_t wake = 0;
    bool all = false;
    {
        std::lock_guard lock(state_->queue_mutex);
        state_->queue.insert(state_->queue.end(),
                             std::make_move_iterator(runs.begin()),
                             std::make_move_iterator(runs.end()));
        // Wake no more threads than there are new tasks, and none that is busy: a busy
        // thread takes the next task itself when it finishes. One wake per task was a
        // futex call and a context switch per task for handlers that take microseconds.
        wake = std::min(runs.size(), state_->idle);
        all = wake == state_->idle;
    }
    runs.clear();
    if (all) {
        state_->queue_cv.notify_all();
        return;
    }
    for (std::size_t i = 0; i < wake; ++i) {
        state_->queue_cv.notify_one();
    }
}

std::vector<std::shared_ptr<task_run>> handler_pool::take_queued() {
    std::lock_guard lock(state_->queue_mutex);
    std::vector<std::shared_ptr<task_run>> out(std::make_move_iterator(state_->queue.begin()),
                                               std::make_move_iterator(state_->queue.end()));
    state_->queue.clear();
    return out;
}

std::vector<pool_event> handler_pool::take_events() {
    std::uint64_t count = 0;
    (void)!::read(state_->efd, &count, sizeof count);
    std::vector<pool_event> out;
    std::lock_guard lock(state_->events_mutex);
    out.swap(state_->events);
    state_->taken_through = state_->last_ticket;
    return out;
}

bool handler_pool::abandon(task_run& run, bool replace) {
    auto expected = run_phase::running;
    if (!run.phase.compare_exchange_strong(expected, run_phase::abandoned)) {
        return false;
    }
    state_->stuck.fetch_add(1);
    run.cancel.cancel();
    if (replace) {
        spawn();
    }
    return true;
}

std::size_t handler_pool::stuck() const noexcept {
    return state_->stuck.load();
}

void handler_pool::spawn() {
    auto finished = std::make_shared<std::atomic<bool>>(false);
    {
        std::lock_guard lock(state_->live_mutex);
        ++state_->live;
    }
    auto body = [state = state_, finished] {
        for (;;) {
            std::shared_ptr<task_run> run;
            {
                std::unique_lock lock(state->queue_mutex);
                const auto ready = [&] { return state->stopping || !state->queue.empty(); };
                if (!ready()) {
                    ++state->idle;
                    state->queue_cv.wait(lock, ready);
                    --state->idle;
                }
                if (state->stopping) {
                    break;
                }
                run = std::move(state->queue.front());
                state->queue.pop_front();
                // Under the queue lock: take_queued() sees a task either queued or started.
                run->phase.store(run_phase::running);
            }

            const auto started = std::chrono::steady_clock::now();
            const auto deadline = state->task_timeout.count() > 0
                                      ? started + state->task_timeout
                                      : std::chrono::steady_clock::time_point::max();
            pool_event started_ev;
            started_ev.what = pool_event::kind::started;
            started_ev.run = run;
            started_ev.deadline = deadline;
            const auto ticket = state->post(std::move(started_ev));
            if (state->report_before_run.load(std::memory_order_relaxed)) {
                state->wait_reported(ticket);
            }

            const task_context ctx{.id = run->item.id,
                                   .attempt = run->item.attempt,
                                   .key = run->item.key,
                                   .payload = run->item.payload,
                                   .deadline = deadline,
                                   .cancel = &run->cancel};
            auto result = invoke(state->h, ctx);
            const auto elapsed = std::chrono::steady_clock::now() - started;

            auto expected = run_phase::running;
            if (!run->phase.compare_exchange_strong(expected, run_phase::completed)) {
                // Abandoned: the failure was reported and a replacement took this slot.
                state->stuck.fetch_sub(1);
                break;
            }
            pool_event finished_ev;
            finished_ev.what = pool_event::kind::finished;
            finished_ev.run = std::move(run);
            finished_ev.elapsed = elapsed;
            finished_ev.result.emplace(std::move(result));
            state->post(std::move(finished_ev));
        }
        finished->store(true);
        {
            std::lock_guard lock(state->live_mutex);
            --state->live;
        }
        state->live_cv.notify_all();
    };

    // Termination signals must reach the I/O thread (its poll returns EINTR and it starts
    // draining), so handler threads start with them blocked.
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    std::thread t(std::move(body));
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    pthread_setname_np(t.native_handle(), "tv-handler");
    threads_.push_back({std::move(t), std::move(finished)});
}

void handler_pool::stop(std::chrono::milliseconds grace) {
    {
        std::lock_guard lock(state_->queue_mutex);
        state_->stopping = true;
    }
    state_->queue_cv.notify_all();
    {
        std::lock_guard lock(state_->report_mutex);
        state_->stopping_reports = true;
    }
    state_->report_cv.notify_all();
    {
        // Idle threads leave within microseconds; only stuck handlers use up the grace.
        constexpr auto idle_exit = std::chrono::milliseconds(500);
        std::unique_lock lock(state_->live_mutex);
        state_->live_cv.wait_for(lock, grace, [&] { return state_->live == 0; });
        state_->live_cv.wait_for(
            lock, idle_exit, [&] { return state_->live <= state_->stuck.load(); });
    }
    for (auto& slot : threads_) {
        if (!slot.thread.joinable()) {
            continue;
        }
        if (slot.finished->load()) {
            slot.thread.join();
        } else {
            slot.thread.detach();
        }
    }
    threads_.clear();
}

}  // namespace taskvent::worker::detail
