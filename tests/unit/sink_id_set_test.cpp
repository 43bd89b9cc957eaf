// The sink's compact id set against a reference std::set under random operations, and its
// cost for dense ids.
#include <gtest/gtest.h>

#include <random>
#include <set>

#include "taskvent/sink/id_set.hpp"

namespace taskvent::sink {
namespace {

TEST(id_set, agrees_with_a_reference_set_under_random_operations) {
    const auto seed = std::random_device{}();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    // Two epochs' worth of neighbouring ids and a few far-off ones, as a sink sees them.
    const std::uint64_t epochs[] = {std::uint64_t{7} << 40, std::uint64_t{9} << 40};
    std::uniform_int_distribution<std::uint64_t> near(0, 20000), op(0, 9), far(0, ~0ULL);
    id_set s;
    std::set<std::uint64_t> ref;
    for (int i = 0; i < 200000; ++i) {
        const auto pick = op(rng);
        const auto id = pick == 0 ? far(rng) : epochs[pick % 2] + near(rng);
        if (pick < 6) {
            ASSERT_EQ(s.insert(task_id{id}), ref.insert(id).second) << id;
        } else if (pick < 8) {
            ASSERT_EQ(s.contains(task_id{id}), ref.contains(id)) << id;
        } else {
            ASSERT_EQ(s.erase(task_id{id}), ref.erase(id) == 1) << id;
        }
        ASSERT_EQ(s.size(), ref.size());
    }
    for (const auto id : ref) {
        ASSERT_TRUE(s.contains(task_id{id})) << id;
    }
    s.clear();
    EXPECT_EQ(s.size(), 0u);
    EXPECT_FALSE(s.contains(task_id{*ref.begin()}));
}

TEST(id_set, holds_a_million_dense_ids_in_one_bit_each) {
    id_set s;
    const std::uint64_t base = std::uint64_t{3} << 40;
    for (std::uint64_t i = 1; i <= 1'000'000; ++i) {
        ASSERT_TRUE(s.insert(task_id{base + i}));
    }
    EXPECT_FALSE(s.insert(task_id{base + 500'000}));
    EXPECT_EQ(s.size(), 1'000'000u);
    EXPECT_LE(s.blocks() * id_set::block_bytes, 1'000'000u / 8 + 2 * id_set::block_bytes);
}

}  // namespace
}  // namespace taskvent::sink
