// The journal on real files in a temporary directory: write, replay, tear, corrupt, compact.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "taskvent/temp_dir.hpp"
#include "taskvent/ventilator/journal.hpp"
#include "taskvent/ventilator/task_table.hpp"

namespace taskvent::ventilator {
namespace {

namespace fs = std::filesystem;

constexpr std::uint32_t epoch = 3;

task_id make_id(std::uint64_t seq) {
    return task_id{(std::uint64_t{epoch} << 40) | seq};
}

class journal_fixture : public ::testing::Test {
  protected:
    void SetUp() override {
        dir_ = make_temp_dir("taskvent-journal");
        path_ = (dir_ / "journal").string();
    }
    void TearDown() override { fs::remove_all(dir_); }

    void write_tasks(int n, int done_every = 0) {
        journal j(path_, epoch);
        for (int i = 1; i <= n; ++i) {
            j.append_accept(make_id(static_cast<std::uint64_t>(i)),
                            "k" + std::to_string(i),
                            "payload " + std::to_string(i),
                            i);
        }
        ASSERT_FALSE(j.commit());
        if (done_every > 0) {
            for (int i = done_every; i <= n; i += done_every) {
                j.append_done(make_id(static_cast<std::uint64_t>(i)));
            }
            ASSERT_FALSE(j.commit());
        }
    }

    fs::path dir_;
    std::string path_;
};

TEST_F(journal_fixture, replays_accepted_tasks_that_are_not_done) {
    write_tasks(10, 3);  // 3, 6, 9 done
    const auto r = journal::replay(path_);
    EXPECT_EQ(r.epoch, epoch);
    EXPECT_EQ(r.max_seq, 10u);
    ASSERT_EQ(r.live.size(), 7u);
    EXPECT_EQ(r.live[0].id, make_id(1));
    EXPECT_EQ(r.live[0].key, "k1");
    EXPECT_EQ(r.live[0].payload, "payload 1");
    EXPECT_EQ(r.live[0].submitted_ns, 1);
    EXPECT_EQ(r.live[2].id, make_id(4));
    EXPECT_EQ(r.finished_keys.size(), 3u);
    EXPECT_EQ(r.truncated_bytes, 0u);
}

TEST_F(journal_fixture, an_absent_journal_replays_as_empty) {
    const auto r = journal::replay(path_);
    EXPECT_EQ(r.epoch, 0u);
    EXPECT_TRUE(r.live.empty());
}

TEST_F(journal_fixture, a_torn_tail_is_truncated_and_replay_goes_on) {
    write_tasks(5);
    const auto full = fs::file_size(path_);
    fs::resize_file(path_, full - 7);  // the last record cut mid-write

    const auto r = journal::replay(path_);
    EXPECT_EQ(r.live.size(), 4u);
    EXPECT_GT(r.truncated_bytes, 0u);
    EXPECT_LT(fs::file_size(path_), full - 7) << "the torn record is cut off the file";

    // Appending after the truncation gives a journal that replays cleanly.
    {
        journal j(path_, epoch);
        j.append_accept(make_id(6), "k6", "p6", 6);
        ASSERT_FALSE(j.commit());
    }
    const auto again = journal::replay(path_);
    EXPECT_EQ(again.live.size(), 5u);
    EXPECT_EQ(again.truncated_bytes, 0u);
}

TEST_F(journal_fixture, a_zero_filled_tail_is_treated_as_torn) {
    write_tasks(3);
    {
        std::ofstream out(path_, std::ios::app | std::ios::binary);
        out << std::string(4096, '\0');
    }
    const auto r = journal::replay(path_);
    EXPECT_EQ(r.live.size(), 3u);
    EXPECT_EQ(r.truncated_bytes, 4096u);
}

TEST_F(journal_fixture, corruption_in_the_middle_is_an_error_naming_the_offset) {
    write_tasks(5);
    {
        // Flip a byte inside the second record's payload.
        const int fd = ::open(path_.c_str(), O_RDWR);
        ASSERT_GE(fd, 0);
        char c = 0;
        ASSERT_EQ(::pread(fd, &c, 1, 60), 1);
        c = static_cast<char>(c ^ 0x55);
        ASSERT_EQ(::pwrite(fd, &c, 1, 60), 1);
        ::close(fd);
    }
    try {
        (void)journal::replay(path_);
        FAIL() << "replay must refuse a corrupt journal";
    } catch (const journal_error& e) {
        EXPECT_NE(std::string(e.what()).find("corrupt at offset"), std::string::npos) << e.what();
    }
}

TEST_F(journal_fixture, compaction_keeps_exactly_the_live_tasks_and_the_keys) {
    manual_clock clock;
    table_config cfg;
    cfg.epoch = epoch;
    task_table table(cfg, clock);
    journal j(path_, epoch);
    for (int i = 0; i < 1000; ++i) {
        const auto r = table.submit("key" + std::to_string(i), std::string(100, 'x'), i);
        const auto v = *table.view(r.id);
        j.append_accept(r.id, v.key, v.payload, v.submitted_ns);
    }
    ASSERT_FALSE(j.commit());
    // Finish all but every tenth.
    for (std::uint64_t seq = 1; seq <= 1000; ++seq) {
        if (seq % 10 != 0) {
            ASSERT_TRUE(table.on_confirmed(make_id(seq)));
            j.append_done(make_id(seq));
        }
    }
    ASSERT_FALSE(j.commit());
    const auto before = j.size_bytes();

    ASSERT_FALSE(j.rewrite([&](const journal::writer& w) {
        table.for_each_finished_key(w.finished_key);
        table.for_each_live(w.accept);
    }));
    EXPECT_LT(j.size_bytes(), before / 3);
    EXPECT_EQ(j.size_bytes(), fs::file_size(path_));

    // Appends after compaction land in the new file.
    j.append_done(make_id(10));
    ASSERT_FALSE(j.commit());

    const auto r = journal::replay(path_);
    ASSERT_EQ(r.live.size(), 99u);
    for (const auto& t : r.live) {
        EXPECT_EQ((t.id.value & ((1ULL << 40) - 1)) % 10, 0u);
        EXPECT_NE(t.id, make_id(10));
    }
    EXPECT_EQ(r.finished_keys.size(), 901u);

    // A table rebuilt from the replay refuses the keys it had accepted.
    task_table restored(cfg, clock);
    for (auto& [key, id] : r.finished_keys) {
        restored.restore_key(key, id);
    }
    for (const auto& t : r.live) {
        restored.restore(t.id, t.key, t.payload, t.submitted_ns);
    }
    restored.skip_to(r.max_seq);
    EXPECT_TRUE(restored.submit("key5", "again", 0).duplicate) << "finished key";
    EXPECT_TRUE(restored.submit("key19", "again", 0).duplicate) << "live key";
    const auto fresh = restored.submit("new", "x", 0);
    EXPECT_FALSE(fresh.duplicate);
    EXPECT_EQ(fresh.id, make_id(1001)) << "ids continue after the highest ever accepted";
    EXPECT_EQ(restored.gauges().queued, 100u) << "99 restored and the fresh one";
}

TEST_F(journal_fixture, a_compacted_journal_still_knows_the_highest_id_ever_accepted) {
    {
        journal j(path_, epoch);
        j.append_accept(make_id(41), "", "p", 1);
        j.append_accept(make_id(42), "", "p", 1);
        ASSERT_FALSE(j.commit());
        // Both finished and keyless: the rewrite keeps no task and no key.
        ASSERT_FALSE(j.rewrite([](const journal::writer&) {}));
    }
    EXPECT_EQ(journal::replay(path_).max_seq, 42u)
        << "ids 41 and 42 must never be handed out again";
}

TEST_F(journal_fixture, finished_ids_alone_count_as_pending_work) {
    journal j(path_, epoch);
    j.append_accept(make_id(1), "", "p", 1);
    ASSERT_FALSE(j.commit());
    j.append_done(make_id(1));
    EXPECT_TRUE(j.has_pending());
}

TEST(crc32c, matches_the_standard_check_value) {
    EXPECT_EQ(crc32c("123456789"), 0xE3069283u);
}

}  // namespace
}  // namespace taskvent::ventilator
