#include "taskvent/sink/result_log.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "taskvent/log.hpp"
#include "taskvent/sink/record_format.hpp"

namespace taskvent::sink {
namespace {

/// Lines logged one by one at recovery before only the totals are reported.
constexpr std::uint64_t max_logged_bad_lines = 10;

std::system_error os_error(const std::string& what) {
    return {errno, std::system_category(), what};
}

std::error_code last_error() {
    return {errno, std::system_category()};
}

std::error_code write_all(int fd, std::string_view data) {
    while (!data.empty()) {
        const ssize_t n = ::write(fd, data.data(), data.size());
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return n < 0 ? last_error() : std::make_error_code(std::errc::io_error);
        }
        data.remove_prefix(static_cast<std::size_t>(n));
    }
    return {};
}

/// Makes the file's directory entry durable: a fsynced line in a file whose creation was
/// lost on power failure would be a confirmed result gone.
void sync_parent_directory(const std::string& path) {
    const auto dir = std::filesystem::absolute(path).parent_path();
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || ::fsync(fd) != 0) {
        log::get("sink")->warn(
            "cannot fsync output directory dir={} error={}", dir.string(), std::strerror(errno));
    }
    if (fd >= 0) {
        ::close(fd);
    }
}

void add_status(status_counts& counts, protocol::outcome status) {
    switch (status) {
        case protocol::outcome::ok:
            ++counts.ok;
            break;
        case protocol::outcome::failed:
            ++counts.failed;
            break;
        case protocol::outcome::dead:
            ++counts.dead;
            break;
    }
}

}  // namespace

result_log::result_log(std::string path) : path_(std::move(path)) {
    const auto start = std::chrono::steady_clock::now();
    open_and_lock();
    try {
        recover();
    } catch (...) {
        ::close(fd_);
        throw;
    }
    recovery_.elapsed = std::chrono::steady_clock::now() - start;
}

result_log::~result_log() {
    if (fd_ >= 0) {
        ::close(fd_);
    }
}

void result_log::open_and_lock() {
    fd_ = ::open(path_.c_str(), O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) {
        throw os_error("cannot open output file " + path_);
    }
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
        auto err = os_error("output file " + path_ + " is locked by another sink");
        ::close(fd_);
        throw err;
    }
    sync_parent_directory(path_);
}

void result_log::recover() {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) {
        throw os_error("cannot stat output file " + path_);
    }
    const auto size = static_cast<std::size_t>(st.st_size);
    if (size == 0) {
        return;
    }

    void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd_, 0);
    if (map == MAP_FAILED) {
        throw os_error("cannot read output file " + path_);
    }
    ::madvise(map, size, MADV_SEQUENTIAL);
    scan(std::string_view(static_cast<const char*>(map), size));
    ::munmap(map, size);

    committed_size_ = size - recovery_.torn_bytes;
    if (recovery_.torn_bytes == 0) {
        return;
    }
    // The last write was cut short (crash mid-write). Its lines were never confirmed, so
    // dropping the partial one loses nothing: the ventilator reissues the task.
    if (::ftruncate(fd_, static_cast<off_t>(committed_size_)) != 0 || ::fdatasync(fd_) != 0) {
        throw os_error("cannot truncate torn last line of " + path_);
    }
    log::get("sink")->warn(
        "truncated torn last line of output file={} bytes={}", path_, recovery_.torn_bytes);
}

void result_log::scan(std::string_view contents) {
    std::uint64_t line_number = 0;
    while (!contents.empty()) {
        const auto newline = contents.find('\n');
        if (newline == std::string_view::npos) {
            recovery_.torn_bytes = contents.size();
            break;
        }
        take_line(contents.substr(0, newline), ++line_number);
        contents.remove_prefix(newline + 1);
    }
    if (recovery_.malformed > max_logged_bad_lines || recovery_.duplicates > max_logged_bad_lines) {
        log::get("sink")->warn("output file={} has malformed_lines={} duplicate_lines={}",
                               path_,
                               recovery_.malformed,
                               recovery_.duplicates);
    }
}

void result_log::take_line(std::string_view line, std::uint64_t line_number) {
    const auto head = parse_record_head(line);
    const auto log = log::get("sink");
    if (!head) {
        if (++recovery_.malformed <= max_logged_bad_lines) {
            log->warn("skipping unparsable line of output file={} line={}", path_, line_number);
        }
        return;
    }
    if (!seen_.insert(head->id)) {
        if (++recovery_.duplicates <= max_logged_bad_lines) {
            log->warn("output file={} line={} repeats task={}", path_, line_number, head->id.value);
        }
        return;
    }

    ++recovery_.records;
    if (head->status) {
        add_status(counts_, *head->status);
    } else if (++recovery_.malformed <= max_logged_bad_lines) {
        // The id is kept as seen: a record for the task exists, a second one must not.
        log->warn("output file={} line={} task={} has no valid status",
                  path_,
                  line_number,
                  head->id.value);
    }
}

append_result result_log::append(std::span<const protocol::result_item> items,
                                 std::int64_t now_ns) {
    append_result out;
    std::vector<task_id> repeated_in_batch;
    status_counts added;
    buffer_.clear();
    batch_ids_.clear();
    for (const auto& item : items) {
        if (seen_.contains(item.id)) {
            out.duplicates.push_back(item.id);
        } else if (!batch_ids_.insert(item.id)) {
            repeated_in_batch.push_back(item.id);
        } else {
            append_record(buffer_, item, now_ns);
            out.recorded.push_back(item.id);
            add_status(added, item.status);
        }
    }
    if (out.recorded.empty()) {
        return out;
    }

    out.error = write_durably(buffer_, out.fsync_time);
    if (out.error) {
        // Repeats of an unwritten id are not durable either: they must not be confirmed.
        out.recorded.clear();
        return out;
    }
    for (const auto id : out.recorded) {
        seen_.insert(id);
    }
    counts_.ok += added.ok;
    counts_.failed += added.failed;
    counts_.dead += added.dead;
    out.duplicates.insert(out.duplicates.end(), repeated_in_batch.begin(), repeated_in_batch.end());
    return out;
}

std::error_code result_log::write_durably(std::string_view data,
                                          std::chrono::nanoseconds& fsync_time) {
    if (needs_cut_back_) {
        if (auto ec = cut_back()) {
            return ec;
        }
    }
    if (auto ec = write_all(fd_, data)) {
        (void)cut_back();  // on failure it sets needs_cut_back_; the write error is what counts
        return ec;
    }

    const auto start = std::chrono::steady_clock::now();
    if (::fdatasync(fd_) != 0) {
        const auto ec = last_error();
        (void)cut_back();
        return ec;
    }
    fsync_time = std::chrono::steady_clock::now() - start;
    committed_size_ += data.size();
    return {};
}

std::error_code result_log::cut_back() {
    if (::ftruncate(fd_, static_cast<off_t>(committed_size_)) != 0) {
        needs_cut_back_ = true;
        return last_error();
    }
    needs_cut_back_ = false;
    return {};
}

}  // namespace taskvent::sink
