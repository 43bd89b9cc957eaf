// The task table driven by a manual clock: no sockets, no sleeping.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>

#include "taskvent/ventilator/task_table.hpp"

namespace taskvent::ventilator {
namespace {

using namespace std::chrono_literals;

struct sent_lease {
    worker_id worker;
    protocol::lease_ref ref;
    std::string payload;
};

class table_fixture : public ::testing::Test {
  protected:
    table_fixture() : table_(config(), clock_) {}

    static table_config config() {
        table_config cfg;
        cfg.max_attempts = 3;
        cfg.confirm_timeout = 10s;
        cfg.backoff_base = 100ms;
        cfg.backoff_max = 1s;
        cfg.batch_size = 4;
        cfg.epoch = 7;
        return cfg;
    }

    std::vector<task_id> submit_n(int n) {
        std::vector<task_id> ids;
        for (int i = 0; i < n; ++i) {
            ids.push_back(table_.submit("", "p" + std::to_string(i), 0).id);
        }
        return ids;
    }

    /// Dispatches and records every lease sent.
    std::vector<sent_lease> dispatch(bool accept = true) {
        std::vector<sent_lease> out;
        table_.dispatch([&](worker_id w, std::span<const lease_view> batch) {
            if (!accept) {
                return false;
            }
            for (const auto& l : batch) {
                out.push_back({w, {l.id, l.attempt}, std::string(l.payload)});
            }
            return true;
        });
        return out;
    }

    manual_clock clock_;
    task_table table_;
};

TEST_F(table_fixture, never_leases_beyond_a_workers_credit) {
    submit_n(20);
    const auto w = table_.add_worker("w1", 3);

    auto sent = dispatch();
    ASSERT_EQ(sent.size(), 3u);
    EXPECT_TRUE(dispatch().empty()) << "no credit left, nothing more may be sent";

    table_.add_credit(w, 2);
    EXPECT_EQ(dispatch().size(), 2u);
    EXPECT_EQ(table_.gauges().leased, 5u);
    EXPECT_EQ(table_.gauges().queued, 15u);
}

TEST_F(table_fixture, lists_each_worker_with_what_it_holds_and_its_credit_left) {
    submit_n(5);
    const auto a = table_.add_worker("a", 3);
    const auto b = table_.add_worker("b", 4);
    const auto sent = dispatch();
    ASSERT_EQ(sent.size(), 5u);
    // A reported task is the sink's business now: it no longer counts as held.
    table_.on_reported(sent.front().worker, sent.front().ref);

    const auto ws = table_.workers();
    ASSERT_EQ(ws.size(), 2u);
    std::size_t held = 0;
    for (const auto& w : ws) {
        held += w.held;
        EXPECT_EQ(w.held + w.credit, (w.id == a ? 3u : 4u) - (w.id == sent.front().worker ? 1 : 0))
            << w.name;
    }
    EXPECT_EQ(held, 4u);
    EXPECT_EQ(ws[0].name, "a");
    EXPECT_EQ(ws[1].id, b);

    table_.remove_worker(a, removal::dead);
    table_.add_worker("a", 3);
    EXPECT_EQ(table_.workers().size(), 2u);
    EXPECT_EQ(table_.counters().workers_joined, 3u) << "a worker that comes back joins again";
}

TEST_F(table_fixture, leases_in_submission_order_in_batches_of_at_most_batch_size) {
    submit_n(10);
    table_.add_worker("w1", 100);
    std::vector<std::size_t> batch_sizes;
    std::vector<std::string> payloads;
    table_.dispatch([&](worker_id, std::span<const lease_view> batch) {
        batch_sizes.push_back(batch.size());
        for (const auto& l : batch) {
            payloads.emplace_back(l.payload);
        }
        return true;
    });
    EXPECT_EQ(batch_sizes, (std::vector<std::size_t>{4, 4, 2}));
    ASSERT_EQ(payloads.size(), 10u);
    for (int i = 0; i < 10; ++i) {
        EXPECT_EQ(payloads[static_cast<std::size_t>(i)], "p" + std::to_string(i));
    }
}

TEST_F(table_fixture, spreads_work_round_robin_across_workers) {
    submit_n(8);
    const auto a = table_.add_worker("a", 4);
    const auto b = table_.add_worker("b", 4);
    std::map<std::uint32_t, int> per_worker;
    for (const auto& s : dispatch()) {
        ++per_worker[s.worker.value];
    }
    EXPECT_EQ(per_worker[a.value], 4);
    EXPECT_EQ(per_worker[b.value], 4);
}

TEST_F(table_fixture, a_batch_that_never_left_is_put_back_uncharged) {
    submit_n(2);
    table_.add_worker("w1", 10);
    EXPECT_TRUE(dispatch(false).empty());
    EXPECT_EQ(table_.gauges().queued, 2u);

    auto sent = dispatch();
    ASSERT_EQ(sent.size(), 2u);
    EXPECT_EQ(sent[0].ref.attempt, 1u) << "the failed send must not count as a delivery";
    EXPECT_EQ(sent[0].payload, "p0");
}

TEST_F(table_fixture, a_task_is_done_only_when_the_sink_confirms_it) {
    const auto ids = submit_n(1);
    const auto w = table_.add_worker("w1", 1);
    auto sent = dispatch();
    ASSERT_EQ(sent.size(), 1u);

    table_.on_started(w, sent[0].ref);
    table_.on_reported(w, sent[0].ref);
    EXPECT_FALSE(table_.idle());
    EXPECT_EQ(table_.gauges().reported, 1u);

    table_.on_confirmed(ids[0]);
    EXPECT_TRUE(table_.idle());
    EXPECT_EQ(table_.counters().confirmed, 1u);
}

TEST_F(table_fixture, reissues_every_task_of_a_dead_worker_at_once) {
    submit_n(6);
    const auto dead = table_.add_worker("dead", 4);
    auto first = dispatch();
    ASSERT_EQ(first.size(), 4u);
    for (const auto& s : first) {
        table_.on_started(dead, s.ref);
    }

    table_.remove_worker(dead, removal::dead);
    EXPECT_EQ(table_.counters().reissued, 4u);
    EXPECT_EQ(table_.gauges().queued, 6u);

    const auto alive = table_.add_worker("alive", 10);
    auto second = dispatch();
    ASSERT_EQ(second.size(), 6u);
    // Reissued tasks go first, in their original order, as second attempts.
    for (std::size_t i = 0; i < 4; ++i) {
        EXPECT_EQ(second[i].ref.id, first[i].ref.id);
        EXPECT_EQ(second[i].ref.attempt, 2u);
        EXPECT_EQ(second[i].worker, alive);
    }
    EXPECT_EQ(second[4].ref.attempt, 1u);
}

TEST_F(table_fixture, a_prefetched_task_of_a_dead_worker_is_not_charged) {
    submit_n(2);
    const auto w = table_.add_worker("w", 2);
    auto sent = dispatch();
    table_.on_started(w, sent[0].ref);  // only the first one started
    table_.remove_worker(w, removal::dead);

    table_.add_worker("w2", 2);
    auto again = dispatch();
    ASSERT_EQ(again.size(), 2u);
    std::map<std::uint64_t, std::uint32_t> attempt;
    for (const auto& s : again) {
        attempt[s.ref.id.value] = s.ref.attempt;
    }
    EXPECT_EQ(attempt[sent[0].ref.id.value], 2u) << "started on a worker that died: charged";
    EXPECT_EQ(attempt[sent[1].ref.id.value], 1u) << "only prefetched: not charged";
}

TEST_F(table_fixture, a_task_that_kills_max_attempts_workers_is_dead_with_the_reason) {
    const auto ids = submit_n(1);
    for (std::uint32_t i = 1; i <= 3; ++i) {
        const auto w = table_.add_worker("w" + std::to_string(i), 1);
        auto sent = dispatch();
        ASSERT_EQ(sent.size(), 1u) << "attempt " << i;
        EXPECT_EQ(sent[0].ref.attempt, i);
        table_.on_started(w, sent[0].ref);
        table_.remove_worker(w, removal::dead);
    }
    table_.add_worker("survivor", 1);
    EXPECT_TRUE(dispatch().empty()) << "a dead task is never leased again";

    auto records = table_.take_records();
    ASSERT_EQ(records.size(), 1u);
    EXPECT_EQ(records[0].id, ids[0]);
    EXPECT_EQ(records[0].status, protocol::outcome::dead);
    EXPECT_EQ(records[0].attempt, 3u);
    EXPECT_NE(records[0].body.find("worker died while running"), std::string::npos)
        << records[0].body;
    EXPECT_EQ(table_.counters().dead, 1u);

    table_.on_confirmed(ids[0]);
    EXPECT_TRUE(table_.idle());
}

TEST_F(table_fixture, an_unconfirmed_dead_record_is_sent_again_after_the_confirm_timeout) {
    submit_n(1);
    const auto w = table_.add_worker("w", 1);
    auto sent = dispatch();
    table_.on_failed(w, {sent[0].ref.id, sent[0].ref.attempt, false, "bad input"});
    ASSERT_EQ(table_.take_records().size(), 1u);
    EXPECT_TRUE(table_.take_records().empty());

    clock_.advance(10s);
    table_.advance();
    auto again = table_.take_records();
    ASSERT_EQ(again.size(), 1u);
    EXPECT_EQ(again[0].body, "bad input");
}

TEST_F(table_fixture, a_retryable_failure_waits_out_an_exponential_backoff) {
    submit_n(1);
    const auto w = table_.add_worker("w", 1);

    auto sent = dispatch();
    table_.on_failed(w, {sent[0].ref.id, 1, true, "flaky"});
    table_.add_credit(w, 1);
    EXPECT_TRUE(dispatch().empty()) << "still in backoff";
    ASSERT_TRUE(table_.next_deadline().has_value());
    EXPECT_EQ(*table_.next_deadline() - clock_.now(), 100ms);

    clock_.advance(100ms);
    table_.advance();
    sent = dispatch();
    ASSERT_EQ(sent.size(), 1u);
    EXPECT_EQ(sent[0].ref.attempt, 2u);

    table_.on_failed(w, {sent[0].ref.id, 2, true, "flaky"});
    table_.add_credit(w, 1);
    EXPECT_EQ(*table_.next_deadline() - clock_.now(), 200ms) << "doubles each time";
    clock_.advance(199ms);
    table_.advance();
    EXPECT_TRUE(dispatch().empty());
    clock_.advance(1ms);
    table_.advance();
    sent = dispatch();
    ASSERT_EQ(sent.size(), 1u);

    table_.on_failed(w, {sent[0].ref.id, 3, true, "flaky"});
    auto records = table_.take_records();
    ASSERT_EQ(records.size(), 1u) << "attempts exhausted: dead";
    EXPECT_NE(records[0].body.find("failed 3 times"), std::string::npos) << records[0].body;
}

TEST_F(table_fixture, a_reported_task_without_confirmation_is_reissued_after_the_timeout) {
    const auto ids = submit_n(1);
    const auto w = table_.add_worker("w", 1);
    auto sent = dispatch();
    table_.on_started(w, sent[0].ref);
    table_.on_reported(w, sent[0].ref);
    table_.add_credit(w, 1);

    clock_.advance(9999ms);
    table_.advance();
    EXPECT_TRUE(dispatch().empty());

    clock_.advance(1ms);
    table_.advance();
    EXPECT_EQ(table_.counters().confirm_timeouts, 1u);
    auto again = dispatch();
    ASSERT_EQ(again.size(), 1u);
    EXPECT_EQ(again[0].ref.id, ids[0]);
    EXPECT_EQ(again[0].ref.attempt, 1u) << "a lost result is not the task's fault";
}

TEST_F(table_fixture, late_doubled_and_foreign_acks_change_nothing) {
    const auto ids = submit_n(2);
    const auto a = table_.add_worker("a", 1);
    const auto b = table_.add_worker("b", 1);
    auto sent = dispatch();
    ASSERT_EQ(sent.size(), 2u);
    const auto& lease_a = sent[0].worker == a ? sent[0] : sent[1];
    const auto& lease_b = sent[0].worker == a ? sent[1] : sent[0];

    table_.on_reported(b, lease_a.ref);                                // another worker's lease
    table_.on_reported(a, {lease_a.ref.id, lease_a.ref.attempt + 1});  // wrong attempt
    table_.on_reported(a, {task_id{12345}, 1});                        // unknown id
    table_.on_failed(a, {task_id{999}, 1, true, "x"});
    EXPECT_EQ(table_.gauges().leased, 2u);
    EXPECT_EQ(table_.counters().stale_acks, 4u);

    table_.on_reported(a, lease_a.ref);
    table_.on_reported(a, lease_a.ref);  // doubled
    EXPECT_EQ(table_.gauges().reported, 1u);
    table_.on_confirmed(lease_a.ref.id);
    table_.on_confirmed(lease_a.ref.id);  // doubled confirmation
    EXPECT_EQ(table_.counters().confirmed, 1u);
    EXPECT_EQ(table_.gauges().leased, 1u);
    (void)lease_b;
    (void)ids;
}

TEST_F(table_fixture, a_confirmation_from_an_earlier_attempt_finishes_the_current_lease) {
    submit_n(1);
    const auto a = table_.add_worker("a", 1);
    auto first = dispatch();
    table_.on_started(a, first[0].ref);
    table_.remove_worker(a, removal::dead);
    const auto b = table_.add_worker("b", 1);
    auto second = dispatch();
    ASSERT_EQ(second.size(), 1u);

    table_.on_confirmed(first[0].ref.id);  // the dead worker's result did reach the sink
    EXPECT_TRUE(table_.idle());
    table_.on_reported(b, second[0].ref);  // b's late report is now stale
    EXPECT_TRUE(table_.idle());
}

TEST_F(table_fixture, returned_tasks_are_not_charged_an_attempt) {
    submit_n(3);
    const auto w = table_.add_worker("draining", 3);
    auto sent = dispatch();
    for (const auto& s : sent) {
        table_.on_returned(w, s.ref);
    }
    EXPECT_EQ(table_.counters().returned, 3u);
    table_.remove_worker(w, removal::left);
    table_.add_worker("next", 3);
    for (const auto& s : dispatch()) {
        EXPECT_EQ(s.ref.attempt, 1u);
    }
}

TEST_F(table_fixture, a_key_already_accepted_is_not_queued_twice) {
    const auto first = table_.submit("order-17", "x", 0);
    const auto again = table_.submit("order-17", "y", 0);
    EXPECT_FALSE(first.duplicate);
    EXPECT_TRUE(again.duplicate);
    EXPECT_EQ(again.id, first.id);
    EXPECT_EQ(table_.gauges().queued, 1u);
    EXPECT_EQ(table_.counters().duplicate_keys, 1u);
}

TEST_F(table_fixture, tracks_progress_per_submission_session) {
    table_.submit("", "a", 0, 42);
    const auto b = table_.submit("", "b", 0, 42);
    table_.submit("", "c", 0, 43);
    table_.on_confirmed(b.id);
    EXPECT_EQ(table_.progress(42).accepted, 2u);
    EXPECT_EQ(table_.progress(42).finished, 1u);
    EXPECT_EQ(table_.progress(43).finished, 0u);
}

TEST_F(table_fixture, ids_carry_the_epoch_and_ids_of_another_epoch_are_ignored) {
    const auto id = table_.submit("", "a", 0).id;
    EXPECT_EQ(id.value >> 40, 7u);
    table_.on_confirmed(task_id{(8ULL << 40) | (id.value & ((1ULL << 40) - 1))});
    EXPECT_FALSE(table_.idle());
}

TEST_F(table_fixture, random_events_keep_every_task_accounted_for) {
    // A randomized walk through leases, deaths, failures and confirmations: at the end,
    // after confirming everything reported, every task is done exactly once.
    std::mt19937 rng(12345);
    constexpr int n = 2000;
    submit_n(n);
    std::vector<worker_id> workers;
    for (int i = 0; i < 4; ++i) {
        workers.push_back(table_.add_worker("w" + std::to_string(i), 16));
    }
    std::vector<sent_lease> outstanding;
    std::set<std::uint64_t> confirmed;
    for (int step = 0; step < 20000 && !table_.idle(); ++step) {
        for (auto& s : dispatch()) {
            outstanding.push_back(s);
        }
        table_.advance();
        for (auto& r : table_.take_records()) {
            table_.on_confirmed(r.id);
            EXPECT_TRUE(confirmed.insert(r.id.value).second);
        }
        if (outstanding.empty()) {
            clock_.advance(50ms);
            continue;
        }
        const auto pick = rng() % outstanding.size();
        const auto s = outstanding[pick];
        outstanding.erase(outstanding.begin() + static_cast<std::ptrdiff_t>(pick));
        const auto roll = rng() % 100;
        if (!table_.has_worker(s.worker)) {
            continue;
        }
        table_.on_started(s.worker, s.ref);
        if (roll < 80) {
            table_.on_reported(s.worker, s.ref);
            table_.add_credit(s.worker, 1);
            if (rng() % 10 != 0) {  // one in ten results is lost on the way to the sink
                table_.on_confirmed(s.ref.id);
                confirmed.insert(s.ref.id.value);
            }
        } else if (roll < 95) {
            table_.on_failed(s.worker, {s.ref.id, s.ref.attempt, true, "flaky"});
            table_.add_credit(s.worker, 1);
        } else {
            table_.remove_worker(s.worker, removal::dead);
            std::erase_if(outstanding, [&](const sent_lease& o) { return o.worker == s.worker; });
            std::replace(workers.begin(), workers.end(), s.worker, table_.add_worker("new", 16));
        }
        clock_.advance(5ms);
    }
    EXPECT_TRUE(table_.idle());
    EXPECT_EQ(confirmed.size(), static_cast<std::size_t>(n));
    EXPECT_EQ(table_.counters().confirmed, static_cast<std::uint64_t>(n));
}

}  // namespace
}  // namespace taskvent::ventilator
