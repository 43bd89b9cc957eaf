// The worker's reconnect schedule, driven by hand: no clock, no sockets.
#include <gtest/gtest.h>

#include "taskvent/worker/backoff.hpp"

using std::chrono::milliseconds;
using taskvent::worker::reconnect_backoff;

TEST(reconnect_backoff, doubles_from_min_up_to_max) {
    reconnect_backoff b(milliseconds(100), milliseconds(1000));
    EXPECT_EQ(b.next(), milliseconds(100));
    EXPECT_EQ(b.next(), milliseconds(200));
    EXPECT_EQ(b.next(), milliseconds(400));
    EXPECT_EQ(b.next(), milliseconds(800));
    EXPECT_EQ(b.next(), milliseconds(1000));
    EXPECT_EQ(b.next(), milliseconds(1000));
}

TEST(reconnect_backoff, starts_again_from_min_after_reset) {
    reconnect_backoff b(milliseconds(50), milliseconds(32000));
    for (int i = 0; i < 20; ++i) {
        (void)b.next();
    }
    EXPECT_EQ(b.next(), milliseconds(32000));
    b.reset();
    EXPECT_EQ(b.next(), milliseconds(50));
    EXPECT_EQ(b.next(), milliseconds(100));
}

TEST(reconnect_backoff, jitter_shaves_at_most_a_quarter_and_never_goes_below_min) {
    reconnect_backoff b(milliseconds(100), milliseconds(10000));
    EXPECT_EQ(b.next(0.99), milliseconds(100));  // already at min: nothing to shave
    const auto second = b.next(0.99);
    EXPECT_GE(second, milliseconds(150));
    EXPECT_LT(second, milliseconds(200));
    EXPECT_EQ(b.next(0.0), milliseconds(400));
}

TEST(reconnect_backoff, does_not_overflow_with_a_huge_max) {
    reconnect_backoff b(milliseconds(1), milliseconds::max());
    auto last = milliseconds(0);
    for (int i = 0; i < 200; ++i) {
        const auto d = b.next();
        EXPECT_GE(d, last);
        last = d;
    }
    EXPECT_EQ(last, milliseconds::max());
}
