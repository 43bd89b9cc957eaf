// Fuzzes taskvent::client::read_tasks, which reads the task file a user hands to
// `taskvent submit`, in both modes: JSON lines and plain lines (--lines).
//
// The input is the stream. Properties: reading never crashes and refuses input only with
// input_error; plain lines (all far below the payload limit here) are never refused, and
// give one non-empty payload without a newline per line that is not blank; JSON mode,
// when it accepts the input, gives one task per such line too. Every line the fast path
// takes is read by the full JSON parser to the same key and payload.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "fuzz_support.hpp"
#include "taskvent/client/client.hpp"
#include "taskvent/task_lines.hpp"

namespace {

namespace client = taskvent::client;

/// Number of tasks read, or empty when read_tasks refused the input.
std::optional<std::size_t> read(const std::string& text, bool plain_lines) {
    std::istringstream in(text);
    try {
        const auto items = client::read_tasks(in, "fuzz-input", plain_lines);
        if (plain_lines) {
            for (const auto& item : items) {
                TASKVENT_FUZZ_CHECK(item.key.empty(), "plain lines carry no key");
                TASKVENT_FUZZ_CHECK(!item.payload.empty(), "blank lines are skipped");
                TASKVENT_FUZZ_CHECK(item.payload.find('\n') == std::string::npos,
                                    "a plain payload is one line");
            }
        }
        return items.size();
    } catch (const client::input_error&) {
        return std::nullopt;
    }
}

/// Each line the fast path reads must mean the same to the full parser.
void check_fast_path(const std::string& text) {
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        taskvent::protocol::submit_item item;
        if (!taskvent::detail::read_simple_task_line(line, item)) {
            continue;
        }
        const auto j = nlohmann::json::parse(line, nullptr, false);
        TASKVENT_FUZZ_CHECK(j.is_object(), "a line the fast path reads is a JSON object");
        TASKVENT_FUZZ_CHECK(j.contains("payload") && j["payload"].is_string() &&
                                j["payload"].get<std::string>() == item.payload,
                            "the fast path reads the payload the full parser reads");
        const auto k = j.find("key");
        const std::string key = k != j.end() && k->is_string() ? k->get<std::string>() : "";
        TASKVENT_FUZZ_CHECK(key == item.key, "the fast path reads the key the full parser reads");
        TASKVENT_FUZZ_CHECK(j.size() == (k != j.end() ? 2u : 1u), "no member is ignored");
    }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    taskvent::fuzz::quiet_logs();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string text(reinterpret_cast<const char*>(data), size);

    const auto plain = read(text, true);
    TASKVENT_FUZZ_CHECK(plain.has_value(), "plain lines under the payload limit are accepted");

    check_fast_path(text);
    const auto json = read(text, false);
    if (json) {
        TASKVENT_FUZZ_CHECK(*json == *plain, "JSON and plain modes skip the same blank lines");
    }
    return 0;
}
