#include "taskvent/ventilator/journal.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <map>
#include <unordered_set>

#include <fmt/format.h>

namespace taskvent::ventilator {
namespace {

enum class record_type : std::uint8_t { epoch = 1, accept = 2, done = 3, key = 4, seq_mark = 5 };

constexpr std::size_t frame_header = 8;  // length + crc
constexpr std::uint32_t max_record = 64u * 1024 * 1024;
constexpr int seq_bits = 40;
constexpr std::uint64_t seq_mask = (1ULL << seq_bits) - 1;

constexpr std::array<std::uint32_t, 256> make_crc_table() {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
        std::uint32_t c = i;
        for (int k = 0; k < 8; ++k) {
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;  // Castagnoli, reflected
        }
        t[i] = c;
    }
    return t;
}
constexpr auto crc_table = make_crc_table();

template <typename T>
void put(std::string& out, T v) {
    char b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));  // the journal is little endian, as every target is
    out.append(b, sizeof(T));
}

void put_bytes(std::string& out, std::string_view s) {
    put<std::uint32_t>(out, static_cast<std::uint32_t>(s.size()));
    out.append(s);
}

/// Frames a record whose type and body were appended to `out` from `start` on.
void seal(std::string& out, std::size_t start) {
    const std::string_view content(out.data() + start + frame_header,
                                   out.size() - start - frame_header);
    const auto len = static_cast<std::uint32_t>(content.size() - 1);
    const auto crc = crc32c(content);
    std::memcpy(out.data() + start, &len, 4);
    std::memcpy(out.data() + start + 4, &crc, 4);
}

std::size_t begin_record(std::string& out, record_type t) {
    const auto start = out.size();
    out.append(frame_header, '\0');
    out.push_back(static_cast<char>(t));
    return start;
}

class reader {
  public:
    explicit reader(std::string_view s) : s_(s) {}
    template <typename T>
    T get() {
        need(sizeof(T));
        T v;
        std::memcpy(&v, s_.data() + pos_, sizeof(T));
        pos_ += sizeof(T);
        return v;
    }
    std::string bytes() {
        const auto n = get<std::uint32_t>();
        need(n);
        std::string out(s_.substr(pos_, n));
        pos_ += n;
        return out;
    }
    bool done() const { return pos_ == s_.size(); }

  private:
    void need(std::size_t n) const {
        if (s_.size() - pos_ < n) {
            throw std::out_of_range("record body too short");
        }
    }
    std::string_view s_;
    std::size_t pos_ = 0;
};

std::error_code write_all(int fd, std::string_view data) {
    while (!data.empty()) {
        const auto n = ::write(fd, data.data(), data.size());
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return {errno, std::generic_category()};
        }
        data.remove_prefix(static_cast<std::size_t>(n));
    }
    return {};
}

std::string read_file(const std::string& path, bool& exists) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            exists = false;
            return {};
        }
        throw journal_error(fmt::format("cannot open journal {}: {}", path, std::strerror(errno)));
    }
    exists = true;
    std::string data;
    char buf[1 << 16];
    for (;;) {
        const auto n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            const int err = errno;
            ::close(fd);
            throw journal_error(
                fmt::format("cannot read journal {}: {}", path, std::strerror(err)));
        }
        if (n == 0) {
            break;
        }
        data.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
    return data;
}

}  // namespace

std::uint32_t crc32c(std::string_view data, std::uint32_t crc) noexcept {
    crc = ~crc;
    for (unsigned char c : data) {
        crc = crc_table[(crc ^ c) & 0xFF] ^ (crc >> 8);
    }
    return ~crc;
}

replay_result journal::replay(const std::string& path) {
    replay_result out;
    bool exists = false;
    const auto data = read_file(path, exists);
    if (!exists) {
        return out;
    }

    std::map<std::uint64_t, replayed_task> live;  // by sequence number
    std::size_t pos = 0;
    while (pos < data.size()) {
        const auto remaining = data.size() - pos;
        std::uint32_t len = 0;
        std::uint32_t crc = 0;
        bool intact = remaining >= frame_header;
        if (intact) {
            std::memcpy(&len, data.data() + pos, 4);
            std::memcpy(&crc, data.data() + pos + 4, 4);
            intact = len < max_record && remaining >= frame_header + 1 + len &&
                     crc32c(std::string_view(data.data() + pos + frame_header, 1 + len)) == crc;
        }
        if (!intact) {
            // A record cut short by a crash can only be the last one. A bad record with
            // more journal after it is corruption, and skipping it could lose tasks.
            // Torn: the header itself is cut, the record runs past the end of the file,
            // the record is the last one, or the rest is zeros (space allocated, not written).
            const bool all_zero = data.find_first_not_of('\0', pos) == std::string::npos;
            const bool is_tail = remaining < frame_header || all_zero ||
                                 (len < max_record && remaining <= frame_header + 1 + len);
            if (!is_tail) {
                throw journal_error(fmt::format(
                    "journal {} is corrupt at offset {} (a record of {} bytes fails its checksum "
                    "and {} bytes follow it); refusing to guess which tasks it held. Move the "
                    "file aside to start empty, or restore it from a copy",
                    path,
                    pos,
                    len,
                    remaining));
            }
            if (::truncate(path.c_str(), static_cast<off_t>(pos)) != 0) {
                throw journal_error(
                    fmt::format("cannot truncate torn tail of journal {} at offset {}: {}",
                                path,
                                pos,
                                std::strerror(errno)));
            }
            out.truncated_bytes = remaining;
            break;
        }

        const auto type = static_cast<record_type>(data[pos + frame_header]);
        reader r(std::string_view(data.data() + pos + frame_header + 1, len));
        try {
            switch (type) {
                case record_type::epoch:
                    out.epoch = r.get<std::uint32_t>();
                    break;
                case record_type::accept: {
                    replayed_task t;
                    t.id = task_id{r.get<std::uint64_t>()};
                    t.submitted_ns = r.get<std::int64_t>();
                    t.key = r.bytes();
                    t.payload = r.bytes();
                    const auto seq = t.id.value & seq_mask;
                    out.max_seq = std::max(out.max_seq, seq);
                    live[seq] = std::move(t);
                    break;
                }
                case record_type::done: {
                    const auto n = r.get<std::uint32_t>();
                    for (std::uint32_t i = 0; i < n; ++i) {
                        const auto seq = r.get<std::uint64_t>() & seq_mask;
                        auto it = live.find(seq);
                        if (it != live.end()) {
                            if (!it->second.key.empty()) {
                                out.finished_keys.emplace_back(std::move(it->second.key),
                                                               it->second.id);
                            }
                            live.erase(it);
                        }
                    }
                    break;
                }
                case record_type::seq_mark:
                    out.max_seq = std::max(out.max_seq, r.get<std::uint64_t>());
                    break;
                case record_type::key: {
                    const task_id id{r.get<std::uint64_t>()};
                    out.finished_keys.emplace_back(r.bytes(), id);
                    out.max_seq = std::max(out.max_seq, id.value & seq_mask);
                    break;
                }
                default:
                    throw std::out_of_range("unknown record type");
            }
        } catch (const std::out_of_range& e) {
            throw journal_error(
                fmt::format("journal {} has a bad record at offset {}: {}", path, pos, e.what()));
        }
        ++out.records;
        pos += frame_header + 1 + len;
    }

    out.live.reserve(live.size());
    for (auto& [seq, t] : live) {
        out.live.push_back(std::move(t));
    }
    return out;
}

journal::journal(std::string path, std::uint32_t epoch) : path_(std::move(path)), epoch_(epoch) {
    open_for_append();
    if (size_ == 0) {
        const auto start = begin_record(buffer_, record_type::epoch);
        put<std::uint32_t>(buffer_, epoch_);
        seal(buffer_, start);
        if (auto ec = commit()) {
            throw journal_error(fmt::format("cannot write journal {}: {}", path_, ec.message()));
        }
    }
}

journal::~journal() {
    (void)commit();
    if (fd_ >= 0) {
        ::close(fd_);
    }
}

void journal::open_for_append() {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd_ < 0) {
        throw journal_error(fmt::format("cannot open journal {}: {}", path_, std::strerror(errno)));
    }
    struct stat st {};
    ::fstat(fd_, &st);
    size_ = static_cast<std::uint64_t>(st.st_size);
}

void journal::append_accept(task_id id,
                            std::string_view key,
                            std::string_view payload,
                            std::int64_t submitted_ns) {
    note_seq(id.value & seq_mask);
    const auto start = begin_record(buffer_, record_type::accept);
    put<std::uint64_t>(buffer_, id.value);
    put<std::int64_t>(buffer_, submitted_ns);
    put_bytes(buffer_, key);
    put_bytes(buffer_, payload);
    seal(buffer_, start);
}

void journal::append_done(task_id id) {
    done_.push_back(id.value);
    if (done_.size() >= 4096) {
        flush_done();
    }
}

void journal::flush_done() {
    if (done_.empty()) {
        return;
    }
    const auto start = begin_record(buffer_, record_type::done);
    put<std::uint32_t>(buffer_, static_cast<std::uint32_t>(done_.size()));
    for (auto v : done_) {
        put<std::uint64_t>(buffer_, v);
    }
    seal(buffer_, start);
    done_.clear();
}

std::error_code journal::commit() {
    flush_done();
    if (buffer_.empty()) {
        return {};
    }
    if (auto ec = write_all(fd_, buffer_)) {
        // A partial write leaves a torn record that replay truncates; keep the buffer so
        // that nothing it holds is acknowledged.
        return ec;
    }
    if (::fdatasync(fd_) != 0) {
        return {errno, std::generic_category()};
    }
    size_ += buffer_.size();
    buffer_.clear();
    return {};
}

std::error_code journal::rewrite(const std::function<void(const writer&)>& emit) {
    if (auto ec = commit()) {
        return ec;
    }
    const std::string tmp = path_ + ".compact";
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        return {errno, std::generic_category()};
    }
    std::string buf;
    std::error_code ec;
    auto spill = [&] {
        if (buf.size() >= (1u << 20) && !ec) {
            ec = write_all(fd, buf);
            buf.clear();
        }
    };
    auto start = begin_record(buf, record_type::epoch);
    put<std::uint32_t>(buf, epoch_);
    seal(buf, start);
    start = begin_record(buf, record_type::seq_mark);
    put<std::uint64_t>(buf, max_seq_);
    seal(buf, start);
    writer w;
    w.accept = [&](task_id id, std::string_view key, std::string_view payload, std::int64_t ns) {
        const auto s = begin_record(buf, record_type::accept);
        put<std::uint64_t>(buf, id.value);
        put<std::int64_t>(buf, ns);
        put_bytes(buf, key);
        put_bytes(buf, payload);
        seal(buf, s);
        spill();
    };
    w.finished_key = [&](std::string_view key, task_id id) {
        const auto s = begin_record(buf, record_type::key);
        put<std::uint64_t>(buf, id.value);
        put_bytes(buf, key);
        seal(buf, s);
        spill();
    };
    emit(w);
    if (!ec) {
        ec = write_all(fd, buf);
    }
    if (!ec && ::fsync(fd) != 0) {
        ec = {errno, std::generic_category()};
    }
    ::close(fd);
    if (!ec && ::rename(tmp.c_str(), path_.c_str()) != 0) {
        ec = {errno, std::generic_category()};
    }
    if (ec) {
        ::unlink(tmp.c_str());
        return ec;
    }
    // Make the rename itself durable, then append to the new file.
    const auto slash = path_.find_last_of('/');
    const std::string dir = slash == std::string::npos ? "." : path_.substr(0, slash);
    if (const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
        ::fsync(dfd);
        ::close(dfd);
    }
    ::close(fd_);
    open_for_append();
    return {};
}

}  // namespace taskvent::ventilator
