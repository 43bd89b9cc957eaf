// Fuzzes the sink's recovery of its output file: taskvent::sink::result_log opening an
// existing file, which rebuilds the set of recorded task ids from the lines in it
// (parse_record_head on each), and cuts off a torn last line.
//
// The input is the output file. Properties: opening never crashes and never throws (what
// a file holds is counted, not refused); every line is counted once, as a status, a
// duplicate or malformed; exactly the bytes after the last newline are cut off; and every
// id a line names is known as recorded afterwards.
#include <sys/stat.h>

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <system_error>

#include "fuzz_support.hpp"
#include "taskvent/sink/record_format.hpp"
#include "taskvent/sink/result_log.hpp"

namespace {

std::uint64_t file_size(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        taskvent::fuzz::fail("the output file still exists after recovery", path);
    }
    return static_cast<std::uint64_t>(st.st_size);
}

void check_recovery(const taskvent::sink::result_log& log, std::string_view contents) {
    const auto& report = log.recovery();
    const auto& counts = log.counts();

    const auto last_newline = contents.rfind('\n');
    const std::uint64_t complete = last_newline == std::string_view::npos ? 0 : last_newline + 1;
    TASKVENT_FUZZ_CHECK(report.torn_bytes == contents.size() - complete,
                        "the torn tail is what follows the last newline");
    TASKVENT_FUZZ_CHECK(file_size(log.path()) == complete,
                        "recovery cuts the file back to its last complete line");

    std::uint64_t lines = 0;
    auto rest = contents.substr(0, complete);
    while (!rest.empty()) {
        const auto newline = rest.find('\n');
        const auto line = rest.substr(0, newline);
        rest.remove_prefix(newline + 1);
        ++lines;
        if (const auto head = taskvent::sink::parse_record_head(line)) {
            TASKVENT_FUZZ_CHECK(log.contains(head->id), "every id in the file is recorded");
        }
    }
    TASKVENT_FUZZ_CHECK(log.recorded() == report.records, "one record per distinct id");
    TASKVENT_FUZZ_CHECK(
        counts.ok + counts.failed + counts.dead + report.duplicates + report.malformed == lines,
        "every line counts once: as its status, as a duplicate, or as malformed");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    taskvent::fuzz::quiet_logs();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const taskvent::fuzz::scratch_file file("fuzz-sink", "results.jsonl");
    file.write(data, size);

    try {
        const taskvent::sink::result_log log(file.path());
        check_recovery(log, std::string_view(reinterpret_cast<const char*>(data), size));
    } catch (const std::system_error& e) {
        // Thrown only when the file cannot be opened, read or cut: never for its contents.
        taskvent::fuzz::fail("recovery accepts any contents", e.what());
    }
    return 0;
}
