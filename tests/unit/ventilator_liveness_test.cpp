#include <gtest/gtest.h>

#include "taskvent/ventilator/liveness.hpp"

namespace taskvent::ventilator {
namespace {

using namespace std::chrono_literals;

TEST(liveness_tracker, declares_a_silent_worker_dead_once_the_window_has_passed) {
    manual_clock clock;
    liveness_tracker live(clock, 3s);
    live.add(worker_id{1});
    clock.advance(2999ms);
    EXPECT_TRUE(live.expire().empty());
    clock.advance(1ms);
    EXPECT_EQ(live.expire(), std::vector<worker_id>{worker_id{1}});
    EXPECT_TRUE(live.expire().empty()) << "reported once";
    EXPECT_EQ(live.size(), 0u);
}

TEST(liveness_tracker, any_message_pushes_the_deadline_back) {
    manual_clock clock;
    liveness_tracker live(clock, 3s);
    live.add(worker_id{1});
    live.add(worker_id{2});
    for (int i = 0; i < 10; ++i) {
        clock.advance(1s);
        live.seen(worker_id{1});
        auto dead = live.expire();
        if (i < 2) {
            EXPECT_TRUE(dead.empty());
        } else if (i == 2) {
            EXPECT_EQ(dead, std::vector<worker_id>{worker_id{2}});
        }
    }
    EXPECT_EQ(live.size(), 1u);
    ASSERT_TRUE(live.next_deadline().has_value());
}

TEST(liveness_tracker, a_removed_worker_is_never_reported) {
    manual_clock clock;
    liveness_tracker live(clock, 1s);
    live.add(worker_id{5});
    live.remove(worker_id{5});
    clock.advance(5s);
    EXPECT_TRUE(live.expire().empty());
}

}  // namespace
}  // namespace taskvent::ventilator
