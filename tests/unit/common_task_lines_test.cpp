// What `taskvent submit` and the ventilator's --tasks file accept, and how they refuse.
#include <gtest/gtest.h>

#include <sstream>

#include "taskvent/task_lines.hpp"

namespace taskvent {
namespace {

std::string refusal(const std::string& text) {
    std::istringstream in(text);
    try {
        (void)read_task_lines(in, "tasks.jsonl", false);
    } catch (const input_error& e) {
        return e.what();
    }
    return "accepted";
}

TEST(task_lines, reads_keys_and_payloads_and_skips_blank_lines) {
    std::istringstream in(
        "{\"key\":\"a\",\"payload\":\"x\"}\r\n\n  "
        "\n{\"payload\":{\"n\":1}}\n{\"key\":null,\"payload\":2}\n");
    const auto items = read_task_lines(in, "t", false);
    ASSERT_EQ(items.size(), 3u);
    EXPECT_EQ(items[0].key, "a");
    EXPECT_EQ(items[0].payload, "x");
    EXPECT_EQ(items[1].key, "");
    EXPECT_EQ(items[1].payload, "{\"n\":1}") << "a non-string payload is kept as its JSON text";
    EXPECT_EQ(items[2].payload, "2");
}

/// One line through read_task_lines; "refused" when it refuses it.
std::string one_task(const std::string& line) {
    std::istringstream in(line + "\n");
    try {
        const auto items = read_task_lines(in, "t", false);
        return items.size() == 1 ? items[0].key + "|" + items[0].payload : "count";
    } catch (const input_error&) {
        return "refused";
    }
}

TEST(task_lines, the_fast_path_takes_only_lines_it_reads_like_the_full_parser) {
    protocol::submit_item item;
    EXPECT_TRUE(detail::read_simple_task_line(R"({"key":"a","payload":"x y"})", item));
    EXPECT_EQ(item.key, "a");
    EXPECT_EQ(item.payload, "x y");
    EXPECT_TRUE(detail::read_simple_task_line(" { \"payload\" :\t\"p\" , \"key\":\"\" } ", item));
    EXPECT_EQ(item.key, "");
    EXPECT_EQ(item.payload, "p");

    // Left to the full parser: escapes, non-ASCII, other members, other value types, and
    // anything malformed.
    for (const char* line : {R"({"key":"a","payload":"x\"y"})",
                             "{\"payload\":\"caf\xc3\xa9\"}",
                             "{\"payload\":\"\xff\"}",
                             R"({"key":"a","payload":"x","more":1})",
                             R"({"key":"a","payload":"x",})",
                             R"({"key":"a","key":"b","payload":"x"})",
                             R"({"key":null,"payload":"x"})",
                             R"({"key":"a","payload":7})",
                             R"({"key":"a"})",
                             R"({"payload":"x"} trailing)",
                             R"({"payload":"x")",
                             R"({})"}) {
        EXPECT_FALSE(detail::read_simple_task_line(line, item)) << line;
    }
    // Which the full parser then reads or refuses as before.
    EXPECT_EQ(one_task(R"({"key":"a","payload":"x\"y"})"), "a|x\"y");
    EXPECT_EQ(one_task("{\"payload\":\"caf\xc3\xa9\"}"), "|caf\xc3\xa9");
    EXPECT_EQ(one_task("{\"payload\":\"\xff\"}"), "refused") << "invalid UTF-8";
    EXPECT_EQ(one_task(R"({"key":"a","payload":"x",})"), "refused");
    EXPECT_EQ(one_task(R"({"payload":"x"} trailing)"), "refused");
    EXPECT_EQ(one_task(R"({"key":null,"payload":"x"})"), "|x");
}

TEST(task_lines, plain_mode_takes_each_line_as_a_payload) {
    std::istringstream in("not json\n{\"still\":\"a payload\"}\n");
    const auto items = read_task_lines(in, "t", true);
    ASSERT_EQ(items.size(), 2u);
    EXPECT_EQ(items[0].payload, "not json");
}

TEST(task_lines, a_bad_line_is_refused_with_its_number) {
    EXPECT_NE(refusal("{\"payload\":1}\n{oops\n").find("tasks.jsonl:2: not JSON"),
              std::string::npos);
    EXPECT_NE(
        refusal("{\"key\":1,\"payload\":1}\n").find("tasks.jsonl:1: \"key\" must be a string"),
        std::string::npos);
    EXPECT_NE(refusal("[1,2]\n").find("tasks.jsonl:1: expected an object"), std::string::npos);
}

TEST(task_lines, a_number_too_large_for_a_double_is_a_refusal_not_a_crash) {
    EXPECT_NE(refusal("{\"payload\":1e400}\n").find("tasks.jsonl:1: not JSON"), std::string::npos);
}

TEST(task_lines, deep_nesting_is_refused_before_it_exhausts_the_stack) {
    const std::string deep =
        "{\"payload\":" + std::string(70000, '[') + std::string(70000, ']') + "}\n";
    EXPECT_NE(refusal(deep).find("nested deeper than"), std::string::npos);
    const std::string ok = "{\"payload\":" + std::string(60, '[') + std::string(60, ']') + "}\n";
    EXPECT_EQ(refusal(ok), "accepted");
}

}  // namespace
}  // namespace taskvent
