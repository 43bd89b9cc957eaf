// record_format: every line written is valid JSON that says the same thing, and its head
// reads back without a JSON parser.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <random>
#include <string>

#include "taskvent/sink/record_format.hpp"

namespace {

using taskvent::task_id;
using taskvent::protocol::outcome;
using taskvent::protocol::result_item;
using taskvent::sink::append_json_escaped;
using taskvent::sink::append_record;
using taskvent::sink::parse_record_head;

std::string random_bytes(std::mt19937_64& rng, std::size_t max_len) {
    std::uniform_int_distribution<std::size_t> len(0, max_len);
    std::uniform_int_distribution<int> byte(0, 255);
    std::string s(len(rng), '\0');
    for (auto& c : s) {
        c = static_cast<char>(byte(rng));
    }
    return s;
}

/// True when nlohmann accepts `s` as the inside of a JSON string unescaped: valid UTF-8
/// with no control characters (it rejects both).
bool is_valid_utf8(const std::string& s) {
    return nlohmann::json::accept("\"" + s + "\"");
}

TEST(record_format, random_bytes_always_give_a_line_that_parses) {
    std::mt19937_64 rng(20240601);
    for (int i = 0; i < 2000; ++i) {
        result_item r;
        r.id = task_id{rng()};
        r.attempt = static_cast<std::uint32_t>(rng() % 10);
        r.status = static_cast<outcome>(rng() % 3);
        r.key = random_bytes(rng, 16);
        r.body = random_bytes(rng, 64);
        r.worker = random_bytes(rng, 8);
        r.submitted_ns = 1'000'000'000;
        std::string line;

        append_record(line, r, 2'000'000'000);

        ASSERT_EQ(line.back(), '\n');
        ASSERT_EQ(line.find('\n'), line.size() - 1);
        nlohmann::json parsed;
        ASSERT_NO_THROW(parsed = nlohmann::json::parse(line)) << line;
        EXPECT_EQ(parsed["id"].get<std::uint64_t>(), r.id.value);
        EXPECT_EQ(parsed["status"], std::string(taskvent::protocol::to_string(r.status)));
        const auto head = parse_record_head(std::string_view(line).substr(0, line.size() - 1));
        ASSERT_TRUE(head.has_value()) << line;
        EXPECT_EQ(head->id, r.id);
        EXPECT_EQ(head->status, r.status);
    }
}

TEST(record_format, valid_utf8_round_trips_unchanged) {
    std::mt19937_64 rng(7);
    int checked = 0;
    for (int i = 0; i < 5000; ++i) {
        auto s = random_bytes(rng, 6);
        if (s.find_first_of(std::string("\"\\\0", 3)) != std::string::npos || !is_valid_utf8(s)) {
            continue;
        }
        std::string escaped;
        append_json_escaped(escaped, s);
        EXPECT_EQ(nlohmann::json::parse("\"" + escaped + "\"").get<std::string>(), s);
        ++checked;
    }
    EXPECT_GT(checked, 100);
}

TEST(record_format, parse_record_head_rejects_lines_without_an_id) {
    EXPECT_FALSE(parse_record_head(""));
    EXPECT_FALSE(parse_record_head("{}"));
    EXPECT_FALSE(parse_record_head(R"({"id":-1,"key":""})"));
    EXPECT_FALSE(parse_record_head(R"({"id":,"key":""})"));
    EXPECT_FALSE(parse_record_head(R"({"id":99999999999999999999,"key":""})"));
    EXPECT_FALSE(parse_record_head(R"({"id":12)"));
}

TEST(record_format, parse_record_head_reads_a_key_with_escaped_quotes) {
    const auto head = parse_record_head(R"({"id":12,"key":"a\"b\\","status":"dead","x":1})");

    ASSERT_TRUE(head);
    EXPECT_EQ(head->id, task_id{12});
    EXPECT_EQ(head->status, outcome::dead);
}

TEST(record_format, parse_record_head_survives_random_input) {
    std::mt19937_64 rng(99);
    for (int i = 0; i < 20000; ++i) {
        auto s = std::string(R"({"id":)") + random_bytes(rng, 40);
        (void)parse_record_head(s);
    }
}

}  // namespace
