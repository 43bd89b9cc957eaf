// result_log: exactly one line per task id, durable before it is reported, and a file that
// a restarted sink reads back into the same state.
#include <gtest/gtest.h>

#include <sys/resource.h>
#include <nlohmann/json.hpp>
#include "taskvent/temp_dir.hpp"

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "taskvent/sink/result_log.hpp"

namespace {

using taskvent::task_id;
using taskvent::protocol::outcome;
using taskvent::protocol::result_item;
using taskvent::sink::result_log;

constexpr std::int64_t now_ns = 1'700'000'000'000'000'000;

/// A directory under /tmp that is removed with everything in it when the test ends.
class temp_dir {
  public:
    temp_dir() { path_ = taskvent::make_temp_dir("taskvent-sink"); }
    ~temp_dir() { std::filesystem::remove_all(path_); }
    std::string file(const std::string& name) const { return (path_ / name).string(); }

  private:
    std::filesystem::path path_;
};

result_item item(std::uint64_t id,
                 outcome status = outcome::ok,
                 std::string body = "out",
                 std::string key = "k") {
    result_item r;
    r.id = task_id{id};
    r.attempt = 1;
    r.status = status;
    r.key = std::move(key);
    r.body = std::move(body);
    r.submitted_ns = now_ns - 2'000'000;
    r.worker = "w1";
    return r;
}

std::string read_all(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::vector<std::string> read_lines(const std::string& path) {
    std::vector<std::string> lines;
    std::ifstream in(path, std::ios::binary);
    for (std::string line; std::getline(in, line);) {
        lines.push_back(line);
    }
    return lines;
}

void append_raw(const std::string& path, const std::string& bytes) {
    std::ofstream(path, std::ios::binary | std::ios::app) << bytes;
}

std::vector<std::uint64_t> values(const std::vector<task_id>& ids) {
    std::vector<std::uint64_t> out;
    for (auto id : ids) {
        out.push_back(id.value);
    }
    return out;
}

using ids = std::vector<std::uint64_t>;

/// The line written for one item with `body`, parsed back.
nlohmann::json line_for_body(const std::string& body) {
    temp_dir dir;
    const auto path = dir.file("out.jsonl");
    {
        result_log log(path);
        const std::vector<result_item> batch{item(1, outcome::ok, body)};
        EXPECT_FALSE(log.append(batch, now_ns).error);
    }
    const auto lines = read_lines(path);
    EXPECT_EQ(lines.size(), 1u);
    return nlohmann::json::parse(lines.at(0));
}

TEST(result_log, writes_one_json_line_per_new_result) {
    temp_dir dir;
    const auto path = dir.file("out.jsonl");
    result_log log(path);

    const std::vector<result_item> batch{item(1), item(2, outcome::failed, "boom", "k2")};
    const auto r = log.append(batch, now_ns);

    EXPECT_FALSE(r.error);
    EXPECT_EQ(values(r.recorded), (ids{1, 2}));
    EXPECT_TRUE(r.duplicates.empty());
    const auto lines = read_lines(path);
    ASSERT_EQ(lines.size(), 2u);
    EXPECT_EQ(lines[0],
              R"({"id":1,"key":"k","status":"ok","attempts":1,"result":"out","latency_ms":2.000,)"
              R"("worker":"w1"})");
    const auto second = nlohmann::json::parse(lines[1]);
    EXPECT_EQ(second["status"], "failed");
    EXPECT_EQ(second["error"], "boom");
    EXPECT_FALSE(second.contains("result"));
}

TEST(result_log, drops_a_second_result_for_the_same_task) {
    temp_dir dir;
    const auto path = dir.file("out.jsonl");
    result_log log(path);
    const std::vector<result_item> first{item(7, outcome::ok, "first")};
    const std::vector<result_item> second{item(7, outcome::ok, "second"), item(8)};

    ASSERT_FALSE(log.append(first, now_ns).error);
    const auto r = log.append(second, now_ns);

    EXPECT_EQ(values(r.recorded), (ids{8}));
    EXPECT_EQ(values(r.duplicates), (ids{7}));
    const auto lines = read_lines(path);
    ASSERT_EQ(lines.size(), 2u);
    EXPECT_EQ(nlohmann::json::parse(lines[0])["result"], "first");
    EXPECT_EQ(log.recorded(), 2u);
}

TEST(result_log, drops_a_repeat_within_one_batch) {
    temp_dir dir;
    const auto path = dir.file("out.jsonl");
    result_log log(path);
    const std::vector<result_item> batch{
        item(5, outcome::ok, "a"), item(5, outcome::ok, "b"), item(6)};

    const auto r = log.append(batch, now_ns);

    EXPECT_EQ(values(r.recorded), (ids{5, 6}));
    EXPECT_EQ(values(r.duplicates), (ids{5}));
    const auto lines = read_lines(path);
    ASSERT_EQ(lines.size(), 2u);
    EXPECT_EQ(nlohmann::json::parse(lines[0])["result"], "a");
}

TEST(result_log, rebuilds_seen_ids_and_counts_after_a_restart) {
    temp_dir dir;
    const auto path = dir.file("out.jsonl");
    {
        result_log log(path);
        const std::vector<result_item> batch{
            item(1), item(2), item(3, outcome::failed), item(4, outcome::dead)};
        ASSERT_FALSE(log.append(batch, now_ns).error);
    }

    result_log log(path);
    EXPECT_EQ(log.recovery().records, 4u);
    EXPECT_EQ(log.recovery().torn_bytes, 0u);
    EXPECT_EQ(log.recorded(), 4u);
    EXPECT_EQ(log.counts().ok, 2u);
    EXPECT_EQ(log.counts().failed, 1u);
    EXPECT_EQ(log.counts().dead, 1u);

    const std::vector<result_item> again{item(3), item(5, outcome::dead)};
    const auto r = log.append(again, now_ns);
    EXPECT_EQ(values(r.recorded), (ids{5}));
    EXPECT_EQ(values(r.duplicates), (ids{3}));
    EXPECT_EQ(log.counts().dead, 2u);
    EXPECT_EQ(read_lines(path).size(), 5u);
}

TEST(result_log, truncates_a_torn_last_line_and_forgets_its_id) {
    temp_dir dir;
    const auto path = dir.file("out.jsonl");
    {
        result_log log(path);
        const std::vector<result_item> batch{item(1), item(2)};
        ASSERT_FALSE(log.append(batch, now_ns).error);
    }
    const auto intact = read_all(path);
    const std::string torn = R"({"id":3,"key":"k","status":"ok","resu)";
    append_raw(path, torn);

    result_log log(path);

    EXPECT_EQ(log.recovery().torn_bytes, torn.size());
    EXPECT_EQ(read_all(path), intact);
    EXPECT_FALSE(log.contains(task_id{3}));
    const std::vector<result_item> retry{item(3)};
    EXPECT_EQ(values(log.append(retry, now_ns).recorded), (ids{3}));
    for (const auto& line : read_lines(path)) {
        EXPECT_TRUE(nlohmann::json::accept(line)) << line;
    }
}

TEST(result_log, counts_unparsable_lines_without_failing) {
    temp_dir dir;
    const auto path = dir.file("out.jsonl");
    append_raw(path,
               "not json at all\n"
               "\n"
               R"({"id":9,"key":"k","status":"maybe","attempts":1})"
               "\n"
               R"({"id":10,"key":"k","status":"ok","attempts":1})"
               "\n");

    result_log log(path);

    EXPECT_EQ(log.recovery().malformed, 3u);
    EXPECT_EQ(log.recovery().records, 2u);
    // A line with a readable id but no valid status still holds that task's record.
    EXPECT_TRUE(log.contains(task_id{9}));
    EXPECT_TRUE(log.contains(task_id{10}));
    EXPECT_EQ(log.counts().ok, 1u);
}

TEST(result_log, counts_repeated_ids_in_an_existing_file) {
    temp_dir dir;
    const auto path = dir.file("out.jsonl");
    const std::string line = R"({"id":4,"key":"k","status":"ok","attempts":1})";
    append_raw(path, line + "\n" + line + "\n");

    result_log log(path);

    EXPECT_EQ(log.recovery().records, 1u);
    EXPECT_EQ(log.recovery().duplicates, 1u);
    EXPECT_EQ(log.counts().ok, 1u);
}

TEST(result_log, escapes_quotes_backslashes_and_control_characters) {
    const std::string body = "say \"hi\"\\ \n\r\t\b\f \x01\x1f\x7f end";

    temp_dir dir;
    const auto path = dir.file("out.jsonl");
    {
        result_log log(path);
        auto r = item(1, outcome::ok, body, "key \"q\"\n");
        r.worker = "host\\1";
        const std::vector<result_item> batch{r};
        ASSERT_FALSE(log.append(batch, now_ns).error);
    }
    const auto lines = read_lines(path);

    ASSERT_EQ(lines.size(), 1u);
    EXPECT_NE(lines[0].find(R"(say \"hi\"\\ \n\r\t\b\f \u0001\u001f)"), std::string::npos);
    const auto parsed = nlohmann::json::parse(lines[0]);
    EXPECT_EQ(parsed["result"], body);
    EXPECT_EQ(parsed["key"], "key \"q\"\n");
    EXPECT_EQ(parsed["worker"], "host\\1");
}

TEST(result_log, keeps_valid_utf8_as_is) {
    const std::string body = "h\xc3\xa9llo \xe2\x82\xac \xf0\x9d\x84\x9e";  // héllo € 𝄞
    EXPECT_EQ(line_for_body(body)["result"], body);
}

TEST(result_log, writes_invalid_utf8_bytes_as_u00xx_escapes) {
    struct example {
        std::string in;
        std::string expected;  // what a JSON parser gives back: each bad byte as U+00XX
    };
    const std::vector<example> examples{
        {"a\xff"
         "b",
         "a\xc3\xbf"
         "b"},                                         // byte that never starts a sequence
        {"\xc3(", "\xc3\x83("},                        // lead byte without continuation
        {"\xc0\xaf", "\xc3\x80\xc2\xaf"},              // overlong '/'
        {"\xed\xa0\x80", "\xc3\xad\xc2\xa0\xc2\x80"},  // UTF-16 surrogate
        {"\xe2\x82", "\xc3\xa2\xc2\x82"},              // sequence cut short at the end
        {"\xf4\x90\x80\x80", "\xc3\xb4\xc2\x90\xc2\x80\xc2\x80"},  // past U+10FFFF
    };
    for (const auto& e : examples) {
        EXPECT_EQ(line_for_body(e.in)["result"], e.expected);
    }
}

TEST(result_log, writes_latency_in_milliseconds_and_null_when_unknown) {
    temp_dir dir;
    const auto path = dir.file("out.jsonl");
    result_log log(path);
    auto known = item(1);
    known.submitted_ns = now_ns - 1'512'345;
    auto unknown = item(2);
    unknown.submitted_ns = 0;
    const std::vector<result_item> batch{known, unknown};

    ASSERT_FALSE(log.append(batch, now_ns).error);

    const auto lines = read_lines(path);
    ASSERT_EQ(lines.size(), 2u);
    EXPECT_NE(lines[0].find(R"("latency_ms":1.512,)"), std::string::npos) << lines[0];
    EXPECT_TRUE(nlohmann::json::parse(lines[1])["latency_ms"].is_null());
}

TEST(result_log, reports_a_write_error_and_keeps_the_file_and_ids_as_they_were) {
    temp_dir dir;
    const auto path = dir.file("out.jsonl");
    result_log log(path);
    const std::vector<result_item> first{item(1)};
    ASSERT_FALSE(log.append(first, now_ns).error);
    const auto durable = read_all(path);

    // A file-size limit just past the current end makes write() stop part-way with EFBIG:
    // a real short write and a real error, no fault injection needed.
    rlimit saved{};
    ::getrlimit(RLIMIT_FSIZE, &saved);
    const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
    rlimit tight = saved;
    tight.rlim_cur = durable.size() + 10;
    ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &tight), 0);
    const std::vector<result_item> batch{
        item(1), item(2, outcome::ok, std::string(200, 'x')), item(2)};
    const auto failed = log.append(batch, now_ns);
    ::setrlimit(RLIMIT_FSIZE, &saved);
    std::signal(SIGXFSZ, old_handler);

    EXPECT_TRUE(failed.error == std::errc::file_too_large) << failed.error.message();
    EXPECT_TRUE(failed.recorded.empty());
    EXPECT_EQ(values(failed.duplicates), (ids{1}));  // the repeat of unwritten 2 is not durable
    EXPECT_FALSE(log.contains(task_id{2}));
    EXPECT_EQ(read_all(path), durable);

    const auto retried = log.append(batch, now_ns);
    EXPECT_FALSE(retried.error);
    EXPECT_EQ(values(retried.recorded), (ids{2}));
    EXPECT_EQ(read_lines(path).size(), 2u);
}

TEST(result_log, refuses_a_second_writer_on_the_same_file) {
    temp_dir dir;
    const auto path = dir.file("out.jsonl");
    result_log first(path);

    EXPECT_THROW(result_log second(path), std::system_error);
}

TEST(result_log, throws_when_the_file_cannot_be_opened) {
    EXPECT_THROW(result_log("/nonexistent-dir/out.jsonl"), std::system_error);
}

TEST(result_log, creates_the_file_with_mode_0644) {
    temp_dir dir;
    const auto path = dir.file("out.jsonl");
    const auto old_mask = ::umask(022);
    { result_log log(path); }
    ::umask(old_mask);

    const auto perms = std::filesystem::status(path).permissions();
    EXPECT_EQ(perms, std::filesystem::perms(0644));
}

}  // namespace
