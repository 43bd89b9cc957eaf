// What the fuzz targets share: quiet logs, a check that turns a broken property into a
// crash libFuzzer reports, and a scratch file for the decoders that read from disk.
//
// The scratch file lives in a directory of its own per process (two fuzzers never share
// one) and is rewritten for every input, so a run creates one file, not millions.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>

#include "taskvent/log.hpp"
#include "taskvent/temp_dir.hpp"

namespace taskvent::fuzz {

[[noreturn]] inline void fail(std::string_view property, std::string_view detail = {}) {
    std::fprintf(stderr,
                 "fuzz: property broken: %.*s%s%.*s\n",
                 static_cast<int>(property.size()),
                 property.data(),
                 detail.empty() ? "" : ": ",
                 static_cast<int>(detail.size()),
                 detail.data());
    std::abort();
}

/// Aborts, naming the property, when it does not hold; libFuzzer saves the input.
#define TASKVENT_FUZZ_CHECK(expr, property)          \
    do {                                             \
        if (!(expr)) [[unlikely]] {                  \
            ::taskvent::fuzz::fail(property, #expr); \
        }                                            \
    } while (false)

/// The code under test warns about every bad line it skips; at a hundred thousand inputs
/// a second that is all the fuzzer would do.
inline void quiet_logs() {
    log::setup({.level = "off"});
}

/// One file, rewritten with each input, in a fresh directory that is removed at exit.
class scratch_file {
  public:
    scratch_file(std::string_view target, std::string_view file_name) {
        try {
            dir_ = make_temp_dir("taskvent-" + std::string(target), base_directory());
        } catch (const std::system_error& e) {
            fail("scratch directory can be created", e.what());
        }
        path_ = (dir_ / file_name).string();
    }

    ~scratch_file() {
        std::error_code ignored;
        std::filesystem::remove_all(dir_, ignored);
    }

    scratch_file(const scratch_file&) = delete;
    scratch_file& operator=(const scratch_file&) = delete;

    /// Replaces the file's contents with `data`.
    void write(const std::uint8_t* data, std::size_t size) const {
        const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0) {
            fail("scratch file can be written", path_ + ": " + std::strerror(errno));
        }
        while (size > 0) {
            const auto n = ::write(fd, data, size);
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n <= 0) {
                fail("scratch file can be written", path_ + ": " + std::strerror(errno));
            }
            data += n;
            size -= static_cast<std::size_t>(n);
        }
        ::close(fd);
    }

    const std::string& path() const noexcept { return path_; }

  private:
    /// $TASKVENT_FUZZ_TMPDIR, else /dev/shm, else $TMPDIR or /tmp. tmpfs first because the
    /// code under test fsyncs the file and its directory on every input: on a disk that
    /// caps the fuzzer at a few hundred inputs a second.
    static std::filesystem::path base_directory() {
        if (const char* dir = std::getenv("TASKVENT_FUZZ_TMPDIR"); dir != nullptr && *dir != '\0') {
            return dir;
        }
        if (::access("/dev/shm", W_OK | X_OK) == 0) {
            return "/dev/shm";
        }
        if (const char* dir = std::getenv("TMPDIR"); dir != nullptr && *dir != '\0') {
            return dir;
        }
        return "/tmp";
    }

    std::filesystem::path dir_;
    std::string path_;
};

}  // namespace taskvent::fuzz
