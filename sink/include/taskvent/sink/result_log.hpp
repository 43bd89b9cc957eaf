// The sink's output file and the set of task ids already in it: what makes the output
// exactly-once. An id is written at most once, and reported durable only after the line
// holding it has been fdatasync'ed. Holds no sockets; the server owns one and calls it
// from its loop thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "taskvent/clock.hpp"
#include "taskvent/ids.hpp"
#include "taskvent/protocol.hpp"
#include "taskvent/sink/id_set.hpp"

namespace taskvent::sink {

struct status_counts {
    std::uint64_t ok = 0;
    std::uint64_t failed = 0;
    std::uint64_t dead = 0;
};

/// What opening an existing output file found.
struct recovery_report {
    std::uint64_t records = 0;     ///< lines with an id not seen earlier in the file
    std::uint64_t malformed = 0;   ///< lines whose id or status does not parse
    std::uint64_t duplicates = 0;  ///< lines repeating an id already seen in the file
    std::uint64_t torn_bytes = 0;  ///< bytes of an unterminated last line, truncated
    std::chrono::nanoseconds elapsed{0};
};

/// The outcome of one group commit.
struct append_result {
    std::vector<task_id> recorded;    ///< new ids, written and fsynced
    std::vector<task_id> duplicates;  ///< ids already durable (or repeated in the batch)
    /// Set when write or fdatasync failed. Then `recorded` is empty, the file is cut back
    /// to its last durable size and the new ids stay unseen, so the same items can be
    /// appended again; `duplicates` lists only ids that were durable before the call.
    std::error_code error;
    std::chrono::nanoseconds fsync_time{0};  ///< fdatasync duration; 0 when nothing was written
};

class result_log {
  public:
    /// Opens `path` for appending (created with mode 0644), takes an exclusive lock on it
    /// so that two sinks never write one file, and recovers it: an unterminated last line
    /// is truncated, seen ids and per-status counts are rebuilt. Throws std::system_error
    /// when the file cannot be opened, locked, read or repaired.
    explicit result_log(std::string path);
    ~result_log();
    result_log(const result_log&) = delete;
    result_log& operator=(const result_log&) = delete;

    /// Group commit: formats every item whose id is new into one buffer, then one write()
    /// and one fdatasync(). Items whose id is already recorded, or repeated within `items`,
    /// are not written and come back as duplicates.
    append_result append(std::span<const protocol::result_item> items,
                         std::int64_t now_ns = wall_clock_ns());

    bool contains(task_id id) const { return seen_.contains(id); }
    /// Distinct task ids in the file, recovered ones included.
    std::uint64_t recorded() const noexcept { return seen_.size(); }
    const status_counts& counts() const noexcept { return counts_; }
    const recovery_report& recovery() const noexcept { return recovery_; }
    const std::string& path() const noexcept { return path_; }

  private:
    void open_and_lock();
    void recover();
    void scan(std::string_view contents);
    void take_line(std::string_view line, std::uint64_t line_number);
    std::error_code write_durably(std::string_view data, std::chrono::nanoseconds& fsync_time);
    std::error_code cut_back();

    std::string path_;
    int fd_ = -1;
    /// File size up to the end of the last durable line; a failed write is cut back to it.
    std::uint64_t committed_size_ = 0;
    /// A failed write whose cut-back also failed: nothing more is written until it succeeds,
    /// or a retry would leave the same line in the file twice.
    bool needs_cut_back_ = false;
    id_set seen_;
    id_set batch_ids_;    ///< reused by append to spot in-batch repeats
    std::string buffer_;  ///< reused by append for the formatted lines
    status_counts counts_;
    recovery_report recovery_;
};

}  // namespace taskvent::sink
