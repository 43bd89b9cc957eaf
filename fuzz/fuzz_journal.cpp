// Fuzzes taskvent::ventilator::journal::replay, which a restarted ventilator runs on a
// journal that a crash, a full disk or a stray copy may have left in any state.
//
// The input is the journal file. Properties: replay never crashes and refuses a journal
// only with journal_error; when it accepts one, it cut off exactly the torn tail it
// reports, and replaying the cut file again finds no tail and the same tasks.
#include <sys/stat.h>

#include <cstddef>
#include <cstdint>

#include "fuzz_support.hpp"
#include "taskvent/ventilator/journal.hpp"

namespace {

namespace ventilator = taskvent::ventilator;

bool same_tasks(const ventilator::replay_result& a, const ventilator::replay_result& b) {
    if (a.epoch != b.epoch || a.max_seq != b.max_seq || a.records != b.records ||
        a.finished_keys != b.finished_keys || a.live.size() != b.live.size()) {
        return false;
    }
    for (std::size_t i = 0; i < a.live.size(); ++i) {
        const auto& x = a.live[i];
        const auto& y = b.live[i];
        if (x.id != y.id || x.key != y.key || x.payload != y.payload ||
            x.submitted_ns != y.submitted_ns) {
            return false;
        }
    }
    return true;
}

std::uint64_t file_size(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        taskvent::fuzz::fail("the journal still exists after replay", path);
    }
    return static_cast<std::uint64_t>(st.st_size);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    taskvent::fuzz::quiet_logs();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const taskvent::fuzz::scratch_file file("fuzz-journal", "journal");
    file.write(data, size);

    ventilator::replay_result first;
    try {
        first = ventilator::journal::replay(file.path());
    } catch (const ventilator::journal_error&) {
        return 0;  // corrupt before its tail: refused, as it should be
    }

    TASKVENT_FUZZ_CHECK(first.truncated_bytes <= size, "the tail cut is part of the file");
    TASKVENT_FUZZ_CHECK(file_size(file.path()) == size - first.truncated_bytes,
                        "replay cuts off exactly the torn tail it reports");

    ventilator::replay_result second;
    try {
        second = ventilator::journal::replay(file.path());
    } catch (const ventilator::journal_error& e) {
        taskvent::fuzz::fail("a journal replay has repaired replays again", e.what());
    }
    TASKVENT_FUZZ_CHECK(second.truncated_bytes == 0, "a repaired journal has no torn tail");
    TASKVENT_FUZZ_CHECK(same_tasks(first, second), "replaying a repaired journal changes nothing");
    return 0;
}
