// The ventilator's journal: an append-only, checksummed log of accepted tasks and of the
// tasks that are done, so that a restarted ventilator re-queues everything not yet done.
//
// Record: [u32 body length][u32 crc32c of type+body][u8 type][body], little endian.
// Types: epoch (first record), accept (id, submitted_ns, key, payload), done (ids),
// key (the idempotency key of a finished task, kept through compaction).
//
// Appends go to a buffer; commit() writes the buffer and fdatasyncs it, so one fsync
// covers every submission of a loop turn (group commit). A submission is acknowledged
// only after the commit that holds it. Done records need no such wait: losing one only
// means a finished task runs again, and the sink drops the duplicate.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "taskvent/ids.hpp"

namespace taskvent::ventilator {

/// The journal cannot be used: unreadable, or corrupt before its tail. what() names the
/// file and the offset.
class journal_error : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

std::uint32_t crc32c(std::string_view data, std::uint32_t crc = 0) noexcept;

struct replayed_task {
    task_id id;
    std::string key;
    std::string payload;
    std::int64_t submitted_ns = 0;
};

struct replay_result {
    std::uint32_t epoch = 0;          ///< 0 when the journal was empty or absent
    std::vector<replayed_task> live;  ///< accepted and not done, in id order
    std::vector<std::pair<std::string, task_id>> finished_keys;
    std::uint64_t max_seq = 0;  ///< highest sequence number ever accepted
    std::uint64_t records = 0;
    std::uint64_t truncated_bytes = 0;  ///< torn tail cut off
};

class journal {
  public:
    /// Reads the journal at `path` (absent is fine: an empty result), truncating a torn
    /// tail. Throws journal_error on corruption before the tail.
    static replay_result replay(const std::string& path);

    /// Opens `path` for appending; writes the epoch record if the file is new.
    journal(std::string path, std::uint32_t epoch);
    ~journal();
    journal(const journal&) = delete;
    journal& operator=(const journal&) = delete;

    void append_accept(task_id id,
                       std::string_view key,
                       std::string_view payload,
                       std::int64_t submitted_ns);
    void append_done(task_id id);

    bool has_pending() const noexcept { return !buffer_.empty() || !done_.empty(); }
    void note_seq(std::uint64_t seq) noexcept { max_seq_ = std::max(max_seq_, seq); }
    /// Writes what is buffered and makes it durable. On failure nothing buffered is lost
    /// from memory, and the caller must not acknowledge what it held.
    std::error_code commit();

    std::uint64_t size_bytes() const noexcept { return size_ + buffer_.size(); }

    /// Rewrites the journal from scratch: `emit` is called with a writer that takes the
    /// live tasks and finished keys. The new file replaces the old one atomically.
    struct writer {
        std::function<void(task_id, std::string_view, std::string_view, std::int64_t)> accept;
        std::function<void(std::string_view, task_id)> finished_key;
    };
    std::error_code rewrite(const std::function<void(const writer&)>& emit);

    const std::string& path() const noexcept { return path_; }

  private:
    void open_for_append();
    void flush_done();

    std::string path_;
    std::uint32_t epoch_;
    int fd_ = -1;
    std::uint64_t size_ = 0;
    std::string buffer_;
    std::uint64_t max_seq_ = 0;
    std::vector<std::uint64_t> done_;  ///< done ids not yet framed into the buffer
};

}  // namespace taskvent::ventilator
